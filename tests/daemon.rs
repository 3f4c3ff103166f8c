//! The daemon loop on fakes: a scripted frame source, a scripted estimator, a host line in
//! memory, GPIO pins that record every level (through embedded-hal's `OutputPin`) and
//! simulated time. One test per fault: each asserts the relay was never energised and
//! that the host was told.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use agegate::actuate::{Gate, HalLine, OutputLine};
use agegate::capture::{CaptureError, FrameMeta, FrameSource};
use agegate::daemon::{
    Daemon, DaemonSettings, Event, Exit, FaceEstimator, FrameFaces, ModelFiles, ModelGuard,
    NoWatchdog, Parts, RecordingClock, StopSignal, WireMessage,
};
use agegate::decide::{Decision, Policy};
use agegate::detect::BBox;
use agegate::engine::ModelError;
use agegate::estimate::AgeEstimate;
use agegate::serial::link::{HostLink, LinkError};
use agegate::serial::{AgeBand, Decoder, DeviceState, FaultCode, Message};
use agegate::session::{SessionSettings, Trigger};
use embedded_hal::digital::{ErrorType, OutputPin};
use image::RgbImage;

/// Frame interval of the fake camera: 15 fps.
const FRAME_MS: u64 = 66;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    Frame,
    Bad,
    /// The camera is gone: next_frame reports Lost; a reopen that meets it fails.
    Lost,
}

type Hook = Box<dyn FnMut(u64)>;

struct ScriptedSource {
    steps: VecDeque<Step>,
    index: u64,
    /// Called with each good frame's index before it is returned.
    on_frame: Option<Hook>,
}

impl FrameSource for ScriptedSource {
    fn name(&self) -> &str {
        "scripted"
    }
    fn next_frame(&mut self, _frame: &mut RgbImage) -> Result<Option<FrameMeta>, CaptureError> {
        let Some(step) = self.steps.pop_front() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        match step {
            Step::Frame => {
                if let Some(hook) = self.on_frame.as_mut() {
                    hook(index);
                }
                Ok(Some(FrameMeta {
                    index,
                    timestamp_ms: Some(index * FRAME_MS),
                }))
            }
            Step::Bad => Err(CaptureError::BadFrame {
                source_name: "scripted".into(),
                index,
                message: "corrupt".into(),
            }),
            Step::Lost => Err(CaptureError::Lost {
                source_name: "scripted".into(),
                message: "unplugged".into(),
            }),
        }
    }
    fn reopen(&mut self) -> Result<(), CaptureError> {
        if self.steps.front() == Some(&Step::Lost) {
            self.steps.pop_front();
            return Err(CaptureError::Lost {
                source_name: "scripted".into(),
                message: "still unplugged".into(),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Face {
        age: f32,
        sigma: f32,
        x: f32,
    },
    /// A face, and another one `other_width` pixels wide beside it.
    Crowd {
        age: f32,
        other_width: f32,
    },
    NoFace,
    Error,
    Panic,
}

fn face(age: f32) -> Outcome {
    Outcome::Face {
        age,
        sigma: 2.0,
        x: 100.0,
    }
}

/// Returns its outcomes in order, then repeats the last one.
struct ScriptedEstimator {
    outcomes: RefCell<VecDeque<Outcome>>,
    calls: Rc<RefCell<usize>>,
}

fn main_face(age: f32, sigma: f32, x: f32) -> (BBox, AgeEstimate) {
    (
        BBox {
            x0: x,
            y0: 50.0,
            x1: x + 80.0,
            y1: 130.0,
        },
        AgeEstimate {
            age,
            sigma,
            steps: vec![age],
            p_over: None,
        },
    )
}

impl FaceEstimator for ScriptedEstimator {
    fn faces(&self, _frame: &RgbImage) -> Result<FrameFaces, ModelError> {
        *self.calls.borrow_mut() += 1;
        let mut outcomes = self.outcomes.borrow_mut();
        let outcome = if outcomes.len() > 1 {
            outcomes.pop_front()
        } else {
            outcomes.front().copied()
        };
        match outcome.unwrap_or(Outcome::NoFace) {
            Outcome::Face { age, sigma, x } => Ok(FrameFaces {
                main: Some(main_face(age, sigma, x)),
                others: heapless::Vec::new(),
                quality: None,
                liveness: None,
            }),
            Outcome::Crowd { age, other_width } => {
                let mut others = heapless::Vec::new();
                let _ = others.push(BBox {
                    x0: 300.0,
                    y0: 60.0,
                    x1: 300.0 + other_width,
                    y1: 60.0 + other_width,
                });
                Ok(FrameFaces {
                    main: Some(main_face(age, 2.0, 100.0)),
                    others,
                    quality: None,
                    liveness: None,
                })
            }
            Outcome::NoFace => Ok(FrameFaces::default()),
            Outcome::Error => Err(ModelError::Run {
                path: "age.onnx".into(),
                reason: "injected".into(),
            }),
            Outcome::Panic => panic!("injected panic in a stage"),
        }
    }
}

/// The host's end of the line, in memory.
#[derive(Default)]
struct Wire {
    to_device: VecDeque<u8>,
    from_device: Vec<u8>,
    unplugged: bool,
    reopens: usize,
}

#[derive(Clone, Default)]
struct FakeLink(Rc<RefCell<Wire>>);

impl FakeLink {
    fn send(&self, message: Message) {
        let bytes = message.to_bytes().expect("encode");
        self.0.borrow_mut().to_device.extend(bytes.iter());
    }
    fn received(&self) -> Vec<Message> {
        let mut decoder = Decoder::new();
        let mut out = Vec::new();
        decoder.feed(&self.0.borrow().from_device, |m| out.push(m));
        assert_eq!(
            decoder.stats().bad_crc,
            0,
            "the device sent a corrupt frame"
        );
        out
    }
}

impl HostLink for FakeLink {
    fn name(&self) -> &str {
        "fake"
    }
    fn read_available(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        let mut wire = self.0.borrow_mut();
        if wire.unplugged {
            return Err(LinkError::Lost {
                name: "fake".into(),
                message: "unplugged".into(),
            });
        }
        let n = buf.len().min(wire.to_device.len());
        for slot in buf.iter_mut().take(n) {
            *slot = wire.to_device.pop_front().unwrap_or(0);
        }
        Ok(n)
    }
    fn write_frame(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        let mut wire = self.0.borrow_mut();
        if wire.unplugged {
            return Err(LinkError::Lost {
                name: "fake".into(),
                message: "unplugged".into(),
            });
        }
        wire.from_device.extend_from_slice(frame);
        Ok(())
    }
    fn reopen(&mut self) -> Result<(), LinkError> {
        let mut wire = self.0.borrow_mut();
        wire.reopens += 1;
        if wire.unplugged {
            Err(LinkError::Lost {
                name: "fake".into(),
                message: "still unplugged".into(),
            })
        } else {
            Ok(())
        }
    }
}

/// An embedded-hal output pin that records every level written; it fails the write
/// numbered `fail_at` (0-based), if set.
#[derive(Clone, Default)]
struct RecordingPin {
    levels: Rc<RefCell<Vec<bool>>>,
    fail_at: Option<usize>,
}

#[derive(Debug)]
struct PinBroken;

impl embedded_hal::digital::Error for PinBroken {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

impl ErrorType for RecordingPin {
    type Error = PinBroken;
}

impl RecordingPin {
    fn write(&mut self, high: bool) -> Result<(), PinBroken> {
        let n = self.levels.borrow().len();
        if self.fail_at == Some(n) {
            self.levels.borrow_mut().push(false);
            return Err(PinBroken);
        }
        self.levels.borrow_mut().push(high);
        Ok(())
    }
    fn ever_high(&self) -> bool {
        self.levels.borrow().iter().any(|&l| l)
    }
    fn last(&self) -> Option<bool> {
        self.levels.borrow().last().copied()
    }
}

impl OutputPin for RecordingPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.write(false)
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.write(true)
    }
}

struct AlwaysFine;

impl ModelGuard for AlwaysFine {
    fn check(&mut self, _now_ms: u64) -> Result<(), String> {
        Ok(())
    }
}

struct Rig {
    steps: Vec<Step>,
    outcomes: Vec<Outcome>,
    settings: DaemonSettings,
    with_link: bool,
    relay: RecordingPin,
    led_allow: RecordingPin,
    on_frame: Option<Hook>,
    models: Option<Box<dyn ModelGuard>>,
    stop: StopSignal,
    /// The event sink fails (a closed stdout) once it holds this many events.
    output_fails_after: Option<usize>,
    policy: Policy,
}

struct Run {
    exit: Exit,
    events: Vec<Event>,
    host: Vec<Message>,
    relay: RecordingPin,
    link: FakeLink,
    inferences: usize,
}

impl Rig {
    fn new(frames: usize, outcomes: Vec<Outcome>) -> Self {
        Self {
            steps: vec![Step::Frame; frames],
            outcomes,
            settings: DaemonSettings {
                session: SessionSettings {
                    trigger: Trigger::Request,
                    ..SessionSettings::default()
                },
                ..DaemonSettings::default()
            },
            with_link: true,
            relay: RecordingPin::default(),
            led_allow: RecordingPin::default(),
            on_frame: None,
            models: None,
            stop: StopSignal::default(),
            output_fails_after: None,
            policy: Policy::new(18.0, 25.0, 1.0).expect("policy"),
        }
    }

    fn run_with(mut self, link: FakeLink) -> Run {
        let line = self
            .with_link
            .then(|| Box::new(link.clone()) as Box<dyn HostLink>);
        self.with_link = false;
        let (exit, events, relay, inferences) = self.run_on(line);
        Run {
            exit,
            events,
            host: link.received(),
            relay,
            link,
            inferences,
        }
    }

    /// Runs the daemon with `link` as its host line.
    fn run_on(self, link: Option<Box<dyn HostLink>>) -> (Exit, Vec<Event>, RecordingPin, usize) {
        let events = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&events);
        let calls = Rc::new(RefCell::new(0));
        let relay_line: Box<dyn OutputLine> =
            Box::new(HalLine::new(self.relay.clone(), "gpio.relay", false));
        let led_line: Box<dyn OutputLine> = Box::new(HalLine::new(
            self.led_allow.clone(),
            "gpio.led_allow",
            false,
        ));
        let gate = Gate::new(relay_line, [Some(led_line), None, None], 3000).expect("gate");
        let clock = RecordingClock::default();
        let output_fails_after = self.output_fails_after;
        let parts = Parts {
            source: Box::new(ScriptedSource {
                steps: self.steps.into(),
                index: 0,
                on_frame: self.on_frame,
            }),
            estimator: Box::new(ScriptedEstimator {
                outcomes: RefCell::new(self.outcomes.into()),
                calls: Rc::clone(&calls),
            }),
            link,
            gate,
            models: self.models.unwrap_or_else(|| Box::new(AlwaysFine)),
            watchdog: Box::new(NoWatchdog),
            // One simulated time for both clocks: the tests script frames, not seconds.
            clock: Box::new(clock.clone()),
            wall: Box::new(clock),
            stop: self.stop,
        };
        let mut daemon = Daemon::new(
            parts,
            self.policy,
            self.settings,
            Box::new(move |e| {
                if output_fails_after.is_some_and(|n| sink.borrow().len() >= n) {
                    return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
                }
                sink.borrow_mut().push(e);
                Ok(())
            }),
        );
        let exit = daemon.run();
        drop(daemon);
        let events = events.borrow().clone();
        let inferences = *calls.borrow();
        (exit, events, self.relay, inferences)
    }

    fn run(self, requests: &[Message]) -> Run {
        let link = FakeLink::default();
        for r in requests {
            link.send(r.clone());
        }
        self.run_with(link)
    }
}

fn request(id: u16) -> Message {
    Message::Request {
        id,
        required_age: 18,
    }
}

fn decisions(host: &[Message]) -> Vec<(u16, Decision)> {
    host.iter()
        .filter_map(|m| match m {
            Message::Decision { id, decision, .. } => Some((*id, *decision)),
            _ => None,
        })
        .collect()
}

fn faults(host: &[Message]) -> Vec<FaultCode> {
    host.iter()
        .filter_map(|m| match m {
            Message::Fault { code, .. } => Some(*code),
            _ => None,
        })
        .collect()
}

fn assert_fault_exit(run: &Run, expected: FaultCode) {
    assert!(
        matches!(run.exit, Exit::Fault { code, .. } if code == expected),
        "{:?}",
        run.exit
    );
}

/// The checks every fault test makes: relay never energised, inactive at the end, and
/// the pending request answered REFER after a FAULT with `code`.
fn assert_failed_closed(run: &Run, code: FaultCode, id: u16) {
    assert!(
        !run.relay.ever_high(),
        "relay energised: {:?}",
        run.relay.levels.borrow()
    );
    assert_eq!(run.relay.last(), Some(false));
    assert!(faults(&run.host).contains(&code), "host got {:?}", run.host);
    assert_eq!(
        decisions(&run.host),
        vec![(id, Decision::Refer)],
        "{:?}",
        run.host
    );
}

#[test]
fn adult_request_allows_and_pulses_the_relay() {
    let run = Rig::new(20, vec![face(40.0)]).run(&[request(7)]);
    assert_eq!(run.exit, Exit::RecordingEnded);
    let confidence = run.host.iter().find_map(|m| match m {
        Message::Decision {
            id: 7,
            decision: Decision::Allow,
            band,
            confidence,
        } => Some((*band, *confidence)),
        _ => None,
    });
    let (band, confidence) = confidence.expect("an ALLOW for request 7");
    assert_eq!(band, AgeBand::From35To49);
    assert!(confidence > 95, "{confidence}");
    // inactive at start, energised once, inactive at the end
    let levels = run.relay.levels.borrow().clone();
    assert_eq!(levels.first(), Some(&false));
    assert_eq!(levels.iter().filter(|&&l| l).count(), 1, "{levels:?}");
    assert_eq!(levels.last(), Some(&false));
    assert!(run.host.iter().any(|m| matches!(
        m,
        Message::Heartbeat {
            state: DeviceState::Ready | DeviceState::Deciding,
            ..
        }
    )));
    // Decided on min_frames (5) frames: inference stops once there is no REQUEST.
    assert_eq!(run.inferences, 5);
}

#[test]
fn relay_pulse_ends_after_its_time() {
    // 60 frames = 3.96 s; the 3 s pulse starts at frame 4 (t = 264 ms) and ends by 3.3 s.
    let run = Rig::new(60, vec![face(40.0)]).run(&[request(1)]);
    let pins: Vec<(u64, bool)> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Pin { t_ms, change } if format!("{:?}", change.line) == "Relay" => {
                Some((*t_ms, change.active))
            }
            _ => None,
        })
        .collect();
    assert_eq!(pins.len(), 2, "{pins:?}");
    assert!(pins[0].1 && !pins[1].1);
    let held = pins[1].0 - pins[0].0;
    assert!(
        (3000..3000 + FRAME_MS).contains(&held),
        "relay held {held} ms"
    );
}

#[test]
fn minor_is_denied_and_the_relay_stays_off() {
    let run = Rig::new(20, vec![face(12.0)]).run(&[request(3)]);
    assert_eq!(decisions(&run.host), vec![(3, Decision::Deny)]);
    assert!(!run.relay.ever_high());
}

#[test]
fn no_face_until_the_timeout_refers() {
    // 4 s timeout = 61 frames at 66 ms
    let run = Rig::new(80, vec![Outcome::NoFace]).run(&[request(9)]);
    assert_eq!(decisions(&run.host), vec![(9, Decision::Refer)]);
    assert!(!run.relay.ever_high());
}

#[test]
fn cancel_before_the_decision_leaves_no_verdict_and_ping_is_answered() {
    let link = FakeLink::default();
    link.send(request(4));
    link.send(Message::Cancel { id: 4 });
    link.send(Message::Ping { nonce: 0xDEAD_BEEF });
    let run = Rig::new(20, vec![face(40.0)]).run_with(link);
    assert!(decisions(&run.host).is_empty(), "{:?}", run.host);
    assert!(run.host.contains(&Message::Pong { nonce: 0xDEAD_BEEF }));
    assert!(!run.relay.ever_high());
}

#[test]
fn camera_lost_mid_decision_faults_refers_and_recovers() {
    let mut rig = Rig::new(3, vec![face(40.0)]);
    rig.steps.extend([Step::Lost, Step::Lost, Step::Lost]);
    rig.steps.extend([Step::Frame; 10]);
    let run = rig.run(&[request(5)]);
    assert_failed_closed(&run, FaultCode::CAMERA, 5);
    assert!(run
        .events
        .iter()
        .any(|e| matches!(e, Event::Recovered { what: "camera", .. })));
    assert_eq!(run.exit, Exit::RecordingEnded);
}

#[test]
fn a_run_of_bad_frames_is_a_camera_fault() {
    let mut rig = Rig::new(2, vec![face(40.0)]);
    rig.settings.max_bad_frames = 4;
    rig.steps.extend([Step::Bad; 4]);
    let run = rig.run(&[request(6)]);
    assert_failed_closed(&run, FaultCode::CAMERA, 6);
}

#[test]
fn inference_error_faults_refers_and_repeated_errors_exit() {
    let run =
        Rig::new(20, vec![face(40.0), face(40.0), Outcome::Error, face(40.0)]).run(&[request(8)]);
    assert_failed_closed(&run, FaultCode::MODEL, 8);
    assert_eq!(
        run.exit,
        Exit::RecordingEnded,
        "one error is recovered from"
    );

    let mut rig = Rig::new(20, vec![Outcome::Error]);
    rig.settings.session.trigger = Trigger::Face;
    rig.settings.max_model_errors = 3;
    let run = rig.run(&[]);
    assert_fault_exit(&run, FaultCode::MODEL);
    assert!(!run.relay.ever_high());
}

#[test]
fn model_file_changed_on_disk_faults_and_exits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = dir.path().join("age.onnx");
    std::fs::write(&model, b"weights v1").expect("write");
    let mut rig = Rig::new(40, vec![face(40.0)]);
    rig.settings.model_check_ms = 100;
    rig.models = Some(Box::new(
        ModelFiles::snapshot(&[(model.clone(), None)], 60_000).expect("snapshot"),
    ));
    let path = model.clone();
    rig.on_frame = Some(Box::new(move |i| {
        if i == 2 {
            std::fs::write(&path, b"weights v2, replaced").expect("replace");
        }
    }));
    let run = rig.run(&[request(11)]);
    assert_fault_exit(&run, FaultCode::MODEL);
    assert_failed_closed(&run, FaultCode::MODEL, 11);
}

#[test]
fn serial_unplugged_mid_decision_closes_the_gate_and_reports_on_return() {
    let link = FakeLink::default();
    link.send(request(12));
    let mut rig = Rig::new(40, vec![face(40.0)]);
    let wire = link.clone();
    rig.on_frame = Some(Box::new(move |i| {
        // Unplugged after 2 frames (before min_frames), back in at frame 20.
        if i == 2 {
            wire.0.borrow_mut().unplugged = true;
        }
        if i == 20 {
            wire.0.borrow_mut().unplugged = false;
        }
    }));
    let run = rig.run_with(link);
    assert!(!run.relay.ever_high());
    assert!(
        decisions(&run.host).is_empty(),
        "the request went with the line"
    );
    assert!(
        faults(&run.host).contains(&FaultCode::SERIAL),
        "told when back: {:?}",
        run.host
    );
    assert!(run.link.0.borrow().reopens >= 1);
    assert!(run
        .events
        .iter()
        .any(|e| matches!(e, Event::Recovered { what: "serial", .. })));
}

#[test]
fn panic_in_a_stage_faults_and_exits() {
    let run = Rig::new(20, vec![face(40.0), Outcome::Panic]).run(&[request(13)]);
    assert_fault_exit(&run, FaultCode::INTERNAL);
    assert_failed_closed(&run, FaultCode::INTERNAL, 13);
}

#[test]
fn sigterm_mid_decision_refers_and_exits_cleanly() {
    let mut rig = Rig::new(20, vec![face(40.0)]);
    let stop = rig.stop.clone();
    rig.on_frame = Some(Box::new(move |i| {
        if i == 2 {
            stop.raise();
        }
    }));
    let run = rig.run(&[request(14)]);
    assert_eq!(run.exit, Exit::Stopped);
    assert_failed_closed(&run, FaultCode::SHUTDOWN, 14);
}

#[test]
fn second_signal_exits_at_once_with_the_relay_off() {
    let mut rig = Rig::new(20, vec![face(40.0)]);
    let stop = rig.stop.clone();
    rig.on_frame = Some(Box::new(move |i| {
        if i == 2 {
            stop.raise();
            stop.raise();
        }
    }));
    let run = rig.run(&[request(15)]);
    assert_eq!(run.exit, Exit::Aborted);
    assert!(!run.relay.ever_high());
    assert_eq!(run.relay.last(), Some(false));
}

#[test]
fn gpio_write_failure_faults_and_exits() {
    let mut rig = Rig::new(20, vec![face(40.0)]);
    // LED writes: 0 at start-up, 1 clearing the LEDs for the REQUEST, 2 lighting ALLOW:
    // that one fails, and the relay (switched on only after the LEDs) must stay off.
    rig.led_allow.fail_at = Some(2);
    let run = rig.run(&[request(16)]);
    assert_fault_exit(&run, FaultCode::RELAY);
    assert!(!run.relay.ever_high());
    assert!(faults(&run.host).contains(&FaultCode::RELAY));
}

#[test]
fn face_trigger_decides_once_per_person() {
    let adult = face(40.0);
    let minor = Outcome::Face {
        age: 10.0,
        sigma: 2.0,
        x: 300.0,
    };
    let mut outcomes = vec![adult; 15];
    outcomes.extend(vec![Outcome::NoFace; 10]); // 660 ms: the adult has left
    outcomes.extend(vec![minor; 15]);
    outcomes.push(Outcome::NoFace);
    let mut rig = Rig::new(45, outcomes);
    rig.settings.session.trigger = Trigger::Face;
    rig.with_link = false;
    let run = rig.run(&[]);
    let decided: Vec<Decision> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Decision { decision, .. } => Some(*decision),
            _ => None,
        })
        .collect();
    assert_eq!(decided, vec![Decision::Allow, Decision::Deny]);
    assert_eq!(run.relay.levels.borrow().iter().filter(|&&l| l).count(), 1);
    // Without a line, the frames it would send are still reported.
    assert!(run.events.iter().any(|e| matches!(
        e,
        Event::SerialTx {
            message: WireMessage::Decision { .. },
            ..
        }
    )));
}

/// Reads what the device sent to the host's end of a pty.
fn read_host_end(master: &mut serialport::TTYPort) -> Vec<Message> {
    use serialport::SerialPort;
    use std::io::Read;
    master
        .set_timeout(std::time::Duration::from_millis(200))
        .expect("timeout");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    decoder.feed(&bytes, |m| out.push(m));
    out
}

#[test]
fn request_and_decision_over_a_pseudo_terminal() {
    use std::io::Write;
    let (mut master, slave) = serialport::TTYPort::pair().expect("pty pair");
    let bytes = request(21).to_bytes().expect("encode");
    // Line noise first: the device must resynchronise.
    master.write_all(b"\x00\xA5\xFFnoise").expect("write");
    master.write_all(&bytes).expect("write");
    // Linux discards what the master has not read once the slave side closes: a second
    // handle keeps it open until the host's end is read.
    let keep_open = slave.try_clone_native().expect("clone");
    let link = agegate::serial::link::SerialLink::from_port(slave, "pty");
    let rig = Rig::new(20, vec![face(40.0)]);
    let (exit, _, relay, _) = rig.run_on(Some(Box::new(link)));
    assert_eq!(exit, Exit::RecordingEnded);
    let host = read_host_end(&mut master);
    drop(keep_open);
    assert_eq!(decisions(&host), vec![(21, Decision::Allow)], "{host:?}");
    assert!(relay.ever_high());
}

#[test]
fn host_end_closed_mid_decision_is_a_serial_fault() {
    use std::io::Write;
    let (mut master, slave) = serialport::TTYPort::pair().expect("pty pair");
    master
        .write_all(&request(22).to_bytes().expect("encode"))
        .expect("write");
    let master = RefCell::new(Some(master));
    let mut rig = Rig::new(20, vec![face(40.0)]);
    // The host's end goes away after two frames, before min_frames.
    rig.on_frame = Some(Box::new(move |i| {
        if i == 2 {
            master.borrow_mut().take();
        }
    }));
    let link = agegate::serial::link::SerialLink::from_port(slave, "pty");
    let (_, events, relay, _) = rig.run_on(Some(Box::new(link)));
    assert!(!relay.ever_high());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Fault { code, .. } if *code == FaultCode::SERIAL.0)),
        "{events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, Event::Decision { .. })));
}

#[test]
#[cfg_attr(
    target_arch = "aarch64",
    ignore = "qemu-user 7.2 lacks the TCGETS2 ioctl that opening a port by path needs; runs natively"
)]
fn serial_port_opened_by_path() {
    use std::io::Write;
    let (mut master, slave) = serialport::TTYPort::pair().expect("pty pair");
    let path = serialport::SerialPort::name(&slave).expect("pty name");
    let link = agegate::serial::link::SerialLink::open(path.into(), 115_200).expect("open by path");
    // `slave` stays open until the end: see request_and_decision_over_a_pseudo_terminal.
    master
        .write_all(&request(23).to_bytes().expect("encode"))
        .expect("write");
    let (exit, _, _, _) = Rig::new(20, vec![face(12.0)]).run_on(Some(Box::new(link)));
    assert_eq!(exit, Exit::RecordingEnded);
    assert_eq!(
        decisions(&read_host_end(&mut master)),
        vec![(23, Decision::Deny)]
    );
}

// ---- Hardening (issue 11): stop signals in every state, a closed output, a flapping
// camera, the host's age floor, other faces, model errors named as such.

/// The frame (0-based) at which the relay is energised in a 20-frame ALLOW run.
fn relay_on_frame(run: &Run) -> Option<u64> {
    run.events.iter().find_map(|e| match e {
        Event::Pin { t_ms, change } if format!("{:?}", change.line) == "Relay" && change.active => {
            Some(*t_ms / FRAME_MS)
        }
        _ => None,
    })
}

fn shutdown_faults(host: &[Message]) -> usize {
    faults(host)
        .iter()
        .filter(|c| **c == FaultCode::SHUTDOWN)
        .count()
}

#[test]
fn a_stop_in_every_state_closes_the_gate_and_tells_the_host() {
    // Where each state is, on a 20-frame run of an adult: idle (no REQUEST yet), deciding
    // (a REQUEST and fewer than min_frames faces), the relay pulsing (after the ALLOW).
    let pulse_at = relay_on_frame(&Rig::new(20, vec![face(40.0)]).run(&[request(1)]))
        .expect("an ALLOW pulses the relay");
    for (state, requests, stop_at) in [
        ("idle", vec![], 3),
        ("deciding", vec![request(30)], 2),
        ("pulsing", vec![request(31)], pulse_at + 2),
    ] {
        let mut rig = Rig::new(40, vec![face(40.0)]);
        let stop = rig.stop.clone();
        rig.on_frame = Some(Box::new(move |i| {
            if i == stop_at {
                stop.raise();
            }
        }));
        let run = rig.run(&requests);
        assert_eq!(run.exit, Exit::Stopped, "{state}");
        assert_eq!(run.relay.last(), Some(false), "{state}: relay off at exit");
        assert_eq!(shutdown_faults(&run.host), 1, "{state}: {:?}", run.host);
        match state {
            "idle" => assert!(decisions(&run.host).is_empty()),
            "deciding" => assert_eq!(decisions(&run.host), vec![(30, Decision::Refer)]),
            _ => {
                assert_eq!(decisions(&run.host), vec![(31, Decision::Allow)]);
                // The stop came while the pulse was on: it cut the pulse short.
                let levels = run.relay.levels.borrow().clone();
                assert_eq!(levels.iter().filter(|&&l| l).count(), 1, "{levels:?}");
            }
        }
    }
}

#[test]
fn a_closed_event_output_is_a_fault_that_closes_the_gate() {
    // Mid-decision: the output dies before the verdict's record (stdout piped into
    // `head`): the request is answered once, the gate never opens, the host hears the
    // fault and the daemon exits for a restart.
    let mut rig = Rig::new(40, vec![face(40.0)]);
    rig.output_fails_after = Some(2);
    let run = rig.run(&[request(40)]);
    assert_fault_exit(&run, FaultCode::INTERNAL);
    assert!(!run.relay.ever_high(), "{:?}", run.relay.levels.borrow());
    assert_eq!(run.relay.last(), Some(false));
    assert!(faults(&run.host).contains(&FaultCode::INTERNAL));
    assert_eq!(decisions(&run.host).len(), 1, "{:?}", run.host);
    // Right after the verdict's record: the ALLOW is not acted on.
    let mut rig = Rig::new(40, vec![face(40.0)]);
    rig.output_fails_after = Some(3);
    let run = rig.run(&[request(42)]);
    assert_fault_exit(&run, FaultCode::INTERNAL);
    assert!(!run.relay.ever_high(), "{:?}", run.relay.levels.borrow());
    // With the relay pulsing (the 8th event is the heartbeat at 2 s, the pulse lasts from
    // 0.26 s to 3.26 s): it drops at once.
    let mut rig = Rig::new(40, vec![face(40.0)]);
    rig.output_fails_after = Some(7);
    let run = rig.run(&[request(41)]);
    assert_fault_exit(&run, FaultCode::INTERNAL);
    assert!(run.relay.ever_high());
    assert_eq!(run.relay.last(), Some(false));
}

#[test]
fn a_camera_that_reopens_but_keeps_failing_backs_off_and_stays_faulted() {
    let mut rig = Rig::new(3, vec![face(40.0)]);
    rig.settings.max_bad_frames = 2;
    // 60 faults' worth of bad frames; every reopen succeeds.
    rig.steps.extend([Step::Bad; 120]);
    let run = rig.run(&[request(50)]);
    assert!(!run.relay.ever_high());
    let fault_times: Vec<u64> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Fault { t_ms, code, .. } if *code == FaultCode::CAMERA.0 => Some(*t_ms),
            _ => None,
        })
        .collect();
    assert_eq!(fault_times.len(), 60);
    // The wait before each retry doubles up to the ceiling (8 s) instead of starting over.
    let gaps: Vec<u64> = fault_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] >= g[0]), "{gaps:?}");
    assert!(gaps.last().is_some_and(|&g| g >= 8_000), "{gaps:?}");
    // The host hears at most one camera FAULT a second, and never a recovery.
    let sent = faults(&run.host)
        .iter()
        .filter(|c| **c == FaultCode::CAMERA)
        .count();
    assert!(
        sent < fault_times.len(),
        "{sent} FAULTs for {} faults",
        fault_times.len()
    );
    assert!(!run
        .events
        .iter()
        .any(|e| matches!(e, Event::Recovered { what: "camera", .. })));
    assert_eq!(decisions(&run.host), vec![(50, Decision::Refer)]);
}

#[test]
fn the_host_may_raise_the_age_but_never_lower_it() {
    // 26 +- 2: ALLOW at the board's 18/25, not at 21/28 (REFER), refused below 18.
    let adult = Outcome::Face {
        age: 28.0,
        sigma: 2.0,
        x: 100.0,
    };
    let ask = |id, required_age| Message::Request { id, required_age };
    let run = Rig::new(20, vec![adult]).run(&[ask(60, 0)]);
    assert_eq!(decisions(&run.host), vec![(60, Decision::Allow)]);
    let run = Rig::new(20, vec![adult]).run(&[ask(61, 21)]);
    assert_eq!(decisions(&run.host), vec![(61, Decision::Refer)]);
    for low in [1, 10, 17] {
        let run = Rig::new(20, vec![adult]).run(&[ask(62, low)]);
        assert_eq!(
            decisions(&run.host),
            vec![(62, Decision::Refer)],
            "age {low}"
        );
        assert!(faults(&run.host).contains(&FaultCode::REQUEST), "age {low}");
        assert!(!run.relay.ever_high(), "age {low}");
    }
    // An impossible age (no policy takes 200) is refused the same way.
    let run = Rig::new(20, vec![adult]).run(&[ask(63, 200)]);
    assert_eq!(decisions(&run.host), vec![(63, Decision::Refer)]);
    assert!(faults(&run.host).contains(&FaultCode::REQUEST));
    // A floor below the legal age lets the host ask for 16.
    let mut rig = Rig::new(20, vec![adult]);
    rig.policy = rig.policy.with_min_request_age(16.0).expect("a floor");
    let run = rig.run(&[ask(64, 16)]);
    assert_eq!(decisions(&run.host), vec![(64, Decision::Allow)]);
}

#[test]
fn another_face_beside_the_adult_refers_with_its_reason() {
    let run = Rig::new(
        20,
        vec![Outcome::Crowd {
            age: 40.0,
            other_width: 90.0,
        }],
    )
    .run(&[request(70)]);
    assert_eq!(decisions(&run.host), vec![(70, Decision::Refer)]);
    assert!(!run.relay.ever_high());
    assert!(run.events.iter().any(|e| matches!(
        e,
        Event::Decision {
            reason: Some(agegate::decide::ReferReason::OtherFaces),
            ..
        }
    )));
    // A small face far behind (20 px) does not count.
    let run = Rig::new(
        20,
        vec![Outcome::Crowd {
            age: 40.0,
            other_width: 20.0,
        }],
    )
    .run(&[request(71)]);
    assert_eq!(decisions(&run.host), vec![(71, Decision::Allow)]);
}

#[test]
fn a_request_during_model_errors_is_answered_as_a_model_fault() {
    let link = FakeLink::default();
    let wire = link.clone();
    let mut rig = Rig::new(20, vec![Outcome::Error]);
    rig.settings.session.trigger = Trigger::Face;
    rig.settings.max_model_errors = 10;
    rig.on_frame = Some(Box::new(move |i| {
        if i == 3 {
            wire.send(request(80));
        }
    }));
    let run = rig.run_with(link);
    assert_eq!(decisions(&run.host), vec![(80, Decision::Refer)]);
    let codes = faults(&run.host);
    assert!(codes.contains(&FaultCode::MODEL), "{codes:?}");
    assert!(!codes.contains(&FaultCode::CAMERA), "{codes:?}");
}

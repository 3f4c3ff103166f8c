//! The daemon: camera -> face -> age -> decision -> relay, LEDs and serial, one loop.
//!
//! Each turn of [`Daemon::step`] reads the host line, checks the model files, takes one
//! frame, runs the pipeline when a decision is being made, and drives the gate. Every
//! piece of hardware is behind a trait ([`FrameSource`], [`HostLink`], the gate's
//! [`crate::actuate::OutputLine`]s) and time comes from a [`Clock`], so the whole loop
//! runs in tests on fakes, recordings and simulated time.
//!
//! **Fail closed.** The relay is energised only by an ALLOW of a complete decision
//! window, for the board's pulse. On every fault the gate shows FAULT (relay off), the
//! host gets a FAULT message and a pending REQUEST is answered REFER (ask for ID):
//! - camera lost or too many bad frames: fault, reopen with backoff, recover;
//! - an inference error: fault, the pending REQUEST is answered REFER; after
//!   `max_model_errors` in a row the daemon exits for systemd to restart it;
//! - a model file changed or vanished on disk: fault and exit (restart loads and checks
//!   the new file, or fails to start: gate closed either way);
//! - the serial line lost: relay off, pending REQUEST dropped (the host cannot be told
//!   until the line is back; then it gets FAULT serial), reopen with backoff;
//! - a panic in a pipeline stage: caught, fault, exit;
//! - a GPIO write error: relay driven off, fault, exit;
//! - a stop signal (SIGTERM, SIGINT, SIGHUP and every other catchable one that would end
//!   the process, [`supervise::STOP_SIGNALS`]): FAULT shutdown, pending REQUEST answered
//!   REFER, gate closed, clean exit; a second signal skips the messages;
//! - the event output (stdout) closed: a fault like the others, exit for a restart.
//!
//! A camera that keeps failing is retried with a backoff that keeps doubling until frames
//! flow again for a while, and the host hears at most one FAULT per code per second.
//!
//! **Two clocks.** Decision windows and the relay pulse run on the frame clock (a
//! recording's own timestamps, so a replay is deterministic); the serial line's timers
//! (line idle, reopen backoff) and heartbeats run on the wall clock whatever the frame
//! source, so a host talking to a board that replays a recording is timed as a host
//! talking to a camera board.
//!
//! **Privacy.** Frames live in one reused buffer and never reach the disk; the audit log
//! records decisions, age band, sigma and timings, never images, crops or embeddings.
//!
//! **No per-frame allocation** in this loop after warm-up: the frame, the serial buffers
//! and the inbox are reused (the pipeline's own tensors are tract's business).

pub mod clock;
pub mod supervise;

use std::panic::{catch_unwind, AssertUnwindSafe};

use image::RgbImage;

use crate::actuate::{Gate, Indication, PinChange};
use crate::capture::{CaptureError, FrameSource};
use crate::config::{DaemonSettings, Trigger};
use crate::decide::{Decision, Policy, ReferReason};
use crate::detect::{main_face, BBox};
use crate::engine::ModelError;
use crate::estimate::AgeEstimate;
use crate::pipeline::Pipeline;
use crate::serial::link::{HostLink, LinkError};
use crate::serial::{AgeBand, Decoder, DeviceState, FaultCode, Message};
use crate::session::{Aggregate, Session};

pub use clock::{Clock, MonotonicClock, RecordingClock};
pub use supervise::{
    ModelFiles, ModelGuard, NoWatchdog, StopSignal, SystemdWatchdog, Watchdog, STOP_SIGNALS,
};

/// Most other faces a frame reports (the rest are not needed to know there are others).
pub const MAX_OTHER_FACES: usize = 8;

/// What one frame holds: the main face and its estimate (if any), and the boxes of the
/// other faces (not estimated).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameFaces {
    pub main: Option<(BBox, AgeEstimate)>,
    pub others: heapless::Vec<BBox, MAX_OTHER_FACES>,
}

/// The faces of a frame, the main one estimated.
pub trait FaceEstimator {
    fn faces(&self, frame: &RgbImage) -> Result<FrameFaces, ModelError>;
}

impl FaceEstimator for Pipeline {
    fn faces(&self, frame: &RgbImage) -> Result<FrameFaces, ModelError> {
        let faces = self.detector.detect(frame)?;
        let Some(i) = main_face(&faces, frame.width(), frame.height()) else {
            return Ok(FrameFaces::default());
        };
        let face = &faces[i];
        let others = faces
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, f)| f.bbox)
            .take(MAX_OTHER_FACES)
            .collect();
        Ok(FrameFaces {
            main: Some((face.bbox, self.estimate_face(frame, face)?)),
            others,
        })
    }
}

/// Something the daemon did, for the audit log and `agegate run`'s output. Times are the
/// daemon clock's milliseconds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Decision {
        t_ms: u64,
        id: u16,
        decision: Decision,
        age_band: &'static str,
        sigma: f32,
        frames: usize,
        /// From the start of the window (REQUEST or first face) to the decision.
        decide_ms: u64,
        /// Why a REFER is a REFER (absent for ALLOW and DENY).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<ReferReason>,
    },
    SerialTx {
        t_ms: u64,
        message: String,
        hex: String,
    },
    SerialRx {
        t_ms: u64,
        message: String,
    },
    Pin {
        t_ms: u64,
        #[serde(flatten)]
        change: PinChange,
    },
    Fault {
        t_ms: u64,
        code: u8,
        detail: String,
    },
    Recovered {
        t_ms: u64,
        what: &'static str,
    },
}

/// Why [`Daemon::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// A recording (file source) played to its end.
    RecordingEnded,
    /// First shutdown signal: graceful.
    Stopped,
    /// Second shutdown signal: gate closed, nothing else done.
    Aborted,
    /// A fault that needs a restart (the service manager restarts the daemon).
    Fault { code: FaultCode, message: String },
}

/// The daemon's hardware and helpers.
pub struct Parts {
    pub source: Box<dyn FrameSource>,
    pub estimator: Box<dyn FaceEstimator>,
    /// `None`: no host line (`serial.kind = "none"`); messages are only reported.
    pub link: Option<Box<dyn HostLink>>,
    pub gate: Gate,
    pub models: Box<dyn ModelGuard>,
    pub watchdog: Box<dyn Watchdog>,
    /// The frame clock: decision windows, relay pulses (a recording's timestamps).
    pub clock: Box<dyn Clock>,
    /// The wall clock: the serial line's timers and heartbeats.
    pub wall: Box<dyn Clock>,
    pub stop: StopSignal,
}

/// Where event lines go (`agegate run` prints them as JSON). An error (stdout closed) is a
/// fault: the daemon closes the gate, tells the host and exits.
pub type EventSink = Box<dyn FnMut(Event) -> std::io::Result<()>>;

/// Retry timing for a lost camera or serial line: doubling up to a ceiling.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    delay_ms: u64,
    next_try_ms: u64,
}

impl Backoff {
    fn new(now_ms: u64, first_ms: u64) -> Self {
        Self {
            delay_ms: first_ms,
            next_try_ms: now_ms.saturating_add(first_ms),
        }
    }
    fn failed(&mut self, now_ms: u64, max_ms: u64) {
        self.delay_ms = self.delay_ms.saturating_mul(2).min(max_ms);
        self.next_try_ms = now_ms.saturating_add(self.delay_ms);
    }
}

/// Good frames in a row after which a camera counts as healthy again: its next fault
/// starts the backoff from the first delay instead of doubling on.
const HEALTHY_FRAMES: u32 = 30;

/// At most one FAULT message per fault code in this time (frame clock): a flapping camera
/// must not flood the host line.
const FAULT_REPORT_MS: u64 = 1_000;

/// One decision window in progress.
struct Pending {
    id: u16,
    session: Session,
    started_ms: u64,
}

/// Counters for the log line at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DaemonStats {
    pub frames: u64,
    pub bad_frames: u64,
    pub inferences: u64,
    pub decisions: u64,
    pub faults: u64,
}

pub struct Daemon {
    parts: Parts,
    policy: Policy,
    settings: DaemonSettings,
    events: EventSink,
    /// The event output failed; the next step faults and exits.
    output_error: Option<String>,
    frame: RgbImage,
    decoder: Decoder,
    rx: [u8; 64],
    inbox: Vec<Message>,
    last_rx_ms: u64,
    pending: Option<Pending>,
    /// Face trigger: the box of the person last decided and when it was last seen, so
    /// the same person standing there does not start decision after decision.
    decided_face: Option<(BBox, u64)>,
    /// The REQUEST id of the last decision, which a CANCEL may still void.
    last_decided: Option<u16>,
    next_face_id: u16,
    camera_fault: Option<Backoff>,
    /// The delay the next camera fault starts its backoff with: doubled by each fault
    /// that comes before the camera was healthy again.
    camera_delay_ms: u64,
    /// Reopened after a fault, no good frame yet: the fault still holds the gate.
    camera_reopened: bool,
    good_frames_in_row: u32,
    /// When each fault code was last sent to the host (frame clock), and how many were
    /// held back since.
    fault_sent: heapless::LinearMap<u8, u64, 16>,
    faults_held_back: u32,
    link_fault: Option<Backoff>,
    bad_frames_in_row: u32,
    model_errors_in_row: u32,
    next_heartbeat_ms: u64,
    next_model_check_ms: u64,
    started_ms: u64,
    ready: bool,
    stats: DaemonStats,
    /// Set by `next_frame` when a recording has played to its end.
    recording_ended: Option<Exit>,
    /// A GPIO write failed; the next `poll_gate` faults and exits.
    gpio_error: Option<String>,
    /// Stop after this many frames (soak tests, memory measurements).
    frame_limit: Option<u64>,
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(s, "{sep}{b:02X}");
    }
    s
}

/// The band's name as `agegate eval` reports it (`eval::BANDS` is in `AgeBand` order).
fn band_name(band: AgeBand) -> &'static str {
    crate::eval::BANDS
        .get(band as usize)
        .map_or("?", |(name, _, _)| name)
}

/// Standard normal CDF (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
fn normal_cdf(z: f32) -> f32 {
    let x = f64::from(z) / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    let erf = if x >= 0.0 { erf } else { -erf };
    (0.5 * (1.0 + erf)) as f32
}

/// DECISION's confidence, percent: for ALLOW the probability (under the aggregate's
/// normal) that the person is at least the challenge age, for DENY that they are under
/// the legal age; REFER makes no claim and reports 0.
pub fn confidence(decision: Decision, agg: &Aggregate, policy: &Policy) -> u8 {
    let sigma = agg.sigma.max(0.1);
    let p = match decision {
        Decision::Allow => normal_cdf((agg.age - policy.challenge_age()) / sigma),
        Decision::Deny => normal_cdf((policy.legal_age() - agg.age) / sigma),
        Decision::Refer => 0.0,
    };
    (p * 100.0).round().clamp(0.0, 100.0) as u8
}

impl Daemon {
    pub fn new(parts: Parts, policy: Policy, settings: DaemonSettings, events: EventSink) -> Self {
        let now = parts.clock.now_ms();
        let wall_now = parts.wall.now_ms();
        Self {
            parts,
            policy,
            events,
            output_error: None,
            frame: RgbImage::new(1, 1),
            decoder: Decoder::new(),
            rx: [0; 64],
            inbox: Vec::with_capacity(16),
            last_rx_ms: wall_now,
            pending: None,
            decided_face: None,
            last_decided: None,
            next_face_id: 1,
            camera_fault: None,
            camera_delay_ms: settings.reopen_backoff_ms,
            camera_reopened: false,
            good_frames_in_row: 0,
            fault_sent: heapless::LinearMap::new(),
            faults_held_back: 0,
            link_fault: None,
            bad_frames_in_row: 0,
            model_errors_in_row: 0,
            next_heartbeat_ms: wall_now,
            next_model_check_ms: now.saturating_add(settings.model_check_ms),
            started_ms: now,
            ready: false,
            stats: DaemonStats::default(),
            recording_ended: None,
            gpio_error: None,
            frame_limit: None,
            settings,
        }
    }

    pub fn stats(&self) -> DaemonStats {
        self.stats
    }

    /// Ends the run (as a recording's end would) after `frames` frames.
    pub fn set_frame_limit(&mut self, frames: u64) {
        self.frame_limit = Some(frames);
    }

    /// Runs until a recording ends, a signal stops it or a fault needs a restart. The gate
    /// is closed whichever way it ends.
    pub fn run(&mut self) -> Exit {
        let exit = loop {
            if let Some(exit) = self.step() {
                break exit;
            }
        };
        self.finish(&exit);
        exit
    }

    /// One turn of the loop; `Some` when the daemon must stop.
    pub fn step(&mut self) -> Option<Exit> {
        let now = self.parts.clock.now_ms();
        // A closed output first: the signal a closed pipe raises (SIGPIPE) must not turn
        // the fault into a clean stop.
        if let Some(exit) = self.check_output(now) {
            return Some(exit);
        }
        match self.parts.stop.count() {
            0 => {}
            1 => return Some(Exit::Stopped),
            _ => return Some(Exit::Aborted),
        }
        self.parts.watchdog.alive(now);
        self.service_link();
        if let Some(exit) = self.check_models(now) {
            return Some(exit);
        }
        if let Some(exit) = self.poll_gate(now) {
            return Some(exit);
        }
        self.heartbeat(now);
        if !self.next_frame(now) {
            return self.recording_ended.take();
        }
        let now = self.parts.clock.now_ms();
        let exit = self.process_frame(now);
        self.report_pins(now);
        exit
    }

    fn check_output(&mut self, now: u64) -> Option<Exit> {
        let error = self.output_error.clone()?;
        let message = format!("event output closed: {error}");
        self.fault(now, FaultCode::INTERNAL, &message);
        Some(Exit::Fault {
            code: FaultCode::INTERNAL,
            message,
        })
    }

    /// Reads one frame into the buffer; `false` when there is none to process (fault,
    /// bad frame, end of recording: then `recording_ended` is set).
    fn next_frame(&mut self, now: u64) -> bool {
        if let Some(backoff) = self.camera_fault {
            if now < backoff.next_try_ms {
                self.parts
                    .clock
                    .sleep_ms((backoff.next_try_ms - now).min(100));
                return false;
            }
            match self.parts.source.reopen() {
                Ok(()) => {
                    // The fault holds until a good frame comes: a source that reopens
                    // fine and fails again never shows the gate ready.
                    tracing::info!(source = self.parts.source.name(), "camera reopened");
                    self.camera_delay_ms = backoff
                        .delay_ms
                        .saturating_mul(2)
                        .min(self.settings.max_backoff_ms);
                    self.camera_fault = None;
                    self.camera_reopened = true;
                    self.bad_frames_in_row = 0;
                }
                Err(e) => {
                    tracing::warn!("camera still lost: {e}");
                    if let Some(b) = self.camera_fault.as_mut() {
                        b.failed(now, self.settings.max_backoff_ms);
                    }
                    return false;
                }
            }
        }
        if self
            .frame_limit
            .is_some_and(|limit| self.stats.frames >= limit)
        {
            self.recording_ended = Some(Exit::RecordingEnded);
            return false;
        }
        match self.parts.source.next_frame(&mut self.frame) {
            Ok(Some(meta)) => {
                self.parts.clock.observe_frame(&meta);
                self.stats.frames += 1;
                self.bad_frames_in_row = 0;
                self.good_frames_in_row = self.good_frames_in_row.saturating_add(1);
                if self.good_frames_in_row >= HEALTHY_FRAMES {
                    self.camera_delay_ms = self.settings.reopen_backoff_ms;
                }
                if std::mem::take(&mut self.camera_reopened) {
                    tracing::info!(source = self.parts.source.name(), "camera back");
                    let now = self.parts.clock.now_ms();
                    self.emit(Event::Recovered {
                        t_ms: now,
                        what: "camera",
                    });
                    self.show(Indication::Idle, now);
                }
                if !self.ready {
                    self.ready = true;
                    self.parts.watchdog.ready();
                    tracing::info!(
                        ms = self.parts.clock.now_ms().saturating_sub(self.started_ms),
                        "first frame: ready"
                    );
                }
                true
            }
            Ok(None) => {
                self.recording_ended = Some(Exit::RecordingEnded);
                false
            }
            Err(e @ CaptureError::BadFrame { .. }) => {
                self.stats.bad_frames += 1;
                self.bad_frames_in_row += 1;
                self.good_frames_in_row = 0;
                tracing::warn!("{e}");
                if self.bad_frames_in_row >= self.settings.max_bad_frames {
                    let detail = format!("{} bad frames in a row", self.bad_frames_in_row);
                    self.camera_lost(now, &detail);
                }
                false
            }
            Err(e @ CaptureError::Lost { .. }) => {
                self.camera_lost(now, &e.to_string());
                false
            }
        }
    }

    fn camera_lost(&mut self, now: u64, detail: &str) {
        tracing::error!("camera fault: {detail}");
        // A fault before the camera was healthy again continues the backoff where the
        // last one stopped.
        let delay = if self.good_frames_in_row >= HEALTHY_FRAMES {
            self.settings.reopen_backoff_ms
        } else {
            self.camera_delay_ms
        };
        self.camera_fault = Some(Backoff::new(now, delay));
        self.camera_reopened = false;
        self.good_frames_in_row = 0;
        self.fault(now, FaultCode::CAMERA, detail);
    }

    fn process_frame(&mut self, now: u64) -> Option<Exit> {
        let watching = self.pending.is_some() || self.settings.trigger == Trigger::Face;
        if watching {
            self.stats.inferences += 1;
            let estimator = &self.parts.estimator;
            let frame = &self.frame;
            match catch_unwind(AssertUnwindSafe(|| estimator.faces(frame))) {
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".into());
                    let message = format!("panic in a pipeline stage: {what}");
                    self.fault(now, FaultCode::INTERNAL, &message);
                    return Some(Exit::Fault {
                        code: FaultCode::INTERNAL,
                        message,
                    });
                }
                Ok(Err(e)) => {
                    self.model_errors_in_row += 1;
                    let message = e.to_string();
                    self.fault(now, FaultCode::MODEL, &message);
                    if self.model_errors_in_row >= self.settings.max_model_errors {
                        return Some(Exit::Fault {
                            code: FaultCode::MODEL,
                            message,
                        });
                    }
                    return None;
                }
                Ok(Ok(faces)) => {
                    if self.model_errors_in_row > 0 {
                        self.model_errors_in_row = 0;
                        self.emit(Event::Recovered {
                            t_ms: now,
                            what: "model",
                        });
                        self.show(Indication::Idle, now);
                    }
                    self.observe(now, faces);
                }
            }
        }
        self.poll_session(now);
        None
    }

    fn observe(&mut self, now: u64, faces: FrameFaces) {
        let iou_threshold = self.settings.session.iou_threshold;
        let lost_ms = self.settings.session.lost_face_ms;
        let FrameFaces { main: face, others } = faces;
        if let Some((bbox, _)) = &face {
            // The decided person is still there as long as their box keeps overlapping.
            let same = self.decided_face.is_some_and(|(b, seen)| {
                b.iou(bbox) >= iou_threshold && now.saturating_sub(seen) <= lost_ms
            });
            if same {
                self.decided_face = Some((*bbox, now));
            } else if self.pending.is_none() && self.settings.trigger == Trigger::Face {
                self.decided_face = None;
                let id = self.next_face_id;
                self.next_face_id = self.next_face_id.wrapping_add(1).max(1);
                self.start_session(now, id, self.policy);
            }
        }
        if let Some(p) = self.pending.as_mut() {
            p.session.observe_frame(now, face, &others);
        }
    }

    fn start_session(&mut self, now: u64, id: u16, policy: Policy) {
        match Session::new(self.settings.session, policy, now) {
            Ok(session) => {
                tracing::info!(id, "decision window opened");
                self.pending = Some(Pending {
                    id,
                    session,
                    started_ms: now,
                });
            }
            // The settings were validated with the board; should this still fail, the
            // request cannot be decided.
            Err(e) => {
                tracing::error!("session settings: {e}");
                self.answer_refer(now, id, ReferReason::Fault);
            }
        }
    }

    fn poll_session(&mut self, now: u64) {
        let Some(p) = self.pending.as_mut() else {
            return;
        };
        let Some(decision) = p.session.poll(now) else {
            return;
        };
        let aggregate = p.session.aggregate();
        let reason = p.session.refer_reason();
        let (id, started) = (p.id, p.started_ms);
        let policy = *p.session.policy();
        let decided_box = p.session.followed_box();
        self.pending = None;
        self.last_decided = Some(id);
        // Session::poll decides REFER whenever there is no aggregate. Without one (a
        // timeout with no face) there is no band either: the wire carries band 0 with
        // confidence 0, which a REFER tells the host not to read.
        let measured = aggregate
            .as_ref()
            .and_then(|a| Some((AgeBand::from_age(a.age)?, a)));
        let (band, age_band, sigma, frames, confidence) = match measured {
            Some((band, a)) => (
                band,
                band_name(band),
                a.sigma,
                a.frames,
                confidence(decision, a, &policy),
            ),
            None => (AgeBand::Under13, "none", f32::NAN, 0, 0),
        };
        self.stats.decisions += 1;
        // The audit log: band, confidence and sigma, never the estimated age.
        tracing::info!(
            id,
            %decision,
            reason = reason.map_or("", ReferReason::name),
            age_band,
            confidence,
            sigma,
            frames,
            decide_ms = now.saturating_sub(started),
            "decision"
        );
        self.emit(Event::Decision {
            t_ms: now,
            id,
            decision,
            age_band,
            sigma,
            frames,
            decide_ms: now.saturating_sub(started),
            reason,
        });
        if self.output_error.is_some() {
            // The decision could not be recorded: no verdict without its audit record.
            // The next step faults on the closed output.
            self.answer_refer(now, id, ReferReason::Fault);
            return;
        }
        self.send(
            now,
            Message::Decision {
                id,
                decision,
                band,
                confidence,
            },
        );
        if self.settings.trigger == Trigger::Face {
            self.decided_face = decided_box.map(|b| (b, now));
        }
        self.show(Indication::Decision(decision), now);
    }

    /// Answers REQUEST `id` with REFER (fault, shutdown, replaced request).
    fn answer_refer(&mut self, now: u64, id: u16, reason: ReferReason) {
        tracing::info!(id, %reason, "request answered REFER");
        self.send(
            now,
            Message::Decision {
                id,
                decision: Decision::Refer,
                band: AgeBand::Under13,
                confidence: 0,
            },
        );
    }

    /// Every fault: relay off and fault LEDs, FAULT to the host (at most one per code per
    /// [`FAULT_REPORT_MS`]), the pending REQUEST answered REFER.
    fn fault(&mut self, now: u64, code: FaultCode, detail: &str) {
        self.stats.faults += 1;
        self.show(Indication::Fault, now);
        tracing::error!(code = code.0, "fault: {detail}");
        self.emit(Event::Fault {
            t_ms: now,
            code: code.0,
            detail: detail.to_string(),
        });
        self.report_fault(now, code, detail);
        if let Some(p) = self.pending.take() {
            self.answer_refer(now, p.id, ReferReason::Fault);
        }
        self.decided_face = None;
    }

    /// Sends FAULT `code` unless the same code went out less than [`FAULT_REPORT_MS`] ago.
    fn report_fault(&mut self, now: u64, code: FaultCode, detail: &str) {
        let recent = self
            .fault_sent
            .get(&code.0)
            .is_some_and(|&sent| now.saturating_sub(sent) < FAULT_REPORT_MS);
        if recent {
            self.faults_held_back = self.faults_held_back.saturating_add(1);
            return;
        }
        if self.faults_held_back > 0 {
            tracing::warn!(
                held_back = self.faults_held_back,
                "repeated faults not sent to the host"
            );
            self.faults_held_back = 0;
        }
        // A full map (more codes than exist) only means this code is not limited.
        let _ = self.fault_sent.insert(code.0, now);
        self.send(now, Message::fault(code, detail));
    }

    fn show(&mut self, indication: Indication, now: u64) {
        // Once the event output has failed the daemon is faulting: nothing may open.
        let indication = match indication {
            Indication::Decision(Decision::Allow) if self.output_error.is_some() => {
                Indication::Fault
            }
            other => other,
        };
        if let Err(e) = self.parts.gate.show(indication, now) {
            // The gate already drove the relay off; the next poll_gate turns this into
            // an exit.
            tracing::error!("gpio: {e}");
            self.gpio_error = Some(e.to_string());
        }
        self.report_pins(now);
    }

    fn poll_gate(&mut self, now: u64) -> Option<Exit> {
        if let Err(e) = self.parts.gate.poll(now) {
            self.gpio_error = Some(e.to_string());
        }
        self.report_pins(now);
        let message = self.gpio_error.take()?;
        self.fault(now, FaultCode::RELAY, &message);
        Some(Exit::Fault {
            code: FaultCode::RELAY,
            message,
        })
    }

    fn report_pins(&mut self, now: u64) {
        let changes: heapless::Vec<PinChange, 8> =
            self.parts.gate.drain_changes().take(8).collect();
        for change in changes {
            tracing::info!(line = ?change.line, active = change.active, "gpio");
            self.emit(Event::Pin { t_ms: now, change });
        }
    }

    fn check_models(&mut self, now: u64) -> Option<Exit> {
        if now < self.next_model_check_ms {
            return None;
        }
        self.next_model_check_ms = now.saturating_add(self.settings.model_check_ms);
        let message = self.parts.models.check(now).err()?;
        self.fault(now, FaultCode::MODEL, &message);
        Some(Exit::Fault {
            code: FaultCode::MODEL,
            message,
        })
    }

    /// HEARTBEAT every `heartbeat_ms` of wall time; `now` (frame clock) dates the event.
    fn heartbeat(&mut self, now: u64) {
        let wall = self.parts.wall.now_ms();
        if wall < self.next_heartbeat_ms {
            return;
        }
        self.next_heartbeat_ms = wall.saturating_add(self.settings.heartbeat_ms);
        let state = if self.camera_fault.is_some()
            || self.camera_reopened
            || self.model_errors_in_row > 0
        {
            DeviceState::Faulted
        } else if !self.ready {
            DeviceState::Starting
        } else if self.pending.is_some() {
            DeviceState::Deciding
        } else {
            DeviceState::Ready
        };
        let uptime_s =
            u32::try_from(now.saturating_sub(self.started_ms) / 1000).unwrap_or(u32::MAX);
        self.send(now, Message::Heartbeat { uptime_s, state });
    }

    /// Encodes and sends one message; it is reported whether or not a line is attached.
    fn send(&mut self, now: u64, message: Message) {
        let bytes = match message.to_bytes() {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(?message, "cannot encode: {e}");
                return;
            }
        };
        self.emit(Event::SerialTx {
            t_ms: now,
            message: format!("{message:?}"),
            hex: hex(&bytes),
        });
        if self.link_fault.is_some() {
            return;
        }
        let Some(link) = self.parts.link.as_mut() else {
            return;
        };
        if let Err(e) = link.write_frame(&bytes) {
            self.link_lost(now, e);
        }
    }

    fn link_lost(&mut self, now: u64, e: LinkError) {
        tracing::error!("{e}");
        let wall = self.parts.wall.now_ms();
        self.link_fault = Some(Backoff::new(wall, self.settings.reopen_backoff_ms));
        self.stats.faults += 1;
        self.show(Indication::Fault, now);
        self.emit(Event::Fault {
            t_ms: now,
            code: FaultCode::SERIAL.0,
            detail: e.to_string(),
        });
        // Nobody can be told about a pending REQUEST; it is dropped, and the host hears
        // FAULT serial when the line is back.
        if let Some(p) = self.pending.take() {
            tracing::warn!(id = p.id, "request dropped with the serial line");
        }
        self.decoder.reset();
    }

    /// Reads the host line and handles its messages; the line's own timers (idle,
    /// reopen backoff) run on the wall clock, events are dated on the frame clock.
    fn service_link(&mut self) {
        let now = self.parts.clock.now_ms();
        let wall = self.parts.wall.now_ms();
        let Some(link) = self.parts.link.as_mut() else {
            return;
        };
        if let Some(backoff) = self.link_fault {
            if wall < backoff.next_try_ms {
                return;
            }
            match link.reopen() {
                Ok(()) => {
                    tracing::info!(line = link.name(), "serial line back");
                    self.link_fault = None;
                    self.emit(Event::Recovered {
                        t_ms: now,
                        what: "serial",
                    });
                    self.send(now, Message::fault(FaultCode::SERIAL, "line restored"));
                    if self.camera_fault.is_none() && !self.camera_reopened {
                        self.show(Indication::Idle, now);
                    }
                }
                Err(e) => {
                    tracing::debug!("serial still lost: {e}");
                    if let Some(b) = self.link_fault.as_mut() {
                        b.failed(wall, self.settings.max_backoff_ms);
                    }
                }
            }
            return;
        }
        let mut inbox = std::mem::take(&mut self.inbox);
        inbox.clear();
        let mut got_bytes = false;
        while let Some(link) = self.parts.link.as_mut() {
            match link.read_available(&mut self.rx) {
                Ok(0) => break,
                Ok(n) => {
                    got_bytes = true;
                    self.decoder
                        .feed(&self.rx[..n.min(self.rx.len())], |m| inbox.push(m));
                }
                Err(e) => {
                    self.inbox = inbox;
                    self.link_lost(now, e);
                    return;
                }
            }
        }
        if got_bytes {
            self.last_rx_ms = wall;
        } else if self.decoder.pending() > 0 && wall.saturating_sub(self.last_rx_ms) > 100 {
            // A frame takes 3 ms at 115200 baud: 100 ms of silence ends any partial one.
            self.decoder.line_idle(|m| inbox.push(m));
        }
        for message in inbox.drain(..) {
            self.handle(now, message);
        }
        self.inbox = inbox;
    }

    fn handle(&mut self, now: u64, message: Message) {
        self.emit(Event::SerialRx {
            t_ms: now,
            message: format!("{message:?}"),
        });
        match message {
            Message::Request { id, required_age } => {
                if let Some(old) = self.pending.take() {
                    tracing::info!(old = old.id, new = id, "request replaced");
                    self.answer_refer(now, old.id, ReferReason::Replaced);
                }
                if self.camera_fault.is_some() || self.camera_reopened {
                    self.send(now, Message::fault(FaultCode::CAMERA, "not ready"));
                    self.answer_refer(now, id, ReferReason::Fault);
                    return;
                }
                if self.model_errors_in_row > 0 {
                    self.send(now, Message::fault(FaultCode::MODEL, "not ready"));
                    self.answer_refer(now, id, ReferReason::Fault);
                    return;
                }
                let floor = self.settings.min_request_age;
                if required_age != 0 && f32::from(required_age) < floor {
                    // The host may raise the board's age, never lower it.
                    tracing::warn!(
                        required_age,
                        floor,
                        "request below the board's floor refused"
                    );
                    let detail = format!("age {required_age}<{floor}");
                    self.send(now, Message::fault(FaultCode::REQUEST, &detail));
                    self.answer_refer(now, id, ReferReason::Refused);
                    return;
                }
                match self.policy_for(required_age) {
                    Some(policy) => {
                        self.show(Indication::Idle, now);
                        self.start_session(now, id, policy);
                    }
                    None => {
                        tracing::warn!(required_age, "request with an impossible age");
                        self.send(now, Message::fault(FaultCode::REQUEST, "impossible age"));
                        self.answer_refer(now, id, ReferReason::Refused);
                    }
                }
            }
            Message::Cancel { id } => {
                if self.pending.as_ref().is_some_and(|p| p.id == id) {
                    self.pending = None;
                    self.show(Indication::Idle, now);
                } else if self.last_decided == Some(id) {
                    // Voided after the verdict (sale cancelled): close the gate now.
                    self.show(Indication::Idle, now);
                }
            }
            Message::Ping { nonce } => self.send(now, Message::Pong { nonce }),
            other => tracing::debug!(?other, "ignored: a device-to-host message from the host"),
        }
    }

    /// The board's policy with the legal age the host asks for (0: the board's), keeping
    /// the board's challenge margin.
    fn policy_for(&self, required_age: u8) -> Option<Policy> {
        if required_age == 0 {
            return Some(self.policy);
        }
        self.policy.with_legal_age(f32::from(required_age)).ok()
    }

    /// Hands an event to the sink; the first failure is kept for [`Self::check_output`]
    /// and later events are dropped (they could not be printed either).
    fn emit(&mut self, event: Event) {
        if self.output_error.is_some() {
            return;
        }
        if let Err(e) = (self.events)(event) {
            self.output_error = Some(e.to_string());
        }
    }

    fn finish(&mut self, exit: &Exit) {
        let now = self.parts.clock.now_ms();
        match exit {
            Exit::Stopped => {
                let signal = self.parts.stop.first().unwrap_or("a stop signal");
                tracing::warn!(signal, "stopping");
                self.send(now, Message::fault(FaultCode::SHUTDOWN, "stopping"));
                if let Some(p) = self.pending.take() {
                    self.answer_refer(now, p.id, ReferReason::Shutdown);
                }
            }
            Exit::RecordingEnded => {
                if let Some(p) = self.pending.take() {
                    self.answer_refer(now, p.id, ReferReason::Timeout);
                }
            }
            Exit::Aborted | Exit::Fault { .. } => {}
        }
        if let Err(e) = self.parts.gate.close() {
            tracing::error!("gpio on exit: {e}");
        }
        self.report_pins(now);
        self.parts.watchdog.stopping();
        tracing::info!(?exit, stats = ?self.stats, "daemon stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn band_names_follow_eval_bands_in_wire_order() {
        // band_name indexes eval::BANDS by AgeBand: both must cut at the same ages.
        for (i, (name, lo, _)) in crate::eval::BANDS.iter().enumerate() {
            let band = AgeBand::from_age(*lo).expect("a band");
            assert_eq!(band as usize, i);
            assert_eq!(band_name(band), *name);
        }
    }

    #[test]
    fn confidence_is_the_probability_beyond_the_threshold() {
        let policy = Policy::new(18.0, 25.0, 1.0).expect("policy");
        let agg = |age| Aggregate {
            age,
            sigma: 5.0,
            frames: 5,
        };
        assert_eq!(confidence(Decision::Allow, &agg(25.0), &policy), 50);
        assert_eq!(confidence(Decision::Allow, &agg(35.0), &policy), 98);
        assert_eq!(confidence(Decision::Deny, &agg(13.0), &policy), 84);
        assert_eq!(confidence(Decision::Refer, &agg(20.0), &policy), 0);
    }
}

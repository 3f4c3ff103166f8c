//! The decision core: the device's state and every rule it follows, with no I/O.
//!
//! The core reads no clock and owns no device, in smoltcp's way: the shell
//! (`daemon/mod.rs`) hands it one [`Input`] at a time with the time ([`Now`]) and carries
//! out the [`Action`]s it returns on the gate, the host line, the event log and the
//! camera. Its state is one explicit [`State`], changed by one `match` per input, in
//! zincati's way, so every state x input pair is a case to read and to test
//! (`tests/daemon_core.rs`).
//!
//! **Fail closed.** The relay is energised only by [`Action::Indicate`] of an ALLOW, and
//! only in the same batch as the ALLOW's decision event. Every fault input returns the
//! fault indication (relay off) and a FAULT for the host (at most one per code per
//! second, the rest held back and marked so in the event), answers an open REQUEST REFER,
//! and either holds the gate in [`State::Faulted`] until the cause clears or ends the run
//! ([`Action::Exit`]). Every REQUEST is answered exactly once, unless the host line itself
//! was lost while it was open (nothing can be sent; the host hears FAULT serial "line
//! restored" when it is back) or a second stop signal cut the exit short.
//!
//! **Two clocks.** `Now::frame_ms` runs the decision windows and the relay pulse (a
//! recording's own timestamps, so a replay is deterministic); `Now::wall_ms` runs what a
//! host or the machine times: heartbeats, the FAULT rate limit and the camera's and the
//! serial line's backoff. On a recording's clock, which moves only with frames and waits,
//! a source that keeps failing would retry and report as fast as the CPU allows.

mod faults;
mod types;
mod window;

use heapless::LinearMap;

pub use types::{
    Action, Backoff, CoreStats, Decided, Exit, Faults, FrameFaces, Input, Now, Origin, State,
    Window, MAX_OTHER_FACES,
};

use crate::actuate::Indication;
use crate::daemon::events::Event;
use crate::daemon::settings::DaemonSettings;
use crate::decide::Policy;
use crate::domain::ReferReason;
use crate::mdb::VmcRequest;
use crate::serial::{FaultCode, Message};
use crate::session::Trigger;

/// Good frames in a row after which a camera counts as healthy again: its next fault
/// starts the backoff from the first delay instead of doubling on.
pub(crate) const HEALTHY_FRAMES: u32 = 30;

/// At most one FAULT message per fault code in this time (frame clock): a flapping camera
/// must not flood the host line.
pub(crate) const FAULT_REPORT_MS: u64 = 1_000;

/// Longest single wait while the camera is in backoff, so signals and the host line are
/// still served.
const MAX_WAIT_MS: u64 = 100;

/// The decision core.
pub struct Core {
    state: State,
    policy: Policy,
    settings: DaemonSettings,
    /// A first frame has come (READY sent to the service manager).
    started: bool,
    /// The delay the next camera fault starts its backoff with: doubled by each fault
    /// that comes before the camera was healthy again.
    camera_delay_ms: u64,
    good_frames_in_row: u32,
    bad_frames_in_row: u32,
    next_face_id: u16,
    next_heartbeat_wall_ms: u64,
    next_model_check_ms: u64,
    started_wall_ms: u64,
    /// When each fault code last went to the host (frame clock).
    fault_sent: LinearMap<u8, u64, 16>,
    /// A policy offered and not yet applied (a window was open).
    offered_policy: Option<Policy>,
    stats: CoreStats,
}

/// The actions of one input.
type Out = Vec<Action>;

impl Core {
    pub fn new(policy: Policy, settings: DaemonSettings, now: Now) -> Self {
        Self {
            state: State::Starting,
            policy,
            camera_delay_ms: settings.reopen_backoff_ms,
            good_frames_in_row: 0,
            bad_frames_in_row: 0,
            next_face_id: 1,
            started: false,
            next_heartbeat_wall_ms: now.wall_ms,
            next_model_check_ms: now.frame_ms.saturating_add(settings.model_check_ms),
            started_wall_ms: now.wall_ms,
            fault_sent: LinearMap::new(),
            offered_policy: None,
            stats: CoreStats::default(),
            settings,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn stats(&self) -> CoreStats {
        self.stats
    }

    /// Whether the shell should read a frame now (not while the camera waits out a
    /// backoff).
    pub fn wants_frame(&self) -> bool {
        match &self.state {
            State::Stopping => false,
            State::Faulted(f) => f.camera.is_none_or(|c| c.reopened),
            _ => true,
        }
    }

    /// Whether the last frame should go through the pipeline: a window is open, a face
    /// may open one, or the estimator must show it works again.
    pub fn wants_faces(&self) -> bool {
        let face_trigger = self.settings.session.trigger == Trigger::Face;
        match &self.state {
            State::Deciding(_) => true,
            State::Ready | State::CoolingDown(_) => face_trigger,
            State::Faulted(f) => f.model_errors > 0 && f.camera.is_none() && f.link.is_none(),
            State::Starting | State::Stopping => false,
        }
    }

    /// Whether the host line is up (the shell reads and writes it only then).
    pub fn link_up(&self) -> bool {
        !matches!(&self.state, State::Faulted(f) if f.link.is_some())
    }

    /// Handles one input, appending the actions to `out`.
    pub fn handle(&mut self, now: Now, input: Input, out: &mut Out) {
        if matches!(self.state, State::Stopping) {
            // The exit is under way; a late input changes nothing.
            return;
        }
        self.input(now, input, out);
        self.apply_offered_policy(now, out);
    }

    /// A policy offered (telemetry's `policy/set`, validated there) replaces the board's
    /// between decisions: at once when no window is open, else once it has closed (an open
    /// window keeps the policy it opened with).
    fn apply_offered_policy(&mut self, now: Now, out: &mut Out) {
        if matches!(self.state, State::Deciding(_) | State::Stopping) {
            return;
        }
        if let Some(policy) = self.offered_policy.take() {
            tracing::warn!(?policy, "policy replaced (telemetry policy/set)");
            self.policy = policy;
            out.push(Action::Emit(Event::PolicyApplied { t_ms: now.frame_ms }));
        }
    }

    fn input(&mut self, now: Now, input: Input, out: &mut Out) {
        match input {
            Input::Tick => self.tick(now, out),
            Input::Frame => self.frame(now, out),
            Input::Faces(faces) => self.faces(now, faces, out),
            Input::ModelError(message) => {
                let errors = self.faults_mut().map_or(1, |f| f.model_errors + 1);
                if errors >= self.settings.max_model_errors {
                    self.fatal(now, FaultCode::MODEL, message, out);
                } else {
                    self.fault(now, FaultCode::MODEL, &message, out);
                    self.hold(|f| f.model_errors = errors);
                }
            }
            Input::StagePanic(what) => self.fatal(
                now,
                FaultCode::INTERNAL,
                format!("panic in a pipeline stage: {what}"),
                out,
            ),
            Input::BadFrame(message) => {
                self.good_frames_in_row = 0;
                self.bad_frames_in_row = self.bad_frames_in_row.saturating_add(1);
                tracing::warn!("{message}");
                if self.bad_frames_in_row >= self.settings.max_bad_frames {
                    let detail = format!("{} bad frames in a row", self.bad_frames_in_row);
                    self.camera_lost(now, &detail, out);
                }
            }
            Input::CameraLost(message) => self.camera_lost(now, &message, out),
            Input::CameraReopened => {
                let max = self.settings.max_backoff_ms;
                if let Some(camera) = self.faults_mut().and_then(|f| f.camera.as_mut()) {
                    // The fault holds until a good frame comes: a source that reopens
                    // fine and fails again never shows the gate ready.
                    camera.reopened = true;
                    self.camera_delay_ms = camera.backoff.delay_ms.saturating_mul(2).min(max);
                    tracing::info!("camera reopened");
                }
                self.bad_frames_in_row = 0;
            }
            Input::CameraStillLost(message) => {
                tracing::warn!("camera still lost: {message}");
                let max = self.settings.max_backoff_ms;
                if let Some(camera) = self.faults_mut().and_then(|f| f.camera.as_mut()) {
                    camera.backoff.failed(now.wall_ms, max);
                }
            }
            Input::RecordingEnded => {
                if let State::Deciding(w) = &self.state {
                    let (origin, id) = (w.origin, w.id);
                    self.answer_refer(now, origin, id, ReferReason::Shutdown, out);
                }
                self.exit(Exit::RecordingEnded, out);
            }
            Input::Host(message) => self.host(now, message, out),
            Input::Vmc(request) => self.vmc(now, request, out),
            // A newer offer replaces one not yet applied.
            Input::PolicyOffered(policy) => self.offered_policy = Some(policy),
            Input::VmcLinkEnded(message) => self.fatal(
                now,
                FaultCode::INTERNAL,
                format!("MDB link ended: {message}"),
                out,
            ),
            Input::LinkLost(message) => self.link_lost(now, &message, out),
            Input::LinkRestored => {
                if self.faults_mut().is_none_or(|f| f.link.is_none()) {
                    // Only an answer to ReopenLink means anything.
                    return;
                }
                tracing::info!("serial line back");
                self.hold(|f| f.link = None);
                out.push(Action::Emit(Event::Recovered {
                    t_ms: now.frame_ms,
                    what: "serial",
                }));
                out.push(Action::Send(Message::fault(
                    FaultCode::SERIAL,
                    "line restored",
                )));
                self.clear_if_healthy(out);
            }
            Input::LinkStillLost(message) => {
                tracing::debug!("serial still lost: {message}");
                let max = self.settings.max_backoff_ms;
                if let Some(link) = self.faults_mut().and_then(|f| f.link.as_mut()) {
                    link.failed(now.wall_ms, max);
                }
            }
            Input::ModelFileChanged(message) => self.fatal(now, FaultCode::MODEL, message, out),
            Input::GpioError(message) => self.fatal(now, FaultCode::RELAY, message, out),
            Input::OutputClosed(message) => self.fatal(
                now,
                FaultCode::INTERNAL,
                format!("event output closed: {message}"),
                out,
            ),
            Input::Stop { signal } => {
                tracing::warn!(signal, "stopping");
                out.push(Action::Send(Message::fault(
                    FaultCode::SHUTDOWN,
                    "stopping",
                )));
                if let State::Deciding(w) = &self.state {
                    let (origin, id) = (w.origin, w.id);
                    self.answer_refer(now, origin, id, ReferReason::Shutdown, out);
                }
                self.exit(Exit::Stopped, out);
            }
            Input::Abort => self.exit(Exit::Aborted, out),
        }
    }

    fn tick(&mut self, now: Now, out: &mut Out) {
        if now.wall_ms >= self.next_heartbeat_wall_ms {
            self.next_heartbeat_wall_ms = now.wall_ms.saturating_add(self.settings.heartbeat_ms);
            let uptime_s = u32::try_from(now.wall_ms.saturating_sub(self.started_wall_ms) / 1000)
                .unwrap_or(u32::MAX);
            out.push(Action::Send(Message::Heartbeat {
                uptime_s,
                state: self.device_state(),
            }));
        }
        if now.frame_ms >= self.next_model_check_ms {
            self.next_model_check_ms = now.frame_ms.saturating_add(self.settings.model_check_ms);
            out.push(Action::CheckModels);
        }
        let lost_face_ms = self.settings.session.lost_face_ms;
        match &mut self.state {
            State::Deciding(_) => self.poll_window(now, out),
            State::CoolingDown(Decided {
                face: Some((_, seen)),
                ..
            }) if now.frame_ms.saturating_sub(*seen) > lost_face_ms => {
                // The person decided has gone: the next face is someone else.
                self.state = State::Ready;
            }
            State::Faulted(f) => {
                if let Some(camera) = f.camera.filter(|c| !c.reopened) {
                    let next = camera.backoff.next_try_ms;
                    if now.wall_ms >= next {
                        out.push(Action::ReopenCamera);
                    } else {
                        out.push(Action::Wait {
                            ms: (next - now.wall_ms).min(MAX_WAIT_MS),
                        });
                    }
                }
                if f.link.is_some_and(|l| now.wall_ms >= l.next_try_ms) {
                    out.push(Action::ReopenLink);
                }
            }
            _ => {}
        }
    }

    fn frame(&mut self, now: Now, out: &mut Out) {
        if !self.started {
            self.started = true;
            tracing::info!("first frame: ready");
            out.push(Action::Ready);
            if matches!(self.state, State::Starting) {
                self.state = State::Ready;
            }
        }
        self.bad_frames_in_row = 0;
        self.good_frames_in_row = self.good_frames_in_row.saturating_add(1);
        if self.good_frames_in_row >= HEALTHY_FRAMES {
            self.camera_delay_ms = self.settings.reopen_backoff_ms;
        }
        if self
            .faults_mut()
            .and_then(|f| f.camera)
            .is_some_and(|c| c.reopened)
        {
            tracing::info!("camera back");
            self.hold(|f| f.camera = None);
            out.push(Action::Emit(Event::Recovered {
                t_ms: now.frame_ms,
                what: "camera",
            }));
            self.clear_if_healthy(out);
        }
    }

    fn faces(&mut self, now: Now, faces: FrameFaces, out: &mut Out) {
        if self.faults_mut().is_some_and(|f| f.model_errors > 0) {
            self.hold(|f| f.model_errors = 0);
            out.push(Action::Emit(Event::Recovered {
                t_ms: now.frame_ms,
                what: "model",
            }));
            self.clear_if_healthy(out);
        }
        let settings = self.settings.session;
        let face_trigger = settings.trigger == Trigger::Face;
        let main = faces.main.as_ref().map(|(b, _)| *b);
        match &mut self.state {
            State::Deciding(w) => {
                w.session.observe_faces(now.frame_ms, &faces);
                self.poll_window(now, out);
            }
            State::CoolingDown(Decided {
                face: Some((decided, seen)),
                ..
            }) if main.is_some_and(|b| {
                b.iou(decided) >= settings.iou_threshold
                    && now.frame_ms.saturating_sub(*seen) <= settings.lost_face_ms
            }) =>
            {
                // The decided person is still there as long as their box keeps overlapping.
                if let Some(b) = main {
                    *decided = b;
                    *seen = now.frame_ms;
                }
            }
            State::Ready | State::CoolingDown(_) if face_trigger && main.is_some() => {
                let id = self.next_face_id;
                self.next_face_id = self.next_face_id.wrapping_add(1).max(1);
                self.open_window(now, id, Origin::Face, self.policy, out);
                if let State::Deciding(w) = &mut self.state {
                    w.session.observe_faces(now.frame_ms, &faces);
                }
                self.poll_window(now, out);
            }
            _ => {}
        }
    }

    fn host(&mut self, now: Now, message: Message, out: &mut Out) {
        out.push(Action::Emit(Event::SerialRx {
            t_ms: now.frame_ms,
            message: (&message).into(),
        }));
        match message {
            Message::Request { id, required_age } => {
                self.request(now, Origin::Request, id, required_age, out)
            }
            Message::Cancel { id } => self.void(Origin::Request, id, out),
            Message::Ping { nonce } => out.push(Action::Send(Message::Pong { nonce })),
            other => tracing::debug!(?other, "ignored: a device-to-host message from the host"),
        }
    }

    fn vmc(&mut self, now: Now, request: VmcRequest, out: &mut Out) {
        out.push(Action::Emit(Event::MdbRx {
            t_ms: now.frame_ms,
            request: (&request).into(),
        }));
        match request {
            VmcRequest::Verify {
                session,
                required_age,
            } => self.request(now, Origin::Vmc, session, required_age, out),
            VmcRequest::Abort { session } => self.void(Origin::Vmc, session, out),
        }
    }

    /// A CANCEL, or the VMC's abort: the open window is dropped unanswered, or the verdict
    /// already shown is taken back (the sale was cancelled) and the gate closes.
    fn void(&mut self, origin: Origin, id: u16, out: &mut Out) {
        match &self.state {
            State::Deciding(w)
                if w.id == id && (w.origin == Origin::Vmc) == (origin == Origin::Vmc) =>
            {
                self.state = State::Ready;
                out.push(Action::Indicate(Indication::Idle));
            }
            State::CoolingDown(d)
                if d.id == id && (d.origin == Origin::Vmc) == (origin == Origin::Vmc) =>
            {
                out.push(Action::Indicate(Indication::Idle));
            }
            _ => {}
        }
    }
}

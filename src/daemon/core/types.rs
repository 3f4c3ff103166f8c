//! The core's vocabulary: its inputs, its actions, its state and what the state holds.

use crate::actuate::Indication;
use crate::daemon::events::Event;
use crate::detect::BBox;
use crate::mdb::{VmcAnswer, VmcRequest};
use crate::serial::{FaultCode, Message};
use crate::session::Session;
pub use crate::session::{FrameFaces, MAX_OTHER_FACES};

/// The time of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// The frame clock (a recording's timestamps, or monotonic time for a camera).
    pub frame_ms: u64,
    /// Monotonic wall time.
    pub wall_ms: u64,
}

/// Something the shell saw.
// One input is made and moved per frame; boxing the faces would allocate per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Time passed: heartbeats, window timeouts, backoff retries, model checks.
    Tick,
    /// A good frame arrived (the frame clock is at it).
    Frame,
    /// The faces of the last frame (asked for by [`super::Core::wants_faces`]).
    Faces(FrameFaces),
    /// The estimator failed on the last frame.
    ModelError(String),
    /// A pipeline stage panicked (caught by the shell).
    StagePanic(String),
    /// A frame could not be decoded.
    BadFrame(String),
    /// The camera is gone.
    CameraLost(String),
    /// [`Action::ReopenCamera`] worked.
    CameraReopened,
    /// [`Action::ReopenCamera`] failed.
    CameraStillLost(String),
    /// The recording played to its end (or the frame limit was reached).
    RecordingEnded,
    /// A message from the host.
    Host(Message),
    /// A request from the vending machine's controller (the MDB thread).
    Vmc(VmcRequest),
    /// The MDB thread is gone: the vending machine can no longer be answered.
    VmcLinkEnded(String),
    /// A policy to replace the board's between decisions (telemetry's `policy/set`,
    /// validated and no looser than the board's); applied with an
    /// [`Event::PolicyApplied`].
    PolicyOffered(crate::decide::Policy),
    /// The host line failed.
    LinkLost(String),
    /// [`Action::ReopenLink`] worked.
    LinkRestored,
    /// [`Action::ReopenLink`] failed.
    LinkStillLost(String),
    /// [`Action::CheckModels`] found a model file changed.
    ModelFileChanged(String),
    /// A GPIO write failed (the gate already drove the relay off).
    GpioError(String),
    /// The event output failed (stdout closed).
    OutputClosed(String),
    /// A stop signal: stop gracefully.
    Stop { signal: &'static str },
    /// A second stop signal: stop now, send nothing more.
    Abort,
}

/// Something the shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Show this on the relay and the LEDs.
    Indicate(Indication),
    /// Send this to the host (and report it as a `serial_tx` event).
    Send(Message),
    /// Hand this decision to the MDB thread, for the VMC's next POLL.
    AnswerVmc(VmcAnswer),
    /// Record this event.
    Emit(Event),
    /// Try to get the camera back; answer [`Input::CameraReopened`] or
    /// [`Input::CameraStillLost`].
    ReopenCamera,
    /// Try to get the host line back; answer [`Input::LinkRestored`] or
    /// [`Input::LinkStillLost`].
    ReopenLink,
    /// Forget any partial frame from the host (the line was lost).
    ResetDecoder,
    /// Check the model files; answer [`Input::ModelFileChanged`] if one changed.
    CheckModels,
    /// Nothing to do for this long: the camera is waiting out its backoff.
    Wait { ms: u64 },
    /// Start-up is done (the first frame is in): tell the service manager.
    Ready,
    /// Stop: close the gate and return this.
    Exit(Exit),
}

/// Why the daemon stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// A recording (file source) played to its end.
    RecordingEnded,
    /// First stop signal: graceful.
    Stopped,
    /// Second stop signal: gate closed, nothing else done.
    Aborted,
    /// A fault that needs a restart (the service manager restarts the daemon).
    Fault { code: FaultCode, message: String },
}

/// Retry timing for a lost camera or serial line: doubling up to a ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub delay_ms: u64,
    pub next_try_ms: u64,
}

impl Backoff {
    pub(super) fn new(now_ms: u64, first_ms: u64) -> Self {
        Self {
            delay_ms: first_ms,
            next_try_ms: now_ms.saturating_add(first_ms),
        }
    }

    pub(super) fn failed(&mut self, now_ms: u64, max_ms: u64) {
        self.delay_ms = self.delay_ms.saturating_mul(2).min(max_ms);
        self.next_try_ms = now_ms.saturating_add(self.delay_ms);
    }
}

/// What opened a decision window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A REQUEST from the host.
    Request,
    /// A face in view (`[session] trigger = "face"`).
    Face,
    /// A verification the vending machine asked for over MDB (DRAVS).
    Vmc,
}

/// An open decision window.
#[derive(Debug, Clone)]
pub struct Window {
    pub id: u16,
    pub origin: Origin,
    pub(super) session: Session,
    pub(super) started_ms: u64,
}

/// The last verdict, while it is still the one shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decided {
    /// The REQUEST (or VMC session) it answered, which a CANCEL (or the VMC's abort) may
    /// still void.
    pub id: u16,
    pub origin: Origin,
    /// Face trigger: the person decided and when last seen, so the same person standing
    /// there does not start decision after decision.
    pub(super) face: Option<(BBox, u64)>,
}

/// What holds the gate closed, all at once if need be.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Faults {
    /// The camera is lost: waiting to reopen it, or reopened and waiting for a good frame.
    pub(super) camera: Option<CameraDown>,
    /// Inference errors in a row.
    pub(super) model_errors: u32,
    /// The host line is lost, waiting to reopen it (wall clock).
    pub(super) link: Option<Backoff>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CameraDown {
    pub(super) backoff: Backoff,
    pub(super) reopened: bool,
}

impl Faults {
    pub(super) fn is_clear(&self) -> bool {
        self.camera.is_none() && self.model_errors == 0 && self.link.is_none()
    }

    pub fn camera(&self) -> bool {
        self.camera.is_some()
    }

    pub fn model_errors(&self) -> u32 {
        self.model_errors
    }

    pub fn link(&self) -> bool {
        self.link.is_some()
    }
}

/// The device's state.
// The core holds exactly one State, so the window's inline sample buffer costs nothing,
// and keeping it inline keeps the decision path free of allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum State {
    /// Models loaded, no frame yet.
    Starting,
    /// Waiting for a REQUEST (or, face trigger, for a face).
    Ready,
    /// A decision window is open.
    Deciding(Window),
    /// A verdict was given and the gate shows it (the relay may be pulsing).
    CoolingDown(Decided),
    /// Something holds the gate closed.
    Faulted(Faults),
    /// The run is over; the shell closes the gate.
    Stopping,
}

impl State {
    /// The state's name, for logs and tests.
    pub fn name(&self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::Ready => "ready",
            State::Deciding(w) => match w.origin {
                Origin::Request => "deciding(request)",
                Origin::Face => "deciding(face)",
                Origin::Vmc => "deciding(vmc)",
            },
            State::CoolingDown(_) => "cooling_down",
            State::Faulted(_) => "faulted",
            State::Stopping => "stopping",
        }
    }
}

/// Counts for the exit line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreStats {
    pub decisions: u64,
    pub faults: u64,
}

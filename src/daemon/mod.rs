//! The daemon: camera -> face -> age -> decision -> relay, LEDs and serial, one loop.
//!
//! Every rule lives in the decision [`core`], which does no I/O. This module is the shell
//! around it: each turn of [`Daemon::step`] gathers inputs from the stop signals, the
//! host line, the model-file guard, the gate and the camera, hands them to the core with
//! the time, and carries out the actions it returns. Every piece of hardware is behind a
//! trait ([`FrameSource`], [`HostLink`], the gate's [`crate::actuate::OutputLine`]s) and
//! time comes from two [`Clock`]s, so the whole loop runs in tests on fakes, recordings
//! and simulated time.
//!
//! **Privacy.** Frames live in one reused buffer and never reach the disk; the events and
//! the audit log record decisions, age bands, confidence, sigma and timings, never
//! images, crops, embeddings or estimated ages.
//!
//! **No per-frame allocation in the loop itself** after warm-up: the frame, the serial
//! buffers, the inbox and the action list are reused. The stages it calls are not held to
//! it: the engine's tensors are the engine's business, and liveness, where a board has it,
//! builds its image pyramid each frame.

mod act;
pub mod clock;
pub mod core;
pub mod events;
mod links;
mod settings;
mod shared;
pub mod supervise;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use image::RgbImage;

use self::core::{Action, Core, CoreStats, Input, Now};
use crate::actuate::Gate;
use crate::capture::{CaptureError, FrameSource};
use crate::decide::Policy;
use crate::engine::ModelError;
use crate::mdb::VmcPort;
use crate::serial::link::HostLink;
use crate::serial::{Decoder, Message};

pub use self::core::{Exit, FrameFaces, MAX_OTHER_FACES};
pub use clock::{Clock, MonotonicClock, RecordingClock};
pub use events::{Event, WireMessage};
pub use settings::{DaemonSettings, RawDaemon};
pub use shared::{DaemonStats, LiveCounters, PolicyMailbox};
pub use supervise::{
    ModelFiles, ModelGuard, NoWatchdog, StopSignal, SystemdWatchdog, Watchdog, STOP_SIGNALS,
};

/// The faces of a frame, the main one estimated.
pub trait FaceEstimator {
    fn faces(&self, frame: &RgbImage) -> Result<FrameFaces, ModelError>;
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

pub struct Daemon {
    parts: Parts,
    core: Core,
    events: EventSink,
    /// The event output failed; nothing opens until the core has been told.
    output_failed: bool,
    frame: RgbImage,
    decoder: Decoder,
    rx: [u8; 64],
    inbox: Vec<Message>,
    /// Inputs the actions themselves produced (a write that failed), handled next.
    followups: Vec<Input>,
    actions: Vec<Action>,
    last_rx_wall_ms: u64,
    exit: Option<Exit>,
    counters: Arc<LiveCounters>,
    policies: Option<Arc<PolicyMailbox>>,
    frame_limit: Option<u64>,
    vmc: Option<VmcPort>,
}

impl Daemon {
    pub fn new(parts: Parts, policy: Policy, settings: DaemonSettings, events: EventSink) -> Self {
        let now = Now {
            frame_ms: parts.clock.now_ms(),
            wall_ms: parts.wall.now_ms(),
        };
        Self {
            core: Core::new(policy, settings, now),
            parts,
            events,
            output_failed: false,
            frame: RgbImage::new(1, 1),
            decoder: Decoder::new(),
            rx: [0; 64],
            inbox: Vec::with_capacity(16),
            followups: Vec::with_capacity(4),
            actions: Vec::with_capacity(16),
            last_rx_wall_ms: now.wall_ms,
            exit: None,
            counters: Arc::default(),
            policies: None,
            frame_limit: None,
            vmc: None,
        }
    }

    /// Takes the vending machine's requests from the MDB thread (`[mdb]`) and hands it the
    /// decisions. Call before `run`.
    pub fn serve_vmc(&mut self, port: VmcPort) {
        self.vmc = Some(port);
    }

    /// Counts frames into `counters`, which another thread may read as the daemon runs
    /// (telemetry's `health`), instead of counters of its own. Call before `run`.
    pub fn share_counters(&mut self, counters: Arc<LiveCounters>) {
        self.counters = counters;
    }

    /// Takes policies from `mailbox` between decisions. Call before `run`.
    pub fn take_policies_from(&mut self, mailbox: Arc<PolicyMailbox>) {
        self.policies = Some(mailbox);
    }

    pub fn stats(&self) -> DaemonStats {
        let CoreStats { decisions, faults } = self.core.stats();
        DaemonStats {
            frames: self.counters.frames.load(Ordering::Relaxed),
            bad_frames: self.counters.bad_frames.load(Ordering::Relaxed),
            inferences: self.counters.inferences.load(Ordering::Relaxed),
            decisions,
            faults,
        }
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
        let now = self.parts.clock.now_ms();
        if let Err(e) = self.parts.gate.close() {
            tracing::error!("gpio on exit: {e}");
        }
        self.report_pins(now);
        self.parts.watchdog.stopping();
        tracing::info!(?exit, stats = ?self.stats(), "daemon stopped");
        exit
    }

    /// One turn of the loop; `Some` when the daemon must stop.
    pub fn step(&mut self) -> Option<Exit> {
        match self.parts.stop.count() {
            0 => {}
            1 => {
                let signal = self.parts.stop.first().unwrap_or("a stop signal");
                self.feed(Input::Stop { signal });
            }
            _ => self.feed(Input::Abort),
        }
        self.parts.watchdog.alive(self.parts.clock.now_ms());
        self.service_link();
        self.service_vmc();
        let now = self.parts.clock.now_ms();
        if let Err(e) = self.parts.gate.poll(now) {
            self.feed(Input::GpioError(e.to_string()));
        }
        self.report_pins(now);
        self.take_offered_policy();
        self.feed(Input::Tick);
        if self.exit.is_none() && self.core.wants_frame() {
            self.next_frame();
        }
        self.report_pins(self.parts.clock.now_ms());
        self.exit.clone()
    }

    /// Reads one frame and, when the core wants it, its faces.
    fn next_frame(&mut self) {
        let frames = self.counters.frames.load(Ordering::Relaxed);
        if self.frame_limit.is_some_and(|limit| frames >= limit) {
            return self.feed(Input::RecordingEnded);
        }
        match self.parts.source.next_frame(&mut self.frame) {
            Ok(Some(meta)) => {
                self.parts.clock.observe_frame(&meta);
                self.counters.frames.fetch_add(1, Ordering::Relaxed);
                self.feed(Input::Frame);
            }
            Ok(None) => return self.feed(Input::RecordingEnded),
            Err(e @ CaptureError::BadFrame { .. }) => {
                self.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                return self.feed(Input::BadFrame(e.to_string()));
            }
            Err(e @ CaptureError::Lost { .. }) => {
                return self.feed(Input::CameraLost(e.to_string()))
            }
        }
        if !self.core.wants_faces() {
            return;
        }
        self.counters.inferences.fetch_add(1, Ordering::Relaxed);
        let (estimator, frame) = (&self.parts.estimator, &self.frame);
        let input = match catch_unwind(AssertUnwindSafe(|| estimator.faces(frame))) {
            Ok(Ok(faces)) => Input::Faces(faces),
            Ok(Err(e)) => Input::ModelError(e.to_string()),
            Err(panic) => Input::StagePanic(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into()),
            ),
        };
        self.feed(input);
    }

    /// Hands `input` to the core and carries out its actions, then the inputs those
    /// actions produced.
    pub(super) fn feed(&mut self, input: Input) {
        let mut next = Some(input);
        while let Some(input) = next
            .take()
            .or_else(|| (!self.followups.is_empty()).then(|| self.followups.remove(0)))
        {
            let now = Now {
                frame_ms: self.parts.clock.now_ms(),
                wall_ms: self.parts.wall.now_ms(),
            };
            let mut actions = std::mem::take(&mut self.actions);
            self.core.handle(now, input, &mut actions);
            for action in actions.drain(..) {
                self.execute(now, action);
            }
            self.actions = actions;
        }
    }
}

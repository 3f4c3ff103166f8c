//! The AVD's thread: the bus's side of the firmware. It owns the transport and the
//! [`Peripheral`], answers every command within t-response whatever the pipeline is doing
//! (it never waits on inference), and talks to the daemon through two channels: a
//! [`VmcRequest`] when the VMC asks for a verification or drops it, a [`VmcAnswer`] back
//! with the decision. The thread reads the clock and the bus; the logic below it is
//! handed both.
//!
//! Every verification gets a session number. An answer is handed to the AVD only for the
//! session running, so a late answer to a session the VMC has since replaced or aborted
//! never reaches the VMC (fail closed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::avd::{AvdSettings, Event, Note, VerificationResult};
use super::peripheral::{Outcome, Peripheral};
use super::transport::{BusClock, Heard, Transport};
use super::{bump, timing, Counters, Micros};
use crate::domain::Decision;

/// What the VMC asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmcRequest {
    /// Decide whether the customer is at least `required_age` (already raised to the
    /// board's floor).
    Verify { session: u16, required_age: u8 },
    /// The VMC dropped the session (RESET, DRAVP off or another age, READER, or a new
    /// DRAVS, which comes as its own `Verify` after this).
    Abort { session: u16 },
}

/// The daemon's decision for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmcAnswer {
    pub session: u16,
    pub decision: Decision,
}

impl VerificationResult {
    /// ALLOW approves; DENY does not; REFER (no face, doubt, liveness, quality, timeout,
    /// fault) is "could not verify": an unattended machine has no staff to refer to.
    pub fn from_decision(decision: Decision) -> Self {
        match decision {
            Decision::Allow => Self::Approved,
            Decision::Deny => Self::NotApproved,
            Decision::Refer => Self::CouldNotVerify,
        }
    }

    /// The name the event log and the simulator use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::NotApproved => "not_approved",
            Self::CouldNotVerify => "not_verified",
        }
    }
}

/// What the thread itself saw, beside the link's and the AVD's [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DeviceCounters {
    /// Answers ready after their t-response deadline had passed: not sent (the VMC asks
    /// again).
    pub late_transmits: u32,
    /// Bytes from the transport that made no word.
    pub noise: u32,
    pub bus_resets: u32,
    pub transport_errors: u32,
    /// Daemon answers for a session no longer running: dropped.
    pub stale_answers: u32,
    pub sessions: u32,
}

/// The counters, as telemetry's `health` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MdbHealth {
    pub link: Counters,
    pub device: DeviceCounters,
}

/// The settings the thread runs with.
#[derive(Debug, Clone, Copy)]
pub struct DeviceSettings {
    pub avd: AvdSettings,
    pub sched_fifo_priority: Option<u8>,
}

/// The daemon's ends of the channels.
pub struct VmcPort {
    pub requests: Receiver<VmcRequest>,
    pub answers: Sender<VmcAnswer>,
}

/// The running thread; dropping it stops the thread.
pub struct MdbDevice {
    stop: Arc<AtomicBool>,
    health: Arc<Mutex<MdbHealth>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Longest wait on a quiet bus, so answers and the stop flag are seen.
const QUIET_WAIT: Duration = Duration::from_millis(5);
/// After a transport error, the wait before reopening it.
const REOPEN_WAIT: Duration = Duration::from_millis(250);

impl MdbDevice {
    /// Starts the AVD's thread on `transport`.
    pub fn start(
        settings: DeviceSettings,
        transport: Box<dyn Transport>,
        clock: BusClock,
    ) -> std::io::Result<(Self, VmcPort)> {
        let (request_tx, requests) = std::sync::mpsc::channel();
        let (answers, answer_rx) = std::sync::mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Mutex::new(MdbHealth::default()));
        let mut bus = Bus {
            peripheral: Peripheral::new(settings.avd),
            transport,
            clock,
            requests: request_tx,
            answers: answer_rx,
            running: None,
            next_session: 1,
            counters: DeviceCounters::default(),
            last_word: None,
            health: health.clone(),
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("agegate-mdb".into())
            .spawn(move || {
                if let Some(priority) = settings.sched_fifo_priority {
                    realtime(priority);
                }
                bus.run(&flag);
            })?;
        Ok((
            Self {
                stop,
                health,
                thread: Some(thread),
            },
            VmcPort { requests, answers },
        ))
    }

    /// Whether the thread still runs (it ends when the daemon's channel ends are gone).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// A shared view of the counters, for telemetry.
    pub fn health(&self) -> Arc<Mutex<MdbHealth>> {
        self.health.clone()
    }
}

impl Drop for MdbDevice {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// SCHED_FIFO for the calling thread; where it is not allowed (no CAP_SYS_NICE, no
/// RLIMIT_RTPRIO) the thread runs at normal priority and says so once.
fn realtime(priority: u8) {
    let param = libc::sched_param {
        sched_priority: i32::from(priority),
    };
    // SAFETY: pthread_self is always valid for the calling thread; param outlives the call.
    let rc = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if rc == 0 {
        tracing::info!(priority, "MDB thread runs SCHED_FIFO");
    } else {
        tracing::info!(
            priority,
            "SCHED_FIFO refused ({}); the MDB thread runs at normal priority",
            std::io::Error::from_raw_os_error(rc)
        );
    }
}

struct Bus {
    peripheral: Peripheral,
    transport: Box<dyn Transport>,
    clock: BusClock,
    requests: Sender<VmcRequest>,
    answers: Receiver<VmcAnswer>,
    /// The session the AVD is verifying.
    running: Option<u16>,
    next_session: u16,
    counters: DeviceCounters,
    /// When the last word came: the line is quiet t-inter-byte after it.
    last_word: Option<Micros>,
    health: Arc<Mutex<MdbHealth>>,
}

impl Bus {
    fn run(&mut self, stop: &AtomicBool) {
        let mut heard = Vec::with_capacity(64);
        while !stop.load(Ordering::SeqCst) {
            if !self.turn(&mut heard) {
                break;
            }
            let mut health = self
                .health
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *health = MdbHealth {
                link: self.peripheral.counters(),
                device: self.counters,
            };
        }
        tracing::info!("MDB thread stopped");
    }

    /// One wait on the bus and what it brought; false when the daemon is gone.
    fn turn(&mut self, heard: &mut Vec<Heard>) -> bool {
        let wait = match self.last_word {
            // A block may be in progress, or an answer awaited: look again when the line
            // has been quiet for t-inter-byte.
            Some(at) => {
                let quiet_at = at.plus(timing::GAP_US);
                Duration::from_micros(quiet_at.since(self.clock.now()).max(200))
            }
            None => QUIET_WAIT,
        };
        // Up to `checked` every word is in `heard`: the line is known quiet from the last
        // of them to there, and no later (a fresh reading could pass a deadline that a
        // word already waiting would have met).
        let checked = match self.transport.receive(wait, heard) {
            Ok(known) => known,
            Err(e) => return self.transport_failed(&e),
        };
        // Answers first: a POLL in this batch gets the result that is ready.
        loop {
            match self.answers.try_recv() {
                Ok(answer) => self.answer(answer),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        for h in heard.drain(..) {
            let outcome = match h {
                Heard::Word(word, at) => {
                    self.last_word = Some(at);
                    self.peripheral.on_word(word, at)
                }
                Heard::BusReset => {
                    bump(&mut self.counters.bus_resets);
                    self.last_word = None;
                    self.peripheral.on_bus_reset()
                }
                Heard::Noise => {
                    bump(&mut self.counters.noise);
                    continue;
                }
            };
            if !self.act(outcome) {
                return false;
            }
        }
        if let Some(at) = self.last_word {
            if checked.since(at) >= timing::GAP_US {
                let outcome = self.peripheral.on_idle(checked);
                // Idle again once t-response has passed too: no answer can still come.
                let settled = timing::GAP_US + 2 * timing::RESPONSE_US + 50 * timing::WORD_US;
                if checked.since(at) > settled {
                    self.last_word = None;
                }
                return self.act(outcome);
            }
        }
        true
    }

    /// The bus failed: wait, reopen it, and start over as after a bus reset (whatever
    /// was on the line is gone).
    fn transport_failed(&mut self, e: &super::TransportError) -> bool {
        bump(&mut self.counters.transport_errors);
        tracing::warn!("{e}");
        std::thread::sleep(REOPEN_WAIT);
        if let Err(e) = self.transport.reopen() {
            tracing::debug!("reopen: {e}");
        }
        let outcome = self.peripheral.on_bus_reset();
        self.last_word = None;
        self.act(outcome)
    }

    fn answer(&mut self, answer: VmcAnswer) {
        if self.running != Some(answer.session) {
            bump(&mut self.counters.stale_answers);
            tracing::debug!(
                session = answer.session,
                "answer for a session no longer running"
            );
            return;
        }
        self.running = None;
        let result = VerificationResult::from_decision(answer.decision);
        if !self.peripheral.verification_result(result) {
            bump(&mut self.counters.stale_answers);
        }
    }

    /// Carries out an outcome; false when the daemon is gone.
    fn act(&mut self, outcome: Outcome) -> bool {
        if let Some(transmit) = outcome.transmit {
            if self.clock.now() <= transmit.deadline {
                if let Err(e) = self.transport.send(&transmit.words) {
                    bump(&mut self.counters.transport_errors);
                    tracing::warn!("{e}");
                }
            } else {
                bump(&mut self.counters.late_transmits);
            }
        }
        if let Some(Note::AgeRaised { requested, floor }) = outcome.note {
            tracing::warn!(
                requested,
                floor,
                "VMC's required age raised to the board's floor"
            );
        }
        let request = match outcome.event {
            None => return true,
            Some(Event::StartVerification { required_age, .. }) => {
                let session = self.next_session;
                self.next_session = self.next_session.wrapping_add(1).max(1);
                bump(&mut self.counters.sessions);
                // A replaced session's abort is implied: the daemon's new window replaces
                // the open one, and its answer no longer matches `running`.
                self.running = Some(session);
                VmcRequest::Verify {
                    session,
                    required_age,
                }
            }
            Some(Event::AbortVerification { cause }) => match self.running.take() {
                Some(session) => {
                    tracing::info!(session, ?cause, "verification aborted by the VMC");
                    VmcRequest::Abort { session }
                }
                None => return true,
            },
        };
        self.requests.send(request).is_ok()
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;

//! The simulated VMC's sessions: the standard's initialization, then verification after
//! verification on a random scene, now and then aborted, each checked against what the
//! daemon decided.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::vmc::{Reply, Vmc};
use super::{Observed, SceneKind};
use crate::daemon::Event;
use crate::mdb::{Command, Reader, Response, VerificationResult};

#[derive(Debug, Clone, Copy)]
pub struct SimSettings {
    pub sessions: usize,
    /// Sessions the VMC aborts, in percent.
    pub abort_percent: usize,
    /// The longest a session may wait for its answer.
    pub answer_within: Duration,
    /// Whether the AVD answers DRAVP at once (else on the next POLL).
    pub dravp_immediate: bool,
}

/// How a session ended, as the VMC saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answered(VerificationResult),
    Aborted(&'static str),
    /// No answer within `answer_within`: a failure.
    Unanswered,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Self::Answered(r) => r.name(),
            Self::Aborted(_) => "aborted",
            Self::Unanswered => "unanswered",
        }
    }
}

/// What every session together showed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub sessions: usize,
    /// scene -> answer -> sessions.
    pub answers: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    /// What went against the rules (each a sentence); empty when all held.
    pub violations: Vec<String>,
    pub resets: usize,
    pub just_reset_after_reset: usize,
}

fn result_of(feature1: u8, feature2: u8) -> Option<VerificationResult> {
    [
        VerificationResult::Approved,
        VerificationResult::NotApproved,
        VerificationResult::CouldNotVerify,
    ]
    .into_iter()
    .find(|r| r.feature_bytes() == (feature1, feature2))
}

struct Driver<'a> {
    vmc: &'a mut Vmc,
    settings: SimSettings,
    /// The required age the AVD has, `None`: verification off.
    age: Option<u8>,
    exchanges: Vec<String>,
    summary: Summary,
}

impl Driver<'_> {
    fn note(&mut self, what: &str, reply: &Reply) {
        let line = format!("{what}>{}", reply.short());
        match self.exchanges.last_mut() {
            Some(last) if last.starts_with(&line) => {
                let n = last
                    .rsplit_once(" x")
                    .and_then(|(_, n)| n.parse::<u32>().ok())
                    .unwrap_or(1);
                *last = format!("{line} x{}", n + 1);
            }
            _ => self.exchanges.push(line),
        }
    }

    fn exchange(&mut self, what: &str, command: Command) -> Reply {
        let reply = self.vmc.exchange_retrying(&command);
        self.note(what, &reply);
        reply
    }

    fn violation(&mut self, what: String) {
        self.summary.violations.push(what);
    }

    /// RESET, then the standard's start: JUST RESET, SETUP, EXPANSION ID, READER enable.
    fn start(&mut self) {
        self.summary.resets += 1;
        if self.exchange("RESET", Command::Reset) != Reply::Ack {
            self.violation("RESET not ACKed".into());
        }
        self.age = None;
        match self.exchange("POLL", Command::Poll) {
            Reply::Data(Response::JustReset) => self.summary.just_reset_after_reset += 1,
            other => self.violation(format!("first POLL after RESET gave {}", other.short())),
        }
        let setup = Command::Setup {
            vmc_level: 3,
            rest: heapless::Vec::from_slice(&[0x00, 0x00, 0x00]).unwrap_or_default(),
        };
        if !matches!(
            self.exchange("SETUP", setup),
            Reply::Data(Response::SetupData { .. })
        ) {
            self.violation("SETUP not answered with SETUP DATA".into());
        }
        let id = Command::RequestId {
            vmc_id: Some(*b"AGS000000000001SIMULATED VMC\x01"),
        };
        if !matches!(
            self.exchange("EXPANSION ID", id),
            Reply::Data(Response::PeripheralId { .. })
        ) {
            self.violation("EXPANSION REQUEST ID not answered with PERIPHERAL ID".into());
        }
        self.exchange("READER ENABLE", Command::Reader(Reader::Enable));
    }

    /// DRAVP with `age`, answered at once or on the next POLL as the board says.
    fn set_age(&mut self, age: u8) {
        let reply = self.exchange(&format!("DRAVP({age})"), Command::Dravp { age });
        let answered = if self.settings.dravp_immediate {
            matches!(reply, Reply::Data(Response::Dravp { .. }))
        } else {
            reply == Reply::Ack
                && matches!(
                    self.exchange("POLL", Command::Poll),
                    Reply::Data(Response::Dravp { .. })
                )
        };
        if !answered {
            self.violation(format!("DRAVP({age}) not answered as the board says"));
        }
        self.age = (age != 0 && age != 0xFF).then_some(age);
    }

    /// One verification: DRAVS, then POLLs until the answer, or an abort.
    fn verify(&mut self, abort_at_poll: Option<(u32, usize)>, deadline: Instant) -> Outcome {
        if self.exchange("DRAVS", Command::Dravs { y4: 0 }) != Reply::Ack {
            self.violation("DRAVS not ACKed".into());
        }
        let mut polls = 0;
        while Instant::now() < deadline {
            let pause = 10 + self.vmc.rng().below(90) as u64;
            std::thread::sleep(Duration::from_millis(pause));
            polls += 1;
            if self.vmc.rng().below(100) < 3 {
                if let Some(what) = self.vmc.noise() {
                    self.violation(what);
                }
            }
            if let Some((_, kind)) = abort_at_poll.filter(|(at, _)| *at == polls) {
                return Outcome::Aborted(self.abort(kind));
            }
            match self.exchange("POLL", Command::Poll) {
                Reply::Data(Response::Dravs { feature1, feature2 }) => {
                    return match result_of(feature1, feature2) {
                        Some(r) => Outcome::Answered(r),
                        None => {
                            self.violation(format!(
                                "DRAVS answer with unknown feature bytes {feature1:02X} {feature2:02X}"
                            ));
                            Outcome::Unanswered
                        }
                    };
                }
                Reply::Data(other) => {
                    self.violation(format!("POLL during a verification gave {other:?}"))
                }
                _ => {}
            }
        }
        Outcome::Unanswered
    }

    /// Drops the running verification as a VMC does; the next session's DRAVS replaces
    /// it for `new_dravs`.
    fn abort(&mut self, kind: usize) -> &'static str {
        match kind {
            0 => {
                self.start();
                "reset"
            }
            1 => {
                self.set_age(0);
                "dravp_off"
            }
            2 => {
                self.exchange("READER CANCEL", Command::Reader(Reader::Cancel));
                "reader_cancel"
            }
            _ => "new_dravs",
        }
    }
}

/// Runs `settings.sessions` sessions; `line` gets one JSON value per session.
pub fn run_sessions(
    vmc: &mut Vmc,
    scenes: &[SceneKind],
    current: &AtomicUsize,
    events: &Receiver<Event>,
    settings: SimSettings,
    line: &mut dyn FnMut(Value),
) -> Summary {
    let mut seen = Observed::default();
    let mut driver = Driver {
        vmc,
        settings,
        age: None,
        exchanges: Vec::new(),
        summary: Summary::default(),
    };
    driver.start();
    for n in 1..=settings.sessions {
        driver.exchanges.clear();
        let scene = driver.vmc.rng().below(scenes.len());
        let kind = scenes.get(scene).copied().unwrap_or(SceneKind::Empty);
        current.store(scene, Ordering::SeqCst);
        let required_age = [16, 18, 21][driver.vmc.rng().below(3)];
        if driver.age != Some(required_age) {
            driver.set_age(required_age);
        }
        let abort = (driver.vmc.rng().below(100) < settings.abort_percent).then(|| {
            let at = 1 + driver.vmc.rng().below(6) as u32;
            (at, driver.vmc.rng().below(4))
        });
        seen.drain(events);
        let before = seen.verified.len();
        let started = driver.vmc.figures.response_us.len();
        let outcome = driver.verify(abort, Instant::now() + settings.answer_within);
        // The session's own window: the last the daemon opened since its DRAVS. Its
        // decision event is in before the answer can reach the VMC.
        std::thread::sleep(Duration::from_millis(2));
        seen.drain(events);
        let id = seen
            .verified
            .get(before..)
            .and_then(|ids| ids.last())
            .copied();
        let decision = id.and_then(|id| {
            seen.decisions
                .get(&id)
                .map(|d| d.name())
                .or_else(|| (seen.answers.get(&id) == Some(&"not_verified")).then_some("REFER"))
        });
        let name = kind.name();
        *driver
            .summary
            .answers
            .entry(name)
            .or_default()
            .entry(outcome.name())
            .or_default() += 1;
        match outcome {
            Outcome::Answered(VerificationResult::Approved) => {
                if decision != Some("ALLOW") {
                    driver.violation(format!(
                        "session {n}: approved, but the daemon's decision was {decision:?}"
                    ));
                }
                if kind != SceneKind::Adult {
                    driver.violation(format!("session {n}: approved on the {name} scene"));
                }
            }
            Outcome::Answered(_) => {}
            Outcome::Aborted(_) => {}
            Outcome::Unanswered => {
                driver.violation(format!("session {n}: DRAVS never answered"));
            }
        }
        let response_ms_max = driver
            .vmc
            .figures
            .response_us
            .get(started..)
            .and_then(|r| r.iter().max())
            .map(|us| *us as f64 / 1e3);
        line(json!({
            "session": n,
            "scene": name,
            "required_age": required_age,
            "answer": outcome.name(),
            "abort": match outcome { Outcome::Aborted(how) => Some(how), _ => None },
            "decision": decision,
            "id": id,
            "response_ms_max": response_ms_max,
            "exchanges": driver.exchanges,
        }));
    }
    driver.summary.sessions = settings.sessions;
    driver.summary
}

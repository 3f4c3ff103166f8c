//! Decision windows: opening one for a REQUEST or a face, deciding it, answering REFER.

use super::{Action, Core, Decided, Now, Origin, Out, State, Window};
use crate::actuate::Indication;
use crate::daemon::events::Event;
use crate::decide::Policy;
use crate::domain::{AgeBand, Decision, ReferReason};
use crate::mdb::{VerificationResult, VmcAnswer};
use crate::serial::{FaultCode, Message};
use crate::session::Session;

impl Core {
    /// A REQUEST from the host or a verification from the VMC (`origin`), for `id`.
    pub(super) fn request(
        &mut self,
        now: Now,
        origin: Origin,
        id: u16,
        required_age: u8,
        out: &mut Out,
    ) {
        if let State::Deciding(old) = &self.state {
            let (old_origin, old) = (old.origin, old.id);
            tracing::info!(old, new = id, "request replaced");
            self.answer_refer(now, old_origin, old, ReferReason::Replaced, out);
            self.state = State::Ready;
        }
        if let State::Faulted(f) = &self.state {
            let code = if f.camera.is_some() {
                FaultCode::CAMERA
            } else if f.model_errors > 0 {
                FaultCode::MODEL
            } else {
                FaultCode::SERIAL
            };
            if origin != Origin::Vmc {
                out.push(Action::Send(Message::fault(code, "not ready")));
            }
            self.answer_refer(now, origin, id, ReferReason::Fault, out);
            return;
        }
        let floor = self.policy.min_request_age();
        let required_age = if origin == Origin::Vmc && f32::from(required_age) < floor {
            // The MDB thread raised it to the floor it started with; a policy applied
            // since may have raised the floor: the VMC's age is raised, never refused.
            let raised = floor.ceil().min(254.0) as u8;
            tracing::warn!(
                required_age,
                raised,
                "VMC's required age raised to the floor"
            );
            raised
        } else {
            required_age
        };
        let policy = match required_age {
            0 => Ok(self.policy),
            age if f32::from(age) < floor => Err(format!("age {age}<{floor}")),
            age => self
                .policy
                .with_legal_age(f32::from(age))
                .map_err(|_| "impossible age".to_string()),
        };
        match policy {
            Ok(policy) => {
                out.push(Action::Indicate(Indication::Idle));
                self.open_window(now, id, origin, policy, out);
            }
            Err(detail) => {
                // The host may raise the board's age, never lower it.
                tracing::warn!(required_age, floor, "request refused: {detail}");
                if origin != Origin::Vmc {
                    out.push(Action::Send(Message::fault(FaultCode::REQUEST, &detail)));
                }
                self.answer_refer(now, origin, id, ReferReason::Refused, out);
            }
        }
    }

    pub(super) fn open_window(
        &mut self,
        now: Now,
        id: u16,
        origin: Origin,
        policy: Policy,
        out: &mut Out,
    ) {
        match Session::new(self.settings.session, policy, now.frame_ms) {
            Ok(session) => {
                tracing::info!(id, "decision window opened");
                self.state = State::Deciding(Window {
                    id,
                    origin,
                    session,
                    started_ms: now.frame_ms,
                });
            }
            // The settings were validated with the board; should this still fail, the
            // request cannot be decided.
            Err(e) => {
                tracing::error!("session settings: {e}");
                self.answer_refer(now, origin, id, ReferReason::Fault, out);
            }
        }
    }

    /// Decides the open window once its session has a verdict.
    pub(super) fn poll_window(&mut self, now: Now, out: &mut Out) {
        let State::Deciding(w) = &mut self.state else {
            return;
        };
        let Some(decision) = w.session.poll(now.frame_ms) else {
            return;
        };
        let (id, origin, started) = (w.id, w.origin, w.started_ms);
        let reason = w.session.refer_reason();
        let policy = *w.session.policy();
        let aggregate = w.session.aggregate();
        let followed = w.session.followed_box();
        let cue = w.session.liveness_cue().map_or("", |c| c.name());
        // Without an aggregate (a timeout with no face) there is no band either: the wire
        // carries band 0 with confidence 0, which a REFER tells the host not to read.
        let measured = aggregate.and_then(|a| Some((AgeBand::from_age(a.age)?, a)));
        let (band, age_band, sigma, frames, confidence) = match measured {
            Some((band, a)) => (
                band,
                band.name(),
                a.sigma,
                a.frames,
                policy.confidence(decision, a.age, a.sigma, a.p_over),
            ),
            None => (AgeBand::Under13, "none", f32::NAN, 0, 0),
        };
        self.stats.decisions += 1;
        let decide_ms = now.frame_ms.saturating_sub(started);
        // The audit log: band, confidence and sigma, never the estimated age.
        tracing::info!(
            id,
            %decision,
            reason = reason.map_or("", ReferReason::name),
            cue,
            age_band,
            confidence,
            sigma,
            frames,
            decide_ms,
            "decision"
        );
        out.push(Action::Emit(Event::Decision {
            t_ms: now.frame_ms,
            id,
            decision,
            age_band,
            sigma,
            frames,
            decide_ms,
            reason,
            confidence,
            origin,
        }));
        if origin == Origin::Vmc {
            self.answer_vmc(now, id, decision, out);
        } else {
            out.push(Action::Send(Message::Decision {
                id,
                decision,
                band,
                confidence,
            }));
            if let Some(reason) = reason {
                out.push(Action::Send(Message::Reason { id, reason }));
            }
        }
        out.push(Action::Indicate(Indication::Decision(decision)));
        let face = (origin == Origin::Face)
            .then_some(followed)
            .flatten()
            .map(|b| (b, now.frame_ms));
        self.state = State::CoolingDown(Decided { id, origin, face });
    }

    /// The decision for VMC session `id`, to the MDB thread and the event log.
    fn answer_vmc(&mut self, now: Now, id: u16, decision: Decision, out: &mut Out) {
        out.push(Action::Emit(Event::MdbTx {
            t_ms: now.frame_ms,
            id,
            answer: VerificationResult::from_decision(decision).name(),
        }));
        out.push(Action::AnswerVmc(VmcAnswer {
            session: id,
            decision,
        }));
    }

    /// Answers REQUEST (or VMC session) `id` with REFER: fault, shutdown, replaced or
    /// refused request.
    pub(super) fn answer_refer(
        &mut self,
        now: Now,
        origin: Origin,
        id: u16,
        reason: ReferReason,
        out: &mut Out,
    ) {
        tracing::info!(id, %reason, "request answered REFER");
        if origin == Origin::Vmc {
            // The VMC learns no reason: "could not verify" is all the AVD can say.
            return self.answer_vmc(now, id, Decision::Refer, out);
        }
        out.push(Action::Send(Message::Decision {
            id,
            decision: Decision::Refer,
            band: AgeBand::Under13,
            confidence: 0,
        }));
        out.push(Action::Send(Message::Reason { id, reason }));
    }
}

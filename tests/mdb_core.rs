//! The decision core's vending machine input (MDB): a VMC session decides through the
//! same window, policy and gate as a host REQUEST, its answer goes to the MDB thread and
//! never to the host, an abort drops it, and every session is answered exactly once
//! unless the VMC dropped it.

mod common;

use common::frame_faces as faces;

use agegate::actuate::Indication;
use agegate::daemon::core::{Action, Core, Exit, Input, Now, State};
use agegate::daemon::{DaemonSettings, Event};
use agegate::decide::Policy;
use agegate::domain::Decision;
use agegate::mdb::{VmcAnswer, VmcRequest};
use agegate::serial::Message;
use agegate::session::{SessionSettings, Trigger};

struct Rig {
    core: Core,
    now: Now,
}

impl Rig {
    fn new() -> Self {
        let settings = DaemonSettings {
            session: SessionSettings {
                trigger: Trigger::Request,
                ..SessionSettings::default()
            },
            ..DaemonSettings::default()
        };
        // The margin rule: ALLOW when age - 1 sigma reaches 25, DENY under 18; a REQUEST
        // (or DRAVP) of 21 moves both by 3.
        let policy = Policy::new(18.0, 25.0, 1.0).expect("policy");
        let mut rig = Self {
            core: Core::new(policy, settings, Now::default()),
            now: Now::default(),
        };
        rig.feed(Input::Tick);
        rig.feed(Input::Frame);
        rig
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.core.handle(self.now, input, &mut out);
        out
    }

    fn frames(&mut self, n: usize, age: Option<f32>) -> Vec<Action> {
        let mut out = Vec::new();
        for _ in 0..n {
            self.now.frame_ms += 66;
            self.now.wall_ms += 66;
            out.extend(self.feed(Input::Frame));
            out.extend(self.feed(Input::Faces(faces(age))));
        }
        out
    }
}

fn verify(session: u16, required_age: u8) -> Input {
    Input::Vmc(VmcRequest::Verify {
        session,
        required_age,
    })
}

fn answers(actions: &[Action]) -> Vec<VmcAnswer> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AnswerVmc(answer) => Some(*answer),
            _ => None,
        })
        .collect()
}

fn host_decisions(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Send(Message::Decision { .. })))
        .count()
}

#[test]
fn a_session_is_decided_by_the_window_and_answered_to_the_vmc_alone() {
    let mut rig = Rig::new();
    let out = rig.feed(verify(7, 18));
    assert_eq!(rig.core.state().name(), "deciding(vmc)");
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::Emit(Event::MdbRx { .. }))));
    let out = rig.frames(5, Some(40.0));
    assert_eq!(
        answers(&out),
        vec![VmcAnswer {
            session: 7,
            decision: Decision::Allow
        }]
    );
    assert_eq!(host_decisions(&out), 0, "the host never asked: {out:?}");
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Emit(Event::MdbTx {
            id: 7,
            answer: "approved",
            ..
        })
    )));
    // The relay opens with the ALLOW's decision record, as for a host.
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Emit(Event::Decision {
            decision: Decision::Allow,
            ..
        })
    )));
    assert!(out.contains(&Action::Indicate(Indication::Decision(Decision::Allow))));
}

#[test]
fn the_required_age_moves_the_policy_and_a_lower_one_is_raised() {
    // 28 with sigma 2 is an ALLOW at 18 (26 >= 25), not at 21 (26 < 28).
    let mut rig = Rig::new();
    rig.feed(verify(1, 21));
    let out = rig.frames(5, Some(28.0));
    assert_eq!(
        answers(&out).first().map(|a| a.decision),
        Some(Decision::Refer)
    );
    // 16 is under the floor (18): raised, so 28 is an ALLOW as at 18, not refused.
    let mut rig = Rig::new();
    let out = rig.feed(verify(2, 16));
    assert!(answers(&out).is_empty(), "refused: {out:?}");
    let out = rig.frames(5, Some(28.0));
    assert_eq!(
        answers(&out).first().map(|a| a.decision),
        Some(Decision::Allow)
    );
}

#[test]
fn an_abort_drops_the_session_and_a_host_cancel_does_not() {
    let mut rig = Rig::new();
    rig.feed(verify(1, 18));
    // The host's CANCEL 1 is for its own REQUEST 1, not the VMC's session 1.
    rig.feed(Input::Host(Message::Cancel { id: 1 }));
    assert_eq!(rig.core.state().name(), "deciding(vmc)");
    let out = rig.feed(Input::Vmc(VmcRequest::Abort { session: 1 }));
    assert_eq!(rig.core.state().name(), "ready");
    assert!(out.contains(&Action::Indicate(Indication::Idle)));
    assert!(answers(&out).is_empty());
    let out = rig.frames(10, Some(40.0));
    assert!(answers(&out).is_empty() && host_decisions(&out) == 0);
}

#[test]
fn a_fault_or_a_new_session_answers_could_not_verify() {
    let mut rig = Rig::new();
    rig.feed(verify(1, 18));
    let out = rig.feed(verify(2, 18));
    assert_eq!(
        answers(&out),
        vec![VmcAnswer {
            session: 1,
            decision: Decision::Refer
        }]
    );
    let out = rig.feed(Input::CameraLost("unplugged".into()));
    assert_eq!(
        answers(&out),
        vec![VmcAnswer {
            session: 2,
            decision: Decision::Refer
        }]
    );
    assert!(out.contains(&Action::Indicate(Indication::Fault)));
    // While faulted, a new session is answered at once, and the host hears no DECISION.
    let out = rig.feed(verify(3, 18));
    assert_eq!(answers(&out).len(), 1);
    assert_eq!(host_decisions(&out), 0);
    // The MDB thread gone ends the run, gate closed.
    let out = rig.feed(Input::VmcLinkEnded("stopped".into()));
    assert!(out.contains(&Action::Indicate(Indication::Fault)));
    assert!(matches!(out.last(), Some(Action::Exit(Exit::Fault { .. }))));
}

/// xorshift64*: seeded, so a failing sequence can be replayed.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
fn every_session_is_answered_once_unless_aborted_and_approved_only_with_allow() {
    for seed in 0..400u64 {
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut rig = Rig::new();
        let mut open: Vec<u16> = Vec::new();
        let mut next_session = 1u16;
        for step in 0..200 {
            rig.now.frame_ms += 1 + next(&mut rng) % 120;
            rig.now.wall_ms = rig.now.frame_ms;
            let input = match next(&mut rng) % 12 {
                0 | 1 => {
                    let session = next_session;
                    next_session += 1;
                    open.push(session);
                    verify(session, [16, 18, 21, 0, 255][(next(&mut rng) % 5) as usize])
                }
                2 => Input::Vmc(VmcRequest::Abort {
                    session: next_session.saturating_sub(1),
                }),
                3 if next(&mut rng) % 10 == 0 => Input::CameraLost("c".into()),
                4 if next(&mut rng) % 10 == 0 => Input::CameraReopened,
                5 if next(&mut rng) % 20 == 0 => Input::ModelError("e".into()),
                6..=9 => Input::Faces(faces(match next(&mut rng) % 4 {
                    0 => None,
                    n => Some(8.0 + 12.0 * n as f32),
                })),
                _ => Input::Frame,
            };
            let case = format!(
                "seed {seed} step {step} ({}, {input:?})",
                rig.core.state().name()
            );
            if let Input::Vmc(VmcRequest::Abort { session }) = &input {
                if matches!(rig.core.state(), State::Deciding(w) if w.id == *session) {
                    open.retain(|o| o != session);
                }
            }
            let out = rig.feed(input);
            let allowed = out.iter().any(|a| {
                matches!(
                    a,
                    Action::Emit(Event::Decision {
                        decision: Decision::Allow,
                        ..
                    })
                )
            });
            for answer in answers(&out) {
                let at = open.iter().position(|o| *o == answer.session);
                let at = at.unwrap_or_else(|| panic!("{case}: answer to a closed session"));
                open.remove(at);
                if answer.decision == Decision::Allow {
                    assert!(allowed, "{case}: approved without an ALLOW record");
                }
            }
            assert_eq!(host_decisions(&out), 0, "{case}: {out:?}");
            if matches!(rig.core.state(), State::Stopping) {
                assert!(open.is_empty(), "{case}: exit left {open:?}");
                break;
            }
        }
        let still = match rig.core.state() {
            State::Deciding(w) => vec![w.id],
            _ => vec![],
        };
        assert_eq!(open, still, "seed {seed}: unanswered sessions");
    }
}

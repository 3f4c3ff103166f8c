//! The decision core alone, with no camera, thread or timer: every state x every input as
//! a table of the actions it returns, and random input sequences checked against the
//! rules the device must keep (the relay opens only with an ALLOW's decision, every fault
//! closes the gate and tells the host, every REQUEST is answered exactly once).

mod common;

use common::frame_faces as faces;

use agegate::actuate::Indication;
use agegate::daemon::core::{Action, Core, Exit, Input, Now, State};
use agegate::daemon::{DaemonSettings, Event};
use agegate::decide::Policy;
use agegate::domain::Decision;
use agegate::mdb::VmcRequest;
use agegate::serial::Message;
use agegate::session::{SessionSettings, Trigger};

fn settings(trigger: Trigger) -> DaemonSettings {
    DaemonSettings {
        session: SessionSettings {
            trigger,
            ..SessionSettings::default()
        },
        ..DaemonSettings::default()
    }
}

fn policy() -> Policy {
    Policy::new(18.0, 25.0, 1.0).expect("policy")
}

/// A core and its clocks, driven one input at a time.
struct Rig {
    core: Core,
    now: Now,
}

impl Rig {
    fn new(trigger: Trigger) -> Self {
        let now = Now::default();
        Self {
            core: Core::new(policy(), settings(trigger), now),
            now,
        }
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        self.core.handle(self.now, input, &mut out);
        out
    }

    fn advance(&mut self, ms: u64) {
        self.now.frame_ms += ms;
        self.now.wall_ms += ms;
    }

    /// A frame with an estimate, 66 ms after the last.
    fn frame(&mut self, age: Option<f32>) -> Vec<Action> {
        self.advance(66);
        let mut out = self.feed(Input::Frame);
        out.extend(self.feed(Input::Faces(faces(age))));
        out
    }
}

fn vmc_verify(session: u16) -> Input {
    Input::Vmc(VmcRequest::Verify {
        session,
        required_age: 18,
    })
}

fn request(id: u16) -> Input {
    Input::Host(Message::Request {
        id,
        required_age: 18,
    })
}

/// Each state of the table, reached the way the device reaches it.
fn in_state(name: &str) -> Rig {
    let trigger = if name == "deciding(face)" {
        Trigger::Face
    } else {
        Trigger::Request
    };
    let mut rig = Rig::new(trigger);
    // The first heartbeat and model check are out of the way, so the rows show what the
    // input itself does.
    rig.feed(Input::Tick);
    match name {
        "starting" => {}
        "ready" => {
            rig.feed(Input::Frame);
        }
        "deciding(request)" => {
            rig.feed(Input::Frame);
            rig.feed(request(1));
        }
        "deciding(face)" => {
            rig.frame(Some(40.0));
        }
        "deciding(vmc)" => {
            rig.feed(Input::Frame);
            rig.feed(vmc_verify(1));
        }
        "cooling_down" => {
            rig.feed(Input::Frame);
            rig.feed(request(1));
            for _ in 0..5 {
                rig.frame(Some(40.0));
            }
        }
        "faulted(camera)" => {
            rig.feed(Input::Frame);
            rig.feed(Input::CameraLost("unplugged".into()));
        }
        "faulted(model)" => {
            rig.feed(Input::Frame);
            rig.feed(Input::ModelError("injected".into()));
        }
        "faulted(link)" => {
            rig.feed(Input::Frame);
            rig.feed(Input::LinkLost("hung up".into()));
        }
        "stopping" => {
            rig.feed(Input::Frame);
            rig.feed(Input::Stop { signal: "SIGTERM" });
        }
        other => panic!("no state {other}"),
    }
    // The same instant in every row: 10 ms on, no timer due.
    rig.advance(10);
    rig
}

/// One action, short: what the table rows are made of.
fn describe(action: &Action) -> String {
    match action {
        Action::Indicate(Indication::Decision(d)) => format!("show {d}"),
        Action::Indicate(Indication::Fault) => "show fault".into(),
        Action::Indicate(Indication::Idle) => "show idle".into(),
        Action::Send(Message::Decision { id, decision, .. }) => format!("tx {decision} {id}"),
        Action::Send(Message::Fault { code, .. }) => format!("tx fault {:#04x}", code.0),
        Action::Send(Message::Heartbeat { state, .. }) => format!("tx heartbeat {state:?}"),
        Action::Send(Message::Pong { .. }) => "tx pong".into(),
        Action::Send(Message::Reason { reason, .. }) => format!("tx reason {reason}"),
        Action::Send(other) => format!("tx {other:?}"),
        Action::Emit(Event::Decision { decision, .. }) => format!("log {decision}"),
        Action::Emit(Event::Fault { code, reported, .. }) => {
            format!(
                "log fault {code:#04x}{}",
                if *reported { "" } else { " held" }
            )
        }
        Action::Emit(Event::Recovered { what, .. }) => format!("log recovered {what}"),
        Action::Emit(Event::SerialRx { .. }) => "log rx".into(),
        Action::Emit(Event::MdbRx { .. }) => "log mdb rx".into(),
        Action::Emit(Event::PolicyApplied { .. }) => "log policy applied".into(),
        Action::Emit(Event::MdbTx { id, answer, .. }) => format!("log mdb {answer} {id}"),
        Action::AnswerVmc(a) => format!("vmc {} {}", a.decision, a.session),
        Action::Emit(other) => format!("log {other:?}"),
        Action::ReopenCamera => "reopen camera".into(),
        Action::ReopenLink => "reopen link".into(),
        Action::ResetDecoder => "reset decoder".into(),
        Action::CheckModels => "check models".into(),
        Action::Wait { ms } => format!("wait {ms}"),
        Action::Ready => "ready".into(),
        Action::Exit(Exit::Fault { code, .. }) => format!("exit fault {:#04x}", code.0),
        Action::Exit(exit) => format!("exit {exit:?}"),
    }
}

const STATES: [&str; 10] = [
    "starting",
    "ready",
    "deciding(request)",
    "deciding(face)",
    "deciding(vmc)",
    "cooling_down",
    "faulted(camera)",
    "faulted(model)",
    "faulted(link)",
    "stopping",
];

fn inputs() -> Vec<(&'static str, Input)> {
    vec![
        ("tick", Input::Tick),
        ("frame", Input::Frame),
        ("faces(adult)", Input::Faces(faces(Some(40.0)))),
        ("faces(none)", Input::Faces(faces(None))),
        ("model_error", Input::ModelError("e".into())),
        ("stage_panic", Input::StagePanic("p".into())),
        ("bad_frame", Input::BadFrame("b".into())),
        ("camera_lost", Input::CameraLost("c".into())),
        ("camera_reopened", Input::CameraReopened),
        ("camera_still_lost", Input::CameraStillLost("c".into())),
        ("recording_ended", Input::RecordingEnded),
        ("request(9)", request(9)),
        ("cancel(1)", Input::Host(Message::Cancel { id: 1 })),
        ("ping", Input::Host(Message::Ping { nonce: 5 })),
        ("vmc_verify(9)", vmc_verify(9)),
        ("vmc_abort(1)", Input::Vmc(VmcRequest::Abort { session: 1 })),
        ("vmc_link_ended", Input::VmcLinkEnded("gone".into())),
        (
            "policy_offered",
            Input::PolicyOffered(Policy::new(21.0, 30.0, 1.0).expect("policy")),
        ),
        ("link_lost", Input::LinkLost("l".into())),
        ("link_restored", Input::LinkRestored),
        ("link_still_lost", Input::LinkStillLost("l".into())),
        ("model_file_changed", Input::ModelFileChanged("m".into())),
        ("gpio_error", Input::GpioError("g".into())),
        ("output_closed", Input::OutputClosed("o".into())),
        ("stop", Input::Stop { signal: "SIGHUP" }),
        ("abort", Input::Abort),
    ]
}

/// Every state x every input: the next state and the actions, in order. Read a row as
/// "in <state>, on <input>, the core goes to <state> and does <actions>".
const TABLE: &str = include_str!("daemon_core_table.txt");

/// The table's first lines. After a deliberate change to the core, rewrite the table with
/// `AGEGATE_WRITE_CORE_TABLE=1 cargo test --test daemon_core` and read the diff row by row.
const TABLE_HEADER: &str = "\
# The decision core, every state x every input (tests/daemon_core.rs).
# state | input | next state | actions, in order
# show = the gate's indication (relay on only for ALLOW), tx = sent to the host,
# vmc = the decision handed to the MDB thread for the vending machine, policy_offered =
# a telemetry policy/set (applied between decisions, never to an open window),
# log = an event record (`held`: the FAULT to the host was held back, same code < 1 s ago).
";

fn computed_table() -> String {
    let mut rows = String::new();
    for state in STATES {
        for (name, input) in inputs() {
            let mut rig = in_state(state);
            assert_eq!(
                rig.core.state().name().split('(').next(),
                state.split('(').next()
            );
            let actions: Vec<String> = rig.feed(input).iter().map(describe).collect();
            rows.push_str(&format!(
                "{state:<18} | {name:<18} | {:<18} | {}\n",
                rig.core.state().name(),
                actions.join(", ")
            ));
        }
    }
    rows
}

#[test]
fn every_state_and_input_does_what_the_table_says() {
    let computed = computed_table();
    if std::env::var_os("AGEGATE_WRITE_CORE_TABLE").is_some() {
        std::fs::write(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/daemon_core_table.txt"),
            format!("{TABLE_HEADER}{computed}"),
        )
        .expect("write the table");
    }
    let expected: Vec<&str> = TABLE.lines().filter(|l| !l.starts_with('#')).collect();
    let got: Vec<&str> = computed.lines().collect();
    assert_eq!(got.len(), STATES.len() * inputs().len());
    for (e, g) in expected.iter().zip(&got) {
        assert_eq!(e.trim_end(), g.trim_end(), "\nexpected: {e}\n     got: {g}");
    }
    assert_eq!(expected.len(), got.len());
}

#[test]
fn the_table_keeps_the_gate_closed_on_every_fault() {
    // What the table must show whatever its exact rows: every fault input outside
    // `stopping` drives the relay off and logs the fault.
    let faults = [
        "model_error",
        "stage_panic",
        "camera_lost",
        "link_lost",
        "model_file_changed",
        "gpio_error",
        "output_closed",
        "vmc_link_ended",
    ];
    for row in computed_table().lines() {
        let cols: Vec<&str> = row.split('|').map(str::trim).collect();
        let (state, input, actions) = (cols[0], cols[1], cols[3]);
        if faults.contains(&input) && state != "stopping" {
            assert!(
                actions.contains("show fault") && actions.contains("log fault"),
                "{row}"
            );
        }
        // The relay opens only with an ALLOW's decision record.
        if actions.contains("show ALLOW") {
            assert!(actions.contains("log ALLOW"), "{row}");
        }
    }
}

/// xorshift64*: seeded, so a failing sequence can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What the rules say about one input and its actions.
struct Checker {
    /// Open REQUEST ids (request trigger), answered or dropped later.
    outstanding: Vec<u16>,
    answered: Vec<u16>,
    /// When each fault code last went to the host.
    last_fault_sent: std::collections::HashMap<u8, u64>,
    /// Request trigger: every DECISION answers an open REQUEST (the face trigger sends
    /// them unasked).
    count_answers: bool,
}

impl Checker {
    fn check(&mut self, now: Now, before: &str, input: &Input, actions: &[Action], case: &str) {
        let allowed = actions.iter().any(|a| {
            matches!(
                a,
                Action::Emit(Event::Decision {
                    decision: Decision::Allow,
                    ..
                })
            )
        });
        for a in actions {
            if matches!(a, Action::Indicate(Indication::Decision(Decision::Allow))) {
                assert!(
                    allowed,
                    "{case}: the relay opened without an ALLOW decision: {actions:?}"
                );
            }
        }
        let is_fault = matches!(
            input,
            Input::ModelError(_)
                | Input::StagePanic(_)
                | Input::CameraLost(_)
                | Input::LinkLost(_)
                | Input::ModelFileChanged(_)
                | Input::GpioError(_)
                | Input::OutputClosed(_)
        );
        if is_fault && before != "stopping" {
            assert!(
                actions.contains(&Action::Indicate(Indication::Fault)),
                "{case}: {input:?} left the gate as it was: {actions:?}"
            );
            let event = actions.iter().find_map(|a| match a {
                Action::Emit(Event::Fault { code, reported, .. }) => Some((*code, *reported)),
                _ => None,
            });
            let (code, reported) = event.unwrap_or_else(|| panic!("{case}: no fault event"));
            let sent = actions
                .iter()
                .any(|a| matches!(a, Action::Send(Message::Fault { code: c, .. }) if c.0 == code));
            if !matches!(input, Input::LinkLost(_)) {
                // Told, or held back because the same code went out within the second.
                let recent = self
                    .last_fault_sent
                    .get(&code)
                    .is_some_and(|&t| now.frame_ms - t < 1_000);
                assert!(
                    sent || (!reported && recent),
                    "{case}: the host was not told: {actions:?}"
                );
            }
        }
        for a in actions {
            match a {
                Action::Send(Message::Fault { code, .. }) => {
                    self.last_fault_sent.insert(code.0, now.frame_ms);
                }
                Action::Send(Message::Decision { id, .. }) if self.count_answers => {
                    let at = self.outstanding.iter().position(|o| o == id);
                    let at = at.unwrap_or_else(|| {
                        panic!(
                            "{case}: DECISION for {id}, which is not open (answered: {:?})",
                            self.answered
                        )
                    });
                    self.outstanding.remove(at);
                    self.answered.push(*id);
                }
                _ => {}
            }
        }
    }
}

/// Random sequences as the shell would produce them: frames only when wanted, faces only
/// when asked for, host messages only while the line is up, reopen results after reopen
/// actions, time moving on.
fn random_run(seed: u64, trigger: Trigger) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut rig = Rig::new(trigger);
    let mut checker = Checker {
        outstanding: Vec::new(),
        answered: Vec::new(),
        last_fault_sent: Default::default(),
        count_answers: trigger == Trigger::Request,
    };
    let mut next_id = 1u16;
    let mut queued: Vec<Input> = Vec::new();
    for step in 0..300 {
        rig.advance(1 + rng.below(120));
        let input = if let Some(q) = queued.pop() {
            q
        } else {
            match rng.below(20) {
                0..=6 if rig.core.wants_frame() => {
                    if rng.chance(8) {
                        Input::BadFrame("b".into())
                    } else if rng.chance(3) {
                        Input::CameraLost("c".into())
                    } else {
                        if rig.core.wants_faces() {
                            queued.push(match rng.below(20) {
                                0 => Input::ModelError("e".into()),
                                1..=4 => Input::Faces(faces(None)),
                                n => Input::Faces(faces(Some(5.0 + 4.0 * n as f32))),
                            });
                        }
                        Input::Frame
                    }
                }
                7..=9 if rig.core.link_up() && trigger == Trigger::Request => {
                    if rng.chance(70) {
                        let id = next_id;
                        next_id += 1;
                        checker.outstanding.push(id);
                        Input::Host(Message::Request {
                            id,
                            required_age: [0, 18, 21, 5, 200][rng.below(5) as usize],
                        })
                    } else if rng.chance(50) {
                        Input::Host(Message::Cancel {
                            id: next_id.saturating_sub(1),
                        })
                    } else {
                        Input::Host(Message::Ping { nonce: 1 })
                    }
                }
                10 if rig.core.link_up() && rng.chance(20) => Input::LinkLost("l".into()),
                11 if rng.chance(3) => Input::GpioError("g".into()),
                12 if rng.chance(3) => Input::StagePanic("p".into()),
                13 if rng.chance(2) => Input::Stop { signal: "SIGTERM" },
                14 if rng.chance(1) => Input::Abort,
                15 if rng.chance(2) => Input::RecordingEnded,
                _ => Input::Tick,
            }
        };
        let before = rig.core.state().name();
        let case = format!("seed {seed} step {step} ({before}, {input:?})");
        if let Input::Host(Message::Cancel { id }) = &input {
            // A CANCEL of an open REQUEST closes it with no DECISION.
            if matches!(rig.core.state(), State::Deciding(w) if w.id == *id) {
                checker.outstanding.retain(|o| o != id);
            }
        }
        if matches!(input, Input::LinkLost(_)) {
            // The open REQUEST goes with the line: nothing can be sent.
            if let State::Deciding(w) = rig.core.state() {
                let id = w.id;
                checker.outstanding.retain(|o| *o != id);
            }
        }
        let actions = rig.feed(input.clone());
        checker.check(rig.now, before, &input, &actions, &case);
        for a in &actions {
            match a {
                Action::ReopenCamera => queued.push(if rng.chance(60) {
                    Input::CameraReopened
                } else {
                    Input::CameraStillLost("c".into())
                }),
                Action::ReopenLink => queued.push(if rng.chance(60) {
                    Input::LinkRestored
                } else {
                    Input::LinkStillLost("l".into())
                }),
                _ => {}
            }
        }
        if let Some(Action::Exit(exit)) = actions.iter().find(|a| matches!(a, Action::Exit(_))) {
            assert!(
                matches!(actions.last(), Some(Action::Exit(_))),
                "{case}: exit not last"
            );
            let after: Vec<Action> = rig.feed(Input::Tick);
            assert!(after.is_empty(), "{case}: acted after exiting: {after:?}");
            if *exit != Exit::Aborted && trigger == Trigger::Request {
                assert!(
                    checker.outstanding.is_empty(),
                    "{case}: exit ({exit:?}) left requests unanswered: {:?}",
                    checker.outstanding
                );
            }
            return;
        }
    }
    // Still running: only the open window's REQUEST may be unanswered.
    let open = match rig.core.state() {
        State::Deciding(w) => vec![w.id],
        _ => vec![],
    };
    if trigger == Trigger::Request {
        assert_eq!(
            checker.outstanding, open,
            "seed {seed}: unanswered requests"
        );
    }
}

#[test]
fn random_input_sequences_keep_the_rules() {
    for seed in 0..1_500 {
        random_run(seed, Trigger::Request);
    }
    for seed in 0..500 {
        random_run(seed, Trigger::Face);
    }
}

/// A REQUEST answered on the frames of a still photo of an adult (keypoints that never
/// move, no blink), with `[liveness] mode = "passive+motion"`: REFER with reason
/// `liveness` on the serial line and in the decision event, the relay never energised;
/// and only once the window spans `min_window_ms`, not at `min_frames`.
#[test]
fn a_still_photo_is_referred_for_liveness_and_never_allowed() {
    use agegate::domain::ReferReason;
    use agegate::liveness::{FrameEvidence, LivenessMode, LivenessSettings};
    let mut daemon = settings(Trigger::Request);
    daemon.session.liveness = LivenessSettings {
        mode: LivenessMode::PassiveMotion,
        ..LivenessSettings::default()
    };
    let min_window_ms = daemon.session.liveness.min_window_ms;
    let mut rig = Rig {
        core: Core::new(policy(), daemon, Now::default()),
        now: Now::default(),
    };
    rig.feed(Input::Frame);
    rig.feed(request(9));
    let photo = FrameEvidence {
        keypoints: [
            [120.0, 80.0],
            [160.0, 80.0],
            [140.0, 100.0],
            [140.0, 115.0],
            [105.0, 90.0],
            [175.0, 90.0],
        ],
        real: Some(0.9),
        live: Some(0.95),
        ear: Some(0.3),
        landmarks: None,
        tracked: None,
    };
    let mut all = Vec::new();
    let mut decided_at = None;
    for k in 0..40u64 {
        rig.advance(66);
        let mut f = faces(Some(40.0));
        f.liveness = Some(photo);
        let mut out = rig.feed(Input::Frame);
        out.extend(rig.feed(Input::Faces(f)));
        if decided_at.is_none()
            && out
                .iter()
                .any(|a| matches!(a, Action::Send(Message::Decision { .. })))
        {
            decided_at = Some(k);
        }
        all.extend(out);
    }
    let k = decided_at.expect("a decision");
    assert!(
        (k + 1) * 66 >= min_window_ms,
        "decided after {} frames",
        k + 1
    );
    assert!(all.iter().any(|a| matches!(
        a,
        Action::Send(Message::Decision {
            id: 9,
            decision: Decision::Refer,
            ..
        })
    )));
    assert!(all.iter().any(|a| matches!(
        a,
        Action::Send(Message::Reason {
            id: 9,
            reason: ReferReason::Liveness
        })
    )));
    assert!(all.iter().any(|a| matches!(
        a,
        Action::Emit(Event::Decision {
            reason: Some(ReferReason::Liveness),
            ..
        })
    )));
    assert!(!all
        .iter()
        .any(|a| matches!(a, Action::Indicate(Indication::Decision(Decision::Allow)))));
}

/// A policy offered while a window is open waits for the window's verdict, which the
/// policy it opened with decides; the next window has the new one.
#[test]
fn an_offered_policy_waits_for_the_open_window() {
    let mut rig = Rig::new(Trigger::Request);
    rig.feed(Input::Frame);
    rig.feed(request(1));
    // Stricter: ALLOW only from 32 (age - sigma), where the board's ALLOWs from 25.
    let stricter = Policy::new(18.0, 32.0, 1.0).expect("policy");
    let out = rig.feed(Input::PolicyOffered(stricter));
    assert!(out.is_empty(), "applied to an open window: {out:?}");
    let mut out = Vec::new();
    for _ in 0..5 {
        out.extend(rig.frame(Some(30.0)));
    }
    let applied_at = out
        .iter()
        .position(|a| matches!(a, Action::Emit(Event::PolicyApplied { .. })))
        .expect("applied once the window closed");
    let decided_at = out
        .iter()
        .position(|a| {
            matches!(
                a,
                Action::Send(Message::Decision {
                    id: 1,
                    decision: Decision::Allow,
                    ..
                })
            )
        })
        .expect("the open window decided with the board's policy");
    assert!(decided_at < applied_at);
    rig.advance(2_000);
    rig.feed(request(2));
    let mut out = Vec::new();
    for _ in 0..5 {
        out.extend(rig.frame(Some(30.0)));
    }
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Send(Message::Decision {
            id: 2,
            decision: Decision::Refer,
            ..
        })
    )));
}

//! One decision path: the window the tools decide with (`session::FrameWindow`, under
//! `agegate estimate`, `eval` and `calibrate`) decides every window of the bundled
//! recordings exactly as the daemon did, decision and reason, with and without
//! `[liveness]`.
//!
//! The daemon runs as a user runs it (`agegate run`, JSON events). The same recording's
//! frames go through the board's pipeline in order, as the daemon computes them; each
//! window the daemon opened is then fed, from the frame it opened at, to the tools'
//! window. Before this path was one, eval decided a photo on the policy alone: on the
//! attack recording it would have ALLOWed where the daemon REFERs for liveness.

mod common;

use std::path::Path;

use agegate::capture::open as open_source;
use agegate::config::Board;
use agegate::daemon::FaceEstimator;
use agegate::pipeline::Pipeline;
use agegate::session::{decide_window, FrameFaces};
use common::{root, run};
use image::RgbImage;
use serde_json::Value;

/// What the daemon decided: when, from when, on how many frames, what and why.
#[derive(Debug)]
struct DaemonDecision {
    t_ms: u64,
    decide_ms: u64,
    frames: u64,
    decision: Value,
    reason: Value,
}

fn daemon_decisions(board: &Path) -> Vec<DaemonDecision> {
    let out = run(board);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    out.events
        .into_iter()
        .filter(|e| e["event"] == "decision")
        .map(|e| DaemonDecision {
            t_ms: e["t_ms"].as_u64().expect("t_ms"),
            decide_ms: e["decide_ms"].as_u64().expect("decide_ms"),
            frames: e["frames"].as_u64().expect("frames"),
            decision: e["decision"].clone(),
            reason: e["reason"].clone(),
        })
        .collect()
}

/// Every frame of the board's recording through its pipeline, in order, at the
/// recording's own times.
fn recorded_faces(board: &Board, pipeline: &Pipeline) -> Vec<(u64, FrameFaces)> {
    let capture = board.capture.as_ref().expect("the board has a [capture]");
    let mut source = open_source(capture).expect("open the recording");
    let mut frame = RgbImage::new(1, 1);
    let mut out = Vec::new();
    while let Some(meta) = source.next_frame(&mut frame).expect("a readable frame") {
        let t_ms = meta.timestamp_ms.expect("a recording's frame has its time");
        out.push((t_ms, pipeline.faces(&frame).expect("the pipeline runs")));
    }
    out
}

/// Runs `board` both ways and compares every decision; returns the reasons seen.
fn compare(board_file: &str) -> Vec<Value> {
    let path = root().join(board_file);
    let daemon = daemon_decisions(&path);
    assert!(
        !daemon.is_empty(),
        "{board_file}: the daemon decided nothing"
    );
    let board = Board::load(&path).expect("board");
    let pipeline = Pipeline::from_board(&board).expect("models");
    let frames = recorded_faces(&board, &pipeline);
    for d in &daemon {
        let start = d.t_ms - d.decide_ms;
        let window = frames
            .iter()
            .filter(|(t, _)| *t >= start)
            .map(|(t, f)| (*t, f));
        let v = decide_window(board.daemon.session, board.policy, start, window)
            .expect("the board's window settings");
        let tools = (
            serde_json::to_value(v.decision).expect("decision"),
            serde_json::to_value(v.reason).expect("reason"),
            v.decided_ms,
            v.aggregate.map_or(0, |a| a.frames as u64),
        );
        assert_eq!(
            tools,
            (d.decision.clone(), d.reason.clone(), d.t_ms, d.frames),
            "{board_file}: the window opened at {start} ms decided differently"
        );
    }
    daemon.into_iter().map(|d| d.reason).collect()
}

#[test]
fn the_tools_window_decides_the_demo_recording_as_the_daemon() {
    let reasons = compare("boards/dev.toml");
    assert!(reasons.len() >= 2, "{reasons:?}");
}

#[test]
fn the_tools_window_decides_the_attack_recording_as_the_daemon_liveness_on() {
    let reasons = compare("boards/dev-liveness.toml");
    // The recording holds presentation attacks: the comparison covers liveness REFERs.
    assert!(reasons.iter().any(|r| r == "liveness"), "{reasons:?}");
}

//! `agegate mdb-sim` end to end: a simulated vending machine controller drives the real
//! daemon (pipeline, models, policy, window, liveness, the AVD's thread) over the
//! in-memory MDB bus, and the answers must be what a machine may rely on.

mod common;

use std::path::{Path, PathBuf};

use common::{agegate, root, shared_data, skip};
use serde_json::Value;

/// Children's faces from UTKFace val (ages 5 to 10), copied into `dir` as one scene.
fn child_scene(data: &Path, dir: &Path) -> PathBuf {
    let manifest = std::fs::read_to_string(data.join("utkface/val.csv")).expect("val.csv");
    let scene = dir.join("child");
    std::fs::create_dir_all(&scene).expect("mkdir");
    let children = manifest.lines().skip(1).filter_map(|line| {
        let mut cols = line.split(',');
        let (path, age) = (cols.next()?, cols.next()?.parse::<u32>().ok()?);
        (5..=10)
            .contains(&age)
            .then(|| data.join("utkface").join(path))
    });
    for (i, photo) in children.take(8).enumerate() {
        std::fs::copy(&photo, scene.join(format!("{i:02}.jpg"))).expect("copy a child's photo");
    }
    scene
}

struct Run {
    sessions: Vec<Value>,
    summary: Value,
}

fn simulate(board: &str, sessions: usize, scenes: &[String]) -> Run {
    let mut cmd = agegate();
    cmd.args(["mdb-sim", "--board"])
        .arg(root().join(board))
        .args(["--sessions", &sessions.to_string(), "--seed", "7"])
        .args(["--abort-percent", "15"]);
    for scene in scenes {
        cmd.args(["--scene", scene]);
    }
    let out = cmd.output().expect("starting agegate mdb-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mdb-sim failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let (summary, sessions) = lines.split_last().expect("a summary line");
    Run {
        sessions: sessions.to_vec(),
        summary: summary.clone(),
    }
}

fn count(run: &Run, scene: &str, answer: &str) -> u64 {
    run.summary["summary"]["answers"][scene][answer]
        .as_u64()
        .unwrap_or(0)
}

fn check_sessions(run: &Run, expected: usize) {
    assert_eq!(run.sessions.len(), expected);
    for line in &run.sessions {
        for key in [
            "answer",
            "decision",
            "required_age",
            "response_ms_max",
            "exchanges",
        ] {
            assert!(line.get(key).is_some(), "no `{key}` in {line}");
        }
        let answer = line["answer"].as_str().expect("answer");
        assert!(
            ["approved", "not_approved", "not_verified", "aborted"].contains(&answer),
            "{line}"
        );
        if answer == "approved" {
            assert_eq!(line["decision"], "ALLOW", "{line}");
            assert_eq!(line["scene"], "adult", "{line}");
        }
    }
    let summary = &run.summary["summary"];
    assert_eq!(summary["violations"], Value::Array(vec![]), "{summary}");
    assert!(summary["resets"].as_u64() >= Some(1));
    assert_eq!(summary["resets"], summary["just_reset_after_reset"]);
    // The bus: every command answered, none garbled.
    assert_eq!(run.summary["bus"]["garbled"], 0, "{}", run.summary);
}

#[test]
fn a_vending_machine_gets_approvals_for_adults_only() {
    let Some(data) = shared_data() else {
        return skip(
            "a_vending_machine_gets_approvals_for_adults_only",
            "no ../shared/data for the child scene",
        );
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let child = child_scene(&data, dir.path());
    let frames = root().join("tests/frames");
    let scenes = [
        format!("adult={}:4-13,23-32", frames.join("demo.mjpeg").display()),
        format!("empty={}:0-3,14-22", frames.join("demo.mjpeg").display()),
        format!("child={}", child.display()),
    ];
    let sessions = 30;
    let run = simulate("boards/dev-mdb.toml", sessions, &scenes);
    check_sessions(&run, sessions);
    assert!(count(&run, "adult", "approved") >= 1, "{}", run.summary);
    for scene in ["child", "empty"] {
        assert_eq!(count(&run, scene, "approved"), 0, "{}", run.summary);
    }
    // The children are told "not approved" (DENY), not merely "could not verify".
    assert!(count(&run, "child", "not_approved") >= 1, "{}", run.summary);
    assert!(
        run.sessions.iter().any(|l| l["answer"] == "aborted"),
        "no abort was tried"
    );
}

#[test]
fn with_liveness_on_no_photo_or_attack_is_approved() {
    // The vending board as shipped: passive+motion liveness. The bundled adults are still
    // photos and the attacks prints and screens: none may be approved.
    let sessions = 6;
    let run = simulate("boards/vending-mdb.toml", sessions, &[]);
    check_sessions(&run, sessions);
    for scene in ["adult", "empty", "attack"] {
        assert_eq!(count(&run, scene, "approved"), 0, "{}", run.summary);
    }
}

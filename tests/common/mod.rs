//! Shared helpers of the integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn photo(name: &str) -> PathBuf {
    root().join("tests/photos").join(name)
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

pub fn detector_model() -> PathBuf {
    root().join("models/blazeface_short.onnx")
}

pub fn fixture_age_model() -> PathBuf {
    fixture("age_fixture.onnx")
}

/// The labelled data beside the checkout (`../shared/data`), absent in a user's clone.
pub fn shared_data() -> Option<PathBuf> {
    let dir = root().join("../shared/data");
    dir.join("utkface/val.csv").is_file().then_some(dir)
}

/// Says why a test that needs something absent (the shared data, the onnxruntime
/// library) does nothing, so a skip is never silent. Under `CI=true` (as `.ci/run` runs,
/// where everything is installed) a missing prerequisite is a failure, not a skip.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {why}; CI=true, where this test must run (scripts/setup installs what it needs)");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// The `agegate` binary. When the tests themselves run under an emulator (the aarch64 run
/// under qemu-user), `AGEGATE_TEST_RUNNER` names the emulator command to start it with,
/// since a child process of an emulated program is started by the host kernel.
pub fn agegate() -> Command {
    let bin = env!("CARGO_BIN_EXE_agegate");
    match std::env::var("AGEGATE_TEST_RUNNER") {
        Ok(runner) if !runner.trim().is_empty() => {
            let mut parts = runner.split_whitespace();
            let mut cmd = Command::new(parts.next().unwrap_or_default());
            cmd.args(parts).arg(bin);
            cmd
        }
        _ => Command::new(bin),
    }
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("writing a test file");
}

/// `agegate run --board BOARD` to its end; panics, with its stderr, unless it succeeds.
/// Returns its standard output.
pub fn run_board(board: &Path) -> String {
    let out = agegate()
        .args(["run", "--board"])
        .arg(board)
        .output()
        .expect("starting agegate run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `agegate run` printed and how it ended.
pub struct RunOutput {
    pub code: Option<i32>,
    /// Its JSON event lines, each parsed.
    pub events: Vec<serde_json::Value>,
    pub stderr: String,
}

/// `agegate run --board BOARD` from the repository root, to its end.
pub fn run(board: &Path) -> RunOutput {
    let out = agegate()
        .args(["run", "--board"])
        .arg(board)
        .current_dir(root())
        .output()
        .expect("start agegate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    RunOutput {
        code: out.status.code(),
        events,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A frame's faces as the pipeline hands them to the decision core: one face of `age`
/// (sigma 2) in a fixed box, or none.
pub fn frame_faces(age: Option<f32>) -> agegate::daemon::core::FrameFaces {
    agegate::daemon::core::FrameFaces {
        main: age.map(|age| {
            (
                agegate::detect::BBox {
                    x0: 100.0,
                    y0: 50.0,
                    x1: 180.0,
                    y1: 130.0,
                },
                agegate::estimate::AgeEstimate {
                    age,
                    sigma: 2.0,
                    steps: vec![age],
                    p_over: None,
                },
            )
        }),
        others: heapless::Vec::new(),
        quality: None,
        liveness: None,
    }
}

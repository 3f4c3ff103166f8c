//! `agegate bench`: the report has every key, with plausible values. Speed itself is never
//! asserted (shared machines are noisy): that is the benchmark's job, not a test's.

mod common;

use common::{agegate, root};

#[test]
fn bench_reports_every_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = agegate()
        .args([
            "bench",
            "--iterations",
            "2",
            "--warmup",
            "0",
            "--threads",
            "2",
        ])
        .arg("--json")
        .arg(&json)
        .current_dir(root())
        .output()
        .expect("start agegate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    for key in [
        "decode_ms",
        "detect_ms",
        "detect_graph_ms",
        "align_ms",
        "estimate_ms",
        "frame_ms",
        "estimate_ms_int8",
        "load_ms",
        "rss_peak_mb",
    ] {
        let v = report[key].as_f64().unwrap_or(-1.0);
        assert!(v > 0.0 && v.is_finite(), "{key} = {}", report[key]);
    }
    // the whole frame includes detection and the estimate
    let f = |k: &str| report[k].as_f64().unwrap_or(0.0);
    assert!(f("frame_ms") > 0.5 * f("detect_ms"), "{report}");
    // one pass of the graph is part of detection
    assert!(f("detect_ms") > 0.5 * f("detect_graph_ms"), "{report}");
    assert!(report["frame"]
        .as_str()
        .is_some_and(|s| s.contains("demo.mjpeg")));
    assert_eq!(report["arch"], std::env::consts::ARCH);
    // --threads 2: the same stages again on two threads, beside the single-thread figures
    assert_eq!(report["threads"], 1);
    let threaded = &report["threaded"];
    assert_eq!(threaded["threads"], 2, "{report}");
    for key in ["detect_ms", "estimate_ms", "frame_ms", "frame_speedup"] {
        let v = threaded[key].as_f64().unwrap_or(-1.0);
        assert!(
            v > 0.0 && v.is_finite(),
            "threaded.{key} = {}",
            threaded[key]
        );
    }
    let speedup = f("frame_ms") / threaded["frame_ms"].as_f64().unwrap_or(0.0);
    assert!((speedup - threaded["frame_speedup"].as_f64().unwrap_or(0.0)).abs() < 1e-6);
}

/// With `[liveness]` on, the liveness models and the point tracker are timed too.
#[test]
fn bench_times_the_liveness_stages_when_the_board_asks_for_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = agegate()
        .args(["bench", "--iterations", "2", "--warmup", "0"])
        .args(["--board", "boards/dev-liveness.toml"])
        .arg("--json")
        .arg(&json)
        .current_dir(root())
        .output()
        .expect("start agegate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("report")).expect("JSON");
    for key in ["liveness_ms", "track_ms"] {
        let v = report[key].as_f64().unwrap_or(-1.0);
        assert!(v > 0.0 && v.is_finite(), "{key} = {}", report[key]);
    }
}

#[test]
fn bench_refuses_a_thread_count_out_of_range() {
    let out = agegate()
        .args(["bench", "--iterations", "1", "--threads", "0"])
        .current_dir(root())
        .output()
        .expect("start agegate");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--threads 0"), "{stderr}");
}

#[cfg(not(feature = "ort"))]
#[test]
fn compare_onnxruntime_without_the_feature_says_how_to_get_it() {
    let out = agegate()
        .args([
            "bench",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--compare-onnxruntime",
        ])
        .current_dir(root())
        .output()
        .expect("start agegate");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--features ort"), "{stderr}");
}

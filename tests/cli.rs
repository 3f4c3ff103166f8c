//! The `agegate` binary end to end: estimate and eval on the bundled photos, bad input.

mod common;

use common::*;
use serde_json::Value;

fn board_args() -> Vec<String> {
    // The dev board with the fixture age model, so these tests do not depend on which
    // trained model is shipped.
    vec![
        "--board".into(),
        root().join("boards/dev.toml").display().to_string(),
        "--age-model".into(),
        fixture_age_model().display().to_string(),
    ]
}

#[test]
fn estimate_prints_one_json_line_per_photo_and_survives_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("readme.jpg");
    write(&text, "not a picture");
    let output = agegate()
        .arg("estimate")
        .arg(photo("astronaut.jpg"))
        .arg(&text)
        .arg(photo("rocket_no_face.jpg"))
        .arg("/nonexistent/x.png")
        .arg(photo("grace_hopper_grey.png"))
        .args(board_args())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for (line, good) in [(0, true), (4, true)] {
        let faces = lines[line]["faces"].as_array().unwrap();
        assert_eq!(faces.len(), 1, "{}", lines[line]);
        assert_eq!(good, faces[0]["main"] == true);
        for key in [
            "bbox",
            "keypoints",
            "age",
            "sigma",
            "steps",
            "decision",
            "score",
        ] {
            assert!(faces[0].get(key).is_some(), "missing {key} in {}", faces[0]);
        }
        assert_eq!(faces[0]["keypoints"].as_array().unwrap().len(), 6);
    }
    assert!(lines[1]["error"].as_str().unwrap().contains("not an image"));
    assert_eq!(lines[2]["faces"].as_array().unwrap().len(), 0);
    assert_eq!(lines[2]["decision"], "REFER");
    assert!(lines[3]["error"].as_str().unwrap().contains("no such file"));
}

#[test]
fn estimate_fails_only_when_nothing_could_be_processed() {
    let output = agegate()
        .arg("estimate")
        .arg("/nonexistent/a.jpg")
        .args(board_args())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
}

#[test]
fn a_bad_board_file_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let board = dir.path().join("bad.toml");
    let good = std::fs::read_to_string(root().join("boards/dev.toml")).unwrap();
    write(
        &board,
        &good.replace("legal_age = 18", "legal_age = 18\nk_sgima = 2.0"),
    );
    let output = agegate()
        .args(["estimate", "x.jpg", "--board"])
        .arg(&board)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("k_sgima") && stderr.contains("bad.toml"),
        "{stderr}"
    );

    write(
        &board,
        &good.replace("../models/blazeface_short.onnx", "../models/nope.onnx"),
    );
    let output = agegate()
        .args(["estimate", "x.jpg", "--board"])
        .arg(&board)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("models.detector") && stderr.contains("nope.onnx"),
        "{stderr}"
    );
}

#[test]
fn a_bad_model_file_stops_the_command_with_its_name() {
    let output = agegate()
        .arg("estimate")
        .arg(photo("astronaut.jpg"))
        .arg("--age-model")
        .arg(fixture("age_truncated.onnx"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("age_truncated.onnx") && stderr.contains("not a valid ONNX model"),
        "{stderr}"
    );
}

/// Runs `agegate eval` on the dev board with the fixture model, with `extra` arguments;
/// asserts it succeeded and returns the JSON report.
fn eval_report(
    manifest: &std::path::Path,
    photos: &std::path::Path,
    json: &std::path::Path,
    extra: impl FnOnce(&mut std::process::Command),
) -> Value {
    let mut command = agegate();
    command
        .args(["eval", "--manifest"])
        .arg(manifest)
        .arg("--root")
        .arg(photos)
        .arg("--json")
        .arg(json)
        .args(board_args());
    extra(&mut command);
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

#[test]
fn eval_writes_every_key_the_report_promises() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    let photos = root().join("tests/photos");
    write(
        &manifest,
        "path,age,gender,race\nastronaut.jpg,39,1,0\nastronaut_grey.jpg,39,1,0\ngrace_hopper.jpg,78,1,0\n\
         grace_hopper_tight_crop.jpg,78,1,\nrocket_no_face.jpg,30,,\nmissing.jpg,16,0,2\n",
    );
    let plot = dir.path().join("bands.svg");
    let report = eval_report(&manifest, &photos, &dir.path().join("report.json"), |c| {
        c.arg("--plot").arg(&plot);
    });
    assert_eq!(report["n"], 6);
    assert_eq!(report["no_face"], 1);
    assert_eq!(report["failed"], 1);
    assert_eq!(report["n_estimated"], 4);
    for key in [
        "mae",
        "cs5",
        "challenge25_fpr",
        "adult25_referral_rate",
        "step_mae",
        "per_image_csv",
    ] {
        assert!(report.get(key).is_some(), "missing {key}");
    }
    let bands = report["bands"].as_object().unwrap();
    let names: Vec<&str> = bands.keys().map(String::as_str).collect();
    for band in ["0-12", "13-17", "18-24", "25-34", "35-49", "50+"] {
        assert!(names.contains(&band), "{names:?}");
    }
    assert_eq!(bands["35-49"]["n"], 2);
    assert_eq!(bands["50+"]["n"], 2);
    // The under-18 row failed to load: it is a failure, not a person the gate saw, so
    // there is no minor to compute the rate over.
    assert_eq!(report["challenge25_fpr"], Value::Null);
    assert_eq!(report["groups"]["gender"]["1"]["n"], 4);
    assert_eq!(report["groups"]["race"]["0"]["n"], 3);
    let csv = std::fs::read_to_string(report["per_image_csv"].as_str().unwrap()).unwrap();
    assert_eq!(csv.lines().count(), 7);
    assert!(csv.contains("no_face") && csv.contains("failed"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("50+"));
}

#[test]
fn eval_writes_each_degradation_s_rows_beside_the_clean_ones() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    write(
        &manifest,
        "path,age\nastronaut.jpg,39\ngrace_hopper.jpg,78\nrocket_no_face.jpg,30\n",
    );
    let photos = root().join("tests/photos");
    let report = eval_report(&manifest, &photos, &dir.path().join("report.json"), |c| {
        c.args(["--degrade", "grey,small+jpeg"]);
    });
    let clean = std::fs::read_to_string(dir.path().join("report.csv")).unwrap();
    for kind in ["grey", "small+jpeg"] {
        let path = dir.path().join(format!("report.{kind}.csv"));
        assert_eq!(
            report["robustness"][kind]["per_image_csv"].as_str(),
            Some(path.to_str().unwrap()),
            "{kind}"
        );
        let rows = std::fs::read_to_string(&path).unwrap();
        // The same header and one row per photo, in the manifest's order.
        assert_eq!(rows.lines().next(), clean.lines().next());
        let paths = |csv: &str| -> Vec<String> {
            csv.lines()
                .skip(1)
                .map(|l| l.split(',').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(paths(&rows), paths(&clean), "{kind}");
        assert!(rows.contains("no_face"), "{kind}: {rows}");
    }
}

#[test]
fn eval_refuses_a_manifest_with_a_bad_age() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("m.csv");
    write(&manifest, "path,age\na.jpg,12\nb.jpg,old\n");
    let output = agegate()
        .args(["eval", "--manifest"])
        .arg(&manifest)
        .arg("--json")
        .arg(dir.path().join("r.json"))
        .args(board_args())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("m.csv, line 3: age `old` is not a number"),
        "{stderr}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["estimate", "eval", "crops", "calibrate", "bench", "run"] {
        let output = agegate().args([sub, "--help"]).output().unwrap();
        assert!(output.status.success());
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage"));
    }
}

/// `agegate calibrate` on a manifest of the bundled photos, labelled as the test needs
/// (the labels, not the faces, make a row a minor).
fn calibrate(dir: &std::path::Path, rows: &str, args: &[&str]) -> (Option<i32>, String) {
    let manifest = dir.join("set.csv");
    write(&manifest, &format!("path,age\n{rows}"));
    let output = agegate()
        .args(["calibrate", "--manifest"])
        .arg(&manifest)
        .arg("--root")
        .arg(root().join("tests/photos"))
        .args(args)
        .args(board_args())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn calibrate_refuses_what_cannot_bound_the_minors_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policy.toml");
    let out_arg = out.display().to_string();
    let two = "astronaut.jpg,39\ngrace_hopper.jpg,78\n";
    for eps in ["0", "-0.01", "1.5", "NaN"] {
        let (code, stderr) = calibrate(
            dir.path(),
            two,
            &["--max-minor-allow", eps, "--out", &out_arg],
        );
        assert_eq!(code, Some(2), "{eps}: {stderr}");
        assert!(stderr.contains("--max-minor-allow"), "{eps}: {stderr}");
    }
    // No minor in the set: the message says how many it would take.
    let (code, stderr) = calibrate(
        dir.path(),
        two,
        &["--max-minor-allow", "0.001", "--out", &out_arg],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("no under-18") && stderr.contains("2995"),
        "{stderr}"
    );
    // One minor bounds the share allowed at 0.95 at best.
    let (code, stderr) = calibrate(
        dir.path(),
        "astronaut.jpg,12\ngrace_hopper.jpg,78\n",
        &["--max-minor-allow", "0.01", "--out", &out_arg],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("1 minors") && stderr.contains("at least 299 minors"),
        "{stderr}"
    );
    // The p_over rule on a model without that output.
    let (code, stderr) = calibrate(
        dir.path(),
        "astronaut.jpg,12\ngrace_hopper.jpg,78\n",
        &[
            "--max-minor-allow",
            "0.99",
            "--rule",
            "p-over",
            "--out",
            &out_arg,
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("p_over"), "{stderr}");
    assert!(
        !out.exists(),
        "a refused calibration wrote {}",
        out.display()
    );
}

#[test]
fn a_calibrated_policy_loads_as_the_board_s_policy() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("policy.toml");
    // The "minor" is the astronaut (about 40 to the model): the chosen threshold must
    // sit above their estimate, so the gate no longer allows that face.
    let (code, stderr) = calibrate(
        dir.path(),
        "astronaut.jpg,12\ngrace_hopper.jpg,78\ngrace_hopper_tight_crop.jpg,78\n",
        &[
            "--max-minor-allow",
            "0.99",
            "--out",
            &out.display().to_string(),
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("<- chosen"), "{stderr}");
    let policy = std::fs::read_to_string(&out).unwrap();
    for key in [
        "rule = \"threshold\"",
        "allow_at = ",
        "[policy.calibration]",
        "manifest_sha256 = ",
        "minors = 1",
        "n = 3",
        "max_minor_allow = 0.99",
    ] {
        assert!(policy.contains(key), "{key} missing from:\n{policy}");
    }
    // The dev board with its [policy] replaced by the calibrated one.
    let dev = std::fs::read_to_string(root().join("boards/dev.toml")).unwrap();
    let dev = dev.replace("../", &format!("{}/", root().display()));
    let start = dev.find("[policy]").unwrap();
    let end = start + dev[start..].find("\n[detector]").unwrap();
    let board = dir.path().join("calibrated.toml");
    write(
        &board,
        &format!("{}{policy}\n{}", &dev[..start], &dev[end..]),
    );
    let estimate = agegate()
        .args(["estimate", "--board"])
        .arg(&board)
        .arg("--age-model")
        .arg(fixture_age_model())
        .arg(photo("astronaut.jpg"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&estimate.stdout);
    assert!(
        estimate.status.success(),
        "{}",
        String::from_utf8_lossy(&estimate.stderr)
    );
    let line: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_ne!(line["decision"], "ALLOW", "{line}");
}

#[test]
fn hash_prints_the_pins_and_a_wrong_pin_refuses_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let dev = std::fs::read_to_string(root().join("boards/dev.toml")).unwrap();
    let dev = dev.replace("../", &format!("{}/", root().display()));
    // The board without pins, then with what `agegate hash` prints.
    let unpinned: String = dev
        .lines()
        .filter(|l| !l.starts_with("detector_sha256") && !l.starts_with("age_sha256"))
        .map(|l| format!("{l}\n"))
        .collect();
    let board = dir.path().join("board.toml");
    write(&board, &unpinned);
    let output = agegate().arg("hash").arg(&board).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let pins = String::from_utf8_lossy(&output.stdout).into_owned();
    let lines: Vec<&str> = pins.lines().collect();
    assert_eq!(lines.len(), 2, "{pins}");
    assert!(
        lines[0].starts_with("detector_sha256 = \"") && lines[1].starts_with("age_sha256 = \"")
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("not pinned yet"));
    let pinned = unpinned.replacen("[models]\n", &format!("[models]\n{pins}"), 1);
    write(&board, &pinned);
    let estimate = |board: &std::path::Path| {
        agegate()
            .args(["estimate", "--board"])
            .arg(board)
            .arg(photo("astronaut.jpg"))
            .output()
            .unwrap()
    };
    let ok = estimate(&board);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // One hex digit changed: the age model is refused, naming the file and both hashes.
    let age_line = lines[1];
    let found = &age_line["age_sha256 = \"".len()..age_line.len() - 1];
    let flipped = format!(
        "{}{}",
        if found.starts_with('0') { '1' } else { '0' },
        &found[1..]
    );
    write(&board, &pinned.replace(found, &flipped));
    let refused = estimate(&board);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("age_student_int8.onnx")
            && stderr.contains(found)
            && stderr.contains(&flipped)
            && stderr.contains("models.age_sha256"),
        "{stderr}"
    );
    // Not a hash at all: the board fails at load, naming the key.
    write(&board, &pinned.replace(found, "abc"));
    let bad = estimate(&board);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("models.age_sha256"),
        "{bad:?}"
    );
}

#[test]
fn every_shipped_board_pins_the_shipped_models() {
    for board in ["dev", "rpi4", "rpi5", "jetson-orin-nano"] {
        let files =
            agegate::config::Board::load_model_files(&root().join(format!("boards/{board}.toml")))
                .unwrap_or_else(|e| panic!("{board}: {e}"));
        for file in files {
            assert!(file.pinned.is_some(), "{board}: {} is not pinned", file.key);
            agegate::pipeline::verify_pin(&file)
                .unwrap_or_else(|e| panic!("{board}: {e} (run scripts/pin-boards)"));
        }
    }
}

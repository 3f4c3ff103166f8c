//! Presentation-attack detection: the converted models in tract against the TF.js graphs'
//! outputs (models/scripts/convert_liveness.py writes them), a board that asks for
//! liveness refusing to start without its models, and the scores reaching `estimate`.

mod common;

use agegate::engine::{OnnxFile, Runtime};
use common::*;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Runs `models/<name>.onnx` in tract on `<name>_input.png` and compares every output with
/// the TF.js interpreter's, within the fixture's tolerance per output.
fn parity(name: &str) {
    let dir = fixture("liveness_parity");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}_expected.json"))).expect("fixture"),
    )
    .expect("json");
    let input = image::open(dir.join(format!("{name}_input.png")))
        .expect("input png")
        .to_rgb8();
    let side = input.width() as usize;
    let plane = side * side;
    let mut nchw = vec![0.0f32; 3 * plane];
    for (i, p) in input.pixels().enumerate() {
        for c in 0..3 {
            nchw[c * plane + i] = f32::from(p[c]);
        }
    }
    let outputs = expected["outputs"].as_object().expect("outputs");
    let names: Vec<&str> = outputs.keys().map(String::as_str).collect();
    let model = OnnxFile::read(&root().join(format!("models/{name}.onnx")))
        .expect("read")
        .into_runnable(&[1, 3, side, side], &names, &Runtime::single_thread())
        .expect("runnable");
    let got = model.run(&nchw).expect("run");
    for (out, name_out) in got.iter().zip(&names) {
        let want = floats(&outputs[*name_out]["data"]);
        let atol = expected["atol_per_output"][*name_out]
            .as_f64()
            .expect("atol") as f32;
        assert_eq!(out.len(), want.len(), "{name}.{name_out} length");
        let worst = out
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= atol,
            "{name}.{name_out}: worst difference {worst} > {atol}"
        );
    }
}

#[test]
fn the_anti_spoof_model_in_tract_matches_its_tfjs_graph() {
    parity("antispoof");
}

#[test]
fn the_liveness_model_in_tract_matches_its_tfjs_graph() {
    parity("liveness");
}

#[test]
fn the_face_mesh_in_tract_matches_its_tfjs_graph() {
    parity("facemesh");
}

/// `agegate run` on a board that must be refused at start: its stderr, and that no
/// decision was printed.
fn refused(board: &std::path::Path) -> String {
    let out = agegate()
        .args(["run", "--board"])
        .arg(board)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("\"decision\""), "{stdout}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A dev board with `[liveness]` as given (the bundled recording, no host line).
fn board_with(dir: &std::path::Path, liveness: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("boards/dev.toml")).expect("dev board");
    let models = root().join("models");
    let text = text
        .replace("\"../", &format!("\"{}/", root().display()))
        .replace("[liveness]\nmode = \"off\"\n", "")
        + &liveness.replace("MODELS", &models.display().to_string());
    let path = dir.join("board.toml");
    write(&path, &text);
    path
}

const PASSIVE_MOTION: &str = r#"
[liveness]
mode = "passive+motion"
antispoof = "MODELS/antispoof.onnx"
liveness = "MODELS/liveness.onnx"
facemesh = "MODELS/facemesh.onnx"
"#;

#[test]
fn a_board_asking_for_liveness_does_not_start_without_its_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A named file that is not there: refused at start, naming the key and the file.
    let missing = board_with(
        dir.path(),
        &PASSIVE_MOTION.replace("MODELS/facemesh.onnx", "MODELS/no-facemesh.onnx"),
    );
    let stderr = refused(&missing);
    assert!(
        stderr.contains("liveness.facemesh") && stderr.contains("no-facemesh.onnx"),
        "{stderr}"
    );
    // A file that is there but is another model (the detector as the anti-spoof model):
    // refused by its contract, naming the file; no decision is made.
    let wrong = board_with(
        dir.path(),
        &PASSIVE_MOTION.replace("MODELS/antispoof.onnx", "MODELS/blazeface_short.onnx"),
    );
    let stderr = refused(&wrong);
    assert!(stderr.contains("blazeface_short.onnx"), "{stderr}");
    // A pin the file does not match: refused before it is parsed.
    let pinned = board_with(
        dir.path(),
        &format!("{PASSIVE_MOTION}liveness_sha256 = \"{}\"\n", "0".repeat(64)),
    );
    let stderr = refused(&pinned);
    assert!(stderr.contains("liveness.liveness_sha256"), "{stderr}");
}

#[test]
fn estimate_prints_the_passive_scores_when_liveness_is_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let board = board_with(dir.path(), PASSIVE_MOTION);
    let out = agegate()
        .args(["estimate", "--board"])
        .arg(&board)
        .arg(photo("grace_hopper.jpg"))
        .output()
        .expect("estimate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line: Value = serde_json::from_str(stdout.lines().next().expect("a line")).expect("json");
    let face = &line["faces"][0];
    for key in ["real", "live"] {
        let v = face[key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&v), "{key} = {v} in {line}");
    }
}

/// The attacks of the bundled recording `tests/frames/attacks.mjpeg`: a print moved, a
/// phone screen moved, a print held still, with an empty scene before and between them;
/// each photo cut to its face (x, y, side), as a portrait print or a selfie on a phone is.
const RECORDING: [(&str, [u32; 3], agegate::tools::eval::attacks::AttackKind); 3] = {
    use agegate::tools::eval::attacks::AttackKind;
    [
        ("grace_hopper.jpg", [117, 94, 300], AttackKind::Print),
        ("astronaut.jpg", [125, 28, 200], AttackKind::Replay),
        ("grace_hopper.jpg", [117, 94, 300], AttackKind::PrintStill),
    ]
};
const RECORDING_FPS: f64 = 15.0;

/// Writes `tests/frames/attacks.mjpeg` (320 x 240 at 15 fps) from the bundled photos,
/// when `AGEGATE_WRITE_ATTACK_RECORDING=1`; otherwise checks nothing and says so.
#[test]
fn write_the_attack_recording_when_asked() {
    use agegate::tools::eval::attacks::Attack;
    use image::codecs::jpeg::JpegEncoder;
    if std::env::var("AGEGATE_WRITE_ATTACK_RECORDING").as_deref() != Ok("1") {
        eprintln!(
            "not asked: AGEGATE_WRITE_ATTACK_RECORDING=1 rewrites tests/frames/attacks.mjpeg"
        );
        return;
    }
    let mut stream = Vec::new();
    let mut index = 0u64;
    let push = |frame: image::RgbImage, stream: &mut Vec<u8>| {
        let small =
            image::imageops::resize(&frame, 320, 240, image::imageops::FilterType::Triangle);
        JpegEncoder::new_with_quality(&mut *stream, 85)
            .encode_image(&small)
            .expect("jpeg");
    };
    for (i, (name, [x, y, side], kind)) in RECORDING.iter().enumerate() {
        let whole = image::open(photo(name)).expect("photo").to_rgb8();
        let photo = image::imageops::crop_imm(&whole, *x, *y, *side, *side).to_image();
        let attack = Attack::new(*kind, &photo, 1 + i as u64);
        // A second without a face: the next attack is someone new to the face trigger.
        for _ in 0..10 {
            push(attack.background(index), &mut stream);
            index += 1;
        }
        for k in 0..24 {
            push(
                attack.frame(f64::from(k) / RECORDING_FPS, index),
                &mut stream,
            );
            index += 1;
        }
    }
    std::fs::write(root().join("tests/frames/attacks.mjpeg"), &stream).expect("write");
    eprintln!(
        "tests/frames/attacks.mjpeg: {index} frames, {} bytes",
        stream.len()
    );
}

/// The dev board with liveness on plays the attack recording: every attack in it (a print
/// moved, a phone screen moved, a print held still) is decided REFER with reason
/// `liveness`, on the event log and the serial line (REASON code 11). The moving screen
/// is caught by the image points followed without a face prior (`liveness::track`), where
/// the mesh landmarks alone let it through.
#[test]
fn the_attack_recording_is_referred_for_liveness() {
    let stdout = run_board(&root().join("boards/dev-liveness.toml"));
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let decisions: Vec<&Value> = events.iter().filter(|e| e["event"] == "decision").collect();
    assert_eq!(decisions.len(), RECORDING.len(), "{stdout}");
    for d in &decisions {
        assert_eq!(d["decision"], "REFER", "{d}");
        assert_eq!(d["reason"], "liveness", "{d}");
    }
    let reasons = events
        .iter()
        .filter(|e| e["event"] == "serial_tx" && e["message"]["type"] == "reason")
        .filter(|e| e["message"]["reason"] == "liveness")
        .count();
    assert_eq!(reasons, RECORDING.len(), "{stdout}");
}

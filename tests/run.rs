//! `agegate run` end to end: recorded frames through the real models, the dev board's
//! log GPIO and the serial frames it would send, read back from its JSON event lines.

mod common;

use std::path::{Path, PathBuf};

use agegate::serial::{Decoder, Message};
use common::{root, run, shared_data, skip, write};
use serde_json::Value;

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn decisions(events: &[Value]) -> Vec<String> {
    of_kind(events, "decision")
        .iter()
        .map(|e| e["decision"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// The DECISION messages in the serial frames the daemon sent, decoded from their hex.
fn serial_decisions(events: &[Value]) -> Vec<Message> {
    let mut decoder = Decoder::new();
    let mut out = Vec::new();
    for e in of_kind(events, "serial_tx") {
        let hex = e["hex"].as_str().expect("hex");
        let bytes: Vec<u8> = hex
            .split(' ')
            .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
            .collect();
        decoder.feed(&bytes, |m| out.push(m));
    }
    assert_eq!(decoder.stats().bad_crc, 0);
    out.into_iter()
        .filter(|m| matches!(m, Message::Decision { .. }))
        .collect()
}

fn relay_levels(events: &[Value]) -> Vec<bool> {
    of_kind(events, "pin")
        .iter()
        .filter(|e| e["line"] == "relay")
        .map(|e| e["active"].as_bool().expect("bool"))
        .collect()
}

/// The dev board with another policy and recording, in a temporary folder.
fn dev_board_with(dir: &Path, policy: (u32, u32), recording: &Path) -> PathBuf {
    let text = std::fs::read_to_string(root().join("boards/dev.toml")).expect("dev board");
    let models = root().join("models");
    // The calibrated thresholds move with the legal age, as a REQUEST's age moves them.
    let up = policy.0 as f32 - 18.0;
    let shifted = |line: &str, key: &str| -> Option<String> {
        let value: f32 = line.strip_prefix(key)?.trim().parse().ok()?;
        Some(format!("{key}{}", value + up))
    };
    let text: String = text
        .lines()
        .map(|l| {
            shifted(l, "allow_at = ")
                .or_else(|| shifted(l, "deny_below = "))
                .unwrap_or_else(|| l.to_string())
                + "\n"
        })
        .collect();
    let text = text
        .replace("../models", &models.display().to_string())
        .replace("legal_age = 18", &format!("legal_age = {}", policy.0))
        .replace(
            "challenge_age = 25",
            &format!("challenge_age = {}", policy.1),
        )
        .replace(
            "../tests/frames/demo.mjpeg",
            &recording.display().to_string(),
        );
    let path = dir.join("board.toml");
    write(&path, &text);
    path
}

#[test]
fn dev_board_on_the_bundled_frames_allows_both_adults() {
    let out = run(&root().join("boards/dev.toml"));
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Grace Hopper (about 77 in the photo) then the astronaut (39 in hers): both over the
    // calibrated threshold.
    assert_eq!(
        decisions(&out.events),
        vec!["ALLOW", "ALLOW"],
        "{:?}",
        out.events
    );
    let sent = serial_decisions(&out.events);
    assert_eq!(sent.len(), 2);
    for message in &sent {
        assert!(
            matches!(
                message,
                Message::Decision {
                    decision: agegate::decide::Decision::Allow,
                    ..
                }
            ),
            "{message:?}"
        );
    }
    // The relay: one pulse per ALLOW, off at the end.
    assert_eq!(relay_levels(&out.events), vec![true, false, true, false]);
    for d in of_kind(&out.events, "decision") {
        assert!(d["frames"].as_u64().unwrap_or(0) >= 5, "{d}");
        assert!(
            d.get("age").is_none(),
            "the audit record carries a band, not an age"
        );
    }
}

#[test]
fn a_stricter_policy_never_allows_the_younger_face() {
    // Legal age 30, challenge 45 (the strictest a board may set): the astronaut (read as
    // about 30 +- 7) is not allowed; Grace Hopper (50+) is not denied, and the relay
    // pulses only if she is allowed. (Legal ages above 30 are refused at start.)
    let dir = tempfile::tempdir().expect("tempdir");
    let board = dev_board_with(
        dir.path(),
        (30, 45),
        &root().join("tests/frames/demo.mjpeg"),
    );
    let out = run(&board);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let decided = decisions(&out.events);
    assert_eq!(decided.len(), 2, "{decided:?}");
    assert_ne!(decided[0], "DENY");
    assert_ne!(decided[1], "ALLOW");
    let expected_relay = if decided[0] == "ALLOW" {
        vec![true, false]
    } else {
        vec![]
    };
    assert_eq!(relay_levels(&out.events), expected_relay);
}

#[test]
fn a_child_from_the_shared_data_is_denied() {
    let Some(data) = shared_data() else {
        return skip(
            "a_child_from_the_shared_data_is_denied",
            "../shared/data is absent",
        );
    };
    // The first validation photo of a child aged 4 to 8: eight identical frames.
    let manifest =
        agegate::tools::manifest::read(&data.join("utkface/val.csv"), None).expect("manifest");
    let child = manifest
        .iter()
        .find(|e| (4.0..=8.0).contains(&e.age))
        .expect("a child in val.csv");
    let photo = agegate::photo::load_rgb(&child.path).expect("photo");
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&photo)
        .expect("encode");
    let dir = tempfile::tempdir().expect("tempdir");
    let recording = dir.path().join("child.mjpeg");
    std::fs::write(&recording, jpeg.repeat(8)).expect("write");
    let board = dev_board_with(dir.path(), (18, 25), &recording);
    let out = run(&board);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        decisions(&out.events),
        vec!["DENY"],
        "{}: {:?}",
        child.path.display(),
        out.events
    );
    assert!(relay_levels(&out.events).iter().all(|&a| !a));
}

#[test]
fn bad_board_files_fail_at_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = std::fs::read_to_string(root().join("boards/dev.toml")).expect("dev board");
    let dev = dev.replace("../", &format!("{}/", root().display()));
    let mut cases = vec![
        (
            dev.replace("relay = \"relay\"", "relais = \"relay\""),
            "relais",
        ),
        (dev.replace("threads = 1", "threads = 0"), "runtime.threads"),
        (
            dev.replace("engine = \"tract\"", "engine = \"openvino\""),
            "runtime.engine",
        ),
        (
            dev.replace("source = \"mjpeg-file\"", "source = \"webcam\""),
            "capture.source",
        ),
        (
            dev.replace("tests/frames/demo.mjpeg", "tests/frames/none.mjpeg"),
            "capture.path",
        ),
        (
            dev.replace("backend = \"log\"", "backend = \"rppal\""),
            "gpio.relay",
        ),
        (
            dev.replace("relay_pulse_ms = 1000", "relay_pulse_ms = 0"),
            "gpio.relay_pulse_ms",
        ),
        (
            dev.replace("min_frames = 5", "min_frames = 0"),
            "session.min_frames",
        ),
        (
            dev.replace(
                "kind = \"none\"",
                "kind = \"port\"\npath = \"/dev/no-such-tty\"",
            ),
            "serial.path",
        ),
        (
            dev.replace("trigger = \"face\"", "trigger = \"always\""),
            "session.trigger",
        ),
        // A gate that opens for anyone, and other impossible policies and limits.
        (
            dev.replace("legal_age = 18", "legal_age = 1")
                .replace("challenge_age = 25", "challenge_age = 1"),
            "policy.legal_age",
        ),
        (
            dev.replace("challenge_age = 25", "challenge_age = 1e30"),
            "policy.challenge_age",
        ),
        (
            dev.replace(
                "rule = \"threshold\"",
                "rule = \"threshold\"\nk_sigma = 1.0",
            ),
            "policy.k_sigma",
        ),
        (
            dev.replace("rule = \"threshold\"", "rule = \"margin\"\nk_sigma = 9.0")
                .replace("allow_at", "# allow_at")
                .replace("deny_below", "# deny_below"),
            "policy.k_sigma",
        ),
        (
            dev.replace("allow_at = ", "allow_at = 9"),
            "policy.allow_at",
        ),
        (
            dev.replace(
                "rule = \"threshold\"",
                "rule = \"threshold\"\nmin_request_age = 3",
            ),
            "policy.min_request_age",
        ),
        (
            dev.replace("fps = 15", "fps = 15\nmax_pixels = 100"),
            "capture.max_pixels",
        ),
        (
            dev.replace("[session]", "[daemon]\nmax_bad_frames = 0\n\n[session]"),
            "daemon.max_bad_frames",
        ),
        (
            dev.replace("[session]", "[daemon]\nmax_model_errors = 0\n\n[session]"),
            "daemon.max_model_errors",
        ),
        (
            dev.replace(
                "[session]",
                "[daemon]\nmodel_check_ms = 600000\n\n[session]",
            ),
            "daemon.model_check_ms",
        ),
        (
            dev.replace("other_faces = \"refer\"", "other_faces = \"count\""),
            "other_faces",
        ),
    ];
    if !cfg!(feature = "ort") {
        // A board asking for onnxruntime fails at start on a tract-only build.
        cases.push((
            dev.replace("engine = \"tract\"", "engine = \"onnxruntime\""),
            "runtime.engine",
        ));
    }
    for (i, (text, key)) in cases.iter().enumerate() {
        let board = dir.path().join(format!("bad{i}.toml"));
        write(&board, text);
        let out = run(&board);
        assert_eq!(out.code, Some(2), "{key}: {}", out.stderr);
        assert!(
            out.stderr.contains(key),
            "{key} not named in: {}",
            out.stderr
        );
        assert!(out.events.is_empty());
    }
}

#[test]
fn shipped_board_files_name_what_is_missing_on_this_machine() {
    for board in ["rpi4", "rpi5", "jetson-orin-nano"] {
        let path = root().join(format!("boards/{board}.toml"));
        let text = std::fs::read_to_string(&path).expect("board file");
        // Every key is known: parsing the raw file refuses unknown keys.
        let raw: Result<agegate::config::RawBoard, _> = toml::from_str(&text);
        assert!(raw.is_ok(), "{board}: {:?}", raw.err());
        match agegate::config::Board::load(&path) {
            Ok(_) => {} // a machine with this board's camera and serial port
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("capture.device") || text.contains("serial.path"),
                    "{board}: {text}"
                );
            }
        }
    }
}

#[test]
fn a_corrupt_model_stops_the_daemon_before_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let board = dev_board_with(
        dir.path(),
        (18, 25),
        &root().join("tests/frames/demo.mjpeg"),
    );
    let text = std::fs::read_to_string(&board).expect("board");
    let broken = root().join("tests/fixtures/age_truncated.onnx");
    let text = text.replace(
        &root()
            .join("models/age_student_int8.onnx")
            .display()
            .to_string(),
        &broken.display().to_string(),
    );
    write(&board, &text);
    let out = run(&board);
    assert_eq!(out.code, Some(2));
    assert!(out.stderr.contains("age_truncated.onnx"), "{}", out.stderr);
    assert!(out.events.is_empty());
}

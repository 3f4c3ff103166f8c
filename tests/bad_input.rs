//! Bad input gives one clear error naming the file and the cause, never a panic.

mod common;

use agegate::engine::ModelError;
use agegate::estimate::AgeModel;
use agegate::photo::{load_rgb, PhotoError};
use common::*;

#[test]
fn truncated_jpeg_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(photo("astronaut.jpg")).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let Err(err) = load_rgb(&cut) else {
        panic!("a truncated JPEG decoded")
    };
    assert!(matches!(err, PhotoError::Corrupt { .. }), "{err:?}");
    assert!(
        err.to_string().contains("cut.jpg") && err.to_string().contains("corrupt"),
        "{err}"
    );
}

#[test]
fn garbage_after_a_jpeg_header_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noise.jpg");
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend((0..4000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8));
    std::fs::write(&path, bytes).unwrap();
    let Err(err) = load_rgb(&path) else {
        panic!("{} decoded", path.display())
    };
    assert!(matches!(err, PhotoError::Corrupt { .. }), "{err:?}");
}

#[test]
fn text_file_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.jpg");
    write(&path, "shopping list: milk, bread\n");
    let Err(err) = load_rgb(&path) else {
        panic!("{} decoded", path.display())
    };
    assert!(matches!(err, PhotoError::NotAnImage { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.jpg: not an image"), "{err}");
}

#[test]
fn missing_photo_is_named() {
    let err = load_rgb(std::path::Path::new("/nonexistent/face.png")).unwrap_err();
    assert!(matches!(err, PhotoError::Missing { .. }));
    assert_eq!(err.to_string(), "/nonexistent/face.png: no such file");
}

#[test]
fn greyscale_photos_become_rgb() {
    let grey = load_rgb(&photo("grace_hopper_grey.png")).unwrap();
    assert_eq!((grey.width(), grey.height()), (512, 600));
    assert!(grey.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
}

fn model_error(name: &str) -> ModelError {
    AgeModel::load(&fixture(name)).unwrap_err()
}

#[test]
fn non_onnx_and_truncated_models_are_refused() {
    for name in ["not_a_model.onnx", "age_truncated.onnx"] {
        let err = model_error(name);
        assert!(matches!(err, ModelError::NotOnnx { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(name), "{err}");
    }
    let err = AgeModel::load(&fixture("no_such_model.onnx")).unwrap_err();
    assert!(matches!(err, ModelError::Read { .. }), "{err:?}");
}

#[test]
fn contract_breaches_name_the_tensor() {
    let cases = [
        ("age_wrong_input_name.onnx", "`pixels`"),
        ("age_missing_output.onnx", "no output named `age`"),
        ("age_four_channels.onnx", "[1, 3, S, S]"),
    ];
    for (name, expected) in cases {
        let err = model_error(name);
        assert!(
            matches!(err, ModelError::Contract { .. }),
            "{name}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(name) && text.contains(expected),
            "{name}: {text}"
        );
    }
}

#[test]
fn a_detector_is_not_an_age_model() {
    let err = AgeModel::load(&detector_model()).unwrap_err();
    assert!(matches!(err, ModelError::Contract { .. }), "{err:?}");
}

#[test]
fn an_age_model_is_not_a_detector() {
    let err =
        agegate::detect::FaceDetector::load(&fixture_age_model(), Default::default()).unwrap_err();
    assert!(matches!(err, ModelError::Contract { .. }), "{err:?}");
}

#[test]
fn other_image_formats_are_named_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    // The first bytes of each format: enough to be recognised, not decoded.
    let cases: [(&str, &[u8], &str); 3] = [
        ("a.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "GIF"),
        ("a.webp", b"RIFF\x1a\x00\x00\x00WEBPVP8 ", "WEBP"),
        ("a.tif", b"II*\x00\x08\x00\x00\x00\x00\x00", "TIFF"),
    ];
    for (name, bytes, format) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_rgb(&path).unwrap_err();
        assert!(
            matches!(err, PhotoError::Unsupported { .. }),
            "{name}: {err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains(format) && text.contains("not supported") && !text.contains("corrupt"),
            "{text}"
        );
    }
}

#[test]
fn an_unreadable_file_names_its_cause_once() {
    // A folder where a photo should be: refused before it is opened.
    let dir = tempfile::tempdir().unwrap();
    let out = agegate()
        .args(["estimate"])
        .arg(dir.path())
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cause = "is a directory, not a regular file";
    assert_eq!(stdout.matches(cause).count(), 1, "{stdout}");
}

/// The peak RSS of a finished child process, in MB (wait4's rusage).
// The child is reaped by wait4 itself, which std's Child cannot see.
#[allow(clippy::zombie_processes)]
fn run_measured(cmd: &mut std::process::Command) -> (std::process::Output, f64) {
    use std::os::unix::process::ExitStatusExt;
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut stdout = child.stdout.unwrap();
    let mut stderr = child.stderr.unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut o, mut e) = (Vec::new(), Vec::new());
        let _ = stdout.read_to_end(&mut o);
        let _ = stderr.read_to_end(&mut e);
        (o, e)
    });
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting on our own child with valid pointers to locals.
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid);
    let (stdout, stderr) = reader.join().unwrap();
    let output = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout,
        stderr,
    };
    (output, usage.ru_maxrss as f64 / 1024.0)
}

#[test]
fn a_jpeg_claiming_a_huge_size_is_refused_without_the_memory() {
    // 16000 x 16000 declared by a photo of 30 KB: decoding it would take 768 MB.
    let mut bytes = std::fs::read(photo("grace_hopper.jpg")).unwrap();
    let sof = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xC0] || w == [0xFF, 0xC2])
        .unwrap();
    bytes[sof + 5..sof + 9].copy_from_slice(&[0x3E, 0x80, 0x3E, 0x80]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.jpg");
    std::fs::write(&path, &bytes).unwrap();
    let (out, peak_mb) = run_measured(agegate().arg("estimate").arg(&path).current_dir(root()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("16000x16000") && stdout.contains("max_pixels"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1));
    // The models alone are about 80 MB; the image would be 768 MB more.
    assert!(peak_mb < 300.0, "peak RSS {peak_mb:.0} MB");
    // Within a board's pixel bound but with far too little data for it: refused as well.
    let err = agegate::photo::load_rgb_within(&path, 1 << 30).unwrap_err();
    assert!(err.to_string().contains("too few for that size"), "{err}");
}

#[test]
fn a_manifest_with_a_column_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.csv");
    write(&path, "path,age,age\nx.jpg,30,31\n");
    let err = agegate::tools::manifest::read(&path, None).unwrap_err();
    assert!(err.to_string().contains("`age` twice"), "{err}");
}

/// Runs `cmd` to its end, or fails the test after two minutes instead of hanging on a
/// FIFO nobody writes to.
fn guarded(cmd: &mut std::process::Command) -> std::process::Output {
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().unwrap()));
    let stderr = read(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// A FIFO nobody writes to, a device without end, one of noise, and a folder: what each
/// input path must refuse by name, without blocking or reading.
fn hostile_paths(dir: &std::path::Path) -> [(std::path::PathBuf, &'static str); 4] {
    let fifo = dir.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let folder = dir.join("folder");
    std::fs::create_dir(&folder).unwrap();
    [
        (fifo, "is a FIFO, not a regular file"),
        (
            "/dev/zero".into(),
            "is a character device, not a regular file",
        ),
        (
            "/dev/urandom".into(),
            "is a character device, not a regular file",
        ),
        (folder, "is a directory, not a regular file"),
    ]
}

#[test]
fn board_files_manifests_and_recordings_that_are_not_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let dev = std::fs::read_to_string(root().join("boards/dev.toml")).unwrap();
    let dev = dev.replace("../", &format!("{}/", root().display()));
    for (i, (path, what)) in hostile_paths(dir.path()).into_iter().enumerate() {
        let shown = path.display().to_string();
        let recording = dir.path().join(format!("recording{i}.toml"));
        write(
            &recording,
            &dev.replace(
                &format!("{}/tests/frames/demo.mjpeg", root().display()),
                &shown,
            ),
        );
        let model = dir.path().join(format!("model{i}.toml"));
        let detector = format!("{}/models/blazeface_short.onnx", root().display());
        assert!(dev.contains(&detector));
        write(&model, &dev.replace(&detector, &shown));
        let cases: [(&[&std::ffi::OsStr], String); 5] = [
            (
                &["run".as_ref(), "--board".as_ref(), path.as_ref()],
                format!("board file {shown}: cannot read it: {what}"),
            ),
            (
                &["hash".as_ref(), path.as_ref()],
                format!("board file {shown}: cannot read it: {what}"),
            ),
            (
                &[
                    "calibrate".as_ref(),
                    "--max-minor-allow".as_ref(),
                    "0.01".as_ref(),
                    "--manifest".as_ref(),
                    path.as_ref(),
                ],
                format!("manifest {shown}: cannot read it: {what}"),
            ),
            (
                &["run".as_ref(), "--board".as_ref(), recording.as_ref()],
                format!("key `capture.path`: recording {shown}: cannot read it: {what}"),
            ),
            (
                &["run".as_ref(), "--board".as_ref(), model.as_ref()],
                format!("key `models.detector`: model file {shown}: cannot read it: {what}"),
            ),
        ];
        for (args, expected) in cases {
            let out = guarded(agegate().args(args).current_dir(root()));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}");
            assert!(
                stderr.contains(&expected),
                "{args:?}: {expected} not in {stderr}"
            );
        }
    }
}

#[test]
fn photos_and_manifest_rows_that_are_not_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let hostile = hostile_paths(dir.path());
    let mut estimate = agegate();
    estimate.arg("estimate").current_dir(root());
    let mut manifest = String::from("path,age\n");
    for (path, _) in &hostile {
        estimate.arg(path);
        manifest.push_str(&format!("{},30\n", path.display()));
    }
    let out = guarded(&mut estimate);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), hostile.len(), "{stdout}");
    for ((path, what), line) in hostile.iter().zip(&lines) {
        let expected = format!("{}: cannot read it: {what}", path.display());
        assert!(line.contains(&expected), "{expected} not in {line}");
    }
    // The same paths as rows of a manifest: each row fails by name, the tool ends.
    let csv = dir.path().join("rows.csv");
    write(&csv, &manifest);
    let out = guarded(
        agegate()
            .args(["crops", "--size", "64", "--manifest"])
            .arg(&csv)
            .arg("--out")
            .arg(dir.path().join("crops"))
            .current_dir(root()),
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> = summary["failed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(failed.len(), hostile.len(), "{summary}");
    for ((path, what), message) in hostile.iter().zip(failed) {
        assert_eq!(
            message,
            format!("{}: cannot read it: {what}", path.display())
        );
    }
}

#[test]
fn inputs_over_their_kind_s_bound_are_refused_unread() {
    let dir = tempfile::tempdir().unwrap();
    // A 2 MB board name: the board file is bounded before it is parsed.
    let board = dir.path().join("big.toml");
    write(&board, &format!("name = \"{}\"\n", "x".repeat(2 << 20)));
    let out = guarded(agegate().args(["run", "--board"]).arg(&board));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected = format!(
        "board file {}: cannot read it: more than 1 MiB, the most a board file may have",
        board.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(out.status.code(), Some(2));
}

/// The dev board (or `boards/NAME.toml`) with `(from, to)` edits, parsed as if it were
/// that file.
fn parse_edited(name: &str, edits: &[(&str, &str)]) -> Result<agegate::config::Board, String> {
    let path = root().join(format!("boards/{name}.toml"));
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "{name}.toml has no `{from}`");
        text = text.replacen(from, to, 1);
    }
    agegate::config::Board::parse(&text, &path).map_err(|e| e.to_string())
}

#[test]
fn every_board_list_number_and_string_has_a_range() {
    let many_scales = format!("canvas_scales = [{}]", vec!["1.0"; 1000].join(", "));
    let long_name = format!("name = \"{}\"", "x".repeat(65));
    let long_line = format!("relay = \"{}\"", "r".repeat(32));
    let cases: [(&[(&str, &str)], &str); 8] = [
        (
            &[("canvas_scales = [1.0, 2.0]", many_scales.as_str())],
            "key `detector.canvas_scales`: 1000 scales: give 1 to 4",
        ),
        (
            &[("timeout_ms = 4000", "timeout_ms = 1000000000000000")],
            "key `session.timeout_ms`",
        ),
        (
            &[("[session]", "[session]\nlost_face_ms = 9223372036854775807")],
            "key `session.lost_face_ms`",
        ),
        (
            &[("name = \"dev\"", long_name.as_str())],
            "key `name`: 65 characters",
        ),
        (&[("name = \"dev\"", "name = \"de\\u0007v\"")], "key `name`"),
        (
            &[("fps = 15", "fps = 15\nwidth = 640")],
            "key `capture.width`: does not apply to source `mjpeg-file`",
        ),
        (
            &[("fps = 15", "fps = 15\nheight = 480")],
            "key `capture.height`: does not apply to source `mjpeg-file`",
        ),
        (
            &[("relay = \"relay\"", long_line.as_str())],
            "key `gpio.relay`: 32 bytes",
        ),
    ];
    assert!(parse_edited("dev", &[]).is_ok());
    for (edits, expected) in cases {
        let err = parse_edited("dev", edits).unwrap_err();
        assert!(err.contains(expected), "{expected} not in {err}");
    }
}

#[test]
fn a_board_whose_liveness_cannot_flag_anything_is_refused() {
    // All thresholds 0: the attack recording was let through (ALLOW) before.
    let zero = "[liveness]\nmin_real = 0.0\nmin_live = 0.0\nmax_planar_residual = 0.0\n\
                max_tracked_residual = 0.0\nmin_motion = 0.0\nblink_ratio = 0.0\n";
    assert!(parse_edited("dev-liveness", &[]).is_ok());
    let err = parse_edited("dev-liveness", &[("[liveness]\n", zero)]).unwrap_err();
    assert!(
        err.contains("key `liveness.min_real`: 0: give 0.05 to 1"),
        "{err}"
    );
}

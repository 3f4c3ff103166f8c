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
    // A folder where a photo should be: read(2) fails with EISDIR.
    let dir = tempfile::tempdir().unwrap();
    let out = agegate()
        .args(["estimate"])
        .arg(dir.path())
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let cause = "Is a directory";
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

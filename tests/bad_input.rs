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

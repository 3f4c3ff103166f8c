//! Face detection and alignment on real photos: the bundled public-domain portraits, the
//! Python reference decoder's fixture, and (when present) the UTKFace validation split.

mod common;

use agegate::align::{aligned_crop, crop_to_photo, TEMPLATE};
use agegate::detect::{main_face, DetectorSettings, Face, FaceDetector};
use agegate::photo::load_rgb;
use common::*;
use serde_json::Value;

fn detector() -> FaceDetector {
    FaceDetector::load(&detector_model(), DetectorSettings::default()).unwrap()
}

fn only_face(det: &FaceDetector, name: &str) -> Face {
    let photo = load_rgb(&photo(name)).unwrap();
    let faces = det.detect(&photo).unwrap();
    assert_eq!(faces.len(), 1, "{name}: {faces:?}");
    faces[0].clone()
}

fn assert_plausible(face: &Face, name: &str) {
    let [re, le, nose, mouth, _, _] = face.keypoints;
    assert!(
        re[0] < le[0],
        "{name}: the subject's right eye is on the image's left"
    );
    assert!(
        re[1] < mouth[1] && le[1] < mouth[1] && nose[1] < mouth[1],
        "{name}: eyes and nose above the mouth"
    );
    let b = face.bbox;
    for [x, y] in [re, le, nose, mouth] {
        assert!(
            x > b.x0 && x < b.x1 && y > b.y0 && y < b.y1,
            "{name}: keypoint outside the box"
        );
    }
    assert!(face.score >= 0.5);
}

#[test]
fn finds_the_face_in_whole_photos_crops_and_greyscale() {
    let det = detector();
    for name in [
        "astronaut.jpg",
        "astronaut_grey.jpg",
        "grace_hopper.jpg",
        "grace_hopper_grey.png",
        "grace_hopper_tight_crop.jpg",
    ] {
        assert_plausible(&only_face(&det, name), name);
    }
    let rocket = load_rgb(&photo("rocket_no_face.jpg")).unwrap();
    assert!(det.detect(&rocket).unwrap().is_empty());
}

#[test]
fn colour_and_greyscale_give_the_same_face() {
    let det = detector();
    let pairs = [
        ("astronaut.jpg", "astronaut_grey.jpg"),
        ("grace_hopper.jpg", "grace_hopper_grey.png"),
    ];
    for (colour, grey) in pairs {
        let (a, b) = (only_face(&det, colour), only_face(&det, grey));
        assert!(
            a.bbox.iou(&b.bbox) > 0.85,
            "{colour} vs {grey}: {:?} {:?}",
            a.bbox,
            b.bbox
        );
    }
}

/// Our detector against the numpy reference (models/scripts/blazeface_ref.py). The reference
/// point-samples the letterbox like MediaPipe; we average over each pixel's footprint, so
/// positions may differ by a few percent of the face size but never more.
#[test]
fn matches_the_python_reference_decoder() {
    let fixture: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("blazeface_ref.json")).unwrap())
            .unwrap();
    let det = detector();
    let mut checked = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let root = root().join(case["root"].as_str().unwrap());
        let path = root.join(case["image"].as_str().unwrap());
        if !path.is_file() {
            skip(
                "matches_the_python_reference_decoder",
                &format!("{} is absent", path.display()),
            );
            continue;
        }
        let photo = load_rgb(&path).unwrap();
        let ours = det.detect(&photo).unwrap();
        let expected = case["two_pass"].as_array().unwrap();
        assert_eq!(
            ours.len(),
            expected.len(),
            "{}: {ours:?} vs {expected:?}",
            path.display()
        );
        for (face, want) in ours.iter().zip(expected) {
            let b: Vec<f32> = want["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let tol = 0.05 * (b[2] - b[0]);
            let got = [face.bbox.x0, face.bbox.y0, face.bbox.x1, face.bbox.y1];
            for k in 0..4 {
                assert!(
                    (got[k] - b[k]).abs() <= tol,
                    "{}: box {got:?} vs {b:?}",
                    path.display()
                );
            }
            for (k, kp) in want["keypoints"].as_array().unwrap().iter().enumerate() {
                let (x, y) = (
                    kp[0].as_f64().unwrap() as f32,
                    kp[1].as_f64().unwrap() as f32,
                );
                let [gx, gy] = face.keypoints[k];
                assert!(
                    (gx - x).abs() <= tol && (gy - y).abs() <= tol,
                    "{}: keypoint {k}",
                    path.display()
                );
            }
            assert!((face.score - want["score"].as_f64().unwrap() as f32).abs() < 0.1);
        }
        checked += 1;
    }
    assert!(checked >= 3, "the bundled fixture cases must always run");
}

#[test]
fn alignment_puts_the_keypoints_on_the_template() {
    let det = detector();
    let face = only_face(&det, "grace_hopper.jpg");
    let size = 112;
    let map = crop_to_photo(&face, size);
    // Residual of the least-squares fit: each keypoint lands near its template spot.
    let idx = [0usize, 1, 2, 3];
    for (t, &k) in TEMPLATE.iter().zip(&idx) {
        let (x, y) = map.apply(t[0] * size as f32, t[1] * size as f32);
        let [kx, ky] = face.keypoints[k];
        assert!(
            (x - kx).abs() < 0.08 * face.bbox.width() && (y - ky).abs() < 0.08 * face.bbox.width()
        );
    }
    let crop = aligned_crop(&load_rgb(&photo("grace_hopper.jpg")).unwrap(), &face, size);
    assert_eq!((crop.width(), crop.height()), (size, size));
    // The aligned crop of a face is itself a face the detector finds, with the eyes where
    // the template puts them.
    let again = FaceDetector::load(
        &detector_model(),
        DetectorSettings {
            canvas_scales: vec![2.0],
            ..DetectorSettings::default()
        },
    )
    .unwrap()
    .detect(&crop)
    .unwrap();
    let main = &again[main_face(&again, size, size).expect("a face in the aligned crop")];
    for (eye, t) in [(0usize, TEMPLATE[0]), (1, TEMPLATE[1])] {
        let [x, y] = main.keypoints[eye];
        assert!(
            (x / size as f32 - t[0]).abs() < 0.06 && (y / size as f32 - t[1]).abs() < 0.06,
            "eye {eye}: {x},{y}"
        );
    }
}

/// The detector on tight 200x200 dataset crops: the two-pass scheme misses (almost) none.
#[test]
fn misses_few_utkface_validation_crops() {
    let Some(data) = shared_data() else {
        return skip(
            "misses_few_utkface_validation_crops",
            "../shared/data (UTKFace) is absent in this checkout",
        );
    };
    // Under qemu every inference is emulated: a smaller sample keeps the suite quick.
    let n = if cfg!(target_arch = "x86_64") {
        400
    } else {
        20
    };
    let entries = agegate::tools::manifest::read(&data.join("utkface/val.csv"), None).unwrap();
    let det = detector();
    let mut missed = Vec::new();
    for e in entries.iter().take(n) {
        let photo = load_rgb(&e.path).unwrap();
        if det.detect(&photo).unwrap().is_empty() {
            missed.push(e.rel_path.clone());
        }
    }
    assert!(
        missed.len() * 200 <= n,
        "missed {} of {n}: {missed:?}",
        missed.len()
    );
}

/// `[runtime] threads`: tract splitting its matrix products over a pool gives what one
/// thread gives (the same sums in other chunks: float reordering only), on both graphs.
#[test]
fn tract_on_three_threads_gives_what_one_thread_gives() {
    use agegate::engine::{Engine, Runtime, RuntimeSettings};
    use agegate::estimate::AgeModel;
    let pool = Runtime::start(RuntimeSettings {
        engine: Engine::Tract,
        threads: 3,
    })
    .expect("thread pool");
    assert_eq!(pool.settings().threads, 3);
    let single = Runtime::single_thread();
    let age_path = root().join("models/age_student_int8.onnx");
    let detectors = [&single, &pool].map(|rt| {
        FaceDetector::load_on(&detector_model(), DetectorSettings::default(), rt).unwrap()
    });
    let age_models = [&single, &pool].map(|rt| AgeModel::load_on(&age_path, rt).unwrap());
    // Under qemu every inference is emulated: one photo there.
    let photos: &[&str] = if cfg!(target_arch = "x86_64") {
        &["grace_hopper.jpg", "astronaut_grey.jpg"]
    } else {
        &["astronaut_grey.jpg"]
    };
    for name in photos {
        let rgb = agegate::photo::load_rgb(&photo(name)).unwrap();
        let [one, three] = [0, 1].map(|k| detectors[k].detect(&rgb).unwrap());
        assert!(!one.is_empty(), "{name}: no face");
        assert_eq!(one.len(), three.len(), "{name}: faces");
        for (a, b) in one.iter().zip(&three) {
            assert!((a.score - b.score).abs() < 1e-4, "{name}: {a:?} vs {b:?}");
            for (p, q) in a.keypoints.iter().zip(&b.keypoints) {
                assert!((p[0] - q[0]).abs() < 1e-2 && (p[1] - q[1]).abs() < 1e-2);
            }
        }
        let crop = agegate::align::aligned_crop(&rgb, &one[0], age_models[0].crop_size());
        let [e1, e3] = [0, 1].map(|k| age_models[k].estimate(&crop).unwrap());
        assert!(
            (e1.age - e3.age).abs() < 1e-2 && (e1.sigma - e3.sigma).abs() < 1e-2,
            "{name}: one thread {e1:?}, three {e3:?}"
        );
    }
}

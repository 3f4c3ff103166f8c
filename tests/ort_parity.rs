#![cfg(feature = "ort")]
//! The onnxruntime backend (`agegate::engine::onnxruntime`, feature `ort`) against tract: the same
//! deterministic pseudo-random input through both, every output compared. Needs the
//! onnxruntime library (`ORT_DYLIB_PATH` or the venv's wheel); without it each test says
//! `SKIPPED` on stderr and does nothing.
//!
//! `cargo test --features ort --test ort_parity -- --nocapture` prints the measured
//! differences.

mod common;

use std::path::Path;

use agegate::engine::onnxruntime::{find_library, OrtModel};
use agegate::engine::{Engine, OnnxFile, Runtime, RuntimeSettings};
use common::*;

/// Deterministic uniform values in `[lo, hi)` (64-bit LCG, top 24 bits).
fn pseudo_random(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * unit
        })
        .collect()
}

/// Whole numbers 0..=255, like the pixels the age contract takes.
fn pixels(len: usize, seed: u64) -> Vec<f32> {
    pseudo_random(len, seed, 0.0, 256.0)
        .into_iter()
        .map(|v| v.floor().min(255.0))
        .collect()
}

/// How far onnxruntime may be from tract on one output: `|ort - tract| <= atol + rtol * |tract|`.
#[derive(Clone, Copy)]
struct Tolerance {
    atol: f32,
    rtol: f32,
}

/// Runs `inputs` through tract and onnxruntime and checks every output against `tolerance`
/// (by output name). Returns false, having said why on stderr, when there is no onnxruntime.
fn compare(
    test: &str,
    path: &Path,
    shape: &[usize],
    inputs: &[Vec<f32>],
    tolerance: impl Fn(&str) -> Tolerance,
) -> bool {
    if let Err(reason) = find_library() {
        skip(test, &reason);
        return false;
    }
    let file = OnnxFile::read(path).unwrap();
    let names: Vec<String> = file
        .interface
        .outputs
        .iter()
        .map(|o| o.name.clone())
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let tract = file
        .into_runnable(shape, &name_refs, &Runtime::single_thread())
        .unwrap();
    let mut ort = OrtModel::load(path, 1).unwrap();
    eprintln!("{test}: onnxruntime provider {}", ort.provider());
    // The tolerances below are for onnxruntime's CPU kernels; a `tensorrt` build may run on
    // the GPU.
    #[cfg(not(feature = "tensorrt"))]
    assert_eq!(ort.provider(), "CPU");

    let mut worst = vec![(0.0f32, 0.0f32); names.len()];
    for input in inputs {
        let want = tract.run(input).unwrap();
        let got = ort.run(input, shape).unwrap();
        assert_eq!(got.len(), names.len(), "{}: output count", path.display());
        for (i, name) in names.iter().enumerate() {
            let (w, g) = (&want[i], &got[i]);
            assert_eq!(
                g.len(),
                w.len(),
                "{}: output `{name}` length",
                path.display()
            );
            let Tolerance { atol, rtol } = tolerance(name);
            for (k, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(a.is_finite() && b.is_finite(), "`{name}`[{k}]: {a} vs {b}");
                let diff = (a - b).abs();
                assert!(
                    diff <= atol + rtol * b.abs(),
                    "{}: output `{name}`[{k}]: onnxruntime {a}, tract {b}, |diff| {diff} \
                     over {atol} + {rtol} * |tract|",
                    path.display()
                );
                worst[i].0 = worst[i].0.max(diff);
                worst[i].1 = worst[i].1.max(b.abs());
            }
        }
    }
    for (name, (diff, magnitude)) in names.iter().zip(&worst) {
        eprintln!(
            "{test}: `{name}` max |onnxruntime - tract| = {diff:.3e} (max |tract| {magnitude:.3e}, \
             {} inputs)",
            inputs.len()
        );
    }
    true
}

#[test]
fn blazeface_short_matches_tract() {
    let shape = [1, 3, 128, 128];
    let len = shape.iter().product();
    let inputs: Vec<Vec<f32>> = (1..=3)
        .map(|seed| pseudo_random(len, seed, -1.0, 1.0))
        .collect();
    // A float32 graph: both engines compute the same sums in a different order (and tract
    // may fuse differently), so they agree to a few ulps of the largest partial sums.
    // Regressors are box offsets in pixels of the 128 px input (|values| up to ~1e2) and
    // classificators are logits: 1e-3 absolute plus 1e-4 relative is far below anything
    // the decoder could notice (a thousandth of a pixel) yet well above f32 reordering noise.
    // Measured (onnxruntime 1.31.1, tract 0.23.9, x86_64): 3.6e-5 on regressors (|max| 136),
    // 3.8e-5 on classificators (|max| 45).
    compare(
        "blazeface_short_matches_tract",
        &detector_model(),
        &shape,
        &inputs,
        float_tolerance,
    );
}

#[test]
fn age_fixture_matches_tract() {
    let shape = [1, 3, 32, 32];
    let len = shape.iter().product();
    let inputs: Vec<Vec<f32>> = (1..=3).map(|seed| pixels(len, seed)).collect();
    // A small float32 graph: same reasoning as BlazeFace; ages are in years (|values| < 1e2).
    // Measured: 7.6e-6 on age and steps (|max| 41), 1.2e-7 on sigma.
    compare(
        "age_fixture_matches_tract",
        &fixture_age_model(),
        &shape,
        &inputs,
        float_tolerance,
    );
}

/// What float32 graphs must agree to: 1e-3 absolute plus 1e-4 relative (see below).
fn float_tolerance(_output: &str) -> Tolerance {
    Tolerance {
        atol: 1e-3,
        rtol: 1e-4,
    }
}

/// Real aligned face crops, as the pipeline feeds the age model in `model`: the main face
/// of each bundled photo, cut by the runtime's own detector and alignment at the model's
/// input size, as `[1, 3, S, S]` RGB 0..255 (both engines run the file at batch 1).
fn student_inputs(model: &Path) -> ([usize; 4], Vec<Vec<f32>>) {
    use agegate::detect::{main_face, DetectorSettings, FaceDetector};
    let size = agegate::estimate::AgeModel::load(model)
        .expect("age model")
        .crop_size();
    let detector =
        FaceDetector::load(&detector_model(), DetectorSettings::default()).expect("detector");
    let inputs = ["grace_hopper.jpg", "astronaut.jpg", "grace_hopper_grey.png"]
        .iter()
        .map(|name| {
            let rgb = agegate::photo::load_rgb(&photo(name)).expect("photo");
            let faces = detector.detect(&rgb).expect("detect");
            let face = &faces[main_face(&faces, rgb.width(), rgb.height()).expect("a face")];
            let crop = agegate::align::aligned_crop(&rgb, face, size);
            let plane = (size * size) as usize;
            let mut tensor = vec![0f32; 3 * plane];
            for (i, px) in crop.pixels().enumerate() {
                for c in 0..3 {
                    tensor[c * plane + i] = f32::from(px[c]);
                }
            }
            tensor
        })
        .collect();
    ([1, 3, size as usize, size as usize], inputs)
}

#[test]
fn age_student_int8_matches_tract() {
    let model = root().join("models/age_student_int8.onnx");
    let (shape, inputs) = student_inputs(&model);
    // The shipped form: int8 weights behind DequantizeLinear, float arithmetic in both
    // engines (tract folds the dequantisation at load, onnxruntime dequantises at run time).
    // The 101-way softmax and the correction step amplify float reordering a little.
    // Measured on the three crops (model v2): 0.010 year on age and steps, 0.002 on sigma,
    // 3e-4 on p_over. Bound: 0.3 year, far inside the gap between the calibrated thresholds,
    // and 0.01 on a probability.
    compare(
        "age_student_int8_matches_tract",
        &model,
        &shape,
        &inputs,
        |name| Tolerance {
            atol: if name == "p_over" { 0.01 } else { 0.3 },
            rtol: 0.0,
        },
    );
}

#[test]
fn age_student_int8_qlinear_matches_tract() {
    let model = root().join("models/age_student_int8_qlinear.onnx");
    let (shape, inputs) = student_inputs(&model);
    // Quantised graph (QLinearConv, QOperator format): each engine requantises activations
    // between layers with its own integer kernels and rounding, so a value can land one
    // quantisation step apart, and such steps add up over the layers. What matters is the age
    // the gate decides on: the two engines must agree within 2.0 years on `age` and every
    // `steps` value (small against Challenge 25's band of years between the legal and the
    // challenge age, and against the k * sigma margin), and within 1.0 year on `sigma`.
    // Measured (onnxruntime 1.31.1, tract 0.23.9, x86_64, the three crops): model v1 0.99
    // year on age, 1.01 on steps, 0.26 on sigma (integer rounding differences add up over 27
    // layers); model v2 0.12 on age and steps, 0.005 on sigma, 0.003 on p_over.
    // (On random pixels, far outside the calibration images, activations saturate their
    // calibrated ranges and the engines differed by up to 3 years.)
    //
    // Except on x86_64 without VNNI (AVX2 only, e.g. AMD EPYC before Zen 4): there
    // onnxruntime's u8 x s8 kernel multiplies byte pairs with `vpmaddubsw`, which saturates
    // their sum at 16 bits, so large activations times large weights are clipped (its
    // quantization docs: quantize with `reduce_range` or U8U8 for such CPUs). Measured on
    // one (onnxruntime 1.31.1, the three crops): 3.35 years on age and steps, 0.18 on sigma,
    // 0.093 on p_over. The bound there is wider and still fails a broken graph or input
    // layout (tens of years); README says not to run this form on onnxruntime on such CPUs.
    let saturating = ort_u8s8_saturates();
    eprintln!("age_student_int8_qlinear_matches_tract: u8 x s8 kernel saturates: {saturating}");
    let years = if saturating { 4.5 } else { 2.0 };
    let probability = if saturating { 0.15 } else { 0.05 };
    compare(
        "age_student_int8_qlinear_matches_tract",
        &model,
        &shape,
        &inputs,
        |name| match name {
            "sigma" => Tolerance {
                atol: 1.0,
                rtol: 0.0,
            },
            "p_over" => Tolerance {
                atol: probability,
                rtol: 0.0,
            },
            _ => Tolerance {
                atol: years,
                rtol: 0.0,
            },
        },
    );
}

/// Whether onnxruntime's integer GEMM on this CPU is the 16-bit saturating x86 one: x86_64
/// without AVX512-VNNI or AVX-VNNI.
fn ort_u8s8_saturates() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !(std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A board with `[runtime] engine = "onnxruntime"` runs the whole pipeline on onnxruntime:
/// the same faces, ages within the int8 tolerance above, the same decisions.
#[test]
fn a_board_can_run_the_pipeline_on_onnxruntime() {
    use agegate::config::Board;
    use agegate::pipeline::Pipeline;
    let test = "a_board_can_run_the_pipeline_on_onnxruntime";
    if let Err(reason) = find_library() {
        skip(test, &reason);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dev = std::fs::read_to_string(root().join("boards/dev.toml")).unwrap();
    let dev = dev.replace("../", &format!("{}/", root().display()));
    let board_path = dir.path().join("ort.toml");
    let text = dev
        .replace("engine = \"tract\"", "engine = \"onnxruntime\"")
        .replace("threads = 1", "threads = 2");
    write(&board_path, &text);
    let board = Board::load(&board_path).unwrap();
    assert_eq!(
        board.runtime,
        RuntimeSettings {
            engine: Engine::OnnxRuntime,
            threads: 2
        }
    );
    let on_ort = Pipeline::from_board(&board).unwrap();
    let on_tract = Pipeline::from_board_on(&board, &Runtime::single_thread()).unwrap();
    for name in ["grace_hopper.jpg", "astronaut.jpg", "grace_hopper_grey.png"] {
        let rgb = agegate::photo::load_rgb(&photo(name)).unwrap();
        let want = on_tract.process(&rgb).unwrap();
        let got = on_ort.process(&rgb).unwrap();
        assert_eq!(got.len(), want.len(), "{name}: faces");
        assert!(!got.is_empty(), "{name}: no face");
        for (g, w) in got.iter().zip(&want) {
            assert!((g.face.score - w.face.score).abs() < 1e-3, "{name}: score");
            assert!(
                (g.estimate.age - w.estimate.age).abs() < 0.3,
                "{name}: age {} on onnxruntime, {} on tract",
                g.estimate.age,
                w.estimate.age
            );
            assert_eq!(g.decision, w.decision, "{name}: decision");
        }
    }
}

//! Parity with the Python exporter: a small CILF-CIAE graph with the real architecture
//! (models/agegate_models/export.py writes it) gives in tract what onnxruntime gave.

mod common;

use agegate::estimate::AgeModel;
use common::*;
use image::{Rgb, RgbImage};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn tract_matches_onnxruntime_on_the_exported_fixture() {
    let dir = fixture("age_parity");
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    let (input, expected) = (read("input.json"), read("expected.json"));
    let shape: Vec<usize> = input["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let data = floats(&input["data"]);
    let side = shape[2];
    assert_eq!(shape, vec![1, 3, side, side]);
    // The contract's input is raw 0..255 pixels: the fixture holds whole numbers only.
    assert!(data
        .iter()
        .all(|v| v.fract() == 0.0 && (0.0..=255.0).contains(v)));
    let plane = side * side;
    let crop = RgbImage::from_fn(side as u32, side as u32, |x, y| {
        let i = y as usize * side + x as usize;
        Rgb([
            data[i] as u8,
            data[plane + i] as u8,
            data[2 * plane + i] as u8,
        ])
    });
    let model = AgeModel::load(&dir.join("model.onnx")).unwrap();
    assert_eq!(model.crop_size() as usize, side);
    let got = model.estimate(&crop).unwrap();
    let (atol, rtol) = (
        expected["atol"].as_f64().unwrap() as f32,
        expected["rtol"].as_f64().unwrap() as f32,
    );
    let close = |a: f32, b: f32| (a - b).abs() <= atol + rtol * b.abs();
    let outputs = &expected["outputs"];
    let want_age = floats(&outputs["age"]["data"])[0];
    let want_sigma = floats(&outputs["sigma"]["data"])[0];
    let want_steps = floats(&outputs["steps"]["data"]);
    assert!(close(got.age, want_age), "age {} vs {want_age}", got.age);
    assert!(
        close(got.sigma, want_sigma),
        "sigma {} vs {want_sigma}",
        got.sigma
    );
    assert_eq!(got.steps.len(), want_steps.len());
    for (g, w) in got.steps.iter().zip(&want_steps) {
        assert!(close(*g, *w), "steps {:?} vs {want_steps:?}", got.steps);
    }
}

//! `cargo bench`: every stage of the pipeline on the bundled frame, one thread.
//!
//! Groups: decode (a 320x240 MJPEG frame of the bundled recording), detect (BlazeFace,
//! both passes as the dev board runs them), align, estimate (int8 and, when its float
//! twin `models/age_student_f32.onnx` has been exported, f32 side by side), and the whole
//! frame (detect + align + estimate). `agegate bench --json` reports the same medians
//! from a device.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use image::RgbImage;

use agegate::align::aligned_crop_into;
use agegate::daemon::FaceEstimator;
use agegate::detect::{main_face, DetectorSettings, FaceDetector};
use agegate::estimate::AgeModel;
use agegate::jpeg::{self, DEFAULT_MAX_PIXELS};
use agegate::pipeline::Pipeline;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stages(c: &mut Criterion) {
    let detector = FaceDetector::load(
        &root().join("models/blazeface_short.onnx"),
        DetectorSettings::default(),
    )
    .expect("detector");
    let data = std::fs::read(root().join("tests/frames/demo.mjpeg")).expect("bundled recording");
    let (_, jpeg, mut frame) =
        agegate::tools::bench::first_face_frame(&data, &detector, DEFAULT_MAX_PIXELS)
            .expect("detect")
            .expect("a face in the bundled recording");
    let mut scratch = Vec::new();
    let faces = detector.detect(&frame).expect("detect");
    let face = faces[main_face(&faces, frame.width(), frame.height()).expect("main face")].clone();

    c.bench_function("decode_mjpeg_320x240", |b| {
        b.iter(|| {
            jpeg::decode_into(
                black_box(&jpeg),
                &mut scratch,
                &mut frame,
                DEFAULT_MAX_PIXELS,
            )
            .expect("decode")
        })
    });
    c.bench_function("detect", |b| {
        b.iter(|| detector.detect(black_box(&frame)).expect("detect"))
    });

    let int8 = AgeModel::load(&root().join("models/age_student_int8.onnx")).expect("int8 model");
    let size = int8.crop_size();
    let mut crop = RgbImage::new(size, size);
    c.bench_function("align", |b| {
        b.iter(|| aligned_crop_into(black_box(&frame), &face, &mut crop))
    });
    let mut group = c.benchmark_group("estimate");
    group.bench_function("int8", |b| {
        b.iter(|| int8.estimate(black_box(&crop)).expect("estimate"))
    });
    let f32_path = root().join("models/age_student_f32.onnx");
    if f32_path.is_file() {
        let f32_model = AgeModel::load(&f32_path).expect("f32 model");
        let mut crop32 = RgbImage::new(f32_model.crop_size(), f32_model.crop_size());
        aligned_crop_into(&frame, &face, &mut crop32);
        group.bench_function("f32", |b| {
            b.iter(|| f32_model.estimate(black_box(&crop32)).expect("estimate"))
        });
    } else {
        eprintln!("estimate/f32 skipped: models/age_student_f32.onnx not exported");
    }
    group.finish();

    let pipeline = Pipeline::new(
        detector,
        int8,
        agegate::decide::Policy::new(18.0, 25.0, 1.0).expect("policy"),
    );
    c.bench_function("frame", |b| {
        b.iter(|| pipeline.faces(black_box(&frame)).expect("frame"))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = stages
}
criterion_main!(benches);

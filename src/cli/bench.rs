//! `agegate bench`: every stage timed on this machine, and tract against onnxruntime.

use std::path::Path;

use anyhow::{bail, Context, Result};

use agegate::config::Board;

use super::{ensure_writable, print_err, print_line, BenchArgs, Outcome};

const NO_ORT: &str = "--compare-onnxruntime needs a build with the `ort` feature: cargo run --release --features ort -- bench --compare-onnxruntime";

pub(super) fn bench(args: BenchArgs) -> Result<Outcome> {
    if args.compare_onnxruntime && !cfg!(feature = "ort") {
        bail!(NO_ORT);
    }
    let board = Board::load(&args.board)?;
    let sibling = |name: &str| {
        let p = board.age_model.with_file_name(name);
        p.is_file().then_some(p)
    };
    let settings = agegate::tools::bench::BenchSettings {
        iterations: args.iterations.max(1),
        warmup: args.warmup,
        photo: args.photo.clone(),
        f32_model: args
            .f32_model
            .clone()
            .or_else(|| sibling("age_student_f32.onnx")),
        int8_model: args
            .int8_model
            .clone()
            .or_else(|| sibling("age_student_int8.onnx")),
        threads: args.threads.unwrap_or(board.runtime.threads),
    };
    if let Err(message) = agegate::engine::check_threads(settings.threads) {
        bail!("--threads {}: {message}", settings.threads);
    }
    if let Some(path) = &args.json {
        ensure_writable(path)?;
    }
    if settings.f32_model.is_none() {
        print_err(&format!(
            "agegate bench: no float twin beside {} (make it with `python -m agegate_models.export`); estimate_ms_f32 left out",
            board.age_model.display()
        ));
    }
    let fallback = Path::new("tests/photos/grace_hopper.jpg");
    let mut report = agegate::tools::bench::run(&board, &settings, fallback)?;
    if args.compare_onnxruntime {
        compare_onnxruntime(&board, &settings, &mut report)?;
    }
    let json = serde_json::to_string_pretty(&report)?;
    print_line(&json)?;
    if let Some(path) = &args.json {
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(Outcome::Success)
}

#[cfg(not(feature = "ort"))]
fn compare_onnxruntime(
    _board: &Board,
    _settings: &agegate::tools::bench::BenchSettings,
    _report: &mut agegate::tools::bench::BenchReport,
) -> Result<()> {
    bail!(NO_ORT)
}

#[cfg(feature = "ort")]
fn compare_onnxruntime(
    board: &Board,
    settings: &agegate::tools::bench::BenchSettings,
    report: &mut agegate::tools::bench::BenchReport,
) -> Result<()> {
    use agegate::engine::onnxruntime::{find_library, OrtModel};
    use agegate::tools::bench::time_median;
    let library = find_library().map_err(anyhow::Error::msg)?;
    let (w, i) = (settings.warmup, settings.iterations);
    // The same input tensors tract sees: a letterboxed 128x128 frame for the detector, an
    // aligned crop for the age model. Values do not change the time of these graphs.
    let time = |path: &Path, shape: &[usize]| -> Result<f64> {
        let mut model = OrtModel::load(path, 1)?;
        let input = vec![0.5f32; shape.iter().product()];
        Ok(time_median(w, i, || model.run(&input, shape).map(|_| ()))?)
    };
    // Input sizes as the tract run found them: no second load of the models.
    let (s, d) = (report.age_input_px, report.detector_input_px);
    let estimate_ort = time(&board.age_model, &[1, 3, s, s])?;
    let detect_ort_single_pass = time(&board.detector_model, &[1, 3, d, d])?;
    let mut ort = serde_json::json!({
        "library": library,
        "estimate_ms": estimate_ort,
        "detector_pass_ms": detect_ort_single_pass,
        "detector_pass_tract_over_ort": report.detect_graph_ms / detect_ort_single_pass,
    });
    for (key, model) in [
        ("estimate_ms_f32", &settings.f32_model),
        ("estimate_ms_int8", &settings.int8_model),
    ] {
        if let Some(path) = model {
            ort[key] = serde_json::json!(time(path, &[1, 3, s, s])?);
        }
    }
    report.tract_over_ort = Some(report.estimate_ms / estimate_ort);
    report.onnxruntime = Some(ort);
    Ok(())
}

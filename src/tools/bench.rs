//! `agegate bench`: the pipeline's stages timed on one device, side by side in one run.
//!
//! Every figure is a median over `iterations` runs after `warmup` runs, single-threaded
//! (and again on several threads in `threaded` when asked), on one frame of the board's
//! recording (or a bundled photo). Speed is measured here and in `cargo bench`, never
//! asserted in tests: shared machines are noisy. Ratios between
//! figures of one run (int8 over f32, tract over onnxruntime) are what travel between
//! machines.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;

use crate::align::aligned_crop_into;
use crate::capture::SourceSettings;
use crate::config::Board;
use crate::detect::{main_face, FaceDetector};
use crate::engine::{Engine, ModelError, Runtime, RuntimeSettings};
use crate::estimate::AgeModel;
use crate::jpeg;
use crate::pipeline::Pipeline;

/// What to time.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    pub iterations: usize,
    pub warmup: usize,
    /// The frame to time on (`None`: the board's recording, else the bundled photo).
    pub photo: Option<PathBuf>,
    /// Age models to time side by side; the board's model is always timed.
    pub f32_model: Option<PathBuf>,
    pub int8_model: Option<PathBuf>,
    /// Threads for the `threaded` figures beside the single-thread ones (1: none).
    pub threads: usize,
}

/// The frame's stages again with tract splitting matrix products over `threads` threads,
/// timed in the same run as the single-thread figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThreadedTimes {
    pub threads: usize,
    pub detect_ms: f64,
    pub estimate_ms: f64,
    pub frame_ms: f64,
    /// Single-thread `frame_ms` over this `frame_ms`.
    pub frame_speedup: f64,
}

/// `agegate bench --json`: medians in milliseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    pub machine: String,
    pub arch: &'static str,
    /// Threads of every figure outside `threaded`: always 1.
    pub threads: usize,
    pub iterations: usize,
    pub frame: String,
    pub frame_size: [u32; 2],
    pub age_model: String,
    /// Side of the age model's square input (the aligned crop), pixels.
    pub age_input_px: usize,
    /// Side of the detector's square input, pixels.
    pub detector_input_px: usize,
    /// JPEG decode of the frame (as a camera's MJPEG frame arrives).
    pub decode_ms: f64,
    pub detect_ms: f64,
    /// One pass of the detector graph alone (no letterbox, no anchor decoding): what
    /// onnxruntime's `detector_pass_ms` is set beside.
    pub detect_graph_ms: f64,
    pub align_ms: f64,
    /// The board's age model on the aligned crop.
    pub estimate_ms: f64,
    /// The liveness models on the face (crop, anti-spoof, liveness, and the face mesh in
    /// `passive+motion`); `None` when the board's `[liveness]` is off.
    pub liveness_ms: Option<f64>,
    /// Following the face's image points into the next frame (grey image, pyramid, 14
    /// points there and back: `liveness::track`); `None` without the face mesh.
    pub track_ms: Option<f64>,
    /// detect + align + estimate (+ liveness), as the frame loop runs them.
    pub frame_ms: f64,
    pub estimate_ms_f32: Option<f64>,
    pub estimate_ms_int8: Option<f64>,
    /// `estimate_ms_int8 / estimate_ms_f32` when both were timed.
    pub int8_over_f32: Option<f64>,
    /// Loading both models (read, check, optimise) once, cold.
    pub load_ms: f64,
    /// Peak resident set of this process (VmHWM).
    pub rss_peak_mb: Option<f64>,
    /// Filled when `threads` > 1 (`--threads`, or the board's `[runtime] threads`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threaded: Option<ThreadedTimes>,
    /// Filled by `--compare-onnxruntime`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tract_over_ort: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("bench frame {0}: {1}")]
    Frame(String, String),
    #[error("bench frame {0}: no face found; give a frame with a face (--photo)")]
    NoFace(String),
}

/// Median of timings in milliseconds; NaN for none.
pub(crate) fn median_ms(samples: &mut [f64]) -> f64 {
    crate::numeric::median(samples).unwrap_or(f64::NAN)
}

/// Runs `f` `warmup` times untimed, then `iterations` times; the median in ms.
pub fn time_median<E>(
    warmup: usize,
    iterations: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> Result<f64, E> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(iterations.max(1));
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        f()?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median_ms(&mut samples))
}

/// Peak resident set size of this process, MB (Linux `VmHWM`).
pub fn rss_peak_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The CPU's model name (Linux), for the report.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}

/// The first frame of an MJPEG recording in which `detector` finds a face: its offset in
/// `data`, its JPEG bytes and the decoded frame. Scanning stops at the first frame that
/// cannot be delimited.
pub fn first_face_frame(
    data: &[u8],
    detector: &FaceDetector,
    max_pixels: u64,
) -> Result<Option<(usize, Vec<u8>, RgbImage)>, ModelError> {
    let mut offset = 0;
    let mut frame = RgbImage::new(1, 1);
    let mut scratch = Vec::new();
    while let Some(start) = jpeg::find_start(data, offset) {
        let rest = &data[start..];
        let Ok(len) = jpeg::frame_len(rest) else {
            break;
        };
        offset = start + len;
        if jpeg::decode_into(&rest[..len], &mut scratch, &mut frame, max_pixels).is_ok()
            && !detector.detect(&frame)?.is_empty()
        {
            return Ok(Some((start, rest[..len].to_vec(), frame)));
        }
    }
    Ok(None)
}

/// The JPEG bytes and decoded frame to time on: the first frame of the board's recording
/// with a face in it, else `fallback` (a bundled photo).
fn bench_frame(
    board: &Board,
    detector: &FaceDetector,
    photo: Option<&Path>,
    fallback: &Path,
) -> Result<(String, Vec<u8>, RgbImage), BenchError> {
    let from_file = |path: &Path| -> Result<(String, Vec<u8>, RgbImage), BenchError> {
        let name = path.display().to_string();
        let bytes = crate::input_file::read(path, crate::input_file::PHOTO)
            .map_err(|e| BenchError::Frame(name.clone(), e.reason()))?;
        let rgb = crate::photo::decode_rgb(&bytes, path, board.max_pixels())
            .map_err(|e| BenchError::Frame(name.clone(), e.to_string()))?;
        Ok((name, bytes, rgb))
    };
    if let Some(photo) = photo {
        return from_file(photo);
    }
    if let Some(SourceSettings::MjpegFile { path, .. }) = board.capture.as_ref().map(|c| &c.source)
    {
        let data = crate::input_file::read(path, crate::input_file::RECORDING).unwrap_or_default();
        if let Some((start, jpeg, frame)) = first_face_frame(&data, detector, board.max_pixels())? {
            let name = format!("{} (frame at byte {start})", path.display());
            return Ok((name, jpeg, frame));
        }
    }
    from_file(fallback)
}

/// Medians of detect, estimate (on `crop`) and the whole frame as the frame loop runs it,
/// through `pipeline`: the stages timed again for `threaded`.
fn time_stages(
    pipeline: &Pipeline,
    frame: &RgbImage,
    crop: &RgbImage,
    warmup: usize,
    iterations: usize,
) -> Result<[f64; 3], ModelError> {
    use crate::daemon::FaceEstimator;
    let detect_ms = time_median(warmup, iterations, || {
        pipeline.detector.detect(frame).map(|_| ())
    })?;
    let estimate_ms = time_median(warmup, iterations, || {
        pipeline.age_model.estimate(crop).map(|_| ())
    })?;
    let frame_ms = time_median(warmup, iterations, || pipeline.faces(frame).map(|_| ()))?;
    Ok([detect_ms, estimate_ms, frame_ms])
}

/// Times every stage on one frame.
pub fn run(
    board: &Board,
    settings: &BenchSettings,
    fallback_photo: &Path,
) -> Result<BenchReport, BenchError> {
    let load_start = Instant::now();
    // The board's engine and threads are not used here: every figure but `threaded` is
    // tract on one thread, so boards and machines compare.
    let pipeline = Pipeline::from_board_on(board, &Runtime::single_thread())?;
    let load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let (frame_name, jpeg, frame) = bench_frame(
        board,
        &pipeline.detector,
        settings.photo.as_deref(),
        fallback_photo,
    )?;
    let (w, i) = (settings.warmup, settings.iterations);

    let mut decoded = RgbImage::new(1, 1);
    let mut scratch = Vec::new();
    let decode_ms = if jpeg.starts_with(&[0xFF, 0xD8]) {
        time_median(w, i, || {
            jpeg::decode_into(&jpeg, &mut scratch, &mut decoded, board.max_pixels()).map(|_| ())
        })
        .map_err(|e| BenchError::Frame(frame_name.clone(), e.to_string()))?
    } else {
        time_median(w, i, || {
            crate::photo::decode_rgb(&jpeg, Path::new(&frame_name), board.max_pixels()).map(|_| ())
        })
        .map_err(|e| BenchError::Frame(frame_name.clone(), e.to_string()))?
    };

    let faces = pipeline.detector.detect(&frame)?;
    let face = main_face(&faces, frame.width(), frame.height())
        .and_then(|k| faces.get(k).cloned())
        .ok_or_else(|| BenchError::NoFace(frame_name.clone()))?;
    let detector_graph = pipeline.detector.model();
    let detector_input = vec![0.5f32; detector_graph.input_shape().iter().product()];
    let detect_graph_ms = time_median(w, i, || detector_graph.run(&detector_input).map(|_| ()))?;
    let size = pipeline.age_model.crop_size();
    let mut crop = RgbImage::new(size, size);
    let align_ms = time_median::<ModelError>(w, i, || {
        aligned_crop_into(&frame, &face, &mut crop);
        Ok(())
    })?;
    let [detect_ms, estimate_ms, frame_ms] = time_stages(&pipeline, &frame, &crop, w, i)?;
    let liveness_ms = match &pipeline.liveness {
        None => None,
        Some(models) => Some(time_median(w, i, || {
            models.evidence(&frame, &face).map(|_| ())
        })?),
    };
    let track_ms = match &pipeline.liveness {
        None => None,
        Some(models) => {
            let evidence = models.evidence(&frame, &face)?;
            let mut tracker = crate::liveness::PointTracker::default();
            let mut seeded = evidence;
            seeded.follow(&mut tracker, &frame);
            match seeded.tracked {
                None => None,
                // Each run follows the points from the previous run's frame (the same one).
                Some(_) => Some(time_median::<ModelError>(w, i, || {
                    let mut e = evidence;
                    e.follow(&mut tracker, &frame);
                    Ok(())
                })?),
            }
        }
    };

    let time_model = |path: &Path| -> Result<f64, BenchError> {
        let model = AgeModel::load(path)?;
        let mut crop = RgbImage::new(model.crop_size(), model.crop_size());
        aligned_crop_into(&frame, &face, &mut crop);
        Ok(time_median(w, i, || model.estimate(&crop).map(|_| ()))?)
    };
    let estimate_ms_f32 = settings.f32_model.as_deref().map(time_model).transpose()?;
    let estimate_ms_int8 = settings.int8_model.as_deref().map(time_model).transpose()?;

    let threaded = if settings.threads > 1 {
        let runtime = Runtime::start(RuntimeSettings {
            engine: Engine::Tract,
            threads: settings.threads,
        })?;
        let pipeline = Pipeline::from_board_on(board, &runtime)?;
        let [detect_ms, estimate_ms, threaded_frame_ms] =
            time_stages(&pipeline, &frame, &crop, w, i)?;
        Some(ThreadedTimes {
            threads: settings.threads,
            detect_ms,
            estimate_ms,
            frame_ms: threaded_frame_ms,
            frame_speedup: frame_ms / threaded_frame_ms,
        })
    } else {
        None
    };
    Ok(BenchReport {
        machine: machine(),
        arch: std::env::consts::ARCH,
        threads: 1,
        iterations: i,
        frame: frame_name,
        frame_size: [frame.width(), frame.height()],
        age_model: board.age_model.display().to_string(),
        age_input_px: size as usize,
        detector_input_px: pipeline.detector.input_size(),
        decode_ms,
        detect_ms,
        detect_graph_ms,
        align_ms,
        estimate_ms,
        liveness_ms,
        track_ms,
        frame_ms,
        int8_over_f32: estimate_ms_int8.zip(estimate_ms_f32).map(|(q, f)| q / f),
        estimate_ms_f32,
        estimate_ms_int8,
        load_ms,
        rss_peak_mb: rss_peak_mb(),
        threaded,
        onnxruntime: None,
        tract_over_ort: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median_ms(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_ms(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median_ms(&mut []).is_nan());
    }

    #[test]
    fn time_median_runs_warmup_and_iterations_and_passes_errors_on() {
        let mut calls = 0;
        let ms = time_median::<()>(2, 5, || {
            calls += 1;
            Ok(())
        })
        .expect("timed");
        assert_eq!(calls, 7);
        assert!(ms >= 0.0);
        assert_eq!(time_median(0, 3, || Err::<(), _>("boom")), Err("boom"));
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_peak_mb().is_some_and(|mb| mb > 0.0));
        }
    }
}

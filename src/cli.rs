//! Subcommands of the `agegate` binary: parse, wire the library together, report.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use agegate::actuate::Gate;
use agegate::capture::{self, SourceSettings};
use agegate::config::{Board, SerialSettings};
use agegate::daemon::{
    Clock, Daemon, Exit, ModelFiles, MonotonicClock, Parts, RecordingClock, StopSignal,
    SystemdWatchdog,
};
use agegate::detect::FaceDetector;
use agegate::estimate::AgeModel;
use agegate::pipeline::Pipeline;
use agegate::serial::link::{HostLink, SerialLink};
use agegate::{crops, eval, manifest, photo};

#[derive(Debug, Parser)]
#[command(
    name = "agegate",
    version,
    about = "Offline age gating: photo or camera -> face -> age -> ALLOW / DENY / REFER"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Estimate the age of every face in each photo; one JSON line per photo.
    Estimate(EstimateArgs),
    /// Run the full pipeline over a labelled manifest and report accuracy and gate figures.
    Eval(EvalArgs),
    /// Write the aligned face crops of a manifest (training data made by the runtime itself).
    Crops(CropsArgs),
    /// Run the device: camera (or recording) -> decisions -> relay, LEDs and serial line.
    Run(RunArgs),
    /// Time every stage on this machine (medians, one thread); JSON report.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Board file: the models and the recording to take a frame from.
    #[arg(long, default_value = "boards/dev.toml")]
    pub board: PathBuf,
    /// Write the report here (it is printed to stdout either way).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Timed runs per stage (after the warm-up).
    #[arg(long, default_value_t = 50)]
    pub iterations: usize,
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Time on this photo instead of the board's recording.
    #[arg(long)]
    pub photo: Option<PathBuf>,
    /// Float age model to time beside the int8 one (default: age_student_f32.onnx beside
    /// the board's age model, when it is there).
    #[arg(long)]
    pub f32_model: Option<PathBuf>,
    /// int8 age model (default: age_student_int8.onnx beside the board's age model).
    #[arg(long)]
    pub int8_model: Option<PathBuf>,
    /// Also time the same ONNX files with onnxruntime (feature `ort`; the library from
    /// ORT_DYLIB_PATH or the project's Python venv) and report `tract_over_ort`.
    #[arg(long)]
    pub compare_onnxruntime: bool,
    /// Also time detect, estimate and the frame with tract on this many threads, beside the
    /// single-thread figures (default: the board's `[runtime] threads`).
    #[arg(long)]
    pub threads: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Board file: models, policy, capture, serial, GPIO and session settings.
    #[arg(long, default_value = "boards/dev.toml")]
    pub board: PathBuf,
    /// Do not print events (decisions, serial frames, pin changes) as JSON lines on stdout;
    /// the audit log (stderr, AGEGATE_LOG=info) still has them.
    #[arg(long)]
    pub quiet: bool,
    /// Stop after N frames (with `loop = true` recordings, or `--loop`: soak and memory
    /// runs).
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Play the board's recording over and over (as `[capture] loop = true`); refused for
    /// a camera.
    #[arg(long = "loop")]
    pub looped: bool,
}

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Board file: models, detector settings and the gate policy.
    #[arg(long, default_value = "boards/dev.toml")]
    pub board: PathBuf,
    /// Use this age model instead of the board's (same contract, models/README.md).
    #[arg(long)]
    pub age_model: Option<PathBuf>,
    /// Use this face detector instead of the board's.
    #[arg(long)]
    pub detector: Option<PathBuf>,
}

impl ModelArgs {
    fn board(&self) -> Result<Board> {
        let mut board = Board::load(&self.board)?;
        if let Some(age) = &self.age_model {
            board.age_model = age.clone();
        }
        if let Some(detector) = &self.detector {
            board.detector_model = detector.clone();
        }
        Ok(board)
    }

    fn pipeline(&self) -> Result<Pipeline> {
        Ok(Pipeline::from_board(&self.board()?)?)
    }
}

#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// Photos (JPEG, PNG, BMP, PNM), colour or greyscale, crops or whole photos.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[command(flatten)]
    pub models: ModelArgs,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// CSV with columns path,age and optionally gender,race,subject.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Folder the manifest's paths are relative to (default: the manifest's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Where to write the JSON report.
    #[arg(long)]
    pub json: PathBuf,
    /// Where to write the per-image CSV (default: beside the JSON, same name, .csv).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Where to write an SVG plot of MAE by age band.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Evaluate only the first N rows.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub models: ModelArgs,
}

#[derive(Debug, Args)]
pub struct CropsArgs {
    /// CSV with columns path,age and optionally gender,race,subject.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Folder the manifest's paths are relative to (default: the manifest's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Output folder: PNG crops and manifest.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Crop side in pixels (default: the board's age model's input size).
    #[arg(long)]
    pub size: Option<u32>,
    /// Crop only the first N rows.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub models: ModelArgs,
}

/// How a command ended when it did not fail outright.
pub enum Outcome {
    Success,
    /// Nothing could be processed (every input failed): exit status 1.
    NothingProcessed,
    /// The daemon stopped on a fault that needs a restart: exit status 3.
    Fault,
}

pub fn run(cli: Cli) -> Result<Outcome> {
    match cli.command {
        Command::Estimate(args) => estimate(args),
        Command::Eval(args) => run_eval(args),
        Command::Crops(args) => run_crops(args),
        Command::Run(args) => run_daemon(args),
        Command::Bench(args) => run_bench(args),
    }
}

const NO_ORT: &str = "--compare-onnxruntime needs a build with the `ort` feature: cargo run --release --features ort -- bench --compare-onnxruntime";

fn run_bench(args: BenchArgs) -> Result<Outcome> {
    if args.compare_onnxruntime && !cfg!(feature = "ort") {
        bail!(NO_ORT);
    }
    let board = Board::load(&args.board)?;
    let sibling = |name: &str| {
        let p = board.age_model.with_file_name(name);
        p.is_file().then_some(p)
    };
    let settings = agegate::bench::BenchSettings {
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
    if let Err(message) = agegate::config::check_threads(settings.threads) {
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
    let mut report = agegate::bench::run(&board, &settings, fallback)?;
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
    _settings: &agegate::bench::BenchSettings,
    _report: &mut agegate::bench::BenchReport,
) -> Result<()> {
    bail!(NO_ORT)
}

#[cfg(feature = "ort")]
fn compare_onnxruntime(
    board: &Board,
    settings: &agegate::bench::BenchSettings,
    report: &mut agegate::bench::BenchReport,
) -> Result<()> {
    use agegate::bench::time_median;
    use agegate::ort_engine::{find_library, OrtModel};
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

/// Writes one line to standard output. A closed pipe (`agegate estimate ... | head -1`)
/// is `Ok(false)`, so the command can stop quietly; no write here ever panics.
fn print_line(line: &str) -> Result<bool> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context("writing to standard output")),
    }
}

/// Writes one line to standard error, ignoring a closed stderr: there is nowhere left to
/// report that.
pub fn print_err(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Makes the folder of an output file and checks the file can be written, before a long
/// run produces what would go into it.
fn ensure_writable(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create the folder {}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn run_daemon(args: RunArgs) -> Result<Outcome> {
    let started = std::time::Instant::now();
    let mut board = Board::load(&args.board)?;
    if args.looped {
        board
            .loop_recording()
            .map_err(|e| anyhow::anyhow!("--loop: {e}"))?;
    }
    let key_missing = |key: &str| {
        anyhow::anyhow!(
            "board file {}: key `{key}`: missing; `agegate run` needs [capture] and [gpio]",
            args.board.display()
        )
    };
    let capture_settings = board
        .capture
        .clone()
        .ok_or_else(|| key_missing("capture"))?;
    let gpio = board.gpio.clone().ok_or_else(|| key_missing("gpio"))?;
    // The relay first: it is driven inactive before anything else can fail.
    let gate = Gate::from_settings(&gpio)?;
    let stop = StopSignal::install().context("installing the stop-signal handler")?;
    let load_started = std::time::Instant::now();
    let pipeline = Pipeline::from_board(&board)?;
    let models = ModelFiles::snapshot(
        &[board.detector_model.clone(), board.age_model.clone()],
        board.daemon.model_hash_ms,
    )
    .map_err(anyhow::Error::msg)?;
    tracing::info!(
        ms = load_started.elapsed().as_millis() as u64,
        "models loaded"
    );
    let source = capture::open(&capture_settings)?;
    let link: Option<Box<dyn HostLink>> = match &board.serial {
        SerialSettings::None => None,
        SerialSettings::Port { path, baud } => {
            Some(Box::new(SerialLink::open(path.clone(), *baud)?))
        }
    };
    // A recording replays on its own timestamps (deterministic, as fast as it runs); the
    // serial line and heartbeats keep wall time whatever the source.
    let wall = MonotonicClock::default();
    let clock: Box<dyn Clock> = match capture_settings.source {
        SourceSettings::Camera { .. } => Box::new(wall),
        _ => Box::new(RecordingClock::default()),
    };
    let parts = Parts {
        source,
        estimator: Box::new(pipeline),
        link,
        gate,
        models: Box::new(models),
        watchdog: Box::new(SystemdWatchdog::from_env()),
        clock,
        wall: Box::new(wall),
        stop,
    };
    let quiet = args.quiet;
    let first_decision = std::rc::Rc::new(std::cell::Cell::new(None));
    let first = std::rc::Rc::clone(&first_decision);
    let events = Box::new(
        move |event: agegate::daemon::Event| -> std::io::Result<()> {
            use std::io::Write;
            if matches!(event, agegate::daemon::Event::Decision { .. }) && first.get().is_none() {
                first.set(Some(started.elapsed().as_secs_f64() * 1e3));
            }
            if quiet {
                return Ok(());
            }
            let line = serde_json::to_string(&event).map_err(std::io::Error::other)?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()
        },
    );
    let mut daemon = Daemon::new(parts, board.policy, board.daemon.clone(), events);
    if let Some(limit) = args.max_frames {
        daemon.set_frame_limit(limit);
    }
    let exit = daemon.run();
    let fmt_ms = |v: Option<f64>| v.map_or("none".to_string(), |v| format!("{v:.0} ms"));
    print_err(&format!(
        "agegate run: {exit:?}; {:?}; first decision {} after start (wall); peak RSS {}",
        daemon.stats(),
        fmt_ms(first_decision.get()),
        agegate::bench::rss_peak_mb().map_or("n/a".into(), |mb| format!("{mb:.1} MB")),
    ));
    Ok(match exit {
        Exit::RecordingEnded | Exit::Stopped | Exit::Aborted => Outcome::Success,
        Exit::Fault { .. } => Outcome::Fault,
    })
}

fn estimate(args: EstimateArgs) -> Result<Outcome> {
    let pipeline = args.models.pipeline()?;
    let mut processed = 0;
    for path in &args.images {
        let line = match photo::load_rgb_within(path, pipeline.max_pixels)
            .map_err(anyhow::Error::from)
            .and_then(|p| {
                let faces = pipeline.process(&p)?;
                Ok((p.width(), p.height(), faces))
            }) {
            Ok((width, height, faces)) => {
                processed += 1;
                if faces.is_empty() {
                    serde_json::json!({"file": path, "width": width, "height": height, "faces": [], "decision": "REFER", "error": "no face found"})
                } else {
                    let decision = faces[0].decision;
                    serde_json::json!({"file": path, "width": width, "height": height, "faces": faces, "decision": decision})
                }
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), "{e:#}");
                serde_json::json!({"file": path, "error": format!("{e:#}")})
            }
        };
        if !print_line(&line.to_string())? {
            // The reader went away (`| head`): nothing more to say to anyone.
            break;
        }
    }
    Ok(if processed == 0 {
        Outcome::NothingProcessed
    } else {
        Outcome::Success
    })
}

fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn read_manifest(
    path: &Path,
    root: Option<&Path>,
    limit: Option<usize>,
) -> Result<Vec<manifest::Entry>> {
    let mut entries = manifest::read(path, root)?;
    if let Some(limit) = limit {
        entries.truncate(limit);
    }
    Ok(entries)
}

fn run_eval(args: EvalArgs) -> Result<Outcome> {
    let csv_path = args
        .csv
        .clone()
        .unwrap_or_else(|| eval::default_csv_path(&args.json));
    // Every output is checked before the evaluation, which can take an hour.
    for path in [Some(&args.json), Some(&csv_path), args.plot.as_ref()]
        .into_iter()
        .flatten()
    {
        ensure_writable(path)?;
    }
    let pipeline = args.models.pipeline()?;
    let entries = read_manifest(&args.manifest, args.root.as_deref(), args.limit)?;
    let bar = progress_bar(entries.len());
    let (predictions, elapsed) =
        eval::timed(|| eval::predict_all(&pipeline, &entries, |_| bar.inc(1)));
    bar.finish_and_clear();
    eval::write_per_image_csv(&predictions, &csv_path)
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let report = eval::summarise(&predictions, &pipeline, &args.manifest, &csv_path, elapsed);
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.json, json + "\n")
        .with_context(|| format!("writing {}", args.json.display()))?;
    if let Some(plot) = &args.plot {
        eval::write_band_plot(&report, plot)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", plot.display()))?;
    }
    let fmt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.3}"));
    print_err(&format!(
        "n {} | no face {} | failed {} | MAE {} | CS(5) {} | challenge-25 FPR {} | adult 25+ referral {} | {:.1} ms/image",
        report.n,
        report.no_face,
        report.failed,
        fmt(report.mae),
        fmt(report.cs5),
        fmt(report.challenge25_fpr),
        fmt(report.adult25_referral_rate),
        report.ms_per_image
    ));
    if report.n_estimated == 0 {
        bail!("no image in {} could be estimated", args.manifest.display());
    }
    Ok(Outcome::Success)
}

fn run_crops(args: CropsArgs) -> Result<Outcome> {
    let board = args.models.board()?;
    let detector = FaceDetector::load(&board.detector_model, board.detector.clone())?;
    let size = match args.size {
        Some(s) if (16..=1024).contains(&s) => s,
        Some(s) => bail!("--size {s}: give a crop side between 16 and 1024 pixels"),
        None => AgeModel::load(&board.age_model)?.crop_size(),
    };
    let entries = read_manifest(&args.manifest, args.root.as_deref(), args.limit)?;
    let bar = progress_bar(entries.len());
    let summary = crops::write_crops(
        &detector,
        &entries,
        size,
        board.max_pixels(),
        &args.out,
        || bar.inc(1),
    )
    .with_context(|| format!("writing crops under {}", args.out.display()))?;
    bar.finish_and_clear();
    print_line(&serde_json::to_string(&summary)?)?;
    Ok(if summary.written == 0 {
        Outcome::NothingProcessed
    } else {
        Outcome::Success
    })
}

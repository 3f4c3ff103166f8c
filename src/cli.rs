//! Subcommands of the `agegate` binary: parse, wire the library together, report.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use agegate::actuate::Gate;
use agegate::capture::{self, CaptureSettings};
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
    #[arg(long)]
    pub manifest: PathBuf,
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Output folder: PNG crops and manifest.csv.
    #[arg(long)]
    pub out: PathBuf,
    /// Crop side in pixels (default: the board's age model's input size).
    #[arg(long)]
    pub size: Option<u32>,
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
    }
}

fn run_daemon(args: RunArgs) -> Result<Outcome> {
    let board = Board::load(&args.board)?;
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
    let stop = StopSignal::install().context("installing the SIGTERM/SIGINT handler")?;
    let load_started = std::time::Instant::now();
    let pipeline = Pipeline::from_board(&board)?;
    let models = ModelFiles::snapshot(&[board.detector_model.clone(), board.age_model.clone()])
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
    // A recording replays on its own timestamps (deterministic, as fast as it runs).
    let clock: Box<dyn Clock> = match capture_settings {
        CaptureSettings::Camera { .. } => Box::new(MonotonicClock::default()),
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
        stop,
    };
    let quiet = args.quiet;
    let events = Box::new(move |event: agegate::daemon::Event| {
        if !quiet {
            if let Ok(line) = serde_json::to_string(&event) {
                println!("{line}");
            }
        }
    });
    let mut daemon = Daemon::new(parts, board.policy, board.daemon.clone(), events);
    let exit = daemon.run();
    eprintln!("agegate run: {exit:?}; {:?}", daemon.stats());
    Ok(match exit {
        Exit::RecordingEnded | Exit::Stopped | Exit::Aborted => Outcome::Success,
        Exit::Fault { .. } => Outcome::Fault,
    })
}

fn estimate(args: EstimateArgs) -> Result<Outcome> {
    let pipeline = args.models.pipeline()?;
    let mut processed = 0;
    for path in &args.images {
        let line = match photo::load_rgb(path)
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
        println!("{line}");
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
    let pipeline = args.models.pipeline()?;
    let entries = read_manifest(&args.manifest, args.root.as_deref(), args.limit)?;
    let bar = progress_bar(entries.len());
    let (predictions, elapsed) =
        eval::timed(|| eval::predict_all(&pipeline, &entries, |_| bar.inc(1)));
    bar.finish_and_clear();
    let csv_path = args
        .csv
        .clone()
        .unwrap_or_else(|| eval::default_csv_path(&args.json));
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
    eprintln!(
        "n {} | no face {} | failed {} | MAE {} | CS(5) {} | challenge-25 FPR {} | adult 25+ referral {} | {:.1} ms/image",
        report.n,
        report.no_face,
        report.failed,
        fmt(report.mae),
        fmt(report.cs5),
        fmt(report.challenge25_fpr),
        fmt(report.adult25_referral_rate),
        report.ms_per_image
    );
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
    let summary = crops::write_crops(&detector, &entries, size, &args.out, || bar.inc(1))
        .with_context(|| format!("writing crops under {}", args.out.display()))?;
    bar.finish_and_clear();
    println!("{}", serde_json::to_string(&summary)?);
    Ok(if summary.written == 0 {
        Outcome::NothingProcessed
    } else {
        Outcome::Success
    })
}

//! Subcommands of the `agegate` binary: parse, wire the library together, report. The
//! device itself is [`run`]; the tools around it are [`tools`].

mod bench;
mod bundle;
mod calibrate;
mod mdb_sim;
mod run;
mod tools;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use agegate::config::Board;
use agegate::pipeline::Pipeline;

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
    /// Choose the ALLOW rule's numbers on a labelled set for a bound on minors allowed,
    /// and write the `[policy]` section a board file can carry.
    Calibrate(CalibrateArgs),
    /// Write the aligned face crops of a manifest (training data made by the runtime itself).
    Crops(CropsArgs),
    /// Run the device: camera (or recording) -> decisions -> relay, LEDs and serial line.
    Run(RunArgs),
    /// Drive the device as a vending machine controller would over MDB, on recorded
    /// scenes; one JSON line per session, then a summary.
    MdbSim(MdbSimArgs),
    /// Time every stage on this machine (medians, one thread); JSON report.
    Bench(BenchArgs),
    /// Print the `[models]` lines that pin a board's model files to their SHA-256.
    Hash(HashArgs),
    /// Make a minisign key pair for signing bundles (the public key goes on the boards).
    Keygen(KeygenArgs),
    /// Pack a board's two models and a `[policy]` into a bundle signed with minisign.
    Bundle(BundleArgs),
    /// Verify a signed bundle and install it for a bundle board, keeping the previous one.
    InstallBundle(InstallBundleArgs),
    /// Make a bundle board's previous bundle current again.
    Rollback(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (never overwritten).
    #[arg(long)]
    pub secret_key: PathBuf,
    /// Where to write the public key (never overwritten).
    #[arg(long)]
    pub public_key: PathBuf,
    /// Encrypt the secret key with the password in this file (recommended).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Board file whose model files to pack (and whose `[policy]`, unless --policy).
    #[arg(long)]
    pub board: PathBuf,
    /// A file with the `[policy]` section to pack instead (`agegate calibrate` writes one).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// minisign secret key (`minisign -G` makes one).
    #[arg(long)]
    pub secret_key: PathBuf,
    /// File holding the secret key's password, for a key made with one.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// What this bundle is, for people (default: the board and the age model's hash).
    #[arg(long)]
    pub label: Option<String>,
    /// The bundle file to write.
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct InstallBundleArgs {
    /// The bundle file (`agegate bundle` writes it).
    pub bundle: PathBuf,
    /// minisign public key to check it with; must be the board's `models.bundle_pubkey`
    /// (the default).
    #[arg(long)]
    pub pubkey: Option<PathBuf>,
    /// The bundle board to install it for: its `name`, `[models] bundle` and key.
    #[arg(long)]
    pub board: PathBuf,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The bundle board whose previous bundle to make current.
    #[arg(long)]
    pub board: PathBuf,
}

#[derive(Debug, Args)]
pub struct HashArgs {
    /// Board file whose `[models]` files to hash.
    pub board: PathBuf,
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
pub struct MdbSimArgs {
    /// Board file: models, policy, session, liveness and `[mdb]` (its transport, camera
    /// and GPIO are replaced by the simulator's bus, scenes and a reporting gate).
    #[arg(long, default_value = "boards/dev-mdb.toml")]
    pub board: PathBuf,
    /// Verification sessions to run.
    #[arg(long, default_value_t = 100)]
    pub sessions: usize,
    /// Seed of the scenes, ages, timing and aborts.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// A scene: `NAME=PATH[:FIRST-LAST,...]` with NAME adult, child, empty or attack and
    /// PATH an MJPEG recording, a folder of frames or a photo. Repeat for more; without
    /// any, the bundled recordings beside the board's folder (adults, the empty scene and,
    /// on a board with liveness, the attacks; no child is bundled).
    #[arg(long = "scene")]
    pub scenes: Vec<String>,
    /// Sessions the VMC aborts (RESET, DRAVP off, READER cancel, a new DRAVS), percent.
    #[arg(long, default_value_t = 10)]
    pub abort_percent: usize,
    /// Busy threads beside the daemon, to measure the bus's response times under load.
    #[arg(long, default_value_t = 0)]
    pub load_threads: usize,
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
        // A model named on the command line is the user's choice: the board's pin for
        // that file does not apply to it.
        if let Some(age) = &self.age_model {
            board.age_model = age.clone();
            board.age_sha256 = None;
        }
        if let Some(detector) = &self.detector {
            board.detector_model = detector.clone();
            board.detector_sha256 = None;
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
    /// Where to write an SVG plot of MAE by age band; the trade-off plot (minors let
    /// through against adults asked for ID) goes beside it, `<name>.det.svg`.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Evaluate only the first N rows.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Also evaluate with each photo degraded as cameras and scans do, one report per
    /// kind: grey, lowres, blur, jpeg, scan, small, dark, colorcast, or all;
    /// `small+jpeg` applies two in turn. Seeded per photo. Each kind's per-image rows go
    /// beside the clean set's CSV, as `<name>.<kind>.csv`.
    #[arg(long)]
    pub degrade: Option<String>,
    /// See each photo N times under small seeded jitter and aggregate the estimates as
    /// the daemon aggregates a window of frames.
    #[arg(long, default_value_t = 1)]
    pub views: usize,
    /// Evaluate presentation-attack detection instead of age (the board's `[liveness]`):
    /// synthetic print and screen attacks made from the photos, the photos themselves as
    /// bona fide (and `--degrade`d), simulated head tracks for the motion cues.
    #[arg(long)]
    pub liveness: bool,
    /// `--liveness`: attack sequences per kind (print, replay, and both held still).
    #[arg(long, default_value_t = 500)]
    pub sequences: usize,
    /// `--liveness`: frames per sequence, at 10 frames per second.
    #[arg(long, default_value_t = 12)]
    pub frames: usize,
    /// `--liveness`: simulated keypoint tracks per kind (head, still person, flat photo).
    #[arg(long, default_value_t = 500)]
    pub tracks: usize,
    /// `--liveness`: also run the recordings of DIR/manifest.csv (`path,label[,fps]`,
    /// label `bona_fide` or `attack`; an MJPEG file or a folder of frames each).
    #[arg(long)]
    pub recordings: Option<PathBuf>,
    #[command(flatten)]
    pub models: ModelArgs,
}

#[derive(Debug, Args)]
pub struct CalibrateArgs {
    /// CSV with columns path,age and optionally gender,race,subject: the labelled set.
    #[arg(long)]
    pub manifest: PathBuf,
    /// Folder the manifest's paths are relative to (default: the manifest's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// The bound on the share of under-18s allowed: its one-sided 95 % upper bound on
    /// the set must be at most this (e.g. 0.01).
    #[arg(long)]
    pub max_minor_allow: f64,
    /// The rule to calibrate: threshold (on the estimate), margin (k_sigma), p_over.
    #[arg(long, value_enum, default_value_t = RuleArg::Threshold)]
    pub rule: RuleArg,
    /// Write the `[policy]` section here (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Calibrate on the first N rows only.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Also hold the bound on each degraded copy of the set and on all together (kinds as
    /// `eval --degrade`: grey, lowres, blur, jpeg, scan, small, dark, colorcast, or all).
    #[arg(long)]
    pub degrade: Option<String>,
    /// A cap on the window's sigma, over which the gate REFERs: `none` (default), a
    /// number of years, or `auto` (the cap that costs adults least).
    #[arg(long, default_value = "none")]
    pub max_sigma: String,
    #[command(flatten)]
    pub models: ModelArgs,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RuleArg {
    Threshold,
    Margin,
    POver,
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
        Command::Estimate(args) => tools::estimate(args),
        Command::Eval(args) => tools::eval(args),
        Command::Crops(args) => tools::crops(args),
        Command::Calibrate(args) => calibrate::calibrate(args),
        Command::Run(args) => run::daemon(args),
        Command::MdbSim(args) => mdb_sim::simulate(args),
        Command::Bench(args) => bench::bench(args),
        Command::Hash(args) => tools::hash(args),
        Command::Keygen(args) => bundle::keygen(args),
        Command::Bundle(args) => bundle::pack(args),
        Command::InstallBundle(args) => bundle::install(args),
        Command::Rollback(args) => bundle::rollback(args),
    }
}

/// Writes one line to standard output. A closed pipe (`agegate estimate ... | head -1`)
/// is `Ok(false)`, so the command can stop quietly; no write here ever panics.
pub(crate) fn print_line(line: &str) -> Result<bool> {
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
pub(crate) fn ensure_writable(path: &Path) -> Result<()> {
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

//! The tool commands: `estimate`, `eval`, `crops`, `hash`; `bench` and `calibrate` have
//! files of their own.

use std::path::Path;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use agegate::config::Board;
use agegate::decide::Decision;
use agegate::detect::FaceDetector;
use agegate::digest::Sha256;
use agegate::estimate::AgeModel;
use agegate::photo;
use agegate::tools::{crops, eval, manifest};

use agegate::tools::degrade::Degradation;

use super::{
    ensure_writable, print_err, print_line, CropsArgs, EstimateArgs, EvalArgs, HashArgs, Outcome,
};

/// One line of `agegate estimate`: a photo's faces and the first face's decision (REFER
/// with an error when none is found), or why the photo was not read. The fields are in
/// alphabetical order, the order the lines have always had.
#[derive(serde::Serialize)]
struct EstimateLine<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<Decision>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// As a JSON value, which sorts each face's keys and prints its numbers as it always
    /// has (an `f32` widened: `77.10762786865234`).
    #[serde(skip_serializing_if = "Option::is_none")]
    faces: Option<serde_json::Value>,
    file: &'a Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    height: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    width: Option<u32>,
}

impl<'a> EstimateLine<'a> {
    fn of(file: &'a Path) -> Self {
        Self {
            decision: None,
            error: None,
            faces: None,
            file,
            height: None,
            width: None,
        }
    }

    fn to_json(&self) -> Result<String> {
        Ok(serde_json::to_string(self)?)
    }
}

pub(super) fn estimate(args: EstimateArgs) -> Result<Outcome> {
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
                EstimateLine {
                    decision: Some(faces.first().map_or(Decision::Refer, |f| f.decision)),
                    error: faces.is_empty().then(|| "no face found".to_string()),
                    faces: Some(serde_json::to_value(&faces)?),
                    file: path,
                    height: Some(height),
                    width: Some(width),
                }
                .to_json()
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), "{e:#}");
                EstimateLine {
                    error: Some(format!("{e:#}")),
                    ..EstimateLine::of(path)
                }
                .to_json()
            }
        };
        if !print_line(&line?)? {
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

pub(super) fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

pub(super) fn read_manifest(
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

/// Makes the folder of `path` and checks a file can be made in it, without making one.
pub(super) fn check_writable_dir(path: &Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the folder {}", dir.display()))?;
    let probe = dir.join(format!(".agegate-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write in {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `name.svg` -> `name.det.svg`: where the trade-off plot goes beside the band plot.
fn det_path(plot: &Path) -> std::path::PathBuf {
    plot.with_extension("det.svg")
}

pub(super) fn eval(args: EvalArgs) -> Result<Outcome> {
    let csv_path = args
        .csv
        .clone()
        .unwrap_or_else(|| eval::default_csv_path(&args.json));
    let degradations = degradations(args.degrade.as_deref())?;
    if !(1..=64).contains(&args.views) {
        bail!("--views {}: give 1 to 64", args.views);
    }
    if args.liveness {
        return eval_liveness(args, degradations);
    }
    // Every output is checked before the evaluation, which can take an hour.
    let det = args.plot.as_deref().map(det_path);
    let degraded_csvs: Vec<std::path::PathBuf> = degradations
        .iter()
        .map(|d| eval::degraded_csv_path(&csv_path, &d.name()))
        .collect();
    for path in [
        Some(&args.json),
        Some(&csv_path),
        args.plot.as_ref(),
        det.as_ref(),
    ]
    .into_iter()
    .flatten()
    .chain(&degraded_csvs)
    {
        ensure_writable(path)?;
    }
    let pipeline = args.models.pipeline()?;
    let entries = read_manifest(&args.manifest, args.root.as_deref(), args.limit)?;
    let options = eval::EvalOptions {
        degrade: None,
        views: args.views,
    };
    let bar = progress_bar(entries.len() * (1 + degradations.len()));
    let (predictions, elapsed) =
        eval::timed(|| eval::predict_all(&pipeline, &entries, &options, |_| bar.inc(1)));
    let mut robustness = std::collections::BTreeMap::new();
    for (d, d_csv) in degradations.iter().zip(&degraded_csvs) {
        bar.set_message(d.name());
        let options = eval::EvalOptions {
            degrade: Some(d.clone()),
            ..options.clone()
        };
        let degraded = eval::predict_all(&pipeline, &entries, &options, |_| bar.inc(1));
        eval::write_per_image_csv(&degraded, d_csv)
            .with_context(|| format!("writing {}", d_csv.display()))?;
        let mut summary = eval::summary(&degraded, &pipeline.policy);
        summary.per_image_csv = Some(d_csv.display().to_string());
        robustness.insert(d.name(), summary);
    }
    bar.finish_and_clear();
    eval::write_per_image_csv(&predictions, &csv_path)
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let mut report = eval::summarise(
        &predictions,
        &pipeline,
        &args.manifest,
        &csv_path,
        elapsed,
        args.views,
    );
    report.robustness = robustness;
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.json, json + "\n")
        .with_context(|| format!("writing {}", args.json.display()))?;
    if let (Some(plot), Some(det)) = (&args.plot, &det) {
        eval::write_band_plot(&report, plot)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", plot.display()))?;
        eval::write_det_plot(&report, det)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", det.display()))?;
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
    for (kind, s) in &report.robustness {
        print_err(&format!(
            "  {kind:<12} MAE {} | minors allowed {}/{} | adult 25+ referral {}",
            fmt(s.mae),
            s.gate.minors_allowed,
            s.gate.minors,
            fmt(s.gate.adult25_referral_rate)
        ));
    }
    if report.n_estimated == 0 {
        bail!("no image in {} could be estimated", args.manifest.display());
    }
    Ok(Outcome::Success)
}

fn eval_liveness(args: EvalArgs, degradations: Vec<Degradation>) -> Result<Outcome> {
    if !(3..=agegate::liveness::MAX_EVIDENCE).contains(&args.frames) {
        bail!(
            "--frames {}: give 3 to {}",
            args.frames,
            agegate::liveness::MAX_EVIDENCE
        );
    }
    ensure_writable(&args.json)?;
    let csv_path = args
        .csv
        .clone()
        .unwrap_or_else(|| eval::default_csv_path(&args.json));
    ensure_writable(&csv_path)?;
    if let Some(dir) = &args.recordings {
        let manifest = dir.join("manifest.csv");
        if !manifest.is_file() {
            bail!("--recordings {}: no manifest.csv in it", dir.display());
        }
    }
    let pipeline = args.models.pipeline()?;
    // The limit applies after the evaluation's own seeded order (a sorted manifest's first
    // rows are one age).
    let entries = read_manifest(&args.manifest, args.root.as_deref(), None)?;
    let options = eval::liveness::LivenessEvalOptions {
        limit: args.limit,
        sequences: args.sequences,
        frames: args.frames,
        fps: 10.0,
        degrade: degradations,
        tracks: args.tracks,
        jitter_photos: 100,
        recordings: args.recordings.clone(),
    };
    let photos = args.limit.unwrap_or(entries.len()).min(entries.len());
    let windows = 4 * args.sequences.min(photos) + photos * (1 + options.degrade.len());
    let bar = progress_bar(windows);
    let report = eval::liveness::evaluate(&pipeline, &entries, &options, |what| {
        bar.set_message(what.to_string());
        bar.inc(1);
    })
    .map_err(|e| anyhow::anyhow!("eval --liveness: {e}"))?;
    bar.finish_and_clear();
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(&args.json, json + "\n")
        .with_context(|| format!("writing {}", args.json.display()))?;
    eval::liveness::write_windows_csv(&report, &pipeline.session.liveness, &csv_path)
        .with_context(|| format!("writing {}", csv_path.display()))?;
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.1} %", 100.0 * v));
    let cues = |r: &eval::liveness::Rates| {
        r.flagged
            .iter()
            .map(|(k, v)| format!("{k} {:.1} %", 100.0 * v))
            .collect::<Vec<_>>()
            .join(", ")
    };
    print_err(&format!(
        "liveness mode {} (simulated attacks and tracks)",
        report.mode
    ));
    for (kind, r) in &report.attacks {
        print_err(&format!(
            "  attack {kind:<13} n {} | no face {} | APCER {} | flagged: {}",
            r.n,
            r.no_face,
            pct(r.error_rate),
            cues(r)
        ));
    }
    for (kind, r) in &report.bona_fide_passive {
        print_err(&format!(
            "  bona fide photos {kind:<10} n {} | BPCER {} | flagged: {}",
            r.n,
            pct(r.error_rate),
            cues(r)
        ));
    }
    let t = &report.tracks;
    for (name, r) in [
        ("head", &t.head),
        ("still person", &t.still_person),
        ("flat", &t.flat),
    ] {
        print_err(&format!(
            "  track {name:<13} n {} | {} {} | flagged: {}",
            r.n,
            if name == "flat" { "APCER" } else { "BPCER" },
            pct(r.error_rate),
            cues(r)
        ));
    }
    Ok(Outcome::Success)
}

/// `--degrade`'s kinds (none without the flag).
pub(super) fn degradations(spec: Option<&str>) -> Result<Vec<Degradation>> {
    let parsed = spec.map(Degradation::parse_list).transpose();
    Ok(parsed
        .map_err(|e| anyhow::anyhow!("--degrade: {e}"))?
        .unwrap_or_default())
}

pub(super) fn crops(args: CropsArgs) -> Result<Outcome> {
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

pub(super) fn hash(args: HashArgs) -> Result<Outcome> {
    if Board::load_bundle_target(&args.board).is_ok() {
        bail!(
            "board file {}: its models come from a signed bundle, whose manifest holds their \
             hashes; there is nothing to pin",
            args.board.display()
        );
    }
    let mut lines = Vec::new();
    for file in Board::load_model_files(&args.board)? {
        let found = Sha256::of_file(&file.path)
            .with_context(|| format!("model file {}: cannot read it", file.path.display()))?;
        match file.pinned {
            Some(pin) if pin != found => print_err(&format!(
                "{}: the board pins {pin}; the file is now {found}",
                file.path.display()
            )),
            Some(_) => print_err(&format!("{}: matches its pin", file.path.display())),
            None => print_err(&format!("{}: not pinned yet", file.path.display())),
        }
        let key = file.key.trim_start_matches("models.");
        lines.push(format!("{key} = \"{found}\""));
    }
    // Only the two lines, on stdout: they go under the board's `[models]` as they are.
    for line in lines {
        print_line(&line)?;
    }
    Ok(Outcome::Success)
}

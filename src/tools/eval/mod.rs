//! `agegate eval`: the whole pipeline over a labelled manifest, with the figures an
//! operator and a model builder need: MAE, CS(5), bias and MAE per age band, the gate's
//! rates, NIST FATE-style figures with intervals ([`nist`]), MAE and minors allowed by
//! face size, and, with `--degrade`, the same under each degradation ([`super::degrade`]);
//! with `--views N`, each photo seen N times under small jitter.
//!
//! Each photo is decided by the device's own window ([`StillWindow`]): its views are the
//! window's frames, so the quality gate, the other-face rule, `[liveness]`'s passive
//! verdict and the policy are the daemon's (what a still cannot give is listed at
//! [`crate::session::still_settings`]).

pub mod attacks;
pub mod liveness;
pub mod nist;
mod plot;
mod views;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use plot::{write_band_plot, write_det_plot};

use crate::decide::{Policy, Rule};
use crate::domain::{AgeBand, Decision, ReferReason};
use crate::estimate::AgeEstimate;
use crate::photo::load_rgb_within;
use crate::pipeline::Pipeline;
use crate::quality::{Quality, QualitySettings};
use crate::session::{still_settings, OtherFaces, SessionSettings, StillWindow};
use crate::tools::degrade::{seed_of, Degradation};
use crate::tools::manifest::Entry;

/// How each photo is seen.
#[derive(Debug, Clone, Default)]
pub struct EvalOptions {
    /// Applied to each decoded photo before detection.
    pub degrade: Option<Degradation>,
    /// Views per photo (1: the photo as it is; more: jittered copies, aggregated).
    pub views: usize,
}

/// What happened to one manifest row.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub entry: Entry,
    pub outcome: Outcome,
}

/// A row with a face: the (aggregated) estimate and the gate's verdict on it.
#[derive(Debug, Clone)]
pub struct Estimated {
    pub estimate: AgeEstimate,
    pub decision: Decision,
    pub reason: Option<ReferReason>,
    /// Faces in the (first) view.
    pub faces: usize,
    /// The main face's quality in the (first) view.
    pub quality: Quality,
    /// Views whose estimate counted (quality gate passed) in the window that decided.
    pub views: usize,
    /// The decision is the policy's verdict on `estimate`: another policy decides this
    /// row by its own rule. Otherwise the window referred for a reason no policy changes
    /// (another face, liveness, too few usable views).
    pub by_policy: bool,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Estimated(Estimated),
    /// No face found: decided REFER, left out of the error figures.
    NoFace,
    /// The photo could not be read or the model failed on it: left out of every figure.
    Failed(String),
}

impl Outcome {
    pub fn decision(&self) -> Decision {
        match self {
            Outcome::Estimated(e) => e.decision,
            Outcome::NoFace | Outcome::Failed(_) => Decision::Refer,
        }
    }

    pub fn estimated(&self) -> Option<&Estimated> {
        match self {
            Outcome::Estimated(e) => Some(e),
            _ => None,
        }
    }
}

/// Runs the pipeline on every entry; `progress` is called after each.
pub fn predict_all(
    pipeline: &Pipeline,
    entries: &[Entry],
    options: &EvalOptions,
    mut progress: impl FnMut(&Prediction),
) -> Vec<Prediction> {
    entries
        .iter()
        .map(|entry| {
            let outcome = match load_rgb_within(&entry.path, pipeline.max_pixels) {
                Err(e) => Outcome::Failed(e.to_string()),
                Ok(photo) => {
                    let seed = seed_of(&entry.rel_path);
                    let photo = match &options.degrade {
                        Some(d) => d.apply(&photo, seed),
                        None => photo,
                    };
                    predict_photo(pipeline, &photo, options.views.max(1), seed)
                }
            };
            let prediction = Prediction {
                entry: entry.clone(),
                outcome,
            };
            progress(&prediction);
            prediction
        })
        .collect()
}

/// One photo, seen `views` times (the first as it is), decided as the device decides a
/// window of those frames.
fn predict_photo(pipeline: &Pipeline, photo: &image::RgbImage, views: usize, seed: u64) -> Outcome {
    let mut window = match StillWindow::new(pipeline.session, pipeline.policy, views) {
        Ok(window) => window,
        Err(e) => return Outcome::Failed(format!("[session]: {e}")),
    };
    let mut first: Option<(usize, Quality)> = None;
    // The steps of the first counted view: the per-step MAE is a property of the model.
    let mut steps: Option<Vec<f32>> = None;
    let mut verdict = None;
    for v in 0..views {
        let view = if v == 0 {
            None
        } else {
            Some(views::jitter(
                photo,
                seed ^ (v as u64).wrapping_mul(0x9E37_79B9),
            ))
        };
        let (faces, found) = match pipeline.still_faces(view.as_ref().unwrap_or(photo)) {
            Ok(faces) => faces,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if let (Some((_, estimate)), Some(quality)) = (&faces.main, faces.quality) {
            first.get_or_insert((found, quality));
            if steps.is_none() && pipeline.session.quality.failure(&quality).is_none() {
                steps = Some(estimate.steps.clone());
            }
        }
        verdict = window.observe(&faces);
        if verdict.is_some() {
            // The device sees no later frame.
            break;
        }
    }
    let verdict = verdict.unwrap_or_else(|| window.finish());
    let Some((faces, quality)) = first else {
        return Outcome::NoFace;
    };
    let estimate = match verdict.aggregate {
        Some(agg) => AgeEstimate {
            age: agg.age,
            sigma: agg.sigma,
            steps: steps.unwrap_or_default(),
            p_over: agg.p_over,
        },
        // Faces, but none good enough to count.
        None => pipeline_estimate_placeholder(),
    };
    Outcome::Estimated(Estimated {
        estimate,
        decision: verdict.decision,
        reason: verdict.reason,
        faces,
        quality,
        views: verdict.aggregate.map_or(0, |a| a.frames),
        by_policy: verdict.by_policy,
    })
}

/// What a row with faces but no usable estimate carries: not a number, left out of the
/// error figures by [`Estimated::counts`].
fn pipeline_estimate_placeholder() -> AgeEstimate {
    AgeEstimate {
        age: f32::NAN,
        sigma: f32::NAN,
        steps: Vec::new(),
        p_over: None,
    }
}

impl Estimated {
    /// Whether the row has an estimate for the error figures (its faces passed the
    /// quality gate).
    pub fn counts(&self) -> bool {
        self.views > 0 && self.estimate.age.is_finite()
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn share(hits: usize, total: usize) -> Option<f64> {
    (total > 0).then(|| hits as f64 / total as f64)
}

/// MAE, bias and count of a group of rows.
#[derive(Debug, Serialize, PartialEq, Clone)]
pub struct GroupStats {
    pub n: usize,
    pub mae: Option<f64>,
    /// Mean of estimate minus truth: + is too old.
    pub bias: Option<f64>,
    /// 95 % bootstrap interval of the MAE (by subject when the manifest names them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae_ci: Option<(f64, f64)>,
}

/// The gate's figures on a set: what an operator reads.
#[derive(Debug, Serialize, Clone)]
pub struct GateRates {
    /// True under-18s, and how many the gate would ALLOW.
    pub minors: usize,
    pub minors_allowed: usize,
    /// Share of true under-18s that the gate would ALLOW, and its one-sided 95 % upper
    /// bound.
    pub challenge25_fpr: Option<f64>,
    pub minor_allow_upper: Option<f64>,
    /// True 25+, and the share the gate would not ALLOW.
    pub adults: usize,
    pub adult25_referral_rate: Option<f64>,
}

/// The summary of one set (the clean photos, or one degradation).
#[derive(Debug, Serialize, Clone)]
pub struct Summary {
    /// Rows with a face, the ones the error figures are over.
    pub n_estimated: usize,
    pub no_face: usize,
    pub failed: usize,
    pub mae: Option<f64>,
    pub cs5: Option<f64>,
    pub bands: BTreeMap<String, GroupStats>,
    #[serde(flatten)]
    pub gate: GateRates,
    /// Where this set's per-image rows were written (a degradation's, beside the clean
    /// set's file), so that another rule can be scored on them without a second run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_image_csv: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PolicyReport {
    pub legal_age: f32,
    pub challenge_age: f32,
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k_sigma: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_at: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deny_below: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_over_age: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_p: Option<f32>,
    /// Above this window sigma, REFER whatever the rule says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sigma: Option<f32>,
}

impl From<&Policy> for PolicyReport {
    fn from(p: &Policy) -> Self {
        let mut r = PolicyReport {
            legal_age: p.legal_age(),
            challenge_age: p.challenge_age(),
            rule: String::new(),
            k_sigma: None,
            allow_at: None,
            deny_below: None,
            p_over_age: None,
            allow_p: None,
            max_sigma: p.max_sigma(),
        };
        match p.rule() {
            Rule::Margin { k_sigma } => {
                r.rule = "margin".into();
                r.k_sigma = Some(k_sigma);
            }
            Rule::Threshold {
                allow_at,
                deny_below,
            } => {
                r.rule = "threshold".into();
                r.allow_at = Some(allow_at);
                r.deny_below = Some(deny_below);
            }
            Rule::POver { age, allow_p, .. } => {
                r.rule = "p_over".into();
                r.p_over_age = Some(age);
                r.allow_p = Some(allow_p);
            }
        }
        r
    }
}

/// MAE and minors allowed by interocular distance (source pixels): what the face-quality
/// gate's `min_iod_px` is chosen from.
#[derive(Debug, Serialize)]
pub struct IodBucket {
    /// Lowest distance in the bucket, px (the bucket runs to the next one's).
    pub from_px: f32,
    pub n: usize,
    pub mae: Option<f64>,
    pub minors: usize,
    pub minors_allowed: usize,
}

/// The device's window as a photo's views fill it ([`still_settings`]).
#[derive(Debug, Serialize)]
pub struct WindowReport {
    /// Counted views it decides on (the board's `min_frames`, at most `--views`).
    pub min_frames: usize,
    /// `[session] other_faces`: "refer" or "ignore".
    pub other_faces: &'static str,
    /// `[liveness]` as a still is judged: "off" or "passive".
    pub liveness: &'static str,
    /// Whether a `[quality]` gate leaves faces out.
    pub quality_gate: bool,
}

impl WindowReport {
    fn of(s: &SessionSettings) -> Self {
        Self {
            min_frames: s.min_frames,
            other_faces: match s.other_faces {
                OtherFaces::Refer => "refer",
                OtherFaces::Ignore => "ignore",
            },
            liveness: s.liveness.mode.name(),
            quality_gate: s.quality != QualitySettings::default(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub manifest: String,
    pub age_model: String,
    pub detector_model: String,
    pub policy: PolicyReport,
    /// The window each photo was decided in (the board's, as a still's).
    pub window: WindowReport,
    /// Rows in the manifest.
    pub n: usize,
    pub n_estimated: usize,
    pub no_face: usize,
    pub no_face_rate: f64,
    pub failed: usize,
    pub failures: Vec<String>,
    pub mae: Option<f64>,
    /// 95 % bootstrap interval of the MAE.
    pub mae_ci: Option<(f64, f64)>,
    pub cs5: Option<f64>,
    /// MAE after each correction step (the last equals `mae`).
    pub step_mae: Vec<f64>,
    pub bands: BTreeMap<String, GroupStats>,
    /// Share of true under-18s that the gate would ALLOW.
    pub challenge25_fpr: Option<f64>,
    /// Share of true 25+ that the gate would not ALLOW.
    pub adult25_referral_rate: Option<f64>,
    pub gate: GateRates,
    pub decisions: BTreeMap<String, usize>,
    /// REFERs by reason.
    pub refer_reasons: BTreeMap<String, usize>,
    pub groups: BTreeMap<String, BTreeMap<String, GroupStats>>,
    pub by_iod: Vec<IodBucket>,
    pub nist: nist::Nist,
    /// Views per photo (`--views`).
    pub views: usize,
    /// `--degrade`: the same figures with each degradation applied.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub robustness: BTreeMap<String, Summary>,
    pub per_image_csv: String,
    pub ms_per_image: f64,
}

/// The rows with an estimate that counts: (entry, estimate, error).
fn counted(predictions: &[Prediction]) -> Vec<(&Entry, &Estimated)> {
    predictions
        .iter()
        .filter_map(|p| {
            p.outcome
                .estimated()
                .filter(|e| e.counts())
                .map(|e| (&p.entry, e))
        })
        .collect()
}

fn abs_err(entry: &Entry, e: &Estimated) -> f64 {
    f64::from((e.estimate.age - entry.age).abs())
}

fn group_stats(rows: &[(&Entry, &Estimated)]) -> GroupStats {
    GroupStats {
        n: rows.len(),
        mae: mean(rows.iter().map(|(en, e)| abs_err(en, e))),
        bias: mean(
            rows.iter()
                .map(|(en, e)| f64::from(e.estimate.age - en.age)),
        ),
        mae_ci: None,
    }
}

/// The gate's rates over the rows that were read (failures are not people the gate saw;
/// a photo without a face is: the gate refers it).
fn gate_rates(predictions: &[Prediction], policy: &Policy) -> GateRates {
    let seen = || {
        predictions
            .iter()
            .filter(|p| !matches!(p.outcome, Outcome::Failed(_)))
    };
    let minors: Vec<&Prediction> = seen()
        .filter(|p| p.entry.age < policy.legal_age())
        .collect();
    let adults: Vec<&Prediction> = seen()
        .filter(|p| p.entry.age >= policy.challenge_age())
        .collect();
    let allowed = minors
        .iter()
        .filter(|p| p.outcome.decision() == Decision::Allow)
        .count();
    let referred = adults
        .iter()
        .filter(|p| p.outcome.decision() != Decision::Allow)
        .count();
    GateRates {
        minors: minors.len(),
        minors_allowed: allowed,
        challenge25_fpr: share(allowed, minors.len()),
        minor_allow_upper: crate::tools::stats::upper_bound(allowed, minors.len()),
        adults: adults.len(),
        adult25_referral_rate: share(referred, adults.len()),
    }
}

fn bands(rows: &[(&Entry, &Estimated)]) -> BTreeMap<String, GroupStats> {
    AgeBand::ALL
        .iter()
        .map(|band| {
            let in_band: Vec<_> = rows
                .iter()
                .copied()
                .filter(|(e, _)| band.contains(e.age))
                .collect();
            (band.name().to_string(), group_stats(&in_band))
        })
        .collect()
}

/// The figures of one set, for the robustness table.
pub fn summary(predictions: &[Prediction], policy: &Policy) -> Summary {
    let rows = counted(predictions);
    Summary {
        n_estimated: rows.len(),
        no_face: predictions
            .iter()
            .filter(|p| matches!(p.outcome, Outcome::NoFace))
            .count(),
        failed: predictions
            .iter()
            .filter(|p| matches!(p.outcome, Outcome::Failed(_)))
            .count(),
        mae: group_stats(&rows).mae,
        cs5: share(
            rows.iter().filter(|(en, e)| abs_err(en, e) <= 5.0).count(),
            rows.len(),
        ),
        bands: bands(&rows),
        gate: gate_rates(predictions, policy),
        per_image_csv: None,
    }
}

/// Bootstrap units: the rows, or the rows of one subject together.
fn units<'a>(rows: &[(&'a Entry, &'a Estimated)]) -> Vec<Vec<(&'a Entry, &'a Estimated)>> {
    let mut by_subject: BTreeMap<&str, Vec<(&Entry, &Estimated)>> = BTreeMap::new();
    let mut singles = Vec::new();
    for &(entry, e) in rows {
        match entry.subject.as_deref() {
            Some(s) => by_subject.entry(s).or_default().push((entry, e)),
            None => singles.push(vec![(entry, e)]),
        }
    }
    singles.extend(by_subject.into_values());
    singles
}

/// The full report of one evaluation.
pub fn summarise(
    predictions: &[Prediction],
    pipeline: &Pipeline,
    manifest: &Path,
    per_image_csv: &Path,
    elapsed_s: f64,
    views: usize,
) -> Report {
    use crate::tools::stats::bootstrap;
    let policy = &pipeline.policy;
    let rows = counted(predictions);
    let s = summary(predictions, policy);
    let unit_rows = units(&rows);
    let mae_of = |sample: &[&Vec<(&Entry, &Estimated)>]| {
        mean(
            sample
                .iter()
                .flat_map(|u| u.iter())
                .map(|(en, e)| abs_err(en, e)),
        )
    };
    let mut bands = s.bands.clone();
    for band in AgeBand::ALL {
        if let Some(stats) = bands.get_mut(band.name()) {
            stats.mae_ci = bootstrap(&unit_rows, 0xBA4D ^ band as u64, |sample| {
                mean(
                    sample
                        .iter()
                        .flat_map(|u| u.iter())
                        .filter(|(en, _)| band.contains(en.age))
                        .map(|(en, e)| abs_err(en, e)),
                )
            });
        }
    }
    let n_steps = rows
        .iter()
        .map(|(_, e)| e.estimate.steps.len())
        .min()
        .unwrap_or(0);
    let step_mae = (0..n_steps)
        .filter_map(|i| {
            mean(
                rows.iter()
                    .map(|(en, e)| f64::from((e.estimate.steps[i] - en.age).abs())),
            )
        })
        .collect();
    let mut groups = BTreeMap::new();
    for (column, get) in [
        (
            "gender",
            (|e: &Entry| e.gender.clone()) as fn(&Entry) -> Option<String>,
        ),
        ("race", |e: &Entry| e.race.clone()),
    ] {
        let mut per_value: BTreeMap<String, Vec<(&Entry, &Estimated)>> = BTreeMap::new();
        for &(entry, e) in &rows {
            if let Some(v) = get(entry) {
                per_value.entry(v).or_default().push((entry, e));
            }
        }
        if !per_value.is_empty() {
            groups.insert(
                column.to_string(),
                per_value
                    .iter()
                    .map(|(v, r)| (v.clone(), group_stats(r)))
                    .collect(),
            );
        }
    }
    let mut decisions = BTreeMap::new();
    let mut refer_reasons = BTreeMap::new();
    for p in predictions
        .iter()
        .filter(|p| !matches!(p.outcome, Outcome::Failed(_)))
    {
        *decisions
            .entry(p.outcome.decision().to_string())
            .or_insert(0) += 1;
        let reason = match &p.outcome {
            Outcome::Estimated(e) => e.reason.map(ReferReason::name),
            Outcome::NoFace => Some(ReferReason::NoFace.name()),
            Outcome::Failed(_) => None,
        };
        if let Some(r) = reason {
            *refer_reasons.entry(r.to_string()).or_insert(0) += 1;
        }
    }
    let failures: Vec<String> = predictions
        .iter()
        .filter_map(|p| match &p.outcome {
            Outcome::Failed(why) => Some(why.clone()),
            _ => None,
        })
        .collect();
    Report {
        manifest: manifest.display().to_string(),
        age_model: pipeline.age_model.path().display().to_string(),
        detector_model: pipeline.detector.path().display().to_string(),
        policy: policy.into(),
        window: WindowReport::of(&still_settings(pipeline.session, views)),
        n: predictions.len(),
        n_estimated: s.n_estimated,
        no_face: s.no_face,
        no_face_rate: share(s.no_face, predictions.len()).unwrap_or(0.0),
        failed: failures.len(),
        failures,
        mae: s.mae,
        mae_ci: bootstrap(&unit_rows, 0x3AE, mae_of),
        cs5: s.cs5,
        step_mae,
        bands,
        challenge25_fpr: s.gate.challenge25_fpr,
        adult25_referral_rate: s.gate.adult25_referral_rate,
        gate: s.gate,
        decisions,
        refer_reasons,
        groups,
        by_iod: by_iod(predictions, policy),
        nist: nist::Nist::of(&rows, &unit_rows),
        views,
        robustness: BTreeMap::new(),
        per_image_csv: per_image_csv.display().to_string(),
        ms_per_image: if predictions.is_empty() {
            0.0
        } else {
            elapsed_s * 1000.0 / predictions.len() as f64
        },
    }
}

/// Interocular-distance buckets, px: where small faces start to cost accuracy.
const IOD_BUCKETS: [f32; 8] = [0.0, 16.0, 24.0, 32.0, 48.0, 64.0, 96.0, 128.0];

fn by_iod(predictions: &[Prediction], policy: &Policy) -> Vec<IodBucket> {
    IOD_BUCKETS
        .iter()
        .enumerate()
        .map(|(i, &from)| {
            let to = IOD_BUCKETS.get(i + 1).copied().unwrap_or(f32::INFINITY);
            let rows: Vec<(&Entry, &Estimated)> = predictions
                .iter()
                .filter_map(|p| p.outcome.estimated().map(|e| (&p.entry, e)))
                .filter(|(_, e)| e.quality.iod_px >= from && e.quality.iod_px < to)
                .collect();
            let counted: Vec<_> = rows.iter().copied().filter(|(_, e)| e.counts()).collect();
            let minors: Vec<_> = rows
                .iter()
                .filter(|(en, _)| en.age < policy.legal_age())
                .collect();
            IodBucket {
                from_px: from,
                n: rows.len(),
                mae: group_stats(&counted).mae,
                minors: minors.len(),
                minors_allowed: minors
                    .iter()
                    .filter(|(_, e)| e.decision == Decision::Allow)
                    .count(),
            }
        })
        .collect()
}

/// One CSV row per manifest row: what the pipeline said about it.
pub fn write_per_image_csv(predictions: &[Prediction], path: &Path) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "path,true_age,status,age,sigma,decision,reason,faces,steps,p_over,iod_px,yaw_deg,sharpness,by_policy,error"
    )?;
    for p in predictions {
        let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let path = quoted(&p.entry.rel_path);
        let truth = p.entry.age;
        match &p.outcome {
            Outcome::Estimated(e) => {
                let steps: Vec<String> =
                    e.estimate.steps.iter().map(|s| format!("{s:.3}")).collect();
                let p_over = e
                    .estimate
                    .p_over
                    .map(|p| {
                        p.iter()
                            .map(|v| format!("{v:.4}"))
                            .collect::<Vec<_>>()
                            .join(";")
                    })
                    .unwrap_or_default();
                let q = &e.quality;
                writeln!(
                    out,
                    "{path},{truth},ok,{:.3},{:.3},{},{},{},{},{p_over},{:.1},{:.1},{:.1},{},",
                    e.estimate.age,
                    e.estimate.sigma,
                    e.decision,
                    e.reason.map_or("", ReferReason::name),
                    e.faces,
                    steps.join(";"),
                    q.iod_px,
                    q.yaw_deg,
                    q.sharpness,
                    e.by_policy
                )?;
            }
            Outcome::NoFace => {
                writeln!(out, "{path},{truth},no_face,,,REFER,no_face,0,,,,,,false,")?
            }
            Outcome::Failed(why) => {
                writeln!(out, "{path},{truth},failed,,,,,,,,,,,,{}", quoted(why))?
            }
        }
    }
    out.flush()
}

/// Where the per-image CSV goes by default: beside the JSON, same stem.
pub fn default_csv_path(json: &Path) -> PathBuf {
    json.with_extension("csv")
}

/// `out/val.csv` -> `out/val.<kind>.csv`: a degradation's per-image rows, beside the
/// clean set's.
pub fn degraded_csv_path(csv: &Path, kind: &str) -> PathBuf {
    let stem = csv
        .file_stem()
        .map_or_else(|| "eval".into(), |s| s.to_string_lossy().into_owned());
    csv.with_file_name(format!("{stem}.{kind}.csv"))
}

/// Times a closure, in seconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

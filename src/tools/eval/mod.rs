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
mod report;
mod tracks;
mod views;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use plot::{write_band_plot, write_det_plot};
pub use report::{
    summarise, summary, GateRates, GroupStats, IodBucket, PolicyReport, Report, Summary,
    WindowReport,
};

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

#[cfg(test)]
impl Estimated {
    /// A row the tests make up: one frontal, sharp face estimated `age` +- `sigma`, not
    /// yet decided (REFER, by the policy).
    pub(crate) fn made_up(age: f32, sigma: f32) -> Self {
        Estimated {
            estimate: AgeEstimate {
                age,
                sigma,
                steps: vec![age],
                p_over: None,
            },
            decision: Decision::Refer,
            reason: None,
            faces: 1,
            quality: Quality {
                iod_px: 80.0,
                yaw_deg: 0.0,
                roll_deg: 0.0,
                sharpness: 100.0,
                brightness: 120.0,
                clipped: 0.0,
            },
            views: 1,
            by_policy: true,
        }
    }
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

//! `agegate eval`: the whole pipeline over a labelled manifest, with the figures an
//! operator and a model builder need (MAE, CS(5), age bands, Challenge-25 rates, groups).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::domain::{AgeBand, Decision};
use crate::photo::load_rgb_within;
use crate::pipeline::Pipeline;
use crate::tools::manifest::Entry;

/// What happened to one manifest row.
#[derive(Debug, Clone)]
pub struct Prediction {
    pub entry: Entry,
    pub outcome: Outcome,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    Estimated {
        age: f32,
        sigma: f32,
        steps: Vec<f32>,
        decision: Decision,
        faces: usize,
    },
    /// No face found: decided REFER, left out of the error figures.
    NoFace,
    /// The photo could not be read or the model failed on it: decided REFER, reported.
    Failed(String),
}

impl Outcome {
    pub fn decision(&self) -> Decision {
        match self {
            Outcome::Estimated { decision, .. } => *decision,
            Outcome::NoFace | Outcome::Failed(_) => Decision::Refer,
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct GroupStats {
    pub n: usize,
    pub mae: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub manifest: String,
    pub age_model: String,
    pub detector_model: String,
    pub policy: PolicyReport,
    /// Rows in the manifest.
    pub n: usize,
    /// Rows with a face, the ones the error figures are over.
    pub n_estimated: usize,
    pub no_face: usize,
    pub no_face_rate: f64,
    pub failed: usize,
    pub failures: Vec<String>,
    pub mae: Option<f64>,
    pub cs5: Option<f64>,
    /// MAE after each correction step (the last equals `mae`).
    pub step_mae: Vec<f64>,
    pub bands: BTreeMap<String, GroupStats>,
    /// Share of true under-18s that the gate would ALLOW.
    pub challenge25_fpr: Option<f64>,
    /// Share of true 25+ that the gate would not ALLOW.
    pub adult25_referral_rate: Option<f64>,
    pub decisions: BTreeMap<String, usize>,
    pub groups: BTreeMap<String, BTreeMap<String, GroupStats>>,
    pub per_image_csv: String,
    pub ms_per_image: f64,
}

#[derive(Debug, Serialize)]
pub struct PolicyReport {
    pub legal_age: f32,
    pub challenge_age: f32,
    pub k_sigma: f32,
}

/// Runs the pipeline on every entry; `progress` is called after each.
pub fn predict_all(
    pipeline: &Pipeline,
    entries: &[Entry],
    mut progress: impl FnMut(&Prediction),
) -> Vec<Prediction> {
    entries
        .iter()
        .map(|entry| {
            let outcome = match load_rgb_within(&entry.path, pipeline.max_pixels) {
                Err(e) => Outcome::Failed(e.to_string()),
                Ok(photo) => match pipeline.process(&photo) {
                    Err(e) => Outcome::Failed(e.to_string()),
                    Ok(faces) => match faces.first() {
                        None => Outcome::NoFace,
                        Some(main) => Outcome::Estimated {
                            age: main.estimate.age,
                            sigma: main.estimate.sigma,
                            steps: main.estimate.steps.clone(),
                            decision: main.decision,
                            faces: faces.len(),
                        },
                    },
                },
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

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn share(hits: usize, total: usize) -> Option<f64> {
    (total > 0).then(|| hits as f64 / total as f64)
}

/// The figures over a set of predictions.
pub fn summarise(
    predictions: &[Prediction],
    pipeline: &Pipeline,
    manifest: &Path,
    per_image_csv: &Path,
    elapsed_s: f64,
) -> Report {
    let estimated: Vec<(&Entry, f32, &[f32])> = predictions
        .iter()
        .filter_map(|p| match &p.outcome {
            Outcome::Estimated { age, steps, .. } => Some((&p.entry, *age, steps.as_slice())),
            _ => None,
        })
        .collect();
    let abs_err = |(e, age, _): &(&Entry, f32, &[f32])| (age - e.age).abs() as f64;
    let stats = |filter: &dyn Fn(&Entry) -> bool| {
        let errors: Vec<f64> = estimated
            .iter()
            .filter(|t| filter(t.0))
            .map(abs_err)
            .collect();
        GroupStats {
            n: errors.len(),
            mae: mean(errors.into_iter()),
        }
    };
    let n_steps = estimated.iter().map(|t| t.2.len()).min().unwrap_or(0);
    let step_mae = (0..n_steps)
        .filter_map(|s| {
            mean(
                estimated
                    .iter()
                    .map(|(e, _, steps)| (steps[s] - e.age).abs() as f64),
            )
        })
        .collect();
    let bands = AgeBand::ALL
        .iter()
        .map(|band| {
            (
                band.name().to_string(),
                stats(&|e: &Entry| band.contains(e.age)),
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
        let values: std::collections::BTreeSet<String> =
            predictions.iter().filter_map(|p| get(&p.entry)).collect();
        if values.is_empty() {
            continue;
        }
        let per_value = values
            .into_iter()
            .map(|v| {
                let s = stats(&|e: &Entry| get(e).as_deref() == Some(v.as_str()));
                (v, s)
            })
            .collect();
        groups.insert(column.to_string(), per_value);
    }
    let legal = pipeline.policy.legal_age();
    let challenge = pipeline.policy.challenge_age();
    // Rows that could not be read are not people the gate saw: they are reported as
    // failures and left out of the gate's rates (a photo without a face is in them: the
    // gate refers it).
    let seen = || {
        predictions
            .iter()
            .filter(|p| !matches!(p.outcome, Outcome::Failed(_)))
    };
    let minors: Vec<&Prediction> = seen().filter(|p| p.entry.age < legal).collect();
    let adults: Vec<&Prediction> = seen().filter(|p| p.entry.age >= challenge).collect();
    let mut decisions = BTreeMap::new();
    for p in predictions {
        *decisions
            .entry(p.outcome.decision().to_string())
            .or_insert(0) += 1;
    }
    let no_face = predictions
        .iter()
        .filter(|p| matches!(p.outcome, Outcome::NoFace))
        .count();
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
        policy: PolicyReport {
            legal_age: legal,
            challenge_age: challenge,
            k_sigma: pipeline.policy.k_sigma(),
        },
        n: predictions.len(),
        n_estimated: estimated.len(),
        no_face,
        no_face_rate: share(no_face, predictions.len()).unwrap_or(0.0),
        failed: failures.len(),
        failures,
        mae: mean(estimated.iter().map(abs_err)),
        cs5: share(
            estimated.iter().filter(|t| abs_err(t) <= 5.0).count(),
            estimated.len(),
        ),
        step_mae,
        bands,
        challenge25_fpr: share(
            minors
                .iter()
                .filter(|p| p.outcome.decision() == Decision::Allow)
                .count(),
            minors.len(),
        ),
        adult25_referral_rate: share(
            adults
                .iter()
                .filter(|p| p.outcome.decision() != Decision::Allow)
                .count(),
            adults.len(),
        ),
        decisions,
        groups,
        per_image_csv: per_image_csv.display().to_string(),
        ms_per_image: if predictions.is_empty() {
            0.0
        } else {
            elapsed_s * 1000.0 / predictions.len() as f64
        },
    }
}

/// One CSV row per manifest row: what the pipeline said about it.
pub fn write_per_image_csv(predictions: &[Prediction], path: &Path) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "path,true_age,status,age,sigma,decision,faces,steps,error"
    )?;
    for p in predictions {
        let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let path = quoted(&p.entry.rel_path);
        match &p.outcome {
            Outcome::Estimated {
                age,
                sigma,
                steps,
                decision,
                faces,
            } => {
                let steps: Vec<String> = steps.iter().map(|s| format!("{s:.3}")).collect();
                writeln!(
                    out,
                    "{path},{},ok,{age:.3},{sigma:.3},{decision},{faces},{},",
                    p.entry.age,
                    steps.join(";")
                )?;
            }
            Outcome::NoFace => writeln!(out, "{path},{},no_face,,,REFER,0,,", p.entry.age)?,
            Outcome::Failed(why) => writeln!(
                out,
                "{path},{},failed,,,REFER,,,{}",
                p.entry.age,
                quoted(why)
            )?,
        }
    }
    out.flush()
}

/// A bar chart of MAE per age band.
pub fn write_band_plot(report: &Report, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let bands: Vec<(&str, f64, usize)> = AgeBand::ALL
        .iter()
        .map(|band| {
            let s = report.bands.get(band.name());
            (
                band.name(),
                s.and_then(|s| s.mae).unwrap_or(0.0),
                s.map_or(0, |s| s.n),
            )
        })
        .collect();
    let top = bands.iter().map(|b| b.1).fold(1.0, f64::max) * 1.2;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "MAE by age band (overall {:.2} years, n = {})",
        report.mae.unwrap_or(f64::NAN),
        report.n_estimated
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        // 0..=5: one segment per band (a range's end is a segment of its own).
        .build_cartesian_2d((0..bands.len() - 1).into_segmented(), 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("MAE (years)")
        .x_desc("true age")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => bands
                .get(*i)
                .map_or(String::new(), |b| format!("{} (n={})", b.0, b.2)),
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(RGBColor(60, 110, 170).filled())
                .margin(8)
                .data(bands.iter().enumerate().map(|(i, b)| (i, b.1))),
        )
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Where the per-image CSV goes by default: beside the JSON, same stem.
pub fn default_csv_path(json: &Path) -> PathBuf {
    json.with_extension("csv")
}

/// Times a closure, in seconds.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

//! The figures of `agegate eval` over its predictions: error by age band, the gate's
//! rates with their bounds, NIST-style figures, by face size, and the report they make.

use super::*;

pub(super) fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

pub(super) fn share(hits: usize, total: usize) -> Option<f64> {
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

pub(super) fn abs_err(entry: &Entry, e: &Estimated) -> f64 {
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

//! `agegate calibrate`: the ALLOW rule's numbers chosen on a labelled set, so that the
//! one-sided 95 % upper bound on the share of under-18s allowed is at most a target
//! (`--max-minor-allow`), at the least cost in adults asked for ID; and a `[policy]`
//! section a board file can carry as is, with where its numbers come from.
//!
//! With `--degrade`, the bound must hold on the set as it is, on each degraded copy of it
//! (each kind's own bound) and on all of them together: cameras are bad too. The cost in
//! adults is counted on the set as it is. With `--max-sigma auto`, the rule is also tried
//! with each cap on the window's sigma of [`SIGMA_CAPS`], and the cap that costs the
//! fewest adults is kept (a tie keeps the looser cap, or none).
//!
//! A set can only bound what its minors can show: with none of n allowed the bound is
//! `1 - 0.05^(1/n)`, so a target below that is refused with the number of minors it
//! would take (about 3,000 for 0.001).

use std::path::Path;

use serde::Serialize;

use super::eval::{Outcome, Prediction};
use super::stats::{needed_for, upper_bound};
use crate::decide::{Calibration, Policy, Rule, RuleKind};
use crate::domain::Decision;
use crate::estimate::P_OVER_AGES;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CalibrateError {
    #[error("--max-minor-allow {0}: give a share above 0 and at most 1 (e.g. 0.01)")]
    Target(f64),
    #[error("{set}: no under-{legal} with a face; calibration needs minors ({needed} for {eps})")]
    NoMinors {
        set: String,
        legal: f32,
        needed: usize,
        eps: f64,
    },
    #[error("{set}: {minors} minors can bound the share allowed at {best:.4} at best, not {eps}; that needs at least {needed} minors")]
    TooFewMinors {
        set: String,
        minors: usize,
        best: f64,
        eps: f64,
        needed: usize,
    },
    #[error("the p_over rule needs an age model with the `p_over` output")]
    NoPOver,
    #[error("no {rule} setting bounds the minors allowed at {eps} on {set}: the strictest, {strictest}, still allows {allowed} of {minors} (upper bound {upper:.4}); ask for at least that, or check the labels of the minors it allows (the per-image CSV of `agegate eval`)")]
    Unreachable {
        rule: &'static str,
        eps: f64,
        set: String,
        strictest: f32,
        allowed: usize,
        minors: usize,
        upper: f64,
    },
}

/// One candidate setting: what it lets through and what it costs.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Candidate {
    /// The rule's number: allow_at (years), k_sigma, or allow_p.
    pub value: f32,
    /// The cap on the window's sigma it was tried with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sigma: Option<f32>,
    /// Minors allowed on the set as it is.
    pub minors_allowed: usize,
    /// The worst one-sided 95 % upper bound: of each set's own, and of all sets together.
    pub minor_allow_upper: f64,
    /// Where that worst bound is ("all" for the union).
    pub worst_set: String,
    /// Minors allowed summed over every set.
    pub minors_allowed_all: usize,
    /// Share of adults 25+ not allowed, on the set as it is.
    pub adult_referral: f64,
}

/// A labelled set the bound must hold on: the photos as they are, or one degradation.
#[derive(Debug, Clone, Copy)]
pub struct LabelledSet<'a> {
    pub name: &'a str,
    pub predictions: &'a [Prediction],
}

/// `--max-sigma`: no cap on the window's sigma, this cap, or the cheapest of [`SIGMA_CAPS`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SigmaCap {
    None,
    Fixed(f32),
    Auto,
}

/// The caps `--max-sigma auto` tries, years. The shipped model's sigma on a face runs
/// about 2 to 8; a blurred non-face came out at 17.8.
pub const SIGMA_CAPS: [f32; 8] = [16.0, 14.0, 12.0, 10.0, 9.0, 8.0, 7.0, 6.0];

/// The chosen policy and the table it was chosen from.
#[derive(Debug)]
pub struct Calibrated {
    pub policy: Policy,
    pub calibration: Calibration,
    pub table: Vec<Candidate>,
    pub chosen: Candidate,
}

/// The rows the calibration counts: those the pipeline read (a minor without a face is
/// not allowed; a photo that could not be read is not a person the gate saw).
fn seen(predictions: &[Prediction]) -> impl Iterator<Item = &Prediction> {
    predictions
        .iter()
        .filter(|p| !matches!(p.outcome, Outcome::Failed(_)))
}

fn decision(policy: &Policy, p: &Prediction) -> Decision {
    match &p.outcome {
        // A row the window referred for another reason (another face, liveness, too few
        // usable views) stays referred whatever the rule.
        Outcome::Estimated(e) if e.counts() && e.by_policy => {
            policy.decide(e.estimate.age, e.estimate.sigma, e.estimate.p_over)
        }
        _ => Decision::Refer,
    }
}

/// Minors, minors allowed, adults 25+, adults not allowed: what `policy` does on a set.
fn counts(policy: &Policy, predictions: &[Prediction]) -> [usize; 4] {
    let mut c = [0; 4];
    for p in seen(predictions) {
        let d = decision(policy, p);
        if p.entry.age < policy.legal_age() {
            c[0] += 1;
            c[1] += usize::from(d == Decision::Allow);
        } else if p.entry.age >= policy.challenge_age() {
            c[2] += 1;
            c[3] += usize::from(d != Decision::Allow);
        }
    }
    c
}

/// What `policy` does on the sets (the first is the set as it is).
fn evaluate(policy: &Policy, sets: &[LabelledSet], value: f32) -> Candidate {
    let per_set: Vec<[usize; 4]> = sets.iter().map(|s| counts(policy, s.predictions)).collect();
    let clean = per_set.first().copied().unwrap_or_default();
    let all = per_set.iter().fold([0; 4], |mut a, c| {
        (0..4).for_each(|i| a[i] += c[i]);
        a
    });
    let bound = |c: &[usize; 4]| upper_bound(c[1], c[0]).unwrap_or(1.0);
    let mut worst = (bound(&clean), sets.first().map_or("", |s| s.name));
    for (set, c) in sets.iter().zip(&per_set).skip(1) {
        if bound(c) > worst.0 {
            worst = (bound(c), set.name);
        }
    }
    if sets.len() > 1 && bound(&all) > worst.0 {
        worst = (bound(&all), "all");
    }
    Candidate {
        value,
        max_sigma: policy.max_sigma(),
        minors_allowed: clean[1],
        minor_allow_upper: worst.0,
        worst_set: worst.1.to_string(),
        minors_allowed_all: all[1],
        adult_referral: if clean[2] == 0 {
            0.0
        } else {
            clean[3] as f64 / clean[2] as f64
        },
    }
}

/// What to calibrate.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub rule: RuleKind,
    /// The bound on the share of under-18s allowed (`--max-minor-allow`).
    pub max_minor_allow: f64,
    pub max_sigma: SigmaCap,
}

/// Chooses the rule's numbers on `sets` (the first the set `manifest` as it is, whose
/// bytes are `manifest_bytes`; the others its degradations), keeping the legal and
/// challenge ages and the floor of `base`.
pub fn calibrate(
    sets: &[LabelledSet],
    base: &Policy,
    request: Request,
    manifest: &Path,
    manifest_bytes: &[u8],
    date: String,
) -> Result<Calibrated, CalibrateError> {
    let (rule, eps) = (request.rule, request.max_minor_allow);
    let predictions = sets.first().map_or(&[][..], |s| s.predictions);
    if !(eps > 0.0 && eps <= 1.0) {
        return Err(CalibrateError::Target(eps));
    }
    let set = manifest.file_name().map_or_else(
        || manifest.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (legal, challenge) = (base.legal_age(), base.challenge_age());
    let minors = seen(predictions).filter(|p| p.entry.age < legal).count();
    let needed = needed_for(eps).unwrap_or(usize::MAX);
    if minors == 0 {
        return Err(CalibrateError::NoMinors {
            set,
            legal,
            needed,
            eps,
        });
    }
    let best = upper_bound(0, minors).unwrap_or(1.0);
    if best > eps {
        return Err(CalibrateError::TooFewMinors {
            set,
            minors,
            best,
            eps,
            needed,
        });
    }
    // Candidates from the most permissive to the strictest: the first that meets the
    // bound lets the most adults through.
    let (name, candidates): (&'static str, Vec<(f32, Rule)>) = match rule {
        RuleKind::Threshold => {
            let deny_below = deny_threshold(predictions, legal, eps);
            (
                "threshold",
                (0..=250)
                    .map(|i| legal + i as f32 * 0.1)
                    .map(|allow_at| {
                        (
                            allow_at,
                            Rule::Threshold {
                                allow_at,
                                deny_below,
                            },
                        )
                    })
                    .collect(),
            )
        }
        RuleKind::Margin => (
            "margin",
            (0..=100)
                .map(|i| i as f32 * 0.05)
                .map(|k_sigma| (k_sigma, Rule::Margin { k_sigma }))
                .collect(),
        ),
        RuleKind::POver => {
            let has = seen(predictions).any(|p| {
                p.outcome
                    .estimated()
                    .is_some_and(|e| e.estimate.p_over.is_some())
            });
            if !has {
                return Err(CalibrateError::NoPOver);
            }
            // The probability of the challenge age if the model gives it, else the
            // nearest one above.
            let age = P_OVER_AGES
                .iter()
                .copied()
                .find(|&a| f32::from(a) >= challenge)
                .or(P_OVER_AGES.last().copied())
                .unwrap_or(25);
            (
                "p_over",
                (0..=200)
                    .map(|i| 0.5 + 0.4999 * (i as f32 / 200.0).sqrt())
                    .map(|allow_p| {
                        (
                            allow_p,
                            Rule::POver {
                                age,
                                allow_p,
                                deny_p: 0.05,
                            },
                        )
                    })
                    .collect(),
            )
        }
    };
    let caps: Vec<Option<f32>> = match request.max_sigma {
        SigmaCap::None => vec![None],
        SigmaCap::Fixed(cap) => vec![Some(cap)],
        SigmaCap::Auto => std::iter::once(None)
            .chain(SIGMA_CAPS.iter().copied().map(Some))
            .collect(),
    };
    let mut best: Option<(Policy, Candidate, Vec<Candidate>)> = None;
    let mut first_table = None;
    for cap in caps {
        let mut table = Vec::new();
        let mut chosen = None;
        for (value, rule) in &candidates {
            let Ok(policy) =
                Policy::with_rule(legal, challenge, *rule).and_then(|p| p.with_max_sigma(cap))
            else {
                continue;
            };
            let candidate = evaluate(&policy, sets, *value);
            let meets = candidate.minor_allow_upper <= eps;
            table.push(candidate.clone());
            if meets && chosen.is_none() {
                chosen = Some((policy, candidate));
            }
        }
        match chosen {
            Some((policy, candidate))
                if best
                    .as_ref()
                    .is_none_or(|(_, b, _)| candidate.adult_referral < b.adult_referral) =>
            {
                best = Some((policy, candidate, table));
            }
            _ => {
                first_table.get_or_insert(table);
            }
        }
    }
    let Some((policy, chosen, table)) = best else {
        // The table runs from the most permissive setting to the strictest.
        let strictest = first_table.as_ref().and_then(|t| t.last());
        return Err(CalibrateError::Unreachable {
            rule: name,
            eps,
            set,
            strictest: strictest.map_or(f32::NAN, |c| c.value),
            allowed: strictest.map_or(minors, |c| c.minors_allowed),
            minors,
            upper: strictest.map_or(1.0, |c| c.minor_allow_upper),
        });
    };
    let policy = policy
        .with_min_request_age(base.min_request_age())
        .unwrap_or(policy);
    let n = seen(predictions).count();
    let calibration = Calibration {
        set,
        n,
        minors,
        manifest_sha256: crate::digest::Sha256::of_bytes(manifest_bytes).to_string(),
        max_minor_allow: eps,
        minor_allow_upper: round6(chosen.minor_allow_upper),
        adult_referral: round6(chosen.adult_referral),
        date,
        degraded: sets.iter().skip(1).map(|s| s.name.to_string()).collect(),
    };
    Ok(Calibrated {
        policy,
        calibration,
        table,
        chosen,
    })
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// The threshold rule's DENY side: the highest age under which the set's adults (at the
/// legal age or over) are denied with an upper bound at most `eps` as well: denying an
/// adult is no danger, but it must be as rare as letting a minor through.
fn deny_threshold(predictions: &[Prediction], legal: f32, eps: f64) -> f32 {
    let adults: Vec<f32> = seen(predictions)
        .filter(|p| p.entry.age >= legal)
        .filter_map(|p| p.outcome.estimated().filter(|e| e.counts()))
        .map(|e| e.estimate.age)
        .collect();
    let n = seen(predictions).filter(|p| p.entry.age >= legal).count();
    let mut best = 0.0;
    for i in 0..=(legal * 10.0) as u32 {
        let t = i as f32 * 0.1;
        let denied = adults.iter().filter(|&&a| a < t).count();
        if upper_bound(denied, n).is_some_and(|u| u <= eps) {
            best = t;
        } else {
            break;
        }
    }
    best
}

/// The `[policy]` section, in the board file's own TOML.
pub fn policy_toml(c: &Calibrated) -> String {
    let p = &c.policy;
    let mut out = String::from("[policy]\n");
    out += &format!("legal_age = {}\n", p.legal_age());
    out += &format!("challenge_age = {}\n", p.challenge_age());
    match p.rule() {
        Rule::Margin { k_sigma } => {
            out += "rule = \"margin\"\n";
            out += &format!("k_sigma = {k_sigma:.2}\n");
        }
        Rule::Threshold {
            allow_at,
            deny_below,
        } => {
            out += "rule = \"threshold\"\n";
            out += &format!("allow_at = {allow_at:.1}\n");
            out += &format!("deny_below = {deny_below:.1}\n");
        }
        Rule::POver {
            age,
            allow_p,
            deny_p,
        } => {
            out += "rule = \"p_over\"\n";
            out += &format!("p_over_age = {age}\n");
            out += &format!("allow_p = {allow_p:.4}\n");
            out += &format!("deny_p = {deny_p}\n");
        }
    }
    out += &format!("min_request_age = {}\n", p.min_request_age());
    if let Some(cap) = p.max_sigma() {
        out += &format!("max_sigma = {cap:.1}\n");
    }
    let k = &c.calibration;
    out += "\n[policy.calibration]\n";
    out += &format!("set = {:?}\n", k.set);
    out += &format!("n = {}\n", k.n);
    out += &format!("minors = {}\n", k.minors);
    out += &format!("manifest_sha256 = {:?}\n", k.manifest_sha256);
    out += &format!("max_minor_allow = {}\n", k.max_minor_allow);
    out += &format!("minor_allow_upper = {}\n", k.minor_allow_upper);
    out += &format!("adult_referral = {}\n", k.adult_referral);
    out += &format!("date = {:?}\n", k.date);
    if !k.degraded.is_empty() {
        out += &format!("degraded = {:?}\n", k.degraded);
    }
    out
}

/// Today's UTC date, `YYYY-MM-DD` (civil-from-days, Howard Hinnant's algorithm).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests;

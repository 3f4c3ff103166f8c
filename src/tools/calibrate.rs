//! `agegate calibrate`: the ALLOW rule's numbers chosen on a labelled set, so that the
//! one-sided 95 % upper bound on the share of under-18s allowed is at most a target
//! (`--max-minor-allow`), at the least cost in adults asked for ID; and a `[policy]`
//! section a board file can carry as is, with where its numbers come from.
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
    pub minors_allowed: usize,
    pub minor_allow_upper: f64,
    /// Share of adults 25+ not allowed.
    pub adult_referral: f64,
}

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
        Outcome::Estimated(e) if e.counts() => {
            policy.decide(e.estimate.age, e.estimate.sigma, e.estimate.p_over)
        }
        _ => Decision::Refer,
    }
}

/// What `policy` does on the set.
fn evaluate(policy: &Policy, predictions: &[Prediction], value: f32) -> Candidate {
    let (mut minors, mut allowed, mut adults, mut referred) = (0, 0, 0, 0);
    for p in seen(predictions) {
        let d = decision(policy, p);
        if p.entry.age < policy.legal_age() {
            minors += 1;
            allowed += usize::from(d == Decision::Allow);
        } else if p.entry.age >= policy.challenge_age() {
            adults += 1;
            referred += usize::from(d != Decision::Allow);
        }
    }
    Candidate {
        value,
        minors_allowed: allowed,
        minor_allow_upper: upper_bound(allowed, minors).unwrap_or(1.0),
        adult_referral: if adults == 0 {
            0.0
        } else {
            referred as f64 / adults as f64
        },
    }
}

/// Chooses `rule`'s numbers on `predictions` (from the set `manifest`, whose bytes are
/// `manifest_bytes`), keeping the legal and challenge ages and the floor of `base`.
pub fn calibrate(
    predictions: &[Prediction],
    base: &Policy,
    rule: RuleKind,
    eps: f64,
    manifest: &Path,
    manifest_bytes: &[u8],
    date: String,
) -> Result<Calibrated, CalibrateError> {
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
    let mut table = Vec::new();
    let mut chosen = None;
    for (value, rule) in candidates {
        let Ok(policy) = Policy::with_rule(legal, challenge, rule) else {
            continue;
        };
        let candidate = evaluate(&policy, predictions, value);
        let meets = candidate.minor_allow_upper <= eps;
        table.push(candidate.clone());
        if meets && chosen.is_none() {
            chosen = Some((policy, candidate));
        }
    }
    let Some((policy, chosen)) = chosen else {
        // The table runs from the most permissive setting to the strictest.
        let strictest = table.last();
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
mod tests {
    use super::*;
    use crate::estimate::AgeEstimate;
    use crate::quality::Quality;
    use crate::tools::eval::Estimated;
    use crate::tools::manifest::Entry;

    fn prediction(truth: f32, estimate: Option<f32>) -> Prediction {
        let entry = Entry {
            rel_path: format!("{truth}.jpg"),
            path: format!("/x/{truth}.jpg").into(),
            age: truth,
            gender: None,
            race: None,
            subject: None,
        };
        let outcome = match estimate {
            None => Outcome::NoFace,
            Some(age) => Outcome::Estimated(Estimated {
                estimate: AgeEstimate {
                    age,
                    sigma: 4.0,
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
            }),
        };
        Prediction { entry, outcome }
    }

    /// 400 minors estimated 8 to 22.75 (one at 26.0, the oldest-looking), 100 adults of
    /// 30 estimated 20 to 39.9.
    fn set() -> Vec<Prediction> {
        let mut p: Vec<Prediction> = (0..400)
            .map(|i| prediction(12.0, Some(8.0 + (i % 60) as f32 * 0.25)))
            .collect();
        p[0] = prediction(16.0, Some(26.0));
        p.extend((0..100).map(|i| prediction(30.0, Some(20.0 + i as f32 * 0.2))));
        p
    }

    fn board() -> Policy {
        Policy::new(18.0, 25.0, 1.0).unwrap()
    }

    #[test]
    fn the_threshold_is_the_lowest_that_bounds_the_minors() {
        let c = calibrate(
            &set(),
            &board(),
            RuleKind::Threshold,
            0.01,
            Path::new("set.csv"),
            b"x",
            "2026-12-01".into(),
        )
        .unwrap();
        // With the 26-year-old-looking minor let through, 1 of 400 has an upper bound of
        // 0.0118 > 0.01; with none (allow_at above 26) 1 - 0.05^(1/400) = 0.0075.
        let Rule::Threshold { allow_at, .. } = c.policy.rule() else {
            panic!("{:?}", c.policy.rule())
        };
        assert!((allow_at - 26.1).abs() < 1e-3, "{allow_at}");
        assert_eq!(c.chosen.minors_allowed, 0);
        assert!((c.chosen.minor_allow_upper - (1.0 - 0.05f64.powf(1.0 / 400.0))).abs() < 1e-9);
        // Adults estimated under 26.1: 20.0 .. 26.0 are 31 of 100.
        assert!(
            (c.chosen.adult_referral - 0.31).abs() < 1e-9,
            "{}",
            c.chosen.adult_referral
        );
        assert_eq!((c.calibration.n, c.calibration.minors), (500, 400));
        assert_eq!(
            c.calibration.manifest_sha256,
            "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
        );
        // The section reads back as a valid policy, the same rule.
        let toml = policy_toml(&c);
        let raw: crate::decide::RawPolicy = toml::from_str::<toml::Table>(&toml).unwrap()["policy"]
            .clone()
            .try_into()
            .unwrap();
        assert_eq!(Policy::from_raw(raw).unwrap(), c.policy);
    }

    #[test]
    fn sets_that_cannot_show_the_bound_are_refused() {
        let tiny: Vec<Prediction> = (0..50).map(|_| prediction(12.0, Some(10.0))).collect();
        let e = calibrate(
            &tiny,
            &board(),
            RuleKind::Threshold,
            0.01,
            Path::new("t.csv"),
            b"",
            "d".into(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                CalibrateError::TooFewMinors {
                    minors: 50,
                    needed: 299,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("299"));
        let adults: Vec<Prediction> = (0..50).map(|_| prediction(40.0, Some(40.0))).collect();
        let e = calibrate(
            &adults,
            &board(),
            RuleKind::Threshold,
            0.001,
            Path::new("a.csv"),
            b"",
            "d".into(),
        )
        .unwrap_err();
        assert!(
            matches!(e, CalibrateError::NoMinors { needed: 2995, .. }),
            "{e}"
        );
        for eps in [0.0, -0.1, 1.5, f64::NAN] {
            let e = calibrate(
                &set(),
                &board(),
                RuleKind::Threshold,
                eps,
                Path::new("s.csv"),
                b"",
                "d".into(),
            );
            assert!(matches!(e, Err(CalibrateError::Target(_))), "{eps}");
        }
        let e = calibrate(
            &set(),
            &board(),
            RuleKind::POver,
            0.01,
            Path::new("s.csv"),
            b"",
            "d".into(),
        );
        assert_eq!(e.unwrap_err(), CalibrateError::NoPOver);
    }

    #[test]
    fn the_margin_rule_gets_a_k() {
        let c = calibrate(
            &set(),
            &board(),
            RuleKind::Margin,
            0.01,
            Path::new("s.csv"),
            b"",
            "d".into(),
        )
        .unwrap();
        // sigma 4: 26 - 4k < 25 needs k > 0.25.
        assert_eq!(c.policy.rule(), Rule::Margin { k_sigma: 0.3 });
    }

    #[test]
    fn dates_are_civil() {
        let d = today();
        assert_eq!(d.len(), 10);
        assert!(d.starts_with("20"));
    }
}

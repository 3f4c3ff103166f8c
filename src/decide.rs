//! The gate's policy: when the estimate is enough to ALLOW, to DENY, or neither (REFER:
//! staff checks an ID). Three rules, chosen by `[policy] rule`:
//!
//! - `margin` (the default): ALLOW when `age - k_sigma * sigma >= challenge_age`, DENY
//!   when `age + k_sigma * sigma < legal_age` (Challenge 25 with an uncertainty margin);
//! - `threshold`: ALLOW when `age >= allow_at`, DENY when `age < deny_below`: the plain
//!   threshold on the estimate that `agegate calibrate` sets from a labelled set;
//! - `p_over`: ALLOW when the model's P(age >= `p_over_age`) is at least `allow_p`, DENY
//!   when P(age >= legal age) is below `deny_p` (a model with the `p_over` output).
//!
//! Anything in between, anything non-finite and a missing face are REFER, with the reason.
//! A host's REQUEST may raise the legal age (e.g. 21 for spirits): every threshold moves up
//! by as much, so the board's margin is kept; it may never lower it below
//! `min_request_age`.

use serde::Deserialize;

pub use crate::domain::{Decision, ReferReason};
use crate::estimate::P_OVER_AGES;
use crate::settings::KeyError;

/// `[policy]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub legal_age: f32,
    pub challenge_age: f32,
    /// "margin" (default), "threshold" or "p_over".
    pub rule: Option<RuleKind>,
    /// The margin rule's sigmas.
    pub k_sigma: Option<f32>,
    /// The threshold rule's ALLOW and DENY thresholds, years.
    pub allow_at: Option<f32>,
    pub deny_below: Option<f32>,
    /// The p_over rule: the age whose probability ALLOWs, and the probabilities.
    pub p_over_age: Option<u8>,
    pub allow_p: Option<f32>,
    pub deny_p: Option<f32>,
    /// The lowest legal age a host's REQUEST may ask for (default: `legal_age`).
    pub min_request_age: Option<f32>,
    /// Where the rule's numbers come from (`agegate calibrate` writes it).
    pub calibration: Option<Calibration>,
}

/// A `policy.toml` (a bundle's, a remote `policy/set`'s): one `[policy]` table, as in a
/// board file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyText {
    policy: RawPolicy,
}

/// Why a `policy.toml` text was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyTextError {
    /// Not TOML, or not one `[policy]` table of known keys (toml's message names the key).
    #[error("{0}")]
    Toml(String),
    #[error(transparent)]
    Invalid(#[from] KeyError),
}

/// `[policy] rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    Margin,
    Threshold,
    POver,
}

/// `[policy.calibration]`: the labelled set a rule was calibrated on, and what it bounds.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The set's name (its manifest's file name).
    pub set: String,
    /// Rows with a face, and the minors among them.
    pub n: usize,
    pub minors: usize,
    /// SHA-256 of the manifest file.
    pub manifest_sha256: String,
    /// The bound asked for on under-18s allowed, and the one-sided 95 % upper bound met.
    pub max_minor_allow: f64,
    pub minor_allow_upper: f64,
    /// Share of people 25+ of the set that the rule does not ALLOW.
    pub adult_referral: f64,
    /// When (UTC date).
    pub date: String,
}

/// How the policy turns an estimate into a verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    Margin { k_sigma: f32 },
    Threshold { allow_at: f32, deny_below: f32 },
    POver { age: u8, allow_p: f32, deny_p: f32 },
}

/// Sane bounds for a policy, from a board file or a host's REQUEST: a legal age a
/// jurisdiction could set, a challenge margin of at most 15 years, at most 5 sigmas.
pub(crate) const LEGAL_AGES: std::ops::RangeInclusive<f32> = 10.0..=30.0;
pub(crate) const MAX_CHALLENGE_MARGIN: f32 = 15.0;
pub(crate) const K_SIGMAS: std::ops::RangeInclusive<f32> = 0.0..=5.0;
/// How far above the legal age a threshold rule may ALLOW.
pub(crate) const MAX_ALLOW_ABOVE_LEGAL: f32 = 25.0;

/// A validated policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    legal_age: f32,
    challenge_age: f32,
    rule: Rule,
    /// The lowest legal age a REQUEST may ask for: a host may raise the board's age,
    /// never lower it below this.
    min_request_age: f32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("legal_age ({0}) must be a number from 10 to 30")]
    LegalAge(f32),
    #[error("challenge_age ({challenge}) must be from legal_age ({legal}) to legal_age + 15")]
    ChallengeAge { legal: f32, challenge: f32 },
    #[error("k_sigma ({0}) must be a number from 0 to 5")]
    Margin(f32),
    #[error("allow_at ({allow_at}) must be from legal_age ({legal}) to legal_age + 25, and deny_below ({deny_below}) from 0 to legal_age")]
    Threshold {
        legal: f32,
        allow_at: f32,
        deny_below: f32,
    },
    #[error("p_over_age ({0}) must be one of the model's p_over ages 13, 16, 18, 21, 25, at or above legal_age")]
    POverAge(u8),
    #[error("allow_p ({allow_p}) must be in (0.5, 1) and deny_p ({deny_p}) in [0, 0.5)")]
    POver { allow_p: f32, deny_p: f32 },
    #[error("{0}")]
    Missing(&'static str),
}

impl PolicyError {
    /// The key this error names, as the board file spells it.
    fn key(&self) -> &'static str {
        match self {
            PolicyError::LegalAge(_) => "policy.legal_age",
            PolicyError::ChallengeAge { .. } => "policy.challenge_age",
            PolicyError::Margin(_) => "policy.k_sigma",
            PolicyError::Threshold { .. } => "policy.allow_at",
            PolicyError::POverAge(_) => "policy.p_over_age",
            PolicyError::POver { .. } => "policy.allow_p",
            PolicyError::Missing(_) => "policy.rule",
        }
    }
}

impl Policy {
    /// The margin rule (Challenge 25 with `k_sigma` sigmas).
    pub fn new(legal_age: f32, challenge_age: f32, k_sigma: f32) -> Result<Self, PolicyError> {
        Self::with_rule(legal_age, challenge_age, Rule::Margin { k_sigma })
    }

    /// Any rule, checked against the ranges in the module docs.
    pub fn with_rule(legal_age: f32, challenge_age: f32, rule: Rule) -> Result<Self, PolicyError> {
        // RangeInclusive::contains is false for NaN, so non-finite values are refused too.
        if !LEGAL_AGES.contains(&legal_age) {
            return Err(PolicyError::LegalAge(legal_age));
        }
        if !(legal_age..=legal_age + MAX_CHALLENGE_MARGIN).contains(&challenge_age) {
            return Err(PolicyError::ChallengeAge {
                legal: legal_age,
                challenge: challenge_age,
            });
        }
        match rule {
            Rule::Margin { k_sigma } if !K_SIGMAS.contains(&k_sigma) => {
                return Err(PolicyError::Margin(k_sigma))
            }
            Rule::Threshold {
                allow_at,
                deny_below,
            } if !(legal_age..=legal_age + MAX_ALLOW_ABOVE_LEGAL).contains(&allow_at)
                || !(0.0..=legal_age).contains(&deny_below) =>
            {
                return Err(PolicyError::Threshold {
                    legal: legal_age,
                    allow_at,
                    deny_below,
                })
            }
            Rule::POver { age, .. }
                if !P_OVER_AGES.contains(&age) || f32::from(age) < legal_age =>
            {
                return Err(PolicyError::POverAge(age))
            }
            Rule::POver {
                allow_p, deny_p, ..
            } if !(allow_p > 0.5 && allow_p < 1.0 && (0.0..0.5).contains(&deny_p)) => {
                return Err(PolicyError::POver { allow_p, deny_p })
            }
            _ => {}
        }
        Ok(Self {
            legal_age,
            challenge_age,
            rule,
            min_request_age: legal_age,
        })
    }

    /// A validated `[policy]`.
    pub fn from_raw(raw: RawPolicy) -> Result<Self, KeyError> {
        let err = |e: PolicyError| KeyError::new(e.key(), e.to_string());
        let rule = match raw.rule.unwrap_or(RuleKind::Margin) {
            RuleKind::Margin => Rule::Margin {
                k_sigma: raw
                    .k_sigma
                    .ok_or(PolicyError::Missing("the margin rule needs k_sigma"))
                    .map_err(err)?,
            },
            RuleKind::Threshold => Rule::Threshold {
                allow_at: raw
                    .allow_at
                    .ok_or(PolicyError::Missing("the threshold rule needs allow_at"))
                    .map_err(err)?,
                deny_below: raw
                    .deny_below
                    .ok_or(PolicyError::Missing("the threshold rule needs deny_below"))
                    .map_err(err)?,
            },
            RuleKind::POver => Rule::POver {
                age: raw
                    .p_over_age
                    .ok_or(PolicyError::Missing("the p_over rule needs p_over_age"))
                    .map_err(err)?,
                allow_p: raw
                    .allow_p
                    .ok_or(PolicyError::Missing("the p_over rule needs allow_p"))
                    .map_err(err)?,
                deny_p: raw.deny_p.unwrap_or(0.05),
            },
        };
        // Keys of another rule are a mistake the board file should hear about.
        let unused = match rule {
            Rule::Margin { .. } => [
                ("allow_at", raw.allow_at.is_some()),
                ("deny_below", raw.deny_below.is_some()),
                ("p_over_age", raw.p_over_age.is_some()),
                ("allow_p", raw.allow_p.is_some()),
            ],
            Rule::Threshold { .. } => [
                ("k_sigma", raw.k_sigma.is_some()),
                ("p_over_age", raw.p_over_age.is_some()),
                ("allow_p", raw.allow_p.is_some()),
                ("deny_p", raw.deny_p.is_some()),
            ],
            Rule::POver { .. } => [
                ("k_sigma", raw.k_sigma.is_some()),
                ("allow_at", raw.allow_at.is_some()),
                ("deny_below", raw.deny_below.is_some()),
                ("deny_p", false),
            ],
        };
        if let Some((key, _)) = unused.iter().find(|(_, set)| *set) {
            return Err(KeyError::new(
                format!("policy.{key}"),
                "does not apply to this policy's rule",
            ));
        }
        let policy = Self::with_rule(raw.legal_age, raw.challenge_age, rule).map_err(err)?;
        match raw.min_request_age {
            None => Ok(policy),
            Some(floor) => policy
                .with_min_request_age(floor)
                .map_err(|e| KeyError::new("policy.min_request_age", e.to_string())),
        }
    }

    /// A `policy.toml` text, checked as the board file's `[policy]` is.
    pub fn from_toml(text: &str) -> Result<Self, PolicyTextError> {
        let parsed: PolicyText =
            toml::from_str(text).map_err(|e| PolicyTextError::Toml(e.message().to_string()))?;
        Ok(Self::from_raw(parsed.policy)?)
    }

    /// The same policy with another floor for REQUESTs' ages.
    pub fn with_min_request_age(mut self, floor: f32) -> Result<Self, PolicyError> {
        if !LEGAL_AGES.contains(&floor) {
            return Err(PolicyError::LegalAge(floor));
        }
        self.min_request_age = floor;
        Ok(self)
    }

    pub fn min_request_age(&self) -> f32 {
        self.min_request_age
    }

    /// The same policy for a host that asks for `legal_age` (a REQUEST's required age):
    /// every threshold moves by the difference, so the board's margin is kept.
    pub fn with_legal_age(&self, legal_age: f32) -> Result<Self, PolicyError> {
        let up = legal_age - self.legal_age;
        let rule = match self.rule {
            Rule::Margin { k_sigma } => Rule::Margin { k_sigma },
            Rule::Threshold {
                allow_at,
                deny_below,
            } => Rule::Threshold {
                allow_at: allow_at + up,
                deny_below: deny_below + up,
            },
            Rule::POver {
                age,
                allow_p,
                deny_p,
            } => {
                let moved = f32::from(age) + up;
                // The probability of another age is only there if the model has it.
                let age = P_OVER_AGES
                    .iter()
                    .copied()
                    .find(|&a| f32::from(a) == moved)
                    .ok_or(PolicyError::POverAge(age))?;
                Rule::POver {
                    age,
                    allow_p,
                    deny_p,
                }
            }
        };
        Ok(Self {
            min_request_age: self.min_request_age,
            ..Self::with_rule(legal_age, self.challenge_age + up, rule)?
        })
    }

    /// Refuses, naming what, a policy that would let through anyone `board` would not: a
    /// lower legal age or REQUEST floor, another rule, or the same rule ALLOWing nearer the
    /// legal age. A REQUEST moves every threshold by as many years as the legal age
    /// (`with_legal_age`), so comparing each ALLOW threshold's distance above the legal
    /// age covers every REQUEST too. DENY may move freely: it never opens the gate.
    pub fn no_looser_than(&self, board: &Policy) -> Result<(), String> {
        let looser = |what: &str, this: f32, theirs: f32| {
            Err(format!(
                "{what} {} is below the board's {}: a remote policy may only tighten the board's",
                round3(this),
                round3(theirs)
            ))
        };
        if self.legal_age < board.legal_age {
            return looser("legal_age", self.legal_age, board.legal_age);
        }
        if self.min_request_age < board.min_request_age {
            return looser(
                "min_request_age",
                self.min_request_age,
                board.min_request_age,
            );
        }
        let above_legal = |p: &Policy, v: f32| v - p.legal_age;
        match (self.rule, board.rule) {
            (Rule::Margin { k_sigma }, Rule::Margin { k_sigma: theirs }) => {
                let (this, board_c) = (
                    above_legal(self, self.challenge_age),
                    above_legal(board, board.challenge_age),
                );
                if this < board_c {
                    return looser("challenge_age - legal_age", this, board_c);
                }
                if k_sigma < theirs {
                    return looser("k_sigma", k_sigma, theirs);
                }
            }
            (
                Rule::Threshold { allow_at, .. },
                Rule::Threshold {
                    allow_at: theirs, ..
                },
            ) => {
                let (this, board_a) = (above_legal(self, allow_at), above_legal(board, theirs));
                if this < board_a {
                    return looser("allow_at - legal_age", this, board_a);
                }
            }
            (
                Rule::POver { age, allow_p, .. },
                Rule::POver {
                    age: theirs,
                    allow_p: theirs_p,
                    ..
                },
            ) => {
                let (this, board_a) = (
                    above_legal(self, f32::from(age)),
                    above_legal(board, f32::from(theirs)),
                );
                if this < board_a {
                    return looser("p_over_age - legal_age", this, board_a);
                }
                if allow_p < theirs_p {
                    return looser("allow_p", allow_p, theirs_p);
                }
            }
            (this, theirs) => {
                return Err(format!(
                    "rule `{}` is not the board's `{}`: a remote policy keeps the board's rule \
                     and may only tighten its numbers",
                    rule_name(this),
                    rule_name(theirs)
                ))
            }
        }
        Ok(())
    }

    pub fn legal_age(&self) -> f32 {
        self.legal_age
    }

    pub fn challenge_age(&self) -> f32 {
        self.challenge_age
    }

    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// Whether the rule needs the model's `p_over` output.
    pub fn needs_p_over(&self) -> bool {
        matches!(self.rule, Rule::POver { .. })
    }

    /// Decides for one estimate. Non-finite input is REFER: the gate never opens on
    /// something it cannot read.
    pub fn decide(&self, age: f32, sigma: f32, p_over: Option<[f32; 5]>) -> Decision {
        self.decide_why(age, sigma, p_over).0
    }

    /// [`Policy::decide`] with the reason of a REFER.
    pub fn decide_why(
        &self,
        age: f32,
        sigma: f32,
        p_over: Option<[f32; 5]>,
    ) -> (Decision, Option<ReferReason>) {
        let unreadable = (Decision::Refer, Some(ReferReason::Unreadable));
        if !(age.is_finite() && sigma.is_finite() && sigma >= 0.0) {
            return unreadable;
        }
        let verdict = match self.rule {
            Rule::Margin { k_sigma } => {
                let margin = k_sigma * sigma;
                if age - margin >= self.challenge_age {
                    Decision::Allow
                } else if age + margin < self.legal_age {
                    Decision::Deny
                } else {
                    Decision::Refer
                }
            }
            Rule::Threshold {
                allow_at,
                deny_below,
            } => {
                if age >= allow_at {
                    Decision::Allow
                } else if age < deny_below {
                    Decision::Deny
                } else {
                    Decision::Refer
                }
            }
            Rule::POver {
                age: at,
                allow_p,
                deny_p,
            } => {
                let p = |t: u8| {
                    let i = P_OVER_AGES.iter().position(|&a| a == t)?;
                    p_over.map(|p| p[i]).filter(|v| (0.0..=1.0).contains(v))
                };
                // The legal age's probability decides DENY: the nearest p_over age at or
                // above it (the most cautious one the model gives).
                let legal = P_OVER_AGES
                    .iter()
                    .copied()
                    .find(|&a| f32::from(a) >= self.legal_age);
                match (p(at), legal.and_then(p)) {
                    (Some(allow), _) if allow >= allow_p => Decision::Allow,
                    (Some(_), Some(adult)) if adult < deny_p => Decision::Deny,
                    (Some(_), _) => Decision::Refer,
                    (None, _) => return unreadable,
                }
            }
        };
        let reason = (verdict == Decision::Refer).then_some(ReferReason::Uncertain);
        (verdict, reason)
    }

    /// A DECISION's confidence, percent: for ALLOW the probability that the person is at
    /// least the challenge age (the model's own for the p_over rule, else a normal with the
    /// window's age and sigma), for DENY that they are under the legal age; 0 for REFER.
    pub fn confidence(
        &self,
        decision: Decision,
        age: f32,
        sigma: f32,
        p_over: Option<[f32; 5]>,
    ) -> u8 {
        if let (Rule::POver { age: at, .. }, Some(p)) = (self.rule, p_over) {
            let of = |t: u8| P_OVER_AGES.iter().position(|&a| a == t).map(|i| p[i]);
            let legal = P_OVER_AGES
                .iter()
                .copied()
                .find(|&a| f32::from(a) >= self.legal_age);
            let v = match decision {
                Decision::Allow => of(at),
                Decision::Deny => legal.and_then(of).map(|p| 1.0 - p),
                Decision::Refer => Some(0.0),
            };
            return (v.unwrap_or(0.0) * 100.0).round().clamp(0.0, 100.0) as u8;
        }
        crate::domain::confidence(decision, age, sigma, self.legal_age, self.challenge_age)
    }
}

/// A threshold as messages and telemetry show it: an `f32` such as 29.8 prints as
/// 29.799999237060547 otherwise.
pub(crate) fn round3(v: f32) -> f64 {
    (f64::from(v) * 1000.0).round() / 1000.0
}

/// A rule's name as `[policy] rule` spells it.
pub(crate) fn rule_name(rule: Rule) -> &'static str {
    match rule {
        Rule::Margin { .. } => "margin",
        Rule::Threshold { .. } => "threshold",
        Rule::POver { .. } => "p_over",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> RawPolicy {
        toml::from_str(text).expect("policy toml")
    }

    #[test]
    fn challenge_25_with_margin() {
        let p = Policy::new(18.0, 25.0, 1.0).unwrap();
        let d = |age, sigma| p.decide(age, sigma, None);
        assert_eq!(d(30.0, 5.0), Decision::Allow);
        assert_eq!(d(30.0, 5.1), Decision::Refer);
        assert_eq!(d(12.0, 5.9), Decision::Deny);
        assert_eq!(d(12.0, 6.0), Decision::Refer);
        assert_eq!(d(21.0, 0.0), Decision::Refer);
        assert_eq!(d(f32::NAN, 1.0), Decision::Refer);
        assert_eq!(d(40.0, f32::INFINITY), Decision::Refer);
        assert_eq!(d(40.0, -1.0), Decision::Refer);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Policy::new(25.0, 18.0, 1.0).is_err());
        assert!(Policy::new(18.0, 25.0, -0.5).is_err());
        assert!(Policy::new(f32::NAN, 25.0, 1.0).is_err());
        assert!(Policy::new(18.0, 25.0, 0.0).is_ok());
        // What a hostile tester got accepted: a gate that opens for anyone.
        assert_eq!(Policy::new(1.0, 1.0, 0.0), Err(PolicyError::LegalAge(1.0)));
        assert!(matches!(
            Policy::new(18.0, 1e30, 1.0),
            Err(PolicyError::ChallengeAge { .. })
        ));
        assert!(Policy::new(18.0, 33.0, 1.0).is_ok());
        assert!(Policy::new(18.0, 33.5, 1.0).is_err());
        assert!(Policy::new(18.0, 25.0, 5.0).is_ok());
        assert_eq!(Policy::new(18.0, 25.0, 5.5), Err(PolicyError::Margin(5.5)));
        assert!(Policy::new(30.0, 30.0, 1.0).is_ok());
        assert!(Policy::new(31.0, 31.0, 1.0).is_err());
        assert!(Policy::new(18.0, 25.0, f32::INFINITY).is_err());
        // A threshold below the legal age, a probability that is not one.
        let t = |allow_at, deny_below| {
            Policy::with_rule(
                18.0,
                25.0,
                Rule::Threshold {
                    allow_at,
                    deny_below,
                },
            )
        };
        assert!(t(27.0, 15.0).is_ok());
        assert!(t(17.0, 15.0).is_err());
        assert!(t(27.0, 19.0).is_err());
        let p = |age, allow_p| {
            Policy::with_rule(
                18.0,
                25.0,
                Rule::POver {
                    age,
                    allow_p,
                    deny_p: 0.05,
                },
            )
        };
        assert!(p(25, 0.95).is_ok());
        assert_eq!(p(17, 0.95), Err(PolicyError::POverAge(17)));
        assert_eq!(
            p(16, 0.95),
            Err(PolicyError::POverAge(16)),
            "below the legal age"
        );
        assert!(p(25, 1.0).is_err() && p(25, 0.3).is_err());
    }

    #[test]
    fn the_policy_section_names_its_keys() {
        let ok = raw("legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 28.5\ndeny_below = 14");
        let p = Policy::from_raw(ok).unwrap();
        assert_eq!(
            p.rule(),
            Rule::Threshold {
                allow_at: 28.5,
                deny_below: 14.0
            }
        );
        let cases = [
            ("legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 28.5", "policy.rule"),
            ("legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 50\ndeny_below = 14", "policy.allow_at"),
            ("legal_age = 18\nchallenge_age = 25\nk_sigma = 1\nallow_at = 28", "policy.allow_at"),
            ("legal_age = 18\nchallenge_age = 25\nrule = \"p_over\"\np_over_age = 20\nallow_p = 0.9", "policy.p_over_age"),
            ("legal_age = 18\nchallenge_age = 25\n", "policy.rule"),
        ];
        for (text, key) in cases {
            let e = Policy::from_raw(raw(text)).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        assert!(toml::from_str::<RawPolicy>(
            "legal_age = 18\nchallenge_age = 25\nk_sigma = 1\nfoo = 2"
        )
        .is_err());
        assert!(toml::from_str::<RawPolicy>(
            "legal_age = 18\nchallenge_age = 25\nrule = \"vibes\""
        )
        .is_err());
    }

    #[test]
    fn a_host_asks_for_its_own_legal_age_with_the_board_margin() {
        let board = Policy::new(18.0, 25.0, 1.0).unwrap();
        let p = board.with_legal_age(21.0).unwrap();
        assert_eq!((p.legal_age(), p.challenge_age()), (21.0, 28.0));
        assert_eq!(p.rule(), Rule::Margin { k_sigma: 1.0 });
        assert!(board.with_legal_age(1.0).is_err());
        assert!(board.with_legal_age(255.0).is_err());
        let t = Policy::with_rule(
            18.0,
            25.0,
            Rule::Threshold {
                allow_at: 27.0,
                deny_below: 15.0,
            },
        )
        .unwrap();
        assert_eq!(
            t.with_legal_age(21.0).unwrap().rule(),
            Rule::Threshold {
                allow_at: 30.0,
                deny_below: 18.0
            }
        );
        let p = Policy::with_rule(
            18.0,
            25.0,
            Rule::POver {
                age: 18,
                allow_p: 0.9,
                deny_p: 0.05,
            },
        )
        .unwrap();
        assert!(matches!(
            p.with_legal_age(21.0).unwrap().rule(),
            Rule::POver { age: 21, .. }
        ));
        assert!(
            p.with_legal_age(19.0).is_err(),
            "the model has no P(age >= 19)"
        );
    }

    #[test]
    fn every_rule_refers_with_a_reason() {
        let m = Policy::new(18.0, 25.0, 1.0).unwrap();
        assert_eq!(m.decide_why(40.0, 2.0, None), (Decision::Allow, None));
        assert_eq!(
            m.decide_why(24.0, 2.0, None),
            (Decision::Refer, Some(ReferReason::Uncertain))
        );
        assert_eq!(
            m.decide_why(f32::NAN, 2.0, None),
            (Decision::Refer, Some(ReferReason::Unreadable))
        );
        let t = Policy::with_rule(
            18.0,
            25.0,
            Rule::Threshold {
                allow_at: 27.0,
                deny_below: 15.0,
            },
        )
        .unwrap();
        assert_eq!(t.decide(27.0, 9.0, None), Decision::Allow);
        assert_eq!(t.decide(26.9, 0.1, None), Decision::Refer);
        assert_eq!(t.decide(14.9, 9.0, None), Decision::Deny);
        let p = Policy::with_rule(
            18.0,
            25.0,
            Rule::POver {
                age: 25,
                allow_p: 0.9,
                deny_p: 0.05,
            },
        )
        .unwrap();
        let probs = |p18, p25| Some([1.0, 1.0, p18, (p18 + p25) / 2.0, p25]);
        assert_eq!(p.decide(30.0, 5.0, probs(0.99, 0.95)), Decision::Allow);
        assert_eq!(p.decide(30.0, 5.0, probs(0.99, 0.5)), Decision::Refer);
        assert_eq!(p.decide(12.0, 5.0, probs(0.01, 0.0)), Decision::Deny);
        assert_eq!(
            p.decide_why(30.0, 5.0, None),
            (Decision::Refer, Some(ReferReason::Unreadable))
        );
        assert_eq!(p.decide(30.0, 5.0, Some([f32::NAN; 5])), Decision::Refer);
        assert_eq!(
            p.confidence(Decision::Allow, 30.0, 5.0, probs(0.99, 0.95)),
            95
        );
    }

    #[test]
    fn a_policy_may_tighten_the_board_s_never_loosen_it() {
        let policy = |text: &str| Policy::from_raw(raw(text)).expect("valid policy");
        let board = policy(
            "legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 29.8\n\
             deny_below = 14",
        );
        let refused = |text: &str| policy(text).no_looser_than(&board).unwrap_err();
        // What the hostile tester had acked: a gate for ten-year-olds.
        let e = refused(
            "legal_age = 10\nchallenge_age = 10\nrule = \"threshold\"\nallow_at = 10\n\
             deny_below = 0",
        );
        assert!(e.contains("legal_age 10 is below the board's 18"), "{e}");
        let e = refused(
            "legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 29\n\
             deny_below = 14",
        );
        assert!(
            e.contains("allow_at - legal_age 11 is below the board's 11.8"),
            "{e}"
        );
        let e = refused(
            "legal_age = 21\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 31\n\
             deny_below = 14\nmin_request_age = 16",
        );
        assert!(e.contains("min_request_age 16"), "{e}");
        let e = refused("legal_age = 18\nchallenge_age = 25\nk_sigma = 2");
        assert!(
            e.contains("rule `margin` is not the board's `threshold`"),
            "{e}"
        );
        // Tighter: a higher line, a higher legal age with its line moved up, DENY moved.
        for tighter in [
            "legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 40\n\
             deny_below = 17",
            "legal_age = 21\nchallenge_age = 28\nrule = \"threshold\"\nallow_at = 32.8\n\
             deny_below = 5",
        ] {
            assert_eq!(policy(tighter).no_looser_than(&board), Ok(()), "{tighter}");
        }
        let margin = policy("legal_age = 18\nchallenge_age = 25\nk_sigma = 1");
        let looser_margin = policy("legal_age = 18\nchallenge_age = 25\nk_sigma = 0.5");
        assert!(looser_margin
            .no_looser_than(&margin)
            .unwrap_err()
            .contains("k_sigma"));
        let nearer = policy("legal_age = 18\nchallenge_age = 24\nk_sigma = 1");
        assert!(nearer.no_looser_than(&margin).is_err());
        assert_eq!(margin.no_looser_than(&margin), Ok(()));
    }

    #[test]
    fn a_policy_text_is_one_policy_table_checked_by_key() {
        let ok = Policy::from_toml("[policy]\nlegal_age = 18\nchallenge_age = 25\nk_sigma = 1\n");
        assert_eq!(ok.ok(), Policy::new(18.0, 25.0, 1.0).ok());
        let err = |text: &str| Policy::from_toml(text).unwrap_err().to_string();
        assert!(
            err("legal_age = 18").contains("policy"),
            "{}",
            err("legal_age = 18")
        );
        assert!(
            err("[policy]\nlegal_age = 18\nchallenge_age = 25\nk_sigma = 1\nfoo = 1\n")
                .contains("foo")
        );
        assert!(
            err("[policy]\nlegal_age = 18\nchallenge_age = 12\nk_sigma = 1\n")
                .contains("policy.challenge_age")
        );
        assert!(matches!(
            Policy::from_toml("not toml ["),
            Err(PolicyTextError::Toml(_))
        ));
    }
}

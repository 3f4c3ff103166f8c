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
//! Any rule may also cap the model's doubt: with `max_sigma`, a window whose sigma is
//! above it is REFER (`uncertain`) whatever its age says. A threshold on the age alone
//! ALLOWs a blurred object estimated at 32 with a sigma of 18; the cap refers it.
//! A host's REQUEST may raise the legal age (e.g. 21 for spirits): every threshold moves up
//! by as much, so the board's margin is kept; it may never lower it below
//! `min_request_age`.

mod tighten;

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
    /// The window's sigma, years, above which no rule decides: REFER `uncertain`.
    pub max_sigma: Option<f32>,
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
    /// The degradations of the set the bound also held on, each and all together
    /// (`agegate calibrate --degrade`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
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
/// `max_sigma`, years: under half a year would refer every face; over 30 caps nothing.
pub const MAX_SIGMAS: std::ops::RangeInclusive<f32> = 0.5..=30.0;

/// A validated policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    legal_age: f32,
    challenge_age: f32,
    rule: Rule,
    /// The lowest legal age a REQUEST may ask for: a host may raise the board's age,
    /// never lower it below this.
    min_request_age: f32,
    /// Above this sigma the verdict is REFER `uncertain`, whatever the rule says.
    max_sigma: Option<f32>,
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
    #[error("max_sigma ({0}) must be a number from 0.5 to 30")]
    MaxSigma(f32),
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
            PolicyError::MaxSigma(_) => "policy.max_sigma",
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
            max_sigma: None,
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
        let policy = Self::with_rule(raw.legal_age, raw.challenge_age, rule)
            .and_then(|p| p.with_max_sigma(raw.max_sigma))
            .map_err(err)?;
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

    /// The same policy with a cap on the window's sigma (`None`: no cap).
    pub fn with_max_sigma(mut self, max_sigma: Option<f32>) -> Result<Self, PolicyError> {
        if let Some(m) = max_sigma.filter(|m| !MAX_SIGMAS.contains(m)) {
            return Err(PolicyError::MaxSigma(m));
        }
        self.max_sigma = max_sigma;
        Ok(self)
    }

    pub fn max_sigma(&self) -> Option<f32> {
        self.max_sigma
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
            max_sigma: self.max_sigma,
            ..Self::with_rule(legal_age, self.challenge_age + up, rule)?
        })
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
        if self.max_sigma.is_some_and(|m| sigma > m) {
            return (Decision::Refer, Some(ReferReason::Uncertain));
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
mod tests;

//! The gate's policy: Challenge 25 with an uncertainty margin.
//!
//! ALLOW only when the estimate minus `k` standard deviations clears the challenge age;
//! DENY only when the estimate plus `k` standard deviations is still under the legal age;
//! everything in between is REFER (staff checks an ID). A missing face is REFER too.

use serde::Deserialize;

pub use crate::domain::{Decision, ReferReason};
use crate::settings::KeyError;

/// `[policy]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub legal_age: f32,
    pub challenge_age: f32,
    pub k_sigma: f32,
    /// The lowest legal age a host's REQUEST may ask for (default: `legal_age`).
    pub min_request_age: Option<f32>,
}

/// Sane bounds for a policy, from a board file or a host's REQUEST: a legal age a
/// jurisdiction could set, a challenge margin of at most 15 years, at most 5 sigmas.
pub const LEGAL_AGES: std::ops::RangeInclusive<f32> = 10.0..=30.0;
pub const MAX_CHALLENGE_MARGIN: f32 = 15.0;
pub const K_SIGMAS: std::ops::RangeInclusive<f32> = 0.0..=5.0;

/// A validated policy: `legal_age` in [`LEGAL_AGES`], `challenge_age` from `legal_age` to
/// `legal_age + 15`, `k_sigma` in [`K_SIGMAS`], all finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    legal_age: f32,
    challenge_age: f32,
    k_sigma: f32,
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
}

impl Policy {
    pub fn new(legal_age: f32, challenge_age: f32, k_sigma: f32) -> Result<Self, PolicyError> {
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
        if !K_SIGMAS.contains(&k_sigma) {
            return Err(PolicyError::Margin(k_sigma));
        }
        Ok(Self {
            legal_age,
            challenge_age,
            k_sigma,
            min_request_age: legal_age,
        })
    }

    /// A validated `[policy]`.
    pub fn from_raw(raw: RawPolicy) -> Result<Self, KeyError> {
        let policy = Self::new(raw.legal_age, raw.challenge_age, raw.k_sigma).map_err(|e| {
            let key = match e {
                PolicyError::LegalAge(_) => "policy.legal_age",
                PolicyError::ChallengeAge { .. } => "policy.challenge_age",
                PolicyError::Margin(_) => "policy.k_sigma",
            };
            KeyError::new(key, e.to_string())
        })?;
        match raw.min_request_age {
            None => Ok(policy),
            Some(floor) => policy
                .with_min_request_age(floor)
                .map_err(|e| KeyError::new("policy.min_request_age", e.to_string())),
        }
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

    /// The same policy for a host that asks for `legal_age` (a REQUEST's required age),
    /// keeping this policy's challenge margin and k_sigma.
    pub fn with_legal_age(&self, legal_age: f32) -> Result<Self, PolicyError> {
        let margin = self.challenge_age - self.legal_age;
        Ok(Self {
            min_request_age: self.min_request_age,
            ..Self::new(legal_age, legal_age + margin, self.k_sigma)?
        })
    }

    pub fn legal_age(&self) -> f32 {
        self.legal_age
    }

    pub fn challenge_age(&self) -> f32 {
        self.challenge_age
    }

    pub fn k_sigma(&self) -> f32 {
        self.k_sigma
    }

    /// Decides for one estimate. Non-finite input is REFER: the gate never opens on
    /// something it cannot read.
    pub fn decide(&self, age: f32, sigma: f32) -> Decision {
        self.decide_why(age, sigma).0
    }

    /// [`Policy::decide`] with the reason of a REFER.
    pub fn decide_why(&self, age: f32, sigma: f32) -> (Decision, Option<ReferReason>) {
        let verdict = self.verdict(age, sigma);
        let reason = match verdict {
            Decision::Refer if !(age.is_finite() && sigma.is_finite() && sigma >= 0.0) => {
                Some(ReferReason::Unreadable)
            }
            Decision::Refer => Some(ReferReason::Uncertain),
            _ => None,
        };
        (verdict, reason)
    }

    fn verdict(&self, age: f32, sigma: f32) -> Decision {
        if !(age.is_finite() && sigma.is_finite() && sigma >= 0.0) {
            return Decision::Refer;
        }
        let margin = self.k_sigma * sigma;
        if age - margin >= self.challenge_age {
            Decision::Allow
        } else if age + margin < self.legal_age {
            Decision::Deny
        } else {
            Decision::Refer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_25_with_margin() {
        let p = Policy::new(18.0, 25.0, 1.0).unwrap();
        assert_eq!(p.decide(30.0, 5.0), Decision::Allow);
        assert_eq!(p.decide(30.0, 5.1), Decision::Refer);
        assert_eq!(p.decide(12.0, 5.9), Decision::Deny);
        assert_eq!(p.decide(12.0, 6.0), Decision::Refer);
        assert_eq!(p.decide(21.0, 0.0), Decision::Refer);
        assert_eq!(p.decide(f32::NAN, 1.0), Decision::Refer);
        assert_eq!(p.decide(40.0, f32::INFINITY), Decision::Refer);
        assert_eq!(p.decide(40.0, -1.0), Decision::Refer);
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
    }

    #[test]
    fn a_host_asks_for_its_own_legal_age_with_the_board_margin() {
        let board = Policy::new(18.0, 25.0, 1.0).unwrap();
        let p = board.with_legal_age(21.0).unwrap();
        assert_eq!(
            (p.legal_age(), p.challenge_age(), p.k_sigma()),
            (21.0, 28.0, 1.0)
        );
        assert!(board.with_legal_age(1.0).is_err());
        assert!(board.with_legal_age(255.0).is_err());
    }

    #[test]
    fn refer_says_why() {
        let p = Policy::new(18.0, 25.0, 1.0).unwrap();
        assert_eq!(p.decide_why(40.0, 2.0), (Decision::Allow, None));
        assert_eq!(
            p.decide_why(24.0, 2.0),
            (Decision::Refer, Some(ReferReason::Uncertain))
        );
        assert_eq!(
            p.decide_why(f32::NAN, 2.0),
            (Decision::Refer, Some(ReferReason::Unreadable))
        );
    }
}

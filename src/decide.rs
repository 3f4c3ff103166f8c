//! The gate's policy: Challenge 25 with an uncertainty margin.
//!
//! ALLOW only when the estimate minus `k` standard deviations clears the challenge age;
//! DENY only when the estimate plus `k` standard deviations is still under the legal age;
//! everything in between is REFER (staff checks an ID). A missing face is REFER too.

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Decision {
    Allow,
    Deny,
    Refer,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decision::Allow => "ALLOW",
            Decision::Deny => "DENY",
            Decision::Refer => "REFER",
        })
    }
}

/// A validated policy: `legal_age <= challenge_age`, `k_sigma >= 0`, all finite.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    legal_age: f32,
    challenge_age: f32,
    k_sigma: f32,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("legal_age ({legal}) must be a finite number above 0 and at most challenge_age ({challenge})")]
    Ages { legal: f32, challenge: f32 },
    #[error("k_sigma ({0}) must be a finite number >= 0")]
    Margin(f32),
}

impl Policy {
    pub fn new(legal_age: f32, challenge_age: f32, k_sigma: f32) -> Result<Self, PolicyError> {
        let ages_ok = legal_age.is_finite()
            && challenge_age.is_finite()
            && legal_age > 0.0
            && legal_age <= challenge_age;
        if !ages_ok {
            return Err(PolicyError::Ages {
                legal: legal_age,
                challenge: challenge_age,
            });
        }
        if !(k_sigma.is_finite() && k_sigma >= 0.0) {
            return Err(PolicyError::Margin(k_sigma));
        }
        Ok(Self {
            legal_age,
            challenge_age,
            k_sigma,
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
    }
}

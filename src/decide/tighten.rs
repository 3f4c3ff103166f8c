//! A policy from outside the board file (a remote `policy/set`) may only tighten it.

use super::{round3, rule_name, Policy, Rule};

impl Policy {
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
        if let Some(theirs) = board.max_sigma {
            // No cap at all is the loosest cap.
            if self.max_sigma.is_none_or(|this| this > theirs) {
                let this = self
                    .max_sigma
                    .map_or("none".to_string(), |m| round3(m).to_string());
                return Err(format!(
                    "max_sigma {this} is above the board's {}: a remote policy may only tighten the board's",
                    round3(theirs)
                ));
            }
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
}

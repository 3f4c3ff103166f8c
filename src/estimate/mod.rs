//! The age model's answer for one aligned face: the age, its uncertainty, the age after
//! each correction step and, from models that have it, the probability of being at least
//! each legal threshold (contract: `models/README.md`). The model itself ([`AgeModel`])
//! needs the cargo feature `inference`.

#[cfg(feature = "inference")]
mod model;

#[cfg(feature = "inference")]
pub use model::AgeModel;

/// The thresholds of the optional `p_over` output, in its order: P(age >= T) for each
/// (the ages NIST FATE's age verification uses).
pub const P_OVER_AGES: [u8; 5] = [13, 16, 18, 21, 25];

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgeEstimate {
    /// Years.
    pub age: f32,
    /// One standard deviation of the estimate, years.
    pub sigma: f32,
    /// The age after each correction step; the last equals `age`.
    pub steps: Vec<f32>,
    /// P(age >= T) for T in [`P_OVER_AGES`], when the model has the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_over: Option<[f32; 5]>,
}

impl AgeEstimate {
    /// P(age >= `threshold`) for one of [`P_OVER_AGES`], when the model gave it.
    pub fn p_over(&self, threshold: u8) -> Option<f32> {
        let i = P_OVER_AGES.iter().position(|&t| t == threshold)?;
        self.p_over.map(|p| p[i])
    }
}

//! The age model: an ONNX graph that takes an aligned face crop and returns an
//! [`AgeEstimate`] (contract: `models/README.md`).

use std::path::Path;

use image::RgbImage;

use super::AgeEstimate;
use crate::engine::{Dim, ModelError, OnnxFile, OnnxModel, Runtime, ONNX_FLOAT};

pub(crate) const INPUT: &str = "image";
/// The outputs every age model has, in this order.
pub(crate) const OUTPUTS: [&str; 3] = ["age", "sigma", "steps"];
/// The optional output: P(age >= T) for [`super::P_OVER_AGES`], `[1, 5]`.
pub(crate) const P_OVER: &str = "p_over";

pub struct AgeModel {
    model: OnnxModel,
    crop_size: u32,
    /// Whether the graph has the optional `p_over` output (run as the fourth output).
    has_p_over: bool,
    /// Reused input buffer: `[1, 3, S, S]`.
    input: std::cell::RefCell<Vec<f32>>,
}

impl std::fmt::Debug for AgeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgeModel")
            .field("model", &self.model)
            .finish()
    }
}

impl AgeModel {
    /// Loads the model on tract, one thread.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::load_on(path, &Runtime::single_thread())
    }

    /// Loads the model on `runtime`'s engine and threads.
    pub fn load_on(path: &Path, runtime: &Runtime) -> Result<Self, ModelError> {
        let file = OnnxFile::read(path)?;
        let (crop_size, has_p_over) = check_contract(&file)?;
        let s = crop_size as usize;
        let mut outputs = OUTPUTS.to_vec();
        if has_p_over {
            outputs.push(P_OVER);
        }
        let model = file.into_runnable(&[1, 3, s, s], &outputs, runtime)?;
        Ok(Self {
            model,
            crop_size,
            has_p_over,
            input: std::cell::RefCell::new(vec![0.0; 3 * s * s]),
        })
    }

    pub fn path(&self) -> &Path {
        self.model.path()
    }

    /// Whether the model gives `p_over`.
    pub fn has_p_over(&self) -> bool {
        self.has_p_over
    }

    /// Side of the aligned crop the model takes, in pixels.
    pub fn crop_size(&self) -> u32 {
        self.crop_size
    }

    pub fn estimate(&self, crop: &RgbImage) -> Result<AgeEstimate, ModelError> {
        let fail = |reason: String| ModelError::Run {
            path: self.path().to_path_buf(),
            reason,
        };
        if crop.width() != self.crop_size || crop.height() != self.crop_size {
            return Err(fail(format!(
                "crop is {}x{}, the model takes {}x{}",
                crop.width(),
                crop.height(),
                self.crop_size,
                self.crop_size
            )));
        }
        let mut input = self.input.borrow_mut();
        let plane = (self.crop_size * self.crop_size) as usize;
        for (i, p) in crop.pixels().enumerate() {
            for c in 0..3 {
                input[c * plane + i] = p[c] as f32;
            }
        }
        let outputs = self.model.run(&input)?;
        let (age, sigma, steps) = (&outputs[0], &outputs[1], &outputs[2]);
        if age.len() != 1 || sigma.len() != 1 || steps.is_empty() {
            return Err(fail(format!(
                "outputs have {} ages, {} sigmas, {} steps; the contract is 1, 1, >= 1",
                age.len(),
                sigma.len(),
                steps.len()
            )));
        }
        let p_over = match outputs.get(3) {
            None => None,
            Some(p) => {
                let p: [f32; 5] = p.as_slice().try_into().map_err(|_| {
                    fail(format!(
                        "`{P_OVER}` has {} values; the contract is 5",
                        p.len()
                    ))
                })?;
                if p.iter().any(|v| !(0.0..=1.0).contains(v)) {
                    return Err(fail(format!("`{P_OVER}` {p:?} is not a probability")));
                }
                Some(p)
            }
        };
        let estimate = AgeEstimate {
            age: age[0],
            sigma: sigma[0],
            steps: steps.clone(),
            p_over,
        };
        // A NaN or a negative sigma must never reach the policy: it would compare false
        // everywhere and could slip through a threshold.
        if !(estimate.age.is_finite() && estimate.sigma.is_finite() && estimate.sigma >= 0.0)
            || estimate.steps.iter().any(|s| !s.is_finite())
        {
            return Err(fail(format!(
                "non-finite or negative output (age {}, sigma {})",
                estimate.age, estimate.sigma
            )));
        }
        Ok(estimate)
    }
}

/// Checks the declared interface; returns the crop size `S` and whether the optional
/// `p_over` output is there.
fn check_contract(file: &OnnxFile) -> Result<(u32, bool), ModelError> {
    let iface = &file.interface;
    let input = match iface.inputs.as_slice() {
        [only] => only,
        other => {
            return Err(file.contract_error(format!(
                "an age model has exactly one input `{INPUT}`, this graph has {}",
                other.len()
            )))
        }
    };
    if input.name != INPUT {
        return Err(file.contract_error(format!(
            "the input is named `{}`, not `{INPUT}`",
            input.name
        )));
    }
    if input.elem_type != ONNX_FLOAT {
        return Err(file.contract_error(format!("input `{INPUT}` is not float32")));
    }
    let size = match input.shape.as_deref() {
        Some([_, Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)]) if h == w && *h > 0 => *h,
        _ => {
            return Err(file.contract_error(format!(
                "input `{INPUT}` must be [1, 3, S, S] with a fixed S, it is {:?}",
                input.shape
            )))
        }
    };
    for name in OUTPUTS {
        if !iface.outputs.iter().any(|o| o.name == name) {
            return Err(file.contract_error(format!("no output named `{name}`")));
        }
    }
    let p_over = iface.outputs.iter().find(|o| o.name == P_OVER);
    if let Some(p) = p_over {
        let five = matches!(p.shape.as_deref(), Some([_, Dim::Fixed(5)]) | None);
        if p.elem_type != ONNX_FLOAT || !five {
            return Err(file.contract_error(format!(
                "output `{P_OVER}` must be float32 [1, 5], it is {:?}",
                p.shape
            )));
        }
    }
    let size = u32::try_from(size)
        .map_err(|_| file.contract_error(format!("crop size {size} is too large")))?;
    Ok((size, p_over.is_some()))
}

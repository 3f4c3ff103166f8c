//! The age model: an ONNX graph that takes an aligned face crop and returns the age, its
//! uncertainty and the age after each correction step (contract: `models/README.md`).

use std::path::Path;

use image::RgbImage;

use crate::engine::{Dim, ModelError, OnnxFile, OnnxModel, Runtime, ONNX_FLOAT};

pub const INPUT: &str = "image";
pub const OUTPUTS: [&str; 3] = ["age", "sigma", "steps"];

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgeEstimate {
    /// Years.
    pub age: f32,
    /// One standard deviation of the estimate, years.
    pub sigma: f32,
    /// The age after each correction step; the last equals `age`.
    pub steps: Vec<f32>,
}

pub struct AgeModel {
    model: OnnxModel,
    crop_size: u32,
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
        let crop_size = check_contract(&file)?;
        let s = crop_size as usize;
        let model = file.into_runnable(&[1, 3, s, s], &OUTPUTS, runtime)?;
        Ok(Self {
            model,
            crop_size,
            input: std::cell::RefCell::new(vec![0.0; 3 * s * s]),
        })
    }

    pub fn path(&self) -> &Path {
        self.model.path()
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
        let estimate = AgeEstimate {
            age: age[0],
            sigma: sigma[0],
            steps: steps.clone(),
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

/// Checks the declared interface and returns the crop size `S`.
fn check_contract(file: &OnnxFile) -> Result<u32, ModelError> {
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
    u32::try_from(size).map_err(|_| file.contract_error(format!("crop size {size} is too large")))
}

//! The tract backend: the graph optimised for a fixed input shape and made runnable
//! once, run on the runtime's thread pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::pb;
use tract_onnx::prelude::*;

use super::error::ModelError;

/// An optimised, runnable tract plan and the pool it runs on.
pub struct TractPlan {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    executor: Executor,
}

impl TractPlan {
    /// Fixes the single input to `input_shape`, keeps `output_names` in that order, and
    /// optimises. `path` names the file in errors.
    pub fn new(
        path: &Path,
        proto: &pb::ModelProto,
        input_shape: &[usize],
        output_names: &[&str],
        executor: Executor,
    ) -> Result<Self, ModelError> {
        let prepare = |e: TractError| ModelError::Prepare {
            path: path.to_path_buf(),
            reason: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(proto)
            .map_err(prepare)?;
        model
            .set_input_fact(0, f32::fact(input_shape).into())
            .map_err(prepare)?;
        let outlets = output_names
            .iter()
            .map(|name| {
                model
                    .find_outlet_label(name)
                    .ok_or_else(|| ModelError::Contract {
                        path: path.to_path_buf(),
                        reason: format!("no output named `{name}`"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        model.select_output_outlets(&outlets).map_err(prepare)?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(prepare)?;
        Ok(Self {
            path: path.to_path_buf(),
            plan,
            executor,
        })
    }

    /// Runs on `input` (row-major, `shape`), each output flattened.
    pub fn run(&self, input: &[f32], shape: &[usize]) -> Result<Vec<Vec<f32>>, ModelError> {
        let fail = |reason: String| ModelError::Run {
            path: self.path.clone(),
            reason,
        };
        let tensor = Tensor::from_shape(shape, input).map_err(|e| fail(format!("{e:#}")))?;
        let outputs = multithread_tract_scope(self.executor.clone(), || {
            self.plan.run(tvec!(tensor.into_tvalue()))
        })
        .map_err(|e| fail(format!("{e:#}")))?;
        outputs
            .iter()
            .map(|value| {
                value
                    .to_plain_array_view::<f32>()
                    .map(|view| view.iter().copied().collect())
                    .map_err(|e| fail(format!("output is not float32: {e:#}")))
            })
            .collect()
    }
}

//! Loading and running ONNX graphs.
//!
//! A model is read, checked against the tensors its caller expects (`check`), given a
//! fixed input shape, optimised and made runnable once, at start, on the engine a board's
//! `[runtime]` names (`runtime`): tract by default (`tract`), splitting its matrix
//! products over a pool of `threads`; onnxruntime (`onnxruntime`, cargo feature `ort`;
//! TensorRT on Jetson with `tensorrt`) with `threads` intra-op threads. Every failure names
//! the file (`error`).
//!
//! Everything but the `[runtime]` settings and the error needs the cargo feature
//! `inference` (the default): builds without it (the fuzz targets) carry no engine.

#[cfg(feature = "inference")]
mod check;
mod error;
#[cfg(feature = "ort")]
pub mod onnxruntime;
mod runtime;
#[cfg(feature = "inference")]
mod tract;

#[cfg(feature = "inference")]
pub use check::{Dim, GraphInterface, OnnxFile, TensorDecl, ONNX_FLOAT};
pub use error::ModelError;
#[cfg(feature = "inference")]
pub use runtime::Runtime;
pub use runtime::{check_threads, Engine, RawRuntime, RuntimeSettings};

#[cfg(feature = "inference")]
use std::path::{Path, PathBuf};

#[cfg(feature = "inference")]
enum Backend {
    Tract(tract::TractPlan),
    #[cfg(feature = "ort")]
    OnnxRuntime {
        // onnxruntime runs take the session mutably; the frame loop is one thread, so the
        // lock is never contended.
        session: std::sync::Mutex<onnxruntime::OrtModel>,
        /// Index in the graph's outputs of each output the caller asked for, in its order.
        outputs: Vec<usize>,
    },
}

/// A runnable graph with one float32 input of a fixed shape.
#[cfg(feature = "inference")]
pub struct OnnxModel {
    path: PathBuf,
    backend: Backend,
    input_shape: Vec<usize>,
}

#[cfg(feature = "inference")]
impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("path", &self.path)
            .field("input_shape", &self.input_shape)
            .finish()
    }
}

#[cfg(feature = "inference")]
impl OnnxFile {
    /// Fixes the single input to `input_shape`, keeps the outputs in `output_names` order,
    /// and makes the graph runnable on `runtime`'s engine.
    pub fn into_runnable(
        self,
        input_shape: &[usize],
        output_names: &[&str],
        runtime: &Runtime,
    ) -> Result<OnnxModel, ModelError> {
        let backend = match runtime.settings().engine {
            Engine::Tract => Backend::Tract(tract::TractPlan::new(
                &self.path,
                &self.proto,
                input_shape,
                output_names,
                runtime.executor.clone(),
            )?),
            Engine::OnnxRuntime => self.onnxruntime_session(output_names, runtime)?,
        };
        Ok(OnnxModel {
            path: self.path,
            backend,
            input_shape: input_shape.to_vec(),
        })
    }

    #[cfg(feature = "ort")]
    fn onnxruntime_session(
        &self,
        output_names: &[&str],
        runtime: &Runtime,
    ) -> Result<Backend, ModelError> {
        // onnxruntime returns every output in the graph's order; pick the asked ones by name.
        let outputs = output_names
            .iter()
            .map(|name| {
                self.interface
                    .outputs
                    .iter()
                    .position(|o| o.name == *name)
                    .ok_or_else(|| self.contract_error(format!("no output named `{name}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // The bytes this file was read as: what was checked is what runs.
        let session =
            onnxruntime::OrtModel::from_bytes(&self.path, &self.bytes, runtime.settings().threads)?;
        Ok(Backend::OnnxRuntime {
            session: std::sync::Mutex::new(session),
            outputs,
        })
    }

    #[cfg(not(feature = "ort"))]
    fn onnxruntime_session(
        &self,
        _output_names: &[&str],
        _runtime: &Runtime,
    ) -> Result<Backend, ModelError> {
        Err(ModelError::Prepare {
            path: self.path.clone(),
            reason: "this agegate was built without onnxruntime (cargo feature `ort`)".into(),
        })
    }
}

#[cfg(feature = "inference")]
impl OnnxModel {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Runs the graph on `input` (row-major, `input_shape`), returning each output flattened.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        match &self.backend {
            Backend::Tract(plan) => plan.run(input, &self.input_shape),
            #[cfg(feature = "ort")]
            Backend::OnnxRuntime { session, outputs } => {
                let fail = |reason: String| ModelError::Run {
                    path: self.path.clone(),
                    reason,
                };
                let mut session = session
                    .lock()
                    .map_err(|_| fail("an earlier run panicked inside onnxruntime".into()))?;
                let mut all = session.run(input, &self.input_shape)?;
                outputs
                    .iter()
                    .map(|&i| {
                        all.get_mut(i)
                            .map(std::mem::take)
                            .ok_or_else(|| fail(format!("onnxruntime returned no output {i}")))
                    })
                    .collect()
            }
        }
    }
}

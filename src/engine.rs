//! Loading and running ONNX graphs with tract.
//!
//! A model is read, checked against the tensors its caller expects, given a fixed input
//! shape, optimised and made runnable once, at start. Every failure names the file.
//!
//! [`Runtime`] says which engine runs the graphs and on how many threads (a board's
//! `[runtime]`): tract by default, splitting its matrix products over a pool of `threads`;
//! onnxruntime (cargo feature `ort`; TensorRT on Jetson with `tensorrt`) with `threads`
//! intra-op threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_linalg::multithread::{multithread_tract_scope, Executor};
use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Why a model file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path}: cannot read it: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("model file {path}: not a valid ONNX model ({reason})")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("model file {path}: breaks the model contract: {reason}")]
    Contract { path: PathBuf, reason: String },
    #[error("model file {path}: tract cannot prepare it: {reason}")]
    Prepare { path: PathBuf, reason: String },
    #[error("model file {path}: inference failed: {reason}")]
    Run { path: PathBuf, reason: String },
    #[error("cannot start {threads} inference threads: {reason}")]
    Threads { threads: usize, reason: String },
}

/// The engine that runs the graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Pure Rust, linked in: the default on every board.
    Tract,
    /// onnxruntime loaded at run time (cargo feature `ort`); with feature `tensorrt` it
    /// hands the graphs to TensorRT, then CUDA, then its CPU kernels.
    OnnxRuntime,
}

impl Engine {
    /// The name a board file gives it (`[runtime] engine`).
    pub fn name(self) -> &'static str {
        match self {
            Engine::Tract => "tract",
            Engine::OnnxRuntime => "onnxruntime",
        }
    }
}

/// A board's `[runtime]`, validated: plain values, nothing started yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeSettings {
    pub engine: Engine,
    /// Threads one inference may use, at least 1.
    pub threads: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            engine: Engine::Tract,
            threads: 1,
        }
    }
}

/// A [`RuntimeSettings`] made ready: for tract with more than one thread, the pool its
/// matrix products are split over, shared by every model loaded with it.
#[derive(Debug, Clone)]
pub struct Runtime {
    settings: RuntimeSettings,
    executor: Executor,
}

impl Runtime {
    /// One thread, tract: what tests and the benchmark's single-thread figures use.
    pub fn single_thread() -> Self {
        Self {
            settings: RuntimeSettings::default(),
            executor: Executor::SingleThread,
        }
    }

    /// Starts the thread pool `settings` asks for (none for one thread or onnxruntime,
    /// which keeps its own).
    pub fn start(settings: RuntimeSettings) -> Result<Self, ModelError> {
        let threads = settings.threads.max(1);
        let executor = if settings.engine == Engine::Tract && threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("agegate-infer-{i}"))
                .build()
                .map_err(|e| ModelError::Threads {
                    threads,
                    reason: e.to_string(),
                })?;
            Executor::MultiThread(Arc::new(pool))
        } else {
            Executor::SingleThread
        };
        Ok(Self {
            settings: RuntimeSettings {
                threads,
                ..settings
            },
            executor,
        })
    }

    pub fn settings(&self) -> RuntimeSettings {
        self.settings
    }
}

/// One dimension of a declared tensor shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// A named or unknown dimension, fixed by the caller at load time.
    Free,
}

/// A graph input or output as the ONNX file declares it.
#[derive(Debug, Clone)]
pub struct TensorDecl {
    pub name: String,
    /// `None` when the file declares no shape at all.
    pub shape: Option<Vec<Dim>>,
    /// ONNX element type code (1 = float32).
    pub elem_type: i32,
}

/// ONNX element type code of float32.
pub const ONNX_FLOAT: i32 = 1;

/// The declared interface of an ONNX file, read before tract builds anything, so contract
/// errors can name tensors instead of surfacing as shape-inference failures.
#[derive(Debug, Clone)]
pub struct GraphInterface {
    pub inputs: Vec<TensorDecl>,
    pub outputs: Vec<TensorDecl>,
}

fn decl_of(value: &pb::ValueInfoProto) -> TensorDecl {
    let tensor = match value.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(pb::type_proto::Value::TensorType(t)) => Some(t),
        _ => None,
    };
    let shape = tensor.and_then(|t| t.shape.as_ref()).map(|shape| {
        shape
            .dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)) if v > 0 => {
                    Dim::Fixed(v as usize)
                }
                _ => Dim::Free,
            })
            .collect()
    });
    TensorDecl {
        name: value.name.clone(),
        shape,
        elem_type: tensor.map_or(0, |t| t.elem_type),
    }
}

/// A parsed ONNX file whose interface can be checked before it is made runnable.
pub struct OnnxFile {
    path: PathBuf,
    proto: pb::ModelProto,
    pub interface: GraphInterface,
}

impl OnnxFile {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|cause| ModelError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let not_onnx = |reason: String| ModelError::NotOnnx {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.is_empty() {
            return Err(not_onnx("the file is empty".into()));
        }
        let proto = tract_onnx::onnx()
            .proto_model_for_read(&mut bytes.as_slice())
            .map_err(|e| not_onnx(format!("{e:#}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| not_onnx("the file holds no graph".into()))?;
        if graph.node.is_empty() {
            return Err(not_onnx("the graph has no nodes".into()));
        }
        // Initialisers may be listed as inputs by old exporters; they are not real inputs.
        let initialisers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs = graph
            .input
            .iter()
            .filter(|i| !initialisers.contains(i.name.as_str()))
            .map(decl_of)
            .collect();
        let outputs = graph.output.iter().map(decl_of).collect();
        Ok(Self {
            path: path.to_path_buf(),
            proto,
            interface: GraphInterface { inputs, outputs },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contract_error(&self, reason: impl Into<String>) -> ModelError {
        ModelError::Contract {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// Fixes the single input to `input_shape`, keeps the outputs in `output_names` order,
    /// and makes the graph runnable on `runtime`'s engine.
    pub fn into_runnable(
        self,
        input_shape: &[usize],
        output_names: &[&str],
        runtime: &Runtime,
    ) -> Result<OnnxModel, ModelError> {
        let backend = match runtime.settings.engine {
            Engine::Tract => self.tract_plan(input_shape, output_names, runtime)?,
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
        let session = crate::ort_engine::OrtModel::load(&self.path, runtime.settings.threads)?;
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

    /// Optimises the graph with tract and makes the plan runnable.
    fn tract_plan(
        &self,
        input_shape: &[usize],
        output_names: &[&str],
        runtime: &Runtime,
    ) -> Result<Backend, ModelError> {
        let path = self.path.clone();
        let prepare = |e: TractError| ModelError::Prepare {
            path: path.clone(),
            reason: format!("{e:#}"),
        };
        let mut model = tract_onnx::onnx()
            .model_for_proto_model(&self.proto)
            .map_err(prepare)?;
        model
            .set_input_fact(0, f32::fact(input_shape).into())
            .map_err(prepare)?;
        let outlets = output_names
            .iter()
            .map(|name| {
                model
                    .find_outlet_label(name)
                    .ok_or_else(|| self.contract_error(format!("no output named `{name}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        model.select_output_outlets(&outlets).map_err(prepare)?;
        let plan = model
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(prepare)?;
        Ok(Backend::Tract {
            plan,
            executor: runtime.executor.clone(),
        })
    }
}

enum Backend {
    Tract {
        plan: Arc<TypedRunnableModel>,
        executor: Executor,
    },
    #[cfg(feature = "ort")]
    OnnxRuntime {
        // onnxruntime runs take the session mutably; the frame loop is one thread, so the
        // lock is never contended.
        session: std::sync::Mutex<crate::ort_engine::OrtModel>,
        /// Index in the graph's outputs of each output the caller asked for, in its order.
        outputs: Vec<usize>,
    },
}

/// A runnable graph with one float32 input of a fixed shape.
pub struct OnnxModel {
    path: PathBuf,
    backend: Backend,
    input_shape: Vec<usize>,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("path", &self.path)
            .field("input_shape", &self.input_shape)
            .finish()
    }
}

impl OnnxModel {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn input_shape(&self) -> &[usize] {
        &self.input_shape
    }

    /// Runs the graph on `input` (row-major, `input_shape`), returning each output flattened.
    pub fn run(&self, input: &[f32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let fail = |reason: String| ModelError::Run {
            path: self.path.clone(),
            reason,
        };
        let (plan, executor) = match &self.backend {
            Backend::Tract { plan, executor } => (plan, executor),
            #[cfg(feature = "ort")]
            Backend::OnnxRuntime { session, outputs } => {
                let mut session = session
                    .lock()
                    .map_err(|_| fail("an earlier run panicked inside onnxruntime".into()))?;
                let mut all = session.run(input, &self.input_shape)?;
                return outputs
                    .iter()
                    .map(|&i| {
                        all.get_mut(i)
                            .map(std::mem::take)
                            .ok_or_else(|| fail(format!("onnxruntime returned no output {i}")))
                    })
                    .collect();
            }
        };
        let tensor =
            Tensor::from_shape(&self.input_shape, input).map_err(|e| fail(format!("{e:#}")))?;
        let outputs =
            multithread_tract_scope(executor.clone(), || plan.run(tvec!(tensor.into_tvalue())))
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

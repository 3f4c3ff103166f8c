//! Loading and running ONNX graphs with tract.
//!
//! A model is read, checked against the tensors its caller expects, given a fixed input
//! shape, optimised and made runnable once, at start. Every failure names the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::pb;
use tract_onnx::prelude::*;

/// Why a model file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("model file {path}: not a valid ONNX model ({reason})")]
    NotOnnx { path: PathBuf, reason: String },
    #[error("model file {path}: breaks the model contract: {reason}")]
    Contract { path: PathBuf, reason: String },
    #[error("model file {path}: tract cannot prepare it: {reason}")]
    Prepare { path: PathBuf, reason: String },
    #[error("model file {path}: inference failed: {reason}")]
    Run { path: PathBuf, reason: String },
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
        let bytes = std::fs::read(path).map_err(|source| ModelError::Read {
            path: path.to_path_buf(),
            source,
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
    /// optimises and makes the plan runnable.
    pub fn into_runnable(
        self,
        input_shape: &[usize],
        output_names: &[&str],
    ) -> Result<OnnxModel, ModelError> {
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
        Ok(OnnxModel {
            path: self.path,
            plan,
            input_shape: input_shape.to_vec(),
        })
    }
}

/// A runnable graph with one float32 input of a fixed shape.
pub struct OnnxModel {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
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
        let tensor =
            Tensor::from_shape(&self.input_shape, input).map_err(|e| fail(format!("{e:#}")))?;
        let outputs = self
            .plan
            .run(tvec!(tensor.into_tvalue()))
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

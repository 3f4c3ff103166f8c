//! Reading an ONNX file and its declared interface, before any engine builds anything,
//! so a contract breach names the tensor instead of surfacing as a shape-inference
//! failure.

use std::path::{Path, PathBuf};

use tract_onnx::pb;
use tract_onnx::prelude::Framework;

use super::error::ModelError;

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

/// A parsed ONNX file whose interface can be checked before it is made runnable. It keeps
/// the file's bytes for a backend that parses them itself (onnxruntime).
pub struct OnnxFile {
    pub(super) path: PathBuf,
    #[cfg(feature = "ort")]
    pub(super) bytes: Vec<u8>,
    pub(super) proto: pb::ModelProto,
    pub interface: GraphInterface,
}
impl OnnxFile {
    pub fn read(path: &Path) -> Result<Self, ModelError> {
        let bytes = crate::input_file::read(path, crate::input_file::MODEL).map_err(|e| {
            ModelError::Read {
                path: path.to_path_buf(),
                cause: e.into(),
            }
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
            #[cfg(feature = "ort")]
            bytes,
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
}

//! What can go wrong with a model file, naming the file: the one error type every
//! backend returns.

use std::path::PathBuf;

use crate::digest::Sha256;

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
    #[error("model file {path}: SHA-256 {found}, but the board pins `{key} = \"{expected}\"`: not the model this board was set up with")]
    Pinned {
        path: PathBuf,
        key: &'static str,
        expected: Sha256,
        found: Sha256,
    },
    #[error("cannot start {threads} inference threads: {reason}")]
    Threads { threads: usize, reason: String },
}

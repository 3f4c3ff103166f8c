//! Running ONNX graphs with onnxruntime, through the `ort` crate (cargo feature `ort`).
//!
//! # Why
//!
//! tract ([`super::tract`]) is the default engine and the one the firmware ships with: pure
//! Rust, no shared library to install, identical results on every board. This backend exists
//! for two things tract cannot do:
//!
//! - **Jetson**: with feature `tensorrt` the graph runs on the GPU through onnxruntime's
//!   TensorRT execution provider (then CUDA, then CPU), with TensorRT's engines cached on disk
//!   (`AGEGATE_TRT_CACHE`, default `/var/cache/agegate/trt`) so only the first start pays for
//!   the engine build.
//! - **Benchmarks and parity**: the same model through onnxruntime's CPU kernels, to compare
//!   speed and outputs against tract (`tests/ort_parity.rs`).
//!
//! # The library
//!
//! `ort` is built with `load-dynamic`: nothing of onnxruntime is linked at build time, and
//! `libonnxruntime.so` is opened at run time from [`find_library`]: `ORT_DYLIB_PATH`, else the
//! one in the `onnxruntime` Python wheel of the project's venv (`scripts/setup` installs it).
//! The library must be onnxruntime 1.17 or newer (`ort`'s `api-17`: JetPack 6's oldest).
//! On a Jetson, point `ORT_DYLIB_PATH` at the `onnxruntime-gpu` build from NVIDIA's JetPack
//! wheels, whose directory also holds `libonnxruntime_providers_{cuda,tensorrt}.so`.
//!
//! # glibc
//!
//! Binaries built here need glibc 2.35 or newer (Raspberry Pi OS bookworm, Ubuntu 22.04,
//! JetPack 6): that is the newest symbol version they reference (`objdump -T`), although the
//! build machine itself has 2.36 (`ldd --version`). The onnxruntime library is not part of the
//! binary and brings its own floor. For JetPack 5 (glibc 2.31, Ubuntu 20.04), build on a
//! JetPack 5 machine or in an Ubuntu 20.04 container (e.g. `nvcr.io/nvidia/l4t-base:r35.x`),
//! and load an onnxruntime of 1.17 or newer built for JetPack 5.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::SessionBuilder;
use ort::session::Session;
use ort::value::TensorRef;

use super::error::ModelError;

/// The environment variable naming the onnxruntime shared library to load.
pub(crate) const DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Where TensorRT engines are cached unless `AGEGATE_TRT_CACHE` says otherwise.
#[cfg(feature = "tensorrt")]
pub(crate) const DEFAULT_TRT_CACHE: &str = "/var/cache/agegate/trt";

/// Finds the onnxruntime shared library: `ORT_DYLIB_PATH` if set (it must exist), else
/// `libonnxruntime.so*` in the `onnxruntime` package of the project's venv
/// (`${AGEGATE_VENV:-$HOME/.cache/agegate/venv}/lib/python3*/site-packages/onnxruntime/capi/`).
pub fn find_library() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(DYLIB_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "{DYLIB_ENV} is set to {}, which is not a file; point it at libonnxruntime.so \
                 (onnxruntime 1.17 or newer) or unset it to use the venv's onnxruntime",
                path.display()
            ))
        };
    }
    let venv = match std::env::var_os("AGEGATE_VENV").filter(|p| !p.is_empty()) {
        Some(venv) => PathBuf::from(venv),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => Path::new(&home).join(".cache/agegate/venv"),
            None => {
                return Err(format!(
                    "onnxruntime library not found: {DYLIB_ENV}, AGEGATE_VENV and HOME are all \
                     unset; set {DYLIB_ENV} to libonnxruntime.so (onnxruntime 1.17 or newer)"
                ))
            }
        },
    };
    let pattern = venv.join("lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so*");
    let not_found = |detail: String| {
        format!(
            "onnxruntime library not found: {DYLIB_ENV} is unset and nothing matches {} ({detail}); \
             run scripts/setup to install the venv's onnxruntime, or set {DYLIB_ENV} to \
             libonnxruntime.so (onnxruntime 1.17 or newer)",
            pattern.display()
        )
    };
    let lib_dir = venv.join("lib");
    let entries = std::fs::read_dir(&lib_dir)
        .map_err(|e| not_found(format!("cannot list {}: {e}", lib_dir.display())))?;
    let mut found: Vec<PathBuf> = Vec::new();
    for python in entries.flatten() {
        if !python.file_name().to_string_lossy().starts_with("python3") {
            continue;
        }
        let capi = python.path().join("site-packages/onnxruntime/capi");
        let Ok(files) = std::fs::read_dir(&capi) else {
            continue;
        };
        found.extend(
            files
                .flatten()
                .filter(|f| {
                    f.file_name()
                        .to_string_lossy()
                        .starts_with("libonnxruntime.so")
                })
                .map(|f| f.path())
                .filter(|p| p.is_file()),
        );
    }
    // Deterministic when several Python versions hold a wheel: the last by name.
    found.sort();
    found
        .pop()
        .ok_or_else(|| not_found("no onnxruntime package in the venv".into()))
}

/// The one onnxruntime environment of the process, made on first use.
static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

fn environment() -> Result<&'static Environment, String> {
    ENVIRONMENT
        .get_or_init(|| {
            let library = find_library()?;
            let env = ort::init_from(&library)
                .map_err(|e| format!("cannot load onnxruntime: {e}"))?
                .with_name("agegate")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot start onnxruntime from {}: {e}", library.display()))?;
            tracing::info!(library = %library.display(), "onnxruntime loaded");
            Ok(env)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Registers the execution providers this build asks for, in order of preference, and
/// returns the name of the first one onnxruntime accepted ("CPU" when none was asked or
/// none registered: onnxruntime always runs what is left on its CPU provider).
#[cfg(feature = "tensorrt")]
fn register_providers(builder: &mut SessionBuilder, path: &Path) -> &'static str {
    use ort::ep::{ExecutionProvider, TensorRT, CUDA};

    let cache = std::env::var_os("AGEGATE_TRT_CACHE")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_TRT_CACHE), PathBuf::from);
    if let Err(e) = std::fs::create_dir_all(&cache) {
        tracing::warn!(cache = %cache.display(), "cannot create the TensorRT engine cache: {e}");
    }
    let tensorrt = TensorRT::default()
        .with_engine_cache(true)
        .with_engine_cache_path(cache.display())
        .with_timing_cache(true)
        .with_timing_cache_path(cache.display());
    let mut chosen = None;
    match tensorrt.register(builder) {
        Ok(()) => chosen = Some("TensorRT"),
        Err(e) => {
            tracing::warn!(model = %path.display(), "TensorRT execution provider unavailable: {e}")
        }
    }
    match CUDA::default().register(builder) {
        Ok(()) => chosen = chosen.or(Some("CUDA")),
        Err(e) => {
            tracing::warn!(model = %path.display(), "CUDA execution provider unavailable: {e}")
        }
    }
    chosen.unwrap_or("CPU")
}

#[cfg(not(feature = "tensorrt"))]
fn register_providers(_builder: &mut SessionBuilder, _path: &Path) -> &'static str {
    "CPU"
}

/// An onnxruntime session over a graph with one float32 input.
pub struct OrtModel {
    path: PathBuf,
    session: Session,
    provider: &'static str,
}

impl std::fmt::Debug for OrtModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtModel")
            .field("path", &self.path)
            .field("provider", &self.provider)
            .finish()
    }
}

impl OrtModel {
    /// Loads `path` with `threads` intra-op threads (at least one; benchmarks use 1).
    pub fn load(path: &Path, threads: usize) -> Result<Self, ModelError> {
        // The same error as tract's for a file that is missing or unreadable.
        let bytes = crate::input_file::read(path, crate::input_file::MODEL).map_err(|e| {
            ModelError::Read {
                path: path.to_path_buf(),
                cause: e.into(),
            }
        })?;
        Self::from_bytes(path, &bytes, threads)
    }

    /// A session over a model already read (`path` names it in errors and logs).
    pub fn from_bytes(path: &Path, bytes: &[u8], threads: usize) -> Result<Self, ModelError> {
        let prepare = |reason: String| ModelError::Prepare {
            path: path.to_path_buf(),
            reason: format!("onnxruntime: {reason}"),
        };
        let env = environment().map_err(prepare)?;
        let mut builder = Session::builder(env)
            .map_err(|e| prepare(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| prepare(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| prepare(e.to_string()))?;
        let provider = register_providers(&mut builder, path);
        let session = builder
            .commit_from_memory(bytes)
            .map_err(|e| match e.code() {
                ort::ErrorCode::InvalidProtobuf | ort::ErrorCode::InvalidGraph => {
                    ModelError::NotOnnx {
                        path: path.to_path_buf(),
                        reason: format!("onnxruntime: {e}"),
                    }
                }
                _ => prepare(e.to_string()),
            })?;
        if session.inputs().len() != 1 {
            return Err(ModelError::Contract {
                path: path.to_path_buf(),
                reason: format!(
                    "the onnxruntime backend takes graphs with one input, this one has {}",
                    session.inputs().len()
                ),
            });
        }
        if cfg!(feature = "tensorrt") {
            tracing::info!(
                model = %path.display(),
                provider,
                "onnxruntime execution provider registered (nodes it cannot take run on CPU)"
            );
        } else {
            tracing::info!(model = %path.display(), provider, "onnxruntime execution provider");
        }
        Ok(Self {
            path: path.to_path_buf(),
            session,
            provider,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The preferred execution provider that registered: "TensorRT", "CUDA" or "CPU".
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// Runs the graph on `input` (row-major, `shape`), returning every output flattened, in
    /// the graph's output order.
    pub fn run(&mut self, input: &[f32], shape: &[usize]) -> Result<Vec<Vec<f32>>, ModelError> {
        let path = &self.path;
        let fail = |reason: String| ModelError::Run {
            path: path.clone(),
            reason: format!("onnxruntime: {reason}"),
        };
        let expected: usize = shape.iter().product();
        if input.len() != expected {
            return Err(fail(format!(
                "input has {} values, shape {shape:?} needs {expected}",
                input.len()
            )));
        }
        let tensor =
            TensorRef::from_array_view((shape.to_vec(), input)).map_err(|e| fail(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![tensor])
            .map_err(|e| fail(e.to_string()))?;
        (0..outputs.len())
            .map(|i| {
                outputs[i]
                    .try_extract_tensor::<f32>()
                    .map(|(_, data)| data.to_vec())
                    .map_err(|e| fail(format!("output {i} is not float32: {e}")))
            })
            .collect()
    }
}

//! `[runtime]`: which engine runs the graphs, on how many threads, and the started form
//! of it (tract's thread pool).

#[cfg(feature = "inference")]
use std::sync::Arc;

use serde::Deserialize;
#[cfg(feature = "inference")]
use tract_linalg::multithread::Executor;

#[cfg(feature = "inference")]
use super::error::ModelError;
use crate::settings::{in_range, KeyError};

/// The most threads a board may ask for: more than any board we support has cores.
pub(crate) const MAX_THREADS: usize = 64;

/// `[runtime]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    /// "tract" (default) or "onnxruntime" (a build with feature `ort` or `tensorrt`).
    pub engine: Option<Engine>,
    /// Threads one inference may use (default 1).
    pub threads: Option<usize>,
}

/// The engine that runs the graphs (`[runtime] engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
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

impl RuntimeSettings {
    pub fn from_raw(raw: RawRuntime) -> Result<Self, KeyError> {
        let engine = raw.engine.unwrap_or(Engine::Tract);
        if engine == Engine::OnnxRuntime && !cfg!(feature = "ort") {
            return Err(KeyError::new(
                "runtime.engine",
                "\"onnxruntime\" needs an agegate built with `--features ort` (or `tensorrt` on \
                 Jetson); this one has tract only",
            ));
        }
        let threads = check_threads(raw.threads.unwrap_or(1))
            .map_err(|message| KeyError::new("runtime.threads", message))?;
        Ok(Self { engine, threads })
    }
}

/// A thread count a board file or `bench --threads` may give: 1 to 64.
pub fn check_threads(threads: usize) -> Result<usize, String> {
    in_range("threads", threads, 1..=MAX_THREADS).map_err(|e| e.message)
}

#[cfg(feature = "inference")]
/// A [`RuntimeSettings`] made ready: for tract with more than one thread, the pool its
/// matrix products are split over, shared by every model loaded with it.
#[derive(Debug, Clone)]
pub struct Runtime {
    settings: RuntimeSettings,
    pub(super) executor: Executor,
}

#[cfg(feature = "inference")]
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

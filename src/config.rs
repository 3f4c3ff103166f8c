//! Board files, in two stages: [`RawBoard`] is the TOML as written (unknown keys and
//! unknown values refused by name), [`Board`] the validated result. This module only
//! reads the file, resolves its paths and names the file in errors; each subsystem
//! validates its own section (`Settings::from_raw`), so a bad board file fails at start
//! with the key named.
//!
//! Relative paths in a board file are relative to the file's own folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::actuate::{GpioSettings, RawGpio};
use crate::capture::{CaptureSettings, RawCapture};
use crate::daemon::{DaemonSettings, RawDaemon};
use crate::decide::{Policy, RawPolicy};
use crate::detect::{DetectorSettings, RawDetector};
use crate::engine::{RawRuntime, RuntimeSettings};
use crate::quality::{QualitySettings, RawQuality};
use crate::serial::{RawSerial, SerialSettings};
use crate::session::{RawSession, SessionSettings};
use crate::settings::KeyError;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("board file {path}: cannot read it: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("board file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("board file {path}: {error}")]
    Invalid { path: PathBuf, error: KeyError },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoard {
    pub name: String,
    pub models: RawModels,
    pub policy: RawPolicy,
    #[serde(default)]
    pub detector: RawDetector,
    pub capture: Option<RawCapture>,
    pub serial: Option<RawSerial>,
    pub gpio: Option<RawGpio>,
    #[serde(default)]
    pub session: RawSession,
    #[serde(default)]
    pub quality: RawQuality,
    #[serde(default)]
    pub daemon: RawDaemon,
    #[serde(default)]
    pub runtime: RawRuntime,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    pub detector: PathBuf,
    pub age: PathBuf,
}

/// A validated board.
#[derive(Debug, Clone)]
pub struct Board {
    pub name: String,
    pub path: PathBuf,
    pub detector_model: PathBuf,
    pub age_model: PathBuf,
    pub policy: Policy,
    pub detector: DetectorSettings,
    /// `None` when the board file has no `[capture]` (enough for `estimate` and `eval`).
    pub capture: Option<CaptureSettings>,
    pub serial: SerialSettings,
    pub gpio: Option<GpioSettings>,
    pub daemon: DaemonSettings,
    pub runtime: RuntimeSettings,
}

impl Board {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates board-file text; `path` resolves relative paths and names the
    /// file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawBoard = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                ConfigError::Parse {
                    path: path.to_path_buf(),
                    // toml's own message shows the line; the path names the key.
                    message: if key.is_empty() || key == "." {
                        inner.to_string()
                    } else {
                        format!("key `{key}`: {}", inner.message())
                    },
                }
            })?;
        Self::validate(raw, path)
    }

    pub fn validate(raw: RawBoard, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |error: KeyError| ConfigError::Invalid {
            path: path.to_path_buf(),
            error,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let existing_file = |key: &str, p: &Path| {
            let full = base.join(p);
            if full.is_file() {
                Ok(full)
            } else {
                Err(invalid(KeyError::new(
                    key,
                    format!("no such file: {}", full.display()),
                )))
            }
        };
        if raw.name.trim().is_empty() {
            return Err(invalid(KeyError::new("name", "is empty")));
        }
        let detector_model = existing_file("models.detector", &raw.models.detector)?;
        let age_model = existing_file("models.age", &raw.models.age)?;
        let capture = raw
            .capture
            .map(|mut c| {
                c.path = c.path.map(|p| base.join(p));
                c.device = c.device.map(|p| base.join(p));
                CaptureSettings::from_raw(c)
            })
            .transpose()
            .map_err(invalid)?;
        let serial = match raw.serial {
            None => SerialSettings::None,
            Some(mut s) => {
                s.path = s.path.map(|p| base.join(p));
                SerialSettings::from_raw(s).map_err(invalid)?
            }
        };
        let session = SessionSettings {
            quality: QualitySettings::from_raw(raw.quality).map_err(invalid)?,
            ..SessionSettings::from_raw(raw.session).map_err(invalid)?
        };
        Ok(Board {
            name: raw.name,
            path: path.to_path_buf(),
            detector_model,
            age_model,
            policy: Policy::from_raw(raw.policy).map_err(invalid)?,
            detector: DetectorSettings::from_raw(raw.detector).map_err(invalid)?,
            capture,
            serial,
            gpio: raw
                .gpio
                .map(GpioSettings::from_raw)
                .transpose()
                .map_err(invalid)?,
            daemon: DaemonSettings::from_raw(raw.daemon, session).map_err(invalid)?,
            runtime: RuntimeSettings::from_raw(raw.runtime).map_err(invalid)?,
        })
    }

    /// The most pixels an image may have to be decoded: `[capture] max_pixels`, also for
    /// the photo commands (`estimate`, `eval`, `crops`).
    pub fn max_pixels(&self) -> u64 {
        self.capture
            .as_ref()
            .map_or(crate::jpeg::DEFAULT_MAX_PIXELS, |c| c.max_pixels)
    }

    /// Makes the board's recording play over and over (`agegate run --loop`). A camera, or
    /// no `[capture]` at all, cannot loop.
    pub fn loop_recording(&mut self) -> Result<(), String> {
        match self.capture.as_mut() {
            None => Err("the board has no [capture] section".into()),
            Some(capture) => capture.loop_recording(),
        }
    }
}

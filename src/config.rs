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
use crate::digest::Sha256;
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
    /// SHA-256 the detector file must have (`agegate hash BOARD` prints it).
    pub detector_sha256: Option<String>,
    pub age_sha256: Option<String>,
}

/// One model file a board names, and the SHA-256 it pins it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// The board key of the pin, for messages.
    pub key: &'static str,
    pub path: PathBuf,
    pub pinned: Option<Sha256>,
}

/// A validated `[models]`: files that exist, pins that are hashes.
struct Models {
    detector: PathBuf,
    age: PathBuf,
    detector_sha256: Option<Sha256>,
    age_sha256: Option<Sha256>,
}

impl Models {
    fn from_raw(raw: &RawModels, base: &Path) -> Result<Self, KeyError> {
        let existing_file = |key: &str, p: &Path| {
            let full = base.join(p);
            if full.is_file() {
                Ok(full)
            } else {
                Err(KeyError::new(
                    key,
                    format!("no such file: {}", full.display()),
                ))
            }
        };
        let pin = |key: &str, text: &Option<String>| {
            text.as_deref()
                .map(|t| {
                    Sha256::parse_hex(t.trim()).ok_or_else(|| {
                        KeyError::new(
                            key,
                            format!("`{t}` is not a SHA-256 (64 hex digits, as sha256sum prints)"),
                        )
                    })
                })
                .transpose()
        };
        Ok(Self {
            detector: existing_file("models.detector", &raw.detector)?,
            age: existing_file("models.age", &raw.age)?,
            detector_sha256: pin("models.detector_sha256", &raw.detector_sha256)?,
            age_sha256: pin("models.age_sha256", &raw.age_sha256)?,
        })
    }

    fn files(self) -> [ModelFile; 2] {
        [
            ModelFile {
                key: "models.detector_sha256",
                path: self.detector,
                pinned: self.detector_sha256,
            },
            ModelFile {
                key: "models.age_sha256",
                path: self.age,
                pinned: self.age_sha256,
            },
        ]
    }
}

/// A validated board.
#[derive(Debug, Clone)]
pub struct Board {
    pub name: String,
    pub path: PathBuf,
    pub detector_model: PathBuf,
    pub age_model: PathBuf,
    /// What `[models]` pins the files to; checked where they are loaded and by the
    /// model-file guard, so a board never runs models it was not set up with.
    pub detector_sha256: Option<Sha256>,
    pub age_sha256: Option<Sha256>,
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
        Self::validate(Self::parse_raw(text, path)?, path)
    }

    /// Only the `[models]` of a board file: what `agegate hash` needs on a machine that
    /// lacks the board's camera or GPIO chip.
    pub fn load_model_files(path: &Path) -> Result<[ModelFile; 2], ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        let raw = Self::parse_raw(&text, path)?;
        let models = Models::from_raw(&raw.models, path.parent().unwrap_or(Path::new(".")))
            .map_err(|error| ConfigError::Invalid {
                path: path.to_path_buf(),
                error,
            })?;
        Ok(models.files())
    }

    fn parse_raw(text: &str, path: &Path) -> Result<RawBoard, ConfigError> {
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
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
        })
    }

    pub fn validate(raw: RawBoard, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |error: KeyError| ConfigError::Invalid {
            path: path.to_path_buf(),
            error,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if raw.name.trim().is_empty() {
            return Err(invalid(KeyError::new("name", "is empty")));
        }
        let models = Models::from_raw(&raw.models, base).map_err(invalid)?;
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
            detector_model: models.detector,
            age_model: models.age,
            detector_sha256: models.detector_sha256,
            age_sha256: models.age_sha256,
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

    /// The model files with the keys that pin them and their pins, detector first.
    pub fn model_files(&self) -> [ModelFile; 2] {
        Models {
            detector: self.detector_model.clone(),
            age: self.age_model.clone(),
            detector_sha256: self.detector_sha256,
            age_sha256: self.age_sha256,
        }
        .files()
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

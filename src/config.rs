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
pub use crate::digest::ModelFile;
use crate::digest::{existing_model_file, parse_pin, Sha256};
use crate::engine::{RawRuntime, RuntimeSettings};
use crate::input_file;
use crate::liveness::{LivenessConfig, RawLiveness};
use crate::mdb::{MdbSettings, RawMdb};
use crate::quality::{QualitySettings, RawQuality};
use crate::serial::{RawSerial, SerialSettings};
use crate::session::{RawSession, SessionSettings};
use crate::settings::KeyError;
use crate::telemetry::{RawTelemetry, TelemetrySettings};

/// The longest board `name`.
const MAX_NAME_CHARS: usize = 64;

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
    /// Absent when the models come from a bundle, which carries the policy.
    pub policy: Option<RawPolicy>,
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
    pub telemetry: Option<RawTelemetry>,
    #[serde(default)]
    pub liveness: RawLiveness,
    pub mdb: Option<RawMdb>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    pub detector: Option<PathBuf>,
    pub age: Option<PathBuf>,
    /// SHA-256 the detector file must have (`agegate hash BOARD` prints it).
    pub detector_sha256: Option<String>,
    pub age_sha256: Option<String>,
    /// Instead of the four keys above: the folder signed bundles are installed in
    /// (`agegate install-bundle`); the daemon runs the one its `current` link names.
    pub bundle: Option<PathBuf>,
    /// The minisign public key a bundle's signature is checked with.
    pub bundle_pubkey: Option<PathBuf>,
}

/// Where a bundle board's bundles go, and the key they are checked with: what
/// `agegate install-bundle` and `agegate rollback` need of a board file.
#[derive(Debug, Clone)]
pub struct BundleTarget {
    pub board: String,
    pub root: PathBuf,
    pub pubkey: PathBuf,
}

/// A validated `[models]`: files that exist, pins that are hashes.
struct Models {
    detector: PathBuf,
    age: PathBuf,
    detector_sha256: Option<Sha256>,
    age_sha256: Option<Sha256>,
}

impl Models {
    /// Validates `[models]`; a bundle board's models (and policy text) come from the bundle
    /// in `bundle_dir`, or, when that is `None`, the one installed as current.
    fn from_raw(
        raw: &RawModels,
        base: &Path,
        bundle_dir: Option<&Path>,
    ) -> Result<(Self, Option<String>), KeyError> {
        if let Some((root, pubkey)) = bundle_target(raw, base)? {
            let key = crate::bundle::read_public_key(&pubkey)
                .map_err(|e| KeyError::new("models.bundle_pubkey", e.to_string()))?;
            let installed = match bundle_dir {
                Some(dir) => crate::bundle::open_dir(dir, &key),
                None => crate::bundle::open_current(&root, &key),
            }
            .map_err(|e| KeyError::new("models.bundle", e.to_string()))?;
            let models = Self {
                detector: installed.detector(),
                age: installed.age(),
                detector_sha256: Some(installed.detector_sha256),
                age_sha256: Some(installed.age_sha256),
            };
            return Ok((models, Some(installed.policy_toml)));
        }
        let existing_file = |key: &str, p: &Option<PathBuf>| {
            let p = p.as_ref().ok_or_else(|| {
                KeyError::new(key, "missing: name the file (or give models.bundle)")
            })?;
            existing_model_file(key, base, p)
        };
        let pin = |key: &str, text: &Option<String>| parse_pin(key, text.as_deref());
        let models = Self {
            detector: existing_file("models.detector", &raw.detector)?,
            age: existing_file("models.age", &raw.age)?,
            detector_sha256: pin("models.detector_sha256", &raw.detector_sha256)?,
            age_sha256: pin("models.age_sha256", &raw.age_sha256)?,
        };
        Ok((models, None))
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

/// `[models] bundle` and its key, resolved against the board's folder; `None` for a board
/// that names its model files. The two ways exclude each other.
fn bundle_target(raw: &RawModels, base: &Path) -> Result<Option<(PathBuf, PathBuf)>, KeyError> {
    let Some(root) = &raw.bundle else {
        if raw.bundle_pubkey.is_some() {
            return Err(KeyError::new(
                "models.bundle_pubkey",
                "given without models.bundle",
            ));
        }
        return Ok(None);
    };
    let named: Vec<&str> = [
        ("detector", raw.detector.is_some()),
        ("age", raw.age.is_some()),
        ("detector_sha256", raw.detector_sha256.is_some()),
        ("age_sha256", raw.age_sha256.is_some()),
    ]
    .iter()
    .filter_map(|(k, given)| given.then_some(*k))
    .collect();
    if !named.is_empty() {
        return Err(KeyError::new(
            "models.bundle",
            format!(
                "the bundle holds the models and their hashes: remove models.{}",
                named.join(", models.")
            ),
        ));
    }
    let pubkey = raw.bundle_pubkey.as_ref().ok_or_else(|| {
        KeyError::new(
            "models.bundle_pubkey",
            "missing: a bundle board names the minisign public key its bundles are signed for",
        )
    })?;
    Ok(Some((base.join(root), base.join(pubkey))))
}

fn read_text(path: &Path) -> Result<String, ConfigError> {
    input_file::read_to_string(path, input_file::BOARD_FILE).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        cause: e.into(),
    })
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
    /// `None`: no `[telemetry]`, nothing leaves the unit but the serial line.
    pub telemetry: Option<TelemetrySettings>,
    /// `[liveness]`: its thresholds are also in `daemon.session.liveness`.
    pub liveness: LivenessConfig,
    /// `None`: no vending machine bus. Its floor is the policy's `min_request_age`.
    pub mdb: Option<MdbSettings>,
}

impl Board {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
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
        let text = read_text(path)?;
        let raw = Self::parse_raw(&text, path)?;
        let (models, _) =
            Models::from_raw(&raw.models, path.parent().unwrap_or(Path::new(".")), None).map_err(
                |error| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    error,
                },
            )?;
        Ok(models.files())
    }

    /// The board without its device sections (`[capture]`, `[serial]`, `[gpio]`,
    /// `[telemetry]`, `[mdb]`): its models, policy, detector and runtime, for tools that
    /// run on another machine than the board's (`agegate bundle` in the back office has
    /// no camera).
    pub fn load_without_devices(path: &Path) -> Result<Self, ConfigError> {
        Self::load_stripped(path, false)
    }

    /// The board as `agegate mdb-sim` runs it: its `[mdb]` kept, its camera, host line,
    /// GPIO and telemetry left out (the simulator brings its own scenes and a reporting
    /// gate, and a desk has no `/dev/video0`).
    pub fn load_for_simulation(path: &Path) -> Result<Self, ConfigError> {
        Self::load_stripped(path, true)
    }

    fn load_stripped(path: &Path, keep_mdb: bool) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        let raw = Self::parse_raw(&text, path)?;
        let raw = RawBoard {
            capture: None,
            serial: None,
            gpio: None,
            telemetry: None,
            mdb: if keep_mdb { raw.mdb } else { None },
            ..raw
        };
        Self::validate(raw, path)
    }

    /// A bundle board's `name`, bundle folder and key, without loading its bundle (there
    /// may be none installed yet).
    pub fn load_bundle_target(path: &Path) -> Result<BundleTarget, ConfigError> {
        let text = read_text(path)?;
        let raw = Self::parse_raw(&text, path)?;
        let invalid = |error: KeyError| ConfigError::Invalid {
            path: path.to_path_buf(),
            error,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let (root, pubkey) = bundle_target(&raw.models, base)
            .map_err(invalid)?
            .ok_or_else(|| {
                invalid(KeyError::new(
                    "models.bundle",
                    "missing: this board names its model files; give models.bundle and \
                 models.bundle_pubkey (instead of the files and pins) to install bundles",
                ))
            })?;
        Ok(BundleTarget {
            board: raw.name,
            root,
            pubkey,
        })
    }

    /// Loads a bundle board as it would run with the bundle staged in `bundle_dir`:
    /// what `agegate install-bundle` checks the model contract on before it commits.
    pub fn load_with_bundle(path: &Path, bundle_dir: &Path) -> Result<Self, ConfigError> {
        let text = read_text(path)?;
        Self::validate_from(Self::parse_raw(&text, path)?, path, Some(bundle_dir))
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
        Self::validate_from(raw, path, None)
    }

    fn validate_from(
        raw: RawBoard,
        path: &Path,
        bundle_dir: Option<&Path>,
    ) -> Result<Self, ConfigError> {
        let invalid = |error: KeyError| ConfigError::Invalid {
            path: path.to_path_buf(),
            error,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        if raw.name.trim().is_empty() {
            return Err(invalid(KeyError::new("name", "is empty")));
        }
        // The name goes into logs, events and bundle manifests: a line's worth of text.
        let chars = raw.name.chars().count();
        if chars > MAX_NAME_CHARS || raw.name.chars().any(char::is_control) {
            return Err(invalid(KeyError::new(
                "name",
                format!(
                    "{chars} characters: give at most {MAX_NAME_CHARS}, without control characters"
                ),
            )));
        }
        let (models, bundle_policy) =
            Models::from_raw(&raw.models, base, bundle_dir).map_err(invalid)?;
        let policy = match (raw.policy, bundle_policy) {
            (Some(policy), None) => Policy::from_raw(policy).map_err(invalid)?,
            (None, Some(text)) => Policy::from_toml(&text)
                .map_err(|e| invalid(KeyError::new("models.bundle", e.to_string())))?,
            (Some(_), Some(_)) => {
                return Err(invalid(KeyError::new(
                    "policy",
                    "the bundle (models.bundle) carries the policy: remove [policy] from \
                     the board file",
                )))
            }
            (None, None) => return Err(invalid(KeyError::new("policy", "missing section"))),
        };
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
        let liveness = LivenessConfig::from_raw(raw.liveness, base).map_err(invalid)?;
        let session = SessionSettings {
            quality: QualitySettings::from_raw(raw.quality).map_err(invalid)?,
            liveness: liveness.settings,
            ..SessionSettings::from_raw(raw.session).map_err(invalid)?
        };
        Ok(Board {
            name: raw.name,
            path: path.to_path_buf(),
            detector_model: models.detector,
            age_model: models.age,
            detector_sha256: models.detector_sha256,
            age_sha256: models.age_sha256,
            policy,
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
            telemetry: raw
                .telemetry
                .map(|t| TelemetrySettings::from_raw(t, base))
                .transpose()
                .map_err(invalid)?,
            liveness,
            mdb: raw
                .mdb
                .map(|mut m| {
                    m.device = m.device.map(|p| base.join(p));
                    m.path = m.path.map(|p| base.join(p));
                    MdbSettings::from_raw(m).map(|m| m.with_floor(policy.min_request_age()))
                })
                .transpose()
                .map_err(invalid)?,
        })
    }

    /// The model files with the keys that pin them and their pins: detector, age, then
    /// the liveness models `[liveness] mode` loads.
    pub fn model_files(&self) -> Vec<ModelFile> {
        let models = Models {
            detector: self.detector_model.clone(),
            age: self.age_model.clone(),
            detector_sha256: self.detector_sha256,
            age_sha256: self.age_sha256,
        };
        let mut files = models.files().to_vec();
        files.extend(self.liveness.model_files());
        files
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

//! Board files, in two stages: [`RawBoard`] is the TOML as written (unknown keys refused),
//! [`Board`] the validated result with every path resolved and every number checked, so a
//! bad board file fails at start with the key named.
//!
//! Relative paths in a board file are relative to the file's own folder.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::decide::Policy;
use crate::detect::DetectorSettings;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("board file {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("board file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("board file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoard {
    pub name: String,
    pub models: RawModels,
    pub policy: RawPolicy,
    #[serde(default)]
    pub detector: RawDetector,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModels {
    pub detector: PathBuf,
    pub age: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub legal_age: f32,
    pub challenge_age: f32,
    pub k_sigma: f32,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    pub score_threshold: Option<f32>,
    pub merge_iou: Option<f32>,
    pub canvas_scales: Option<Vec<f32>>,
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
}

impl Board {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw: RawBoard = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::validate(raw, path)
    }

    pub fn validate(raw: RawBoard, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let existing_file = |key: &str, p: &Path| {
            let full = base.join(p);
            if full.is_file() {
                Ok(full)
            } else {
                Err(invalid(key, format!("no such file: {}", full.display())))
            }
        };
        let detector_model = existing_file("models.detector", &raw.models.detector)?;
        let age_model = existing_file("models.age", &raw.models.age)?;
        let policy = Policy::new(
            raw.policy.legal_age,
            raw.policy.challenge_age,
            raw.policy.k_sigma,
        )
        .map_err(|e| invalid("policy", e.to_string()))?;
        let defaults = DetectorSettings::default();
        let score_threshold = raw
            .detector
            .score_threshold
            .unwrap_or(defaults.score_threshold);
        if !(score_threshold > 0.0 && score_threshold < 1.0) {
            return Err(invalid(
                "detector.score_threshold",
                format!("{score_threshold} is not in (0, 1)"),
            ));
        }
        let merge_iou = raw.detector.merge_iou.unwrap_or(defaults.merge_iou);
        if !(merge_iou > 0.0 && merge_iou < 1.0) {
            return Err(invalid(
                "detector.merge_iou",
                format!("{merge_iou} is not in (0, 1)"),
            ));
        }
        let canvas_scales = raw.detector.canvas_scales.unwrap_or(defaults.canvas_scales);
        if canvas_scales.is_empty()
            || canvas_scales
                .iter()
                .any(|s| !(s.is_finite() && *s >= 1.0 && *s <= 8.0))
        {
            return Err(invalid(
                "detector.canvas_scales",
                format!("{canvas_scales:?}: give one or more scales between 1 and 8"),
            ));
        }
        if raw.name.trim().is_empty() {
            return Err(invalid("name", "is empty".into()));
        }
        Ok(Board {
            name: raw.name,
            path: path.to_path_buf(),
            detector_model,
            age_model,
            policy,
            detector: DetectorSettings {
                score_threshold,
                merge_iou,
                canvas_scales,
            },
        })
    }
}

//! `[liveness]`: the mode, the models and their pins, and each cue's threshold, with the
//! range every threshold is held to.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest::Sha256;
use crate::digest::{existing_model_file, parse_pin};
use crate::settings::{in_range, KeyError};

/// `[liveness] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum LivenessMode {
    /// No presentation-attack check (the dev board: its recording is made of photos).
    #[serde(rename = "off")]
    Off,
    /// The passive models' scores only.
    #[serde(rename = "passive")]
    Passive,
    /// Passive scores, and planarity, stillness and blinks over the window.
    #[serde(rename = "passive+motion")]
    PassiveMotion,
}

impl LivenessMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Passive => "passive",
            Self::PassiveMotion => "passive+motion",
        }
    }

    pub fn motion(self) -> bool {
        self == Self::PassiveMotion
    }
}

/// `[liveness]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLiveness {
    pub mode: Option<LivenessMode>,
    /// The anti-spoof classifier (`models/antispoof.onnx`).
    pub antispoof: Option<PathBuf>,
    /// The liveness classifier (`models/liveness.onnx`).
    pub liveness: Option<PathBuf>,
    /// The face mesh, for the eye aspect ratio (`models/facemesh.onnx`; `passive+motion`).
    pub facemesh: Option<PathBuf>,
    /// SHA-256 each file must have (`sha256sum` prints it), as `[models]` pins its own.
    pub antispoof_sha256: Option<String>,
    pub liveness_sha256: Option<String>,
    pub facemesh_sha256: Option<String>,
    pub min_real: Option<f32>,
    pub min_live: Option<f32>,
    pub min_window_ms: Option<u64>,
    pub max_planar_residual: Option<f32>,
    pub max_tracked_residual: Option<f32>,
    pub min_motion: Option<f32>,
    pub blink_ratio: Option<f32>,
}

/// The thresholds of `[liveness]` (copied into every decision window).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct LivenessSettings {
    pub mode: LivenessMode,
    /// Median anti-spoof score below which the window is a spoof.
    pub min_real: f32,
    /// Median liveness score below which the window is a spoof.
    pub min_live: f32,
    /// The motion cues judge a window only once it spans this long (one person).
    pub min_window_ms: u64,
    /// Planarity: below this residual (inter-ocular distances) the keypoints moved as a
    /// plane does.
    pub max_planar_residual: f32,
    /// Planarity of the image points followed without a face prior ([`track`](super::track)): below
    /// this residual they moved as a plane does. Either planarity flags the window.
    pub max_tracked_residual: f32,
    /// Stillness: keypoints that moved less than this (inter-ocular distances) over the
    /// window did not move.
    pub min_motion: f32,
    /// A blink: the eye aspect ratio dips below this share of the window's open-eye
    /// ratio and comes back.
    pub blink_ratio: f32,
}

impl Default for LivenessSettings {
    /// Off; the thresholds are the ones `agegate eval --liveness` was run with (README
    /// "Liveness"), chosen on a run made from UTKFace *train* photos: `max_planar_residual`
    /// for at most 5 % of simulated moving heads referred, `max_tracked_residual` at their
    /// 3rd percentile (both together refer 4.6 % of them), `min_live` and `min_real`
    /// under the 1st percentile of real photos' scores (the passive models tell little).
    fn default() -> Self {
        Self {
            mode: LivenessMode::Off,
            min_real: 0.2,
            min_live: 0.3,
            min_window_ms: 1_000,
            max_planar_residual: 0.028,
            max_tracked_residual: 0.016,
            min_motion: 0.01,
            blink_ratio: 0.6,
        }
    }
}

// The ranges of the thresholds. Each has a floor at which its cue can still flag an attack
// (all at 0, a board's liveness flagged nothing and the attack recording was let through),
// from what README "Liveness" measured; the shipped thresholds lie well inside.

/// Passive scores (medians over the window, 0 to 1): the shipped 0.2 and 0.3 are already
/// under the 1st percentile of real photos' scores; under 0.05 a score would have to be
/// near certain of a spoof, which these models, that tell attacks from real photos hardly
/// at all, never are.
const MIN_REAL: std::ops::RangeInclusive<f32> = 0.05..=1.0;
const MIN_LIVE: std::ops::RangeInclusive<f32> = 0.05..=1.0;
/// Planarity of the mesh landmarks (inter-ocular distances): a plane's residual is the
/// landmarks' jitter, measured at 0.003-0.008; under its top a print is flagged only by
/// chance (moving prints' median is 0.013).
const MAX_PLANAR_RESIDUAL: std::ops::RangeInclusive<f32> = 0.008..=1.0;
/// Planarity of the followed points: they drift under 0.001 per frame step; at twice that
/// a plane still shows under the threshold (moving attacks' median is 0.006).
const MAX_TRACKED_RESIDUAL: std::ops::RangeInclusive<f32> = 0.002..=1.0;
/// Stillness: a print held still "moves" by the landmarks' jitter (0.003-0.008), so a
/// threshold under 0.005 calls hardly any of them still (the shipped 0.01 flags 89 %).
const MIN_MOTION: std::ops::RangeInclusive<f32> = 0.005..=1.0;
/// A blink outweighs planarity and stillness, so it is the threshold with a ceiling: near
/// 1 every flicker of the eye aspect ratio is a blink and no attack is flagged by motion. A
/// closed eye's ratio is well under half the open one's; 0.8 leaves room above the shipped
/// 0.6, 0.1 below it (a lower ratio only finds fewer blinks, which refers more).
const BLINK_RATIO: std::ops::RangeInclusive<f32> = 0.1..=0.8;

/// A validated `[liveness]`: thresholds, and the model files the mode needs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LivenessConfig {
    pub settings: LivenessSettings,
    pub antispoof: Option<PathBuf>,
    pub liveness: Option<PathBuf>,
    pub facemesh: Option<PathBuf>,
    /// The pins of the three files, in that order.
    pub pins: [Option<Sha256>; 3],
}

impl LivenessConfig {
    /// Validates `[liveness]`; relative model paths are resolved against `base`. A mode
    /// that needs a model file names it, and the file must exist: a board that asks for
    /// liveness never starts without it (fail closed).
    pub fn from_raw(raw: RawLiveness, base: &Path) -> Result<Self, KeyError> {
        let d = LivenessSettings::default();
        let mode = raw.mode.unwrap_or(d.mode);
        // NaN is in no range, so it is refused with the range named.
        let unit = |key: &str, v: Option<f32>, default: f32, range| {
            in_range(key, v.unwrap_or(default), range)
        };
        let settings = LivenessSettings {
            mode,
            min_real: unit("liveness.min_real", raw.min_real, d.min_real, MIN_REAL)?,
            min_live: unit("liveness.min_live", raw.min_live, d.min_live, MIN_LIVE)?,
            min_window_ms: in_range(
                "liveness.min_window_ms",
                raw.min_window_ms.unwrap_or(d.min_window_ms),
                100..=10_000,
            )?,
            max_planar_residual: unit(
                "liveness.max_planar_residual",
                raw.max_planar_residual,
                d.max_planar_residual,
                MAX_PLANAR_RESIDUAL,
            )?,
            max_tracked_residual: unit(
                "liveness.max_tracked_residual",
                raw.max_tracked_residual,
                d.max_tracked_residual,
                MAX_TRACKED_RESIDUAL,
            )?,
            min_motion: unit(
                "liveness.min_motion",
                raw.min_motion,
                d.min_motion,
                MIN_MOTION,
            )?,
            blink_ratio: unit(
                "liveness.blink_ratio",
                raw.blink_ratio,
                d.blink_ratio,
                BLINK_RATIO,
            )?,
        };
        let file = |key: &str, path: Option<PathBuf>, needed: bool| match path {
            None if needed => Err(KeyError::new(
                key,
                format!(
                    "missing: `mode = \"{}\"` needs this model file",
                    mode.name()
                ),
            )),
            None => Ok(None),
            Some(p) => existing_model_file(key, base, &p).map(Some),
        };
        let pin = |key: &str, text: Option<String>| parse_pin(key, text.as_deref());
        let passive = mode != LivenessMode::Off;
        // With the mode off the files are not loaded, so they are neither needed nor held
        // to their pins.
        Ok(Self {
            settings,
            antispoof: file(
                "liveness.antispoof",
                raw.antispoof.filter(|_| passive),
                passive,
            )?,
            liveness: file(
                "liveness.liveness",
                raw.liveness.filter(|_| passive),
                passive,
            )?,
            facemesh: file(
                "liveness.facemesh",
                raw.facemesh.filter(|_| mode.motion()),
                mode.motion(),
            )?,
            pins: [
                pin("liveness.antispoof_sha256", raw.antispoof_sha256)?,
                pin("liveness.liveness_sha256", raw.liveness_sha256)?,
                pin("liveness.facemesh_sha256", raw.facemesh_sha256)?,
            ],
        })
    }

    /// The files the mode loads, with the keys that pin them and their pins.
    pub fn model_files(&self) -> Vec<crate::digest::ModelFile> {
        let keys = [
            "liveness.antispoof_sha256",
            "liveness.liveness_sha256",
            "liveness.facemesh_sha256",
        ];
        [&self.antispoof, &self.liveness, &self.facemesh]
            .into_iter()
            .zip(keys)
            .zip(self.pins)
            .filter_map(|((path, key), pinned)| {
                path.clone()
                    .map(|path| crate::digest::ModelFile { key, path, pinned })
            })
            .collect()
    }
}

//! `[session]`: how a decision window behaves, as written and as validated.

use serde::Deserialize;

use crate::liveness::LivenessSettings;
use crate::quality::QualitySettings;
use crate::settings::KeyError;

/// Largest window the fixed-size sample buffer holds.
pub(crate) const MAX_WINDOW: usize = 64;

/// How a decision window behaves. Validate with [`SessionSettings::validate`] (done by
/// [`Session::new`](super::Session::new)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionSettings {
    /// What starts a decision window.
    pub trigger: Trigger,
    /// Estimates of one person needed before deciding.
    pub min_frames: usize,
    /// Estimates kept; older ones are dropped (at most 64).
    pub max_frames: usize,
    /// From the start of the session to a REFER if no decision was reached.
    pub timeout_ms: u64,
    /// IoU with the followed face below which a face is someone else, in (0, 1].
    pub iou_threshold: f32,
    /// No face for longer than this and the next face is someone else.
    pub lost_face_ms: u64,
    /// What another face in view does to the window.
    pub other_faces: OtherFaces,
    /// Other faces narrower than this (box width, source pixels) do not count.
    pub other_face_min_px: f32,
    /// A frame whose main face fails this gate does not count (`[quality]`).
    pub quality: QualitySettings,
    /// Presentation-attack checks over the window (`[liveness]`; off by default).
    pub liveness: LivenessSettings,
}

/// `[session] trigger`: what starts a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A REQUEST from the host (kiosk, vending machine).
    Request,
    /// A face in view (a door without a host); DECISIONs go out unsolicited.
    Face,
}

/// `[session]` as written (defaults in `SessionSettings::default`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub trigger: Option<Trigger>,
    pub min_frames: Option<usize>,
    pub max_frames: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub iou_threshold: Option<f32>,
    pub lost_face_ms: Option<u64>,
    /// "refer" (default) or "ignore": another face in view.
    pub other_faces: Option<OtherFaces>,
    pub other_face_min_px: Option<f32>,
}

/// `[session] other_faces`: whether another face in view stops the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtherFaces {
    /// Only the main face counts (a door that lets one person through at a time anyway).
    Ignore,
    /// Another face decides REFER: a minor beside an adult is not let through on the
    /// adult's face (vending, kiosks).
    Refer,
}

impl Default for SessionSettings {
    fn default() -> Self {
        // At ~15 fps: a third of a second of frames, a 4 s answer at the latest, and a
        // half-second gap is long enough for someone to step out and another in.
        Self {
            trigger: Trigger::Request,
            min_frames: 5,
            max_frames: 15,
            timeout_ms: 4_000,
            iou_threshold: 0.3,
            lost_face_ms: 500,
            other_faces: OtherFaces::Refer,
            other_face_min_px: 48.0,
            quality: QualitySettings::default(),
            liveness: LivenessSettings::default(),
        }
    }
}

/// `session.timeout_ms`: a tenth of a second sees at least a frame at 15 fps; an hour is
/// the longest a host could want to wait on one person (a waiting session holds nothing
/// open: the gate stays closed), and keeps the time arithmetic far from overflow.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// `session.lost_face_ms`: a face gone for a minute is someone else's when it comes back.
const LOST_FACE_MS: std::ops::RangeInclusive<u64> = 1..=60_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionSettingsError {
    #[error("session.min_frames ({0}) must be at least 1")]
    MinFrames(usize),
    #[error(
        "session.max_frames ({max}) must be at least min_frames ({min}) and at most {MAX_WINDOW}"
    )]
    MaxFrames { min: usize, max: usize },
    #[error("session.timeout_ms ({0}) must be from {lo} to {hi}", lo = TIMEOUT_MS.start(), hi = TIMEOUT_MS.end())]
    TimeoutMs(u64),
    #[error("session.iou_threshold ({0}) must be a number in (0, 1]")]
    IouThreshold(f32),
    #[error("session.lost_face_ms ({0}) must be from {lo} to {hi}", lo = LOST_FACE_MS.start(), hi = LOST_FACE_MS.end())]
    LostFaceMs(u64),
    #[error("session.other_face_min_px ({0}) must be a number from 1 to 10000")]
    OtherFaceMinPx(f32),
}

impl SessionSettings {
    pub fn from_raw(raw: RawSession) -> Result<Self, KeyError> {
        let d = Self::default();
        let settings = Self {
            trigger: raw.trigger.unwrap_or(d.trigger),
            min_frames: raw.min_frames.unwrap_or(d.min_frames),
            max_frames: raw.max_frames.unwrap_or(d.max_frames),
            timeout_ms: raw.timeout_ms.unwrap_or(d.timeout_ms),
            iou_threshold: raw.iou_threshold.unwrap_or(d.iou_threshold),
            lost_face_ms: raw.lost_face_ms.unwrap_or(d.lost_face_ms),
            other_faces: raw.other_faces.unwrap_or(d.other_faces),
            other_face_min_px: raw.other_face_min_px.unwrap_or(d.other_face_min_px),
            quality: d.quality,
            liveness: d.liveness,
        };
        settings
            .validate()
            .map_err(|e| KeyError::new(Self::key(&e), e.to_string()))?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SessionSettingsError> {
        if self.min_frames == 0 {
            return Err(SessionSettingsError::MinFrames(self.min_frames));
        }
        if self.max_frames < self.min_frames || self.max_frames > MAX_WINDOW {
            return Err(SessionSettingsError::MaxFrames {
                min: self.min_frames,
                max: self.max_frames,
            });
        }
        if !TIMEOUT_MS.contains(&self.timeout_ms) {
            return Err(SessionSettingsError::TimeoutMs(self.timeout_ms));
        }
        if !(self.iou_threshold > 0.0 && self.iou_threshold <= 1.0) {
            return Err(SessionSettingsError::IouThreshold(self.iou_threshold));
        }
        if !LOST_FACE_MS.contains(&self.lost_face_ms) {
            return Err(SessionSettingsError::LostFaceMs(self.lost_face_ms));
        }
        if !(1.0..=10_000.0).contains(&self.other_face_min_px) {
            return Err(SessionSettingsError::OtherFaceMinPx(self.other_face_min_px));
        }
        Ok(())
    }

    /// The key this error names, as the board file spells it.
    pub fn key(error: &SessionSettingsError) -> &'static str {
        match error {
            SessionSettingsError::MinFrames(_) => "session.min_frames",
            SessionSettingsError::MaxFrames { .. } => "session.max_frames",
            SessionSettingsError::TimeoutMs(_) => "session.timeout_ms",
            SessionSettingsError::IouThreshold(_) => "session.iou_threshold",
            SessionSettingsError::LostFaceMs(_) => "session.lost_face_ms",
            SessionSettingsError::OtherFaceMinPx(_) => "session.other_face_min_px",
        }
    }
}

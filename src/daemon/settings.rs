//! `[daemon]`: the frame loop's timings and fault limits.

use serde::Deserialize;

use crate::session::SessionSettings;
use crate::settings::{in_range, KeyError};

/// `[daemon]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub heartbeat_ms: Option<u64>,
    pub model_check_ms: Option<u64>,
    pub model_hash_ms: Option<u64>,
    pub reopen_backoff_ms: Option<u64>,
    pub max_backoff_ms: Option<u64>,
    pub max_bad_frames: Option<u32>,
    pub max_model_errors: Option<u32>,
}

/// The daemon's settings: the decision window (`[session]`) and `[daemon]`.
#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    pub session: SessionSettings,
    /// A HEARTBEAT every this many ms of wall time.
    pub heartbeat_ms: u64,
    /// Size and modification time of the model files are compared this often.
    pub model_check_ms: u64,
    /// The model files' SHA-256 is recomputed this often (and whenever size or mtime
    /// change).
    pub model_hash_ms: u64,
    /// The first wait before reopening a lost camera or serial line; doubled on each
    /// failure up to `max_backoff_ms`.
    pub reopen_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Undecodable frames in a row that count as a camera fault.
    pub max_bad_frames: u32,
    /// Inference errors in a row after which the daemon exits for a restart.
    pub max_model_errors: u32,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            session: SessionSettings::default(),
            heartbeat_ms: 1_000,
            model_check_ms: 2_000,
            model_hash_ms: 60_000,
            reopen_backoff_ms: 250,
            max_backoff_ms: 8_000,
            max_bad_frames: 30,
            max_model_errors: 5,
        }
    }
}

impl DaemonSettings {
    pub fn from_raw(raw: RawDaemon, session: SessionSettings) -> Result<Self, KeyError> {
        let d = Self::default();
        // A guard must notice a replaced model within a minute; a heartbeat slower than a
        // minute tells a host nothing.
        let ms = |key: &str, v: Option<u64>, default: u64, max: u64| {
            in_range(key, v.unwrap_or(default), 1..=max)
        };
        let reopen_backoff_ms = ms(
            "daemon.reopen_backoff_ms",
            raw.reopen_backoff_ms,
            d.reopen_backoff_ms,
            60_000,
        )?;
        let max_backoff_ms = ms(
            "daemon.max_backoff_ms",
            raw.max_backoff_ms,
            d.max_backoff_ms,
            3_600_000,
        )?;
        if max_backoff_ms < reopen_backoff_ms {
            return Err(KeyError::new(
                "daemon.max_backoff_ms",
                "must be at least reopen_backoff_ms",
            ));
        }
        // Zero faults allowed would mean "fault before the first try"; it was once raised
        // to 1 silently, which hid a typo.
        let count = |key: &str, v: Option<u32>, default: u32| {
            in_range(key, v.unwrap_or(default), 1..=10_000)
        };
        Ok(Self {
            session,
            heartbeat_ms: ms(
                "daemon.heartbeat_ms",
                raw.heartbeat_ms,
                d.heartbeat_ms,
                60_000,
            )?,
            model_check_ms: ms(
                "daemon.model_check_ms",
                raw.model_check_ms,
                d.model_check_ms,
                60_000,
            )?,
            model_hash_ms: in_range(
                "daemon.model_hash_ms",
                raw.model_hash_ms.unwrap_or(d.model_hash_ms),
                1_000..=3_600_000,
            )?,
            reopen_backoff_ms,
            max_backoff_ms,
            max_bad_frames: count(
                "daemon.max_bad_frames",
                raw.max_bad_frames,
                d.max_bad_frames,
            )?,
            max_model_errors: count(
                "daemon.max_model_errors",
                raw.max_model_errors,
                d.max_model_errors,
            )?,
        })
    }
}

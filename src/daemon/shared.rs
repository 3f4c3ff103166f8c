//! What the daemon shares with other threads (telemetry) and reports at exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::decide::Policy;

/// The frame counters, readable from another thread while the daemon runs (telemetry's
/// `health`).
#[derive(Debug, Default)]
pub struct LiveCounters {
    pub frames: AtomicU64,
    pub bad_frames: AtomicU64,
    pub inferences: AtomicU64,
    /// The MDB link's counters, on a board with `[mdb]`.
    pub mdb: std::sync::OnceLock<Arc<std::sync::Mutex<crate::mdb::MdbHealth>>>,
}

/// A policy validated elsewhere (telemetry's `policy/set`) waiting to be applied between
/// decisions; `applied` counts the policies the daemon has taken.
#[derive(Debug, Default)]
pub struct PolicyMailbox {
    pub(super) waiting: std::sync::Mutex<Option<Policy>>,
    pub(super) applied: AtomicU64,
}

impl PolicyMailbox {
    /// Leaves `policy` for the daemon; a newer one replaces one not yet taken.
    pub fn offer(&self, policy: Policy) {
        *self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(policy);
    }

    /// How many offered policies the daemon has applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }
}

/// Counters for the log line at exit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DaemonStats {
    pub frames: u64,
    pub bad_frames: u64,
    pub inferences: u64,
    pub decisions: u64,
    pub faults: u64,
}

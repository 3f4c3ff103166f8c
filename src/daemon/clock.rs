//! The daemon's clock. Decision windows, relay pulses, heartbeats and reconnect backoff
//! all take "now" from here, so tests and recordings run on simulated time.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::capture::FrameMeta;

pub trait Clock {
    /// Milliseconds since an arbitrary origin; never decreases.
    fn now_ms(&self) -> u64;
    /// Waits `ms` (a simulated clock just moves on).
    fn sleep_ms(&self, ms: u64);
    /// A frame arrived; a recording's clock follows its timestamps.
    fn observe_frame(&self, _meta: &FrameMeta) {}
}

/// Wall time: `Instant` (monotonic). Clones share the origin.
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(Duration::from_millis(ms));
    }
}

/// Simulated time for recordings and tests: it is what the last frame's timestamp
/// says (never going back), plus any time slept since. Clones share the time (a test
/// gives the daemon one as its frame clock and one as its wall clock).
#[derive(Debug, Default, Clone)]
pub struct RecordingClock {
    now: Rc<Cell<u64>>,
}

impl Clock for RecordingClock {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn sleep_ms(&self, ms: u64) {
        self.now.set(self.now.get().saturating_add(ms));
    }
    fn observe_frame(&self, meta: &FrameMeta) {
        if let Some(t) = meta.timestamp_ms {
            self.now.set(self.now.get().max(t));
        }
    }
}

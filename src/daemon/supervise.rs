//! What keeps the daemon honest from outside the frame loop: the systemd watchdog, the
//! shutdown signals, and a guard on the model files it loaded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// systemd's service manager, or nothing.
pub trait Watchdog {
    /// Start-up is done (models loaded, first frame in).
    fn ready(&mut self);
    /// The frame loop is alive; called once per loop turn.
    fn alive(&mut self, now_ms: u64);
    fn stopping(&mut self);
}

/// `sd_notify`: READY=1, WATCHDOG=1 at half the unit's `WatchdogSec`, STOPPING=1. Without
/// `NOTIFY_SOCKET` (not under systemd) every call does nothing.
pub struct SystemdWatchdog {
    interval_ms: Option<u64>,
    last_ms: Option<u64>,
}

impl SystemdWatchdog {
    pub fn from_env() -> Self {
        let mut usec = 0;
        let interval_ms =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| (usec / 2_000).max(1));
        Self {
            interval_ms,
            last_ms: None,
        }
    }

    fn notify(state: sd_notify::NotifyState) {
        if let Err(e) = sd_notify::notify(false, &[state]) {
            tracing::warn!("sd_notify: {e}");
        }
    }
}

impl Watchdog for SystemdWatchdog {
    fn ready(&mut self) {
        Self::notify(sd_notify::NotifyState::Ready);
    }
    fn alive(&mut self, now_ms: u64) {
        let Some(interval) = self.interval_ms else {
            return;
        };
        if self
            .last_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= interval)
        {
            Self::notify(sd_notify::NotifyState::Watchdog);
            self.last_ms = Some(now_ms);
        }
    }
    fn stopping(&mut self) {
        Self::notify(sd_notify::NotifyState::Stopping);
    }
}

/// No service manager (tests).
#[derive(Debug, Default)]
pub struct NoWatchdog;

impl Watchdog for NoWatchdog {
    fn ready(&mut self) {}
    fn alive(&mut self, _now_ms: u64) {}
    fn stopping(&mut self) {}
}

/// How many shutdown signals (SIGTERM, SIGINT) have arrived. The first asks for a
/// graceful stop (the pending REQUEST is answered, the gate closed); the second for an
/// immediate one (the gate is still closed on the way out, nothing else is sent).
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicUsize>);

impl StopSignal {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
    /// What a signal does; tests call it to stop mid-decision.
    pub fn raise(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts SIGTERM and SIGINT from a watcher thread (no work in a signal handler).
    pub fn install() -> std::io::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let stop = Self::default();
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let counter = stop.clone();
        std::thread::Builder::new()
            .name("agegate-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    tracing::warn!(signal, "shutdown signal");
                    counter.raise();
                }
            })?;
        Ok(stop)
    }
}

/// Whether the model files are still the ones loaded.
pub trait ModelGuard {
    /// `Err` names the file that changed or went away.
    fn check(&mut self) -> Result<(), String>;
}

/// Size and modification time of each loaded model file, compared on every check
/// (two `stat` calls, cheap enough for every couple of seconds). A replaced or
/// truncated file means the running graph no longer matches the file on disk: the
/// daemon faults and exits so that systemd restarts it on the new file, which must
/// then pass the loader's checks.
pub struct ModelFiles {
    files: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

impl ModelFiles {
    pub fn snapshot(paths: &[PathBuf]) -> Result<Self, String> {
        let files = paths
            .iter()
            .map(|p| {
                let meta = std::fs::metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Ok((p.clone(), meta.len(), meta.modified().ok()))
            })
            .collect::<Result<_, String>>()?;
        Ok(Self { files })
    }
}

impl ModelGuard for ModelFiles {
    fn check(&mut self) -> Result<(), String> {
        for (path, len, modified) in &self.files {
            let meta = std::fs::metadata(path)
                .map_err(|e| format!("model file {}: {e}", path.display()))?;
            if meta.len() != *len || meta.modified().ok() != *modified {
                return Err(format!(
                    "model file {} changed on disk since it was loaded",
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_model_file_is_caught() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"original").expect("write");
        let mut guard = ModelFiles::snapshot(std::slice::from_ref(&path)).expect("snapshot");
        assert_eq!(guard.check(), Ok(()));
        std::fs::write(&path, b"replaced, longer").expect("write");
        assert!(guard.check().is_err_and(|e| e.contains("changed")));
        std::fs::remove_file(&path).expect("rm");
        assert!(guard.check().is_err());
    }
}

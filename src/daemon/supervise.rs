//! What keeps the daemon honest from outside the frame loop: the systemd watchdog, the
//! shutdown signals, and a guard on the model files it loaded.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use crate::digest::Sha256;

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

/// The signals that stop the daemon: every signal whose default action ends the process
/// and that a handler may catch, except those the kernel raises for a fault in the
/// program itself (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGSYS, SIGABRT: a handler
/// cannot resume from them safely). Each takes the path SIGTERM takes: relay off, FAULT
/// shutdown to the host, exit 0. So do the job-control stops (SIGTSTP, SIGTTIN, SIGTTOU),
/// whose default suspends the process with the relay as it was: a suspended daemon holds
/// a door open and answers no host, so it ends instead, gate closed (systemd restarts it).
/// SIGKILL and SIGSTOP cannot be caught; what they and a power loss leave is the relay
/// module's own fail-safe wiring (README, "Wiring").
pub const STOP_SIGNALS: &[(libc::c_int, &str)] = &[
    (libc::SIGHUP, "SIGHUP"),
    (libc::SIGINT, "SIGINT"),
    (libc::SIGQUIT, "SIGQUIT"),
    (libc::SIGTERM, "SIGTERM"),
    (libc::SIGUSR1, "SIGUSR1"),
    (libc::SIGUSR2, "SIGUSR2"),
    (libc::SIGPIPE, "SIGPIPE"),
    (libc::SIGALRM, "SIGALRM"),
    (libc::SIGXCPU, "SIGXCPU"),
    (libc::SIGXFSZ, "SIGXFSZ"),
    (libc::SIGVTALRM, "SIGVTALRM"),
    (libc::SIGPROF, "SIGPROF"),
    (libc::SIGIO, "SIGIO"),
    (libc::SIGTSTP, "SIGTSTP"),
    (libc::SIGTTIN, "SIGTTIN"),
    (libc::SIGTTOU, "SIGTTOU"),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    (libc::SIGPWR, "SIGPWR"),
    #[cfg(any(target_os = "linux", target_os = "android"))]
    (libc::SIGSTKFLT, "SIGSTKFLT"),
];

/// The name of a stop signal, for the log.
pub(crate) fn signal_name(signal: libc::c_int) -> &'static str {
    STOP_SIGNALS
        .iter()
        .find(|(n, _)| *n == signal)
        .map_or("a signal", |(_, name)| name)
}

/// How many stop signals ([`STOP_SIGNALS`]) have arrived, and the first one. The first
/// asks for a graceful stop (FAULT shutdown to the host, the pending REQUEST answered,
/// the gate closed); the second for an immediate one (the gate is still closed on the
/// way out, nothing else is sent).
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    count: Arc<AtomicUsize>,
    first: Arc<AtomicI32>,
}

impl StopSignal {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// The first signal's name, once one has arrived.
    pub fn first(&self) -> Option<&'static str> {
        match self.first.load(Ordering::SeqCst) {
            0 => None,
            n => Some(signal_name(n)),
        }
    }

    /// What a signal does; tests call it to stop mid-decision.
    pub fn raise(&self) {
        self.raise_signal(libc::SIGTERM);
    }

    fn raise_signal(&self, signal: libc::c_int) {
        let _ = self
            .first
            .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts every stop signal from a watcher thread (no work in a signal handler).
    pub fn install() -> std::io::Result<Self> {
        let stop = Self::default();
        let mut signals =
            signal_hook::iterator::Signals::new(STOP_SIGNALS.iter().map(|(n, _)| *n))?;
        let counter = stop.clone();
        std::thread::Builder::new()
            .name("agegate-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    tracing::warn!(signal = signal_name(signal), "stop signal");
                    counter.raise_signal(signal);
                }
            })?;
        Ok(stop)
    }
}

/// Whether the model files are still the ones loaded.
pub trait ModelGuard {
    /// `Err` names the file that changed or went away. `now_ms` is the daemon's clock.
    fn check(&mut self, now_ms: u64) -> Result<(), String>;
}

/// One loaded model file as it was at start.
struct Loaded {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    sha256: Sha256,
}

/// The loaded model files' size, modification time and SHA-256 at start. Every check
/// compares size and mtime (two `stat` calls); when either changed, and every
/// `hash_every_ms` regardless, the content's hash is compared too, so a file rewritten in
/// place with its old size and mtime restored is caught, and a file merely touched is
/// not a fault. A changed file means the running graph no longer matches the file on
/// disk: the daemon faults and exits so that systemd restarts it on the new file, which
/// must then pass the loader's checks.
pub struct ModelFiles {
    files: Vec<Loaded>,
    hash_every_ms: u64,
    next_hash_ms: Option<u64>,
}

impl ModelFiles {
    /// `files`: each path with the SHA-256 the board pins for it, if any; a file that does
    /// not hash to its pin is refused here too (the loader checked it a moment before).
    pub fn snapshot(
        files: &[(PathBuf, Option<Sha256>)],
        hash_every_ms: u64,
    ) -> Result<Self, String> {
        let files = files
            .iter()
            .map(|(p, pin)| {
                let fail = |e: std::io::Error| format!("model file {}: {e}", p.display());
                let meta = std::fs::metadata(p).map_err(fail)?;
                let sha256 = Sha256::of_file(p).map_err(fail)?;
                if let Some(pin) = pin.filter(|pin| *pin != sha256) {
                    return Err(format!(
                        "model file {}: SHA-256 {sha256}, but the board pins {pin}",
                        p.display()
                    ));
                }
                Ok(Loaded {
                    path: p.clone(),
                    len: meta.len(),
                    modified: meta.modified().ok(),
                    sha256,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(Self {
            files,
            hash_every_ms,
            next_hash_ms: None,
        })
    }
}

impl ModelGuard for ModelFiles {
    fn check(&mut self, now_ms: u64) -> Result<(), String> {
        let next_hash = *self
            .next_hash_ms
            .get_or_insert(now_ms.saturating_add(self.hash_every_ms));
        let hash_all = now_ms >= next_hash;
        if hash_all {
            self.next_hash_ms = Some(now_ms.saturating_add(self.hash_every_ms));
        }
        for file in &mut self.files {
            let gone = |e: std::io::Error| format!("model file {}: {e}", file.path.display());
            let meta = std::fs::metadata(&file.path).map_err(gone)?;
            let modified = meta.modified().ok();
            let stat_changed = meta.len() != file.len || modified != file.modified;
            if !(stat_changed || hash_all) {
                continue;
            }
            let sha256 = Sha256::of_file(&file.path).map_err(gone)?;
            if sha256 != file.sha256 {
                return Err(format!(
                    "model file {} changed on disk since it was loaded (SHA-256 {} at start, {sha256} now)",
                    file.path.display(),
                    file.sha256,
                ));
            }
            // Same content (touched, or copied over with the same bytes): not a fault.
            file.modified = modified;
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
        let mut guard = ModelFiles::snapshot(&[(path.clone(), None)], 60_000).expect("snapshot");
        assert_eq!(guard.check(0), Ok(()));
        std::fs::write(&path, b"replaced, longer").expect("write");
        assert!(guard.check(1).is_err_and(|e| e.contains("changed")));
        std::fs::remove_file(&path).expect("rm");
        assert!(guard.check(2).is_err());
    }

    #[test]
    fn the_hash_catches_what_size_and_mtime_miss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"weights A").expect("write");
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .expect("mtime");
        let mut guard = ModelFiles::snapshot(&[(path.clone(), None)], 1_000).expect("snapshot");
        assert_eq!(guard.check(0), Ok(()));
        // Same length, mtime put back: only the periodic hash sees it.
        std::fs::write(&path, b"weights B").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(mtime))
            .expect("restore mtime");
        assert_eq!(guard.check(500), Ok(()), "not yet due");
        let err = guard.check(1_000).expect_err("due: the hash differs");
        assert!(err.contains("SHA-256"), "{err}");

        // Touched with the same bytes: size or mtime differ, the hash does not.
        std::fs::write(&path, b"weights A").expect("write");
        let mut guard = ModelFiles::snapshot(&[(path.clone(), None)], 1_000).expect("snapshot");
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(mtime - std::time::Duration::from_secs(60)))
            .expect("touch");
        assert_eq!(guard.check(10), Ok(()));
        assert_eq!(guard.check(2_000), Ok(()));
    }

    #[test]
    fn a_file_that_does_not_hash_to_its_pin_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, b"weights").expect("write");
        let right = Sha256::of_bytes(b"weights");
        assert!(ModelFiles::snapshot(&[(path.clone(), Some(right))], 1_000).is_ok());
        let wrong = Sha256::of_bytes(b"other weights");
        let err = ModelFiles::snapshot(&[(path.clone(), Some(wrong))], 1_000)
            .err()
            .expect("a wrong pin is refused");
        assert!(
            err.contains("m.onnx")
                && err.contains(&right.to_string())
                && err.contains(&wrong.to_string()),
            "{err}"
        );
    }
}

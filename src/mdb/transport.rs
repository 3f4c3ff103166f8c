//! Transports: how the bus's 9-bit words reach the AVD. The logic above them takes words
//! and times; a transport moves words and stamps them with the [`BusClock`].
//!
//! * `uart`: the bus on a UART, the mode bit as mark/space parity (the real one);
//! * `stream`: two bytes a word over a pty, a USB bridge or a Unix socket
//!   (docs/mdb.md "`stream`: two bytes a word");
//! * [`memory`]: an in-process pair, the VMC's end and the AVD's, for tests and the VMC
//!   simulator; a word carries the time the VMC put it on the bus.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{Micros, Word};

/// The clock every stamp on one bus comes from (shared by both ends of a [`memory`]
/// pair): monotonic time, or for tests a time that moves only when told
/// ([`BusClock::manual`]), so the thread's own scheduling cannot make a test late.
#[derive(Debug, Clone)]
pub enum BusClock {
    Monotonic(Instant),
    Manual(Arc<AtomicU64>),
}

impl Default for BusClock {
    fn default() -> Self {
        Self::Monotonic(Instant::now())
    }
}

impl BusClock {
    /// A clock at `start` µs that moves only by [`BusClock::advance`].
    pub fn manual(start: u64) -> Self {
        Self::Manual(Arc::new(AtomicU64::new(start)))
    }

    pub fn now(&self) -> Micros {
        match self {
            Self::Monotonic(origin) => {
                Micros(u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX))
            }
            Self::Manual(us) => Micros(us.load(Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock on by `us`; a monotonic one moves by itself.
    pub fn advance(&self, us: u64) {
        if let Self::Manual(now) = self {
            now.fetch_add(us, Ordering::SeqCst);
        }
    }
}

/// What came off the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    Word(Word, Micros),
    /// The VMC held the line in break: every peripheral resets.
    BusReset,
    /// Bytes that are no word (a stream's mode byte other than 0 or 1, a UART's parity
    /// marking cut short); dropped and counted.
    Noise,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("MDB {name}: {message}")]
pub struct TransportError {
    pub name: String,
    pub message: String,
}

impl TransportError {
    pub(crate) fn new(name: &str, message: impl std::fmt::Display) -> Self {
        Self {
            name: name.to_string(),
            message: message.to_string(),
        }
    }
}

/// The AVD's side of the bus.
pub trait Transport: Send {
    fn name(&self) -> &str;
    /// Waits at most `wait` for the bus, then appends what came to `into`. Returns the
    /// time up to which the line is known: every word that arrived before it is in
    /// `into` (or was handed over earlier), so the line was quiet from the last of them to
    /// it.
    fn receive(&mut self, wait: Duration, into: &mut Vec<Heard>) -> Result<Micros, TransportError>;
    /// Puts `words` on the bus, in order.
    fn send(&mut self, words: &[Word]) -> Result<(), TransportError>;
    /// Tries to get the bus back after an error.
    fn reopen(&mut self) -> Result<(), TransportError>;
}

pub mod memory {
    //! An in-process bus: [`pair`] gives the AVD's [`Transport`] and the VMC's end.

    use super::*;

    #[derive(Debug, Default)]
    struct Lines {
        to_avd: VecDeque<Heard>,
        to_vmc: VecDeque<(Word, Micros)>,
        closed: bool,
    }

    #[derive(Debug, Default)]
    struct Shared {
        lines: Mutex<Lines>,
        wake: Condvar,
    }

    impl Shared {
        fn lock(&self) -> std::sync::MutexGuard<'_, Lines> {
            self.lines
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    /// The AVD's end.
    #[derive(Debug)]
    pub struct AvdEnd {
        shared: Arc<Shared>,
        clock: BusClock,
    }

    /// The VMC's end: what a simulator or a test drives the AVD with.
    #[derive(Debug)]
    pub struct VmcEnd {
        shared: Arc<Shared>,
        clock: BusClock,
    }

    /// A bus with both ends on `clock`.
    pub fn pair(clock: BusClock) -> (AvdEnd, VmcEnd) {
        let shared = Arc::new(Shared::default());
        (
            AvdEnd {
                shared: shared.clone(),
                clock: clock.clone(),
            },
            VmcEnd { shared, clock },
        )
    }

    impl Transport for AvdEnd {
        fn name(&self) -> &str {
            "memory"
        }

        fn receive(
            &mut self,
            wait: Duration,
            into: &mut Vec<Heard>,
        ) -> Result<Micros, TransportError> {
            let mut lines = self.shared.lock();
            if lines.to_avd.is_empty() && !lines.closed {
                lines = self
                    .shared
                    .wake
                    .wait_timeout(lines, wait)
                    .map(|(l, _)| l)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
            if lines.closed {
                return Err(TransportError::new("memory", "the VMC's end is closed"));
            }
            // Under the lock: a word pushed after this reads a later time.
            let known = self.clock.now();
            into.extend(lines.to_avd.drain(..));
            Ok(known)
        }

        fn send(&mut self, words: &[Word]) -> Result<(), TransportError> {
            let mut lines = self.shared.lock();
            let now = self.clock.now();
            lines.to_vmc.extend(words.iter().map(|w| (*w, now)));
            drop(lines);
            self.shared.wake.notify_all();
            Ok(())
        }

        fn reopen(&mut self) -> Result<(), TransportError> {
            if self.shared.lock().closed {
                Err(TransportError::new("memory", "the VMC's end is closed"))
            } else {
                Ok(())
            }
        }
    }

    impl VmcEnd {
        pub fn clock(&self) -> &BusClock {
            &self.clock
        }

        /// One word on the bus now; returns its time.
        pub fn send(&self, word: Word) -> Micros {
            let mut lines = self.shared.lock();
            let now = self.clock.now();
            lines.to_avd.push_back(Heard::Word(word, now));
            drop(lines);
            self.shared.wake.notify_all();
            now
        }

        /// A whole block on the bus at once, as a UART driver hands over what it has
        /// received: the last word now, each earlier one a word's time and its gap before
        /// the next (`gaps_us[i]` after word `i`). Returns the last word's time.
        pub fn send_block(&self, words: &[Word], gaps_us: &[u64]) -> Micros {
            let mut lines = self.shared.lock();
            let now = self.clock.now();
            let mut at = now.0;
            let mut stamped: Vec<Heard> = Vec::with_capacity(words.len());
            for (i, word) in words.iter().enumerate().rev() {
                stamped.push(Heard::Word(*word, Micros(at)));
                let gap = gaps_us.get(i.wrapping_sub(1)).copied().unwrap_or(0);
                at = at.saturating_sub(super::super::timing::WORD_US + gap);
            }
            lines.to_avd.extend(stamped.into_iter().rev());
            drop(lines);
            self.shared.wake.notify_all();
            now
        }

        /// A break on the line (bus reset).
        pub fn bus_reset(&self) {
            self.shared.lock().to_avd.push_back(Heard::BusReset);
            self.shared.wake.notify_all();
        }

        /// The AVD's next word and when it was sent, waiting `wait` at most.
        pub fn receive(&self, wait: Duration) -> Option<(Word, Micros)> {
            let until = Instant::now() + wait;
            let mut lines = self.shared.lock();
            loop {
                if let Some(got) = lines.to_vmc.pop_front() {
                    return Some(got);
                }
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                lines = self
                    .shared
                    .wake
                    .wait_timeout(lines, left)
                    .map(|(l, _)| l)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        }

        /// Forgets what the AVD sent and the VMC has not read (a late answer).
        pub fn discard(&self) -> usize {
            let mut lines = self.shared.lock();
            let n = lines.to_vmc.len();
            lines.to_vmc.clear();
            n
        }
    }

    impl Drop for VmcEnd {
        fn drop(&mut self) {
            self.shared.lock().closed = true;
            self.shared.wake.notify_all();
        }
    }
}

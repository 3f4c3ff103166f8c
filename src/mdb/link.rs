//! The receiver: turns the words the VMC sends into whole blocks for the AVD and into the
//! VMC's answers (ACK, RET, NAK) to the AVD's last data block.
//!
//! * Address filtering (MDB §2 "Byte Format", "Peripheral Address"): a word with the mode
//!   bit set starts a block. Address bytes 68h..6Fh start one for the AVD; any other
//!   starts a foreign block, and every data word up to the next address byte (the
//!   command's data, the VMC's ACK to that peripheral) is ignored: the AVD never answers
//!   another peripheral's traffic.
//! * Block ends: a command whose length its bytes tell ends at that length
//!   ([`block_len`]); the others (REQUEST ID with or without the VMC's id, SETUP,
//!   unknown ones) end when the line has been quiet for t-inter-byte ([`Receiver::idle`]).
//!   Times are the words' arrivals, so "quiet" is [`timing::GAP_US`] after the last.
//!   A gap longer than t-inter-byte inside a block of known length truncates it, and so
//!   does a new address byte; a truncated block is dropped unanswered (the VMC times out
//!   and repeats).
//! * After the AVD sends a data block, the next data word from the VMC within
//!   t-response (after the block's transmission) is its answer. An address byte instead,
//!   or the time running out, means no answer: as good as a NAK.

use super::command::{block_len, BlockLen};
use super::{
    bump, timing, Counters, Micros, Word, ACK, ADDRESS_MASK, AVD_ADDRESS, MAX_BLOCK, NAK, RET,
};

/// What a word or a quiet line gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Received {
    Nothing,
    /// A whole block for the AVD, checksum not yet checked; `last`: when its last byte came.
    Block {
        bytes: heapless::Vec<u8, MAX_BLOCK>,
        last: Micros,
    },
    /// The VMC's ACK, RET or NAK to the AVD's last data block.
    Answer(u8),
    /// The VMC did not answer the AVD's last data block.
    Unanswered,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Between blocks.
    Idle,
    /// A block for the AVD, so far; `last`: when its latest byte came.
    Ours {
        bytes: heapless::Vec<u8, MAX_BLOCK>,
        last: Micros,
    },
    /// Another peripheral's block, or one of the AVD's that was dropped (oversize): data
    /// words are ignored up to the next address byte.
    Ignoring,
}

/// Invariants: never panics, holds at most [`MAX_BLOCK`] bytes.
#[derive(Debug, Clone)]
pub(crate) struct Receiver {
    state: State,
    /// Until when the VMC's answer to the AVD's last data block is awaited.
    answer_by: Option<Micros>,
}

impl Receiver {
    pub(crate) fn new() -> Self {
        Self {
            state: State::Idle,
            answer_by: None,
        }
    }

    /// Forgets any block in progress and any awaited answer (bus reset).
    pub(crate) fn reset(&mut self) {
        *self = Self::new();
    }

    /// The AVD sent a data block of `words` words, starting no later than `deadline`:
    /// the VMC's answer is due t-response after its end.
    pub(crate) fn expect_answer(&mut self, deadline: Micros, words: usize) {
        // The block's words, t-response, then the answer's own word.
        let words = u64::try_from(words).unwrap_or(u64::MAX).saturating_add(1);
        let transmit = timing::WORD_US.saturating_mul(words);
        self.answer_by = Some(deadline.plus(transmit).plus(timing::RESPONSE_US));
    }

    /// True (and the wait over) when the awaited answer's time ran out by `now`.
    fn answer_expired(&mut self, now: Micros) -> bool {
        match self.answer_by {
            Some(by) if now > by => {
                self.answer_by = None;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn word(&mut self, word: Word, now: Micros, counters: &mut Counters) -> Received {
        let expired = self.answer_expired(now);
        // A block of known length whose bytes stopped for longer than t-inter-byte is cut
        // short (one of unknown length should have been ended by `idle`; it is too late to
        // answer it now).
        if let State::Ours { last, .. } = &self.state {
            if now.since(*last) > timing::GAP_US {
                bump(&mut counters.truncated);
                self.state = State::Idle;
            }
        }
        let received = if word.mode {
            self.address(word.data, now, counters)
        } else {
            self.data(word.data, now, counters)
        };
        match received {
            Received::Nothing if expired => Received::Unanswered,
            other => other,
        }
    }

    fn address(&mut self, byte: u8, now: Micros, counters: &mut Counters) -> Received {
        if let State::Ours { .. } = self.state {
            bump(&mut counters.truncated);
        }
        let unanswered = self.answer_by.take().is_some();
        if byte & ADDRESS_MASK == AVD_ADDRESS {
            let mut bytes = heapless::Vec::new();
            // Cannot fail: the vector is empty.
            let _ = bytes.push(byte);
            self.state = State::Ours { bytes, last: now };
        } else {
            bump(&mut counters.foreign_blocks);
            self.state = State::Ignoring;
        }
        if unanswered {
            Received::Unanswered
        } else {
            Received::Nothing
        }
    }

    fn data(&mut self, byte: u8, now: Micros, counters: &mut Counters) -> Received {
        match &mut self.state {
            State::Ignoring => Received::Nothing,
            State::Idle => {
                if self.answer_by.take().is_some() && matches!(byte, ACK | RET | NAK) {
                    Received::Answer(byte)
                } else {
                    bump(&mut counters.stray_words);
                    Received::Nothing
                }
            }
            State::Ours { bytes, last } => {
                *last = now;
                if bytes.push(byte).is_err() {
                    bump(&mut counters.oversize);
                    self.state = State::Ignoring;
                    return Received::Nothing;
                }
                match block_len(bytes) {
                    BlockLen::Exact(len) if len > MAX_BLOCK => {
                        bump(&mut counters.oversize);
                        self.state = State::Ignoring;
                        Received::Nothing
                    }
                    BlockLen::Exact(len) if bytes.len() >= len => {
                        let bytes = core::mem::take(bytes);
                        self.state = State::Idle;
                        Received::Block { bytes, last: now }
                    }
                    _ => Received::Nothing,
                }
            }
        }
    }

    /// The line has been quiet since the last word; call it once [`timing::GAP_US`] has
    /// passed (sooner or more often is harmless). Ends a block of unknown length.
    pub(crate) fn idle(&mut self, now: Micros, counters: &mut Counters) -> Received {
        let expired = self.answer_expired(now);
        if let State::Ours { bytes, last } = &mut self.state {
            if now.since(*last) > timing::GAP_US {
                let last = *last;
                let ended = core::mem::take(bytes);
                self.state = State::Idle;
                if block_len(&ended) == BlockLen::AtIdle {
                    return Received::Block { bytes: ended, last };
                }
                bump(&mut counters.truncated);
            }
        }
        if expired {
            Received::Unanswered
        } else {
            Received::Nothing
        }
    }
}

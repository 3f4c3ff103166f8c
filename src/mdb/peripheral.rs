//! [`Peripheral`]: the receiver and the AVD state machine together — what a transport
//! feeds the bus's words to, and what tells it which words to send back and when.

use super::avd::{Avd, AvdSettings, Due, Event, Handled, Note, Reply, VerificationResult};
use super::block::Block;
use super::command::Command;
use super::link::{Received, Receiver};
use super::{bump, timing, Counters, MdbError, Micros, Word, ACK, MAX_BLOCK, NAK, RET};

/// Words to put on the bus, starting no later than `deadline` (t-response after the VMC's
/// last byte). A transport that cannot start by then sends nothing: the VMC takes the
/// silence as a NAK and asks again, and data due on a POLL stays due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub words: heapless::Vec<Word, MAX_BLOCK>,
    pub deadline: Micros,
}

/// What a word, a quiet line or a bus reset gives: at most one thing to send, one thing
/// for the firmware to do, one thing to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub transmit: Option<Transmit>,
    pub event: Option<Event>,
    pub note: Option<Note>,
}

/// The last data block sent, kept for a RET and until the VMC ACKs it.
#[derive(Debug, Clone)]
struct Sent {
    words: heapless::Vec<Word, MAX_BLOCK>,
    due: Due,
}

/// The AVD on the bus. Invariants: never panics, never allocates, never answers a block
/// that is not addressed to 68h..6Fh, never approves anything but a result handed in for
/// the verification running.
#[derive(Debug, Clone)]
pub struct Peripheral {
    receiver: Receiver,
    avd: Avd,
    sent: Option<Sent>,
    counters: Counters,
}

fn single(byte: u8, deadline: Micros) -> Transmit {
    let mut words = heapless::Vec::new();
    // Cannot fail: the vector is empty.
    let _ = words.push(Word::with_mode(byte));
    Transmit { words, deadline }
}

/// A block's bytes as words: the mode bit on the last (MDB §2 "Byte Format").
fn block_words(bytes: &[u8]) -> heapless::Vec<Word, MAX_BLOCK> {
    let last = bytes.len().saturating_sub(1);
    bytes
        .iter()
        .enumerate()
        .map(|(i, b)| Word {
            data: *b,
            mode: i == last,
        })
        .collect()
}

impl Peripheral {
    pub fn new(settings: AvdSettings) -> Self {
        Self {
            receiver: Receiver::new(),
            avd: Avd::new(settings),
            sent: None,
            counters: Counters::default(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The required age the last DRAVP set (after the floor); `None`: verification off.
    pub fn required_age(&self) -> Option<u8> {
        self.avd.required_age()
    }

    /// One word from the bus, received at `now`.
    pub fn on_word(&mut self, word: Word, now: Micros) -> Outcome {
        let received = self.receiver.word(word, now, &mut self.counters);
        self.received(received, now)
    }

    /// The line has been quiet; call it once t-inter-byte has passed since the last
    /// word's arrival (2.2 ms: a word's time and 1 ms), and again while waiting for the
    /// VMC's answer. Words are stamped when they have arrived.
    pub fn on_idle(&mut self, now: Micros) -> Outcome {
        let received = self.receiver.idle(now, &mut self.counters);
        self.received(received, now)
    }

    /// The VMC held the bus in break (t-break, 100 ms or more): every peripheral resets.
    pub fn on_bus_reset(&mut self) -> Outcome {
        self.receiver.reset();
        self.sent = None;
        Outcome {
            event: self.avd.reset(),
            ..Outcome::default()
        }
    }

    /// The running verification's result; sent to the VMC on its next POLL. False when
    /// no verification runs (it was aborted): the result is dropped.
    pub fn verification_result(&mut self, result: VerificationResult) -> bool {
        self.avd.verification_result(result, &mut self.counters)
    }

    fn received(&mut self, received: Received, now: Micros) -> Outcome {
        match received {
            Received::Nothing => Outcome::default(),
            Received::Unanswered => {
                self.unanswered();
                Outcome::default()
            }
            Received::Answer(ACK) => {
                if let Some(sent) = self.sent.take() {
                    self.avd.acknowledged(sent.due);
                }
                Outcome::default()
            }
            Received::Answer(RET) => self.retransmit(now),
            Received::Answer(_) => {
                self.unanswered();
                Outcome::default()
            }
            Received::Block { bytes, last } => self.block(&bytes, last, now),
        }
    }

    /// The VMC NAKed the last data block or let it go: what it carried stays due.
    fn unanswered(&mut self) {
        if self.sent.take().is_some() {
            bump(&mut self.counters.unacknowledged);
        }
    }

    fn retransmit(&mut self, now: Micros) -> Outcome {
        let Some(sent) = &self.sent else {
            return Outcome::default();
        };
        bump(&mut self.counters.retransmissions);
        let deadline = now.plus(timing::RESPONSE_US);
        self.receiver.expect_answer(deadline, sent.words.len());
        Outcome {
            transmit: Some(Transmit {
                words: sent.words.clone(),
                deadline,
            }),
            ..Outcome::default()
        }
    }

    fn block(&mut self, bytes: &[u8], last: Micros, now: Micros) -> Outcome {
        let deadline = last.plus(timing::RESPONSE_US);
        if now > deadline {
            // Too late to answer: the VMC has given up on this block and will repeat it.
            bump(&mut self.counters.missed_replies);
            return Outcome::default();
        }
        // A new command: whatever the last data block carried and was not ACKed stays due.
        self.unanswered();
        let command = match Command::parse(&Block::new_unchecked(bytes)) {
            Ok(command) => command,
            Err(error) => {
                let counter = match error {
                    MdbError::BadChecksum { .. } => &mut self.counters.bad_checksum,
                    MdbError::UnknownCommand { .. } => &mut self.counters.unknown_commands,
                    _ => &mut self.counters.malformed,
                };
                bump(counter);
                return Outcome {
                    transmit: Some(single(NAK, deadline)),
                    ..Outcome::default()
                };
            }
        };
        bump(&mut self.counters.commands);
        let Handled { reply, event, note } = self.avd.handle(command, &mut self.counters);
        let transmit = match reply {
            Reply::Ack => single(ACK, deadline),
            Reply::Data(response, due) => match response.emit() {
                Ok(bytes) => {
                    let words = block_words(&bytes);
                    self.receiver.expect_answer(deadline, words.len());
                    self.sent = Some(Sent {
                        words: words.clone(),
                        due,
                    });
                    Transmit { words, deadline }
                }
                // Cannot happen (`Identity::new` checked the only fields that can be
                // wrong); were it to, silence is safer than a block the VMC misreads.
                Err(_) => {
                    bump(&mut self.counters.malformed);
                    return Outcome {
                        event,
                        note,
                        ..Outcome::default()
                    };
                }
            },
        };
        Outcome {
            transmit: Some(transmit),
            event,
            note,
        }
    }
}

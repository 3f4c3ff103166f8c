//! The simulated vending machine controller: a bus master on the in-memory bus that sends
//! commands as the standard frames them, with random but legal timing (gaps between the
//! words of a block under t-inter-byte), reads the AVD's replies, ACKs its data blocks
//! (now and then asking for one again with RET) and times every reply.

use std::time::Duration;

use crate::mdb::transport::memory::VmcEnd;
use crate::mdb::{Block, Command, Micros, Response, Word};
use crate::tools::stats::Rng;

/// ACK, RET and NAK as the VMC sends them: data words.
const ACK: u8 = 0x00;
const RET: u8 = 0xAA;
const NAK: u8 = 0xFF;

/// How long the simulator waits for a reply before it counts the command unanswered: far
/// past t-response (5 ms), so that a late reply is measured rather than missed.
const PATIENCE: Duration = Duration::from_millis(100);
/// Longest gap between the words of one block the simulator leaves: t-inter-byte is 1 ms.
const MAX_GAP_US: u64 = 900;

/// What the AVD answered a command with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ack,
    Nak,
    Data(Response),
    /// Nothing within 100 ms.
    Silent,
    /// Words that make no reply: a block cut short, a bad checksum, a single word that is
    /// neither ACK nor NAK.
    Garbled(String),
}

impl Reply {
    pub fn short(&self) -> String {
        match self {
            Self::Ack => "ACK".into(),
            Self::Nak => "NAK".into(),
            Self::Data(Response::JustReset) => "JUST RESET".into(),
            Self::Data(Response::SetupData { .. }) => "SETUP DATA".into(),
            Self::Data(Response::PeripheralId { .. }) => "PERIPHERAL ID".into(),
            Self::Data(Response::Dravp { .. }) => "DRAVP".into(),
            Self::Data(Response::Dravs { feature1, feature2 }) => {
                format!("DRAVS {feature1:02X} {feature2:02X}")
            }
            Self::Silent => "silence".into(),
            Self::Garbled(what) => format!("garbled ({what})"),
        }
    }
}

/// What the simulator measured of the bus.
#[derive(Debug, Default, Clone)]
pub struct BusFigures {
    /// From the VMC's last word to the AVD's first, every reply.
    pub response_us: Vec<u64>,
    pub commands: u64,
    pub silent: u64,
    pub naks: u64,
    pub rets: u64,
    pub garbled: u64,
    /// Blocks the AVD must ignore or NAK (another peripheral's, a bad checksum).
    pub noise: u64,
}

/// The reply times in ms, as the summary reports them beside the standard's limit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReplyTimes {
    pub replies: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub limit: f64,
    pub over_limit: usize,
}

impl BusFigures {
    pub fn reply_times(&self) -> ReplyTimes {
        let mut us = self.response_us.clone();
        us.sort_unstable();
        let ms = |q: f64| crate::numeric::nearest_rank(&us, q).map(|us| us as f64 / 1e3);
        let limit_us = crate::mdb::timing::RESPONSE_US;
        ReplyTimes {
            replies: us.len(),
            p50: ms(0.5),
            p99: ms(0.99),
            max: ms(1.0),
            limit: limit_us as f64 / 1e3,
            over_limit: us.iter().filter(|v| **v > limit_us).count(),
        }
    }
}

pub struct Vmc {
    end: VmcEnd,
    rng: Rng,
    pub figures: BusFigures,
}

impl Vmc {
    pub fn new(end: VmcEnd, seed: u64) -> Self {
        Self {
            end,
            rng: Rng::new(seed),
            figures: BusFigures::default(),
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A bus reset: the line held in break.
    pub fn bus_reset(&mut self) {
        self.end.bus_reset();
    }

    /// Sends `command` and reads the reply; a data block is ACKed (after a RET now and
    /// then, which must bring the same block again).
    pub fn exchange(&mut self, command: &Command) -> Reply {
        let Ok(bytes) = command.emit() else {
            return Reply::Garbled(format!("cannot emit {command:?}"));
        };
        self.figures.commands += 1;
        // Whatever the AVD said too late to the last command is not this one's reply.
        self.end.discard();
        let words: Vec<Word> = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| Word {
                data: *b,
                mode: i == 0,
            })
            .collect();
        // Legal gaps between the words (t-inter-byte is 1 ms), on the words' stamps: the
        // block arrives whole, as from a UART, so this thread's own scheduling on a busy
        // machine cannot cut it short.
        let gaps: Vec<u64> = (1..words.len())
            .map(|_| match self.rng.below(4) {
                0 => self.rng.below(MAX_GAP_US as usize) as u64,
                _ => 0,
            })
            .collect();
        let last = self.end.send_block(&words, &gaps);
        let reply = self.read_reply(last);
        let Reply::Data(response) = reply else {
            return reply;
        };
        if self.rng.below(40) == 0 {
            self.figures.rets += 1;
            let at = self.end.send(Word::data(RET));
            match self.read_reply(at) {
                Reply::Data(again) if again == response => {}
                other => return Reply::Garbled(format!("RET brought {}", other.short())),
            }
        }
        self.end.send(Word::data(ACK));
        Reply::Data(response)
    }

    fn read_reply(&mut self, sent_at: Micros) -> Reply {
        let Some((first, at)) = self.end.receive(PATIENCE) else {
            self.figures.silent += 1;
            return Reply::Silent;
        };
        self.figures.response_us.push(at.since(sent_at));
        if first.mode {
            return match first.data {
                ACK => Reply::Ack,
                NAK => {
                    self.figures.naks += 1;
                    Reply::Nak
                }
                other => self.garbled(format!("single word {other:02X}")),
            };
        }
        let mut bytes = vec![first.data];
        loop {
            let Some((word, _)) = self.end.receive(PATIENCE) else {
                return self.garbled("block cut short".into());
            };
            bytes.push(word.data);
            if word.mode {
                break;
            }
            if bytes.len() > crate::mdb::MAX_BLOCK {
                return self.garbled("block over 36 bytes".into());
            }
        }
        match Response::parse(&Block::new_unchecked(&bytes[..])) {
            Ok(response) => Reply::Data(response),
            Err(e) => {
                self.end.send(Word::data(NAK));
                self.garbled(e.to_string())
            }
        }
    }

    /// Traffic the AVD must not act on: a POLL to the cashless device (10h), which it
    /// must not answer, or a POLL to the AVD with a wrong checksum, which it must NAK.
    /// Returns what went wrong, if anything.
    pub fn noise(&mut self) -> Option<String> {
        self.figures.noise += 1;
        self.end.discard();
        let foreign = self.rng.below(2) == 0;
        let words = if foreign {
            [Word::with_mode(0x12), Word::data(0x12)]
        } else {
            [Word::with_mode(0x6A), Word::data(0x6B)]
        };
        let last = self.end.send_block(&words, &[0]);
        let reply = self.end.receive(Duration::from_millis(20));
        match (foreign, reply) {
            (true, None) => None,
            (true, Some((w, _))) => Some(format!("answered another peripheral's POLL: {w:?}")),
            (false, Some((w, at))) if w == Word::with_mode(NAK) => {
                self.figures.response_us.push(at.since(last));
                None
            }
            (false, other) => Some(format!("a POLL with a bad checksum got {other:?}")),
        }
    }

    fn garbled(&mut self, what: String) -> Reply {
        self.figures.garbled += 1;
        Reply::Garbled(what)
    }

    /// [`Vmc::exchange`], repeated (up to three times in all) while the AVD is silent or
    /// NAKs, as a VMC retries.
    pub fn exchange_retrying(&mut self, command: &Command) -> Reply {
        let mut reply = self.exchange(command);
        for _ in 0..2 {
            if !matches!(reply, Reply::Silent | Reply::Nak) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
            reply = self.exchange(command);
        }
        reply
    }
}

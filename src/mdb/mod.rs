//! MDB/ICP (Multi-Drop Bus / Internal Communication Protocol, NAMA/EVA 4.2 and 4.3): the
//! vending machine controller's (VMC's) bus, with agegate as the Age Verification Device
//! (AVD) at address 68h. Pure logic, in the manner of [`crate::serial::wire`]: no I/O, no
//! clock — every entry point takes the time ([`Micros`]) as an argument, so a test or a
//! fuzzer drives the bus timing exactly.
//!
//! Layers, bottom up:
//! * [`Word`]: one 9-bit bus word, the data byte and the mode bit (docs/mdb.md "Words");
//! * `block`: a checked view over one block (its bytes and its checksum), and the
//!   checksum itself (MDB §2 "Block Format");
//! * `command` / `response`: the parsed values of what the VMC sends to the AVD and
//!   what the AVD answers, each with `parse` and `emit`;
//! * `link`: the receiver — address filtering, block ends, the inter-byte and response
//!   timing, ACK/RET/NAK and retransmission;
//! * `avd`: the Age Verification Device's state machine (RESET, SETUP, POLL, EXPANSION
//!   REQUEST ID, the diagnostics DRAVP and DRAVS);
//! * [`Peripheral`]: the two put together; what a transport feeds words to.
//!
//! Around them, the parts that do I/O: the transports (`transport`: the trait and the
//! in-memory bus; `uart`, `stream`), the AVD's own thread (`device`, which reads the clock
//! and talks to the daemon through channels), and the board's `[mdb]` (`settings`).
//!
//! What the standard says, what the sources read for this module disagree on, and which
//! layouts are inferred rather than read: `docs/mdb.md`.
//!
//! No-panic invariants (the receiver runs on whatever the bus delivers): no function here
//! indexes outside data without `get`, nothing allocates, every buffer is a fixed-size
//! `heapless` one and is bounded by [`MAX_BLOCK`].

pub(crate) mod avd;
pub(crate) mod block;
pub(crate) mod command;
mod device;
pub(crate) mod link;
mod peripheral;
pub(crate) mod response;
mod settings;
mod stream;
pub mod transport;
mod uart;

#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod tests;

pub use avd::{AbortCause, AvdSettings, DravpAnswer, Event, Identity, Note, VerificationResult};
pub use block::Block;
pub use command::{Command, Reader};
pub use device::{
    DeviceCounters, DeviceSettings, MdbDevice, MdbHealth, VmcAnswer, VmcPort, VmcRequest,
};
pub use peripheral::{Outcome, Peripheral, Transmit};
pub use response::Response;
pub use settings::{MdbSettings, RawMdb, TransportKind, TransportSettings};
pub use stream::StreamTransport;
pub use transport::{BusClock, Heard, Transport, TransportError};
pub use uart::UartTransport;

/// Opens the transport a board's `[mdb]` names.
pub fn open_transport(
    settings: &TransportSettings,
    clock: BusClock,
) -> Result<Box<dyn Transport>, TransportError> {
    Ok(match settings {
        TransportSettings::Uart { device } => Box::new(UartTransport::open(device, clock)?),
        TransportSettings::Stream { path } => Box::new(StreamTransport::open(path, clock)?),
    })
}

/// Acknowledge: the block was received with a good checksum (MDB §2 "Block Format"). From the
/// peripheral alone it is a one-word block with the mode bit set.
pub(crate) const ACK: u8 = 0x00;
/// Retransmit: only the VMC sends it, asking for the peripheral's last block again.
pub(crate) const RET: u8 = 0xAA;
/// Negative acknowledge.
pub(crate) const NAK: u8 = 0xFF;

/// Longest block in either direction, checksum included (MDB §2 "Block Format": "A block is limited
/// to a maximum of thirty-six (36) bytes").
pub const MAX_BLOCK: usize = 36;

/// The AVD's address: the upper five bits of the address byte (MDB §2 "Peripheral Address", "01101xxxB
/// (68H) Age Verification Device"); the lower three bits carry the command.
pub(crate) const AVD_ADDRESS: u8 = 0x68;
/// The address bits of an address byte.
pub(crate) const ADDRESS_MASK: u8 = 0xF8;

/// A point in time in microseconds, from an origin the caller picks (a monotonic clock
/// read by the transport). Only differences are used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Micros(pub u64);

impl Micros {
    /// Microseconds from `earlier` to `self`; zero if `earlier` is later (a clock that
    /// stepped back must not make a gap look huge or negative).
    pub(crate) fn since(self, earlier: Micros) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    pub(crate) fn plus(self, us: u64) -> Micros {
        Micros(self.0.saturating_add(us))
    }
}

/// The bus timing (MDB §2 "Bus Timing"; docs/mdb.md).
pub(crate) mod timing {
    /// Longest gap between two bytes of one block (t inter-byte, max 1.0 ms). A longer gap
    /// ends the block: complete or truncated.
    pub(crate) const INTER_BYTE_US: u64 = 1_000;
    /// Longest wait for an answer (t response, max 5.0 ms): the peripheral's first byte
    /// after the VMC's last, and the VMC's ACK/RET/NAK after the peripheral's block. "The 5
    /// mS time-out is the equivalent of a NAK" (MDB §2 "Block Format").
    pub(crate) const RESPONSE_US: u64 = 5_000;
    /// One word on the wire: 11 bits (start, 8 data, mode, stop) at 9600 baud.
    pub(crate) const WORD_US: u64 = 11 * 1_000_000 / 9_600;
    /// Longest time between the arrivals of two bytes of one block: a transport stamps a
    /// word when it has arrived (its stop bit), and the next may start t-inter-byte
    /// later and takes a word's time to arrive.
    pub(crate) const GAP_US: u64 = WORD_US + INTER_BYTE_US;
}

/// One 9-bit bus word: the data byte and the mode bit. From the VMC the mode bit marks the
/// address byte that starts a block; from a peripheral it marks the block's last byte
/// (MDB §2 "Byte Format").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Word {
    pub data: u8,
    pub mode: bool,
}

impl Word {
    pub const fn data(data: u8) -> Self {
        Self { data, mode: false }
    }

    pub const fn with_mode(data: u8) -> Self {
        Self { data, mode: true }
    }

    /// The word as the `stream` transport carries it: two bytes, the mode bit (0 or 1),
    /// then the data byte (docs/mdb.md "`stream`: two bytes a word").
    pub fn to_stream(self) -> [u8; 2] {
        [u8::from(self.mode), self.data]
    }

    /// The inverse of [`Word::to_stream`]; a mode byte other than 0 or 1 is an error, not
    /// a guess.
    pub fn from_stream(bytes: [u8; 2]) -> Result<Self, MdbError> {
        match bytes {
            [0, data] => Ok(Self::data(data)),
            [1, data] => Ok(Self::with_mode(data)),
            [mode, _] => Err(MdbError::BadModeByte(mode)),
        }
    }
}

/// What is wrong with a block, a command or a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MdbError {
    #[error("block truncated: {need} bytes needed, {have} present")]
    Truncated { need: usize, have: usize },
    #[error("block of {0} bytes exceeds the maximum of 36")]
    Oversize(usize),
    #[error("checksum mismatch: block carries {received:#04x}, its bytes give {computed:#04x}")]
    BadChecksum { received: u8, computed: u8 },
    #[error("address byte {0:#04x} is not the age verification device's (68h..6Fh)")]
    NotOurAddress(u8),
    #[error("unknown command {command:#04x}, sub-command {sub:?}")]
    UnknownCommand { command: u8, sub: Option<u8> },
    #[error("unknown response type {0:#04x}")]
    UnknownResponse(u8),
    #[error("{what} takes {expected} bytes before the checksum, the block has {len}")]
    BadLength {
        what: &'static str,
        expected: usize,
        len: usize,
    },
    #[error("field `{field}` has invalid value {value:#04x}")]
    BadValue { field: &'static str, value: u8 },
    #[error("stream word's mode byte is {0:#04x}, not 0 or 1")]
    BadModeByte(u8),
}

/// What the link and the device have seen since they were made. Counters saturate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Blocks addressed to the AVD that parsed into a command.
    pub commands: u32,
    /// Blocks addressed to another peripheral (their words are ignored, unanswered).
    pub foreign_blocks: u32,
    /// Data words (mode bit clear) with no block open: noise, or a block whose address
    /// byte was lost. Ignored.
    pub stray_words: u32,
    /// Blocks to the AVD with a bad checksum; answered NAK.
    pub bad_checksum: u32,
    /// Blocks to the AVD cut short: the line went quiet, or a new address byte came,
    /// before the command's length was reached. Unanswered.
    pub truncated: u32,
    /// Blocks to the AVD longer than 36 bytes. Unanswered.
    pub oversize: u32,
    /// Commands or sub-commands the AVD does not implement; answered NAK.
    pub unknown_commands: u32,
    /// Known commands with a wrong length or field (DRAVP without its "DRAVP" tag, ...);
    /// answered NAK.
    pub malformed: u32,
    /// RETs served: the last block sent again.
    pub retransmissions: u32,
    /// Data blocks the VMC NAKed, or did not answer within t-response; kept for the next
    /// POLL.
    pub unacknowledged: u32,
    /// Blocks to the AVD that ended (the line went quiet) only after their t-response
    /// deadline had passed: too late to answer, unanswered.
    pub missed_replies: u32,
    /// DRAVS received while age verification was off (no DRAVP with an age yet); no
    /// verification is started.
    pub dravs_while_off: u32,
    /// Verification results handed in with no verification running; dropped.
    pub stray_results: u32,
    /// Required ages raised to `min_request_age`.
    pub ages_raised: u32,
}

pub(crate) fn bump(counter: &mut u32) {
    *counter = counter.saturating_add(1);
}

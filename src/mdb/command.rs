//! [`Command`]: what the VMC sends to the Age Verification Device, parsed, with
//! [`Command::parse`] and [`Command::emit`] (the VMC's side: tests, the simulator).
//!
//! ```text
//! 68h                      RESET
//! 69h 00h Y2 [Y3..]        SETUP, config data: Y2 the VMC's feature level (cashless style)
//! 6Ah                      POLL
//! 6Ch Y1                   READER: 00h disable, 01h enable, 02h cancel (cashless style)
//! 6Fh 00h [29 bytes]       EXPANSION REQUEST ID (the VMC's own id is optional)
//! 6Fh FFh 05h 06h age "DRAVP"  diagnostics: age verification on (age 1..254) / off
//! 6Fh FFh 06h 06h Y4 "DRAVS"   diagnostics: start a verification, answer on a POLL
//! ```
//!
//! Every block ends with its checksum (not shown). Which of these layouts were read in a
//! source and which are inferred: docs/mdb.md.

use super::block::{exact_len, Block, BlockBuf};
use super::{MdbError, ADDRESS_MASK, AVD_ADDRESS, MAX_BLOCK};

/// The command bits (the address byte's low three bits, MDB §2 "Block Format").
pub(crate) mod code {
    pub(crate) const RESET: u8 = 0;
    pub(crate) const SETUP: u8 = 1;
    pub(crate) const POLL: u8 = 2;
    pub(crate) const READER: u8 = 4;
    pub(crate) const EXPANSION: u8 = 7;
}

/// EXPANSION sub-commands.
const REQUEST_ID: u8 = 0x00;
const DIAGNOSTICS: u8 = 0xFF;
/// SETUP sub-command "config data".
const CONFIG_DATA: u8 = 0x00;

/// Diagnostic functions (the byte after FFh) and their ASCII tags.
pub(crate) const DRAVP: u8 = 0x05;
pub(crate) const DRAVS: u8 = 0x06;
pub(crate) const DRAVP_TAG: &[u8; 5] = b"DRAVP";
pub(crate) const DRAVS_TAG: &[u8; 5] = b"DRAVS";

/// Bytes of the VMC's id in a long REQUEST ID: manufacturer 3, serial 12, model 12,
/// software version 2.
pub(crate) const ID_LEN: usize = 29;
/// Most SETUP config bytes kept after the feature level (a block's 36 less the address,
/// the sub-command, the level and the checksum).
pub(crate) const SETUP_REST: usize = MAX_BLOCK - 4;

/// READER's sub-command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    Disable,
    Enable,
    Cancel,
}

/// One command to the AVD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Reset,
    /// SETUP config data. `rest`: the bytes after the level (the cashless SETUP carries
    /// display columns, rows and type there), kept so that the encoding round-trips.
    Setup {
        vmc_level: u8,
        rest: heapless::Vec<u8, SETUP_REST>,
    },
    Poll,
    Reader(Reader),
    /// EXPANSION REQUEST ID, with the VMC's own id or without it.
    RequestId {
        vmc_id: Option<[u8; ID_LEN]>,
    },
    /// DRAVP: age verification on with `age` (00h: off; FFh: "supported, will be switched
    /// on", which switches it off until the next DRAVP).
    Dravp {
        age: u8,
    },
    /// DRAVS: start a verification for the age of the last DRAVP. `y4`: the byte before
    /// the tag, 00h in every example read; its meaning is not known, it is kept, not used.
    Dravs {
        y4: u8,
    },
}

/// How long a block that starts with `prefix` is, as far as its bytes so far tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockLen {
    /// This many bytes, the checksum included.
    Exact(usize),
    /// Not known from the bytes: the block ends when the line goes quiet (REQUEST ID with
    /// or without the VMC's id, SETUP, and what the AVD does not know).
    AtIdle,
}

/// The block length of a command starting with `prefix` (address byte first). Cheap, and
/// called after every byte; `AtIdle` may become `Exact` once more bytes are in.
pub(crate) fn block_len(prefix: &[u8]) -> BlockLen {
    let first = prefix.first().copied().unwrap_or(0);
    match (first & !ADDRESS_MASK, prefix.get(1), prefix.get(3)) {
        (code::RESET | code::POLL, _, _) => BlockLen::Exact(2),
        (code::READER, _, _) => BlockLen::Exact(3),
        (code::EXPANSION, Some(&DIAGNOSTICS), Some(&len)) => BlockLen::Exact(5 + usize::from(len)),
        _ => BlockLen::AtIdle,
    }
}

impl Command {
    /// Parses a block addressed to the AVD. Re-checks length and checksum itself, so it is
    /// safe on an unchecked view.
    pub fn parse<T: AsRef<[u8]>>(block: &Block<T>) -> Result<Self, MdbError> {
        block.check_len()?;
        block.check_checksum()?;
        let first = block.first();
        if first & ADDRESS_MASK != AVD_ADDRESS {
            return Err(MdbError::NotOurAddress(first));
        }
        let payload = block.payload();
        let command = first & !ADDRESS_MASK;
        let unknown = |sub| MdbError::UnknownCommand {
            command: first,
            sub,
        };
        let exact = |what, expected| exact_len(what, expected, payload);
        match command {
            code::RESET => exact("RESET", 1).map(|()| Self::Reset),
            code::POLL => exact("POLL", 1).map(|()| Self::Poll),
            code::READER => {
                exact("READER", 2)?;
                match block.byte(1) {
                    0x00 => Ok(Self::Reader(Reader::Disable)),
                    0x01 => Ok(Self::Reader(Reader::Enable)),
                    0x02 => Ok(Self::Reader(Reader::Cancel)),
                    other => Err(unknown(Some(other))),
                }
            }
            code::SETUP => match payload.get(1) {
                Some(&CONFIG_DATA) => {
                    let vmc_level = *payload.get(2).ok_or(MdbError::BadLength {
                        what: "SETUP config data",
                        expected: 3,
                        len: payload.len(),
                    })?;
                    let rest = heapless::Vec::from_slice(payload.get(3..).unwrap_or(&[]))
                        .map_err(|()| MdbError::Oversize(payload.len() + 1))?;
                    Ok(Self::Setup { vmc_level, rest })
                }
                other => Err(unknown(other.copied())),
            },
            code::EXPANSION => match payload.get(1) {
                Some(&REQUEST_ID) => match payload.get(2..) {
                    Some([]) => Ok(Self::RequestId { vmc_id: None }),
                    Some(id) => match <[u8; ID_LEN]>::try_from(id) {
                        Ok(id) => Ok(Self::RequestId { vmc_id: Some(id) }),
                        Err(_) => Err(MdbError::BadLength {
                            what: "REQUEST ID",
                            expected: 2 + ID_LEN,
                            len: payload.len(),
                        }),
                    },
                    None => Err(unknown(None)),
                },
                Some(&DIAGNOSTICS) => Self::parse_diagnostics(payload),
                other => Err(unknown(other.copied())),
            },
            _ => Err(unknown(None)),
        }
    }

    /// `6Fh FFh function length data...`; `payload` excludes the checksum.
    fn parse_diagnostics(payload: &[u8]) -> Result<Self, MdbError> {
        let function = payload.get(2).copied();
        let (tag, field) = match function {
            Some(DRAVP) => (DRAVP_TAG, "dravp_tag"),
            Some(DRAVS) => (DRAVS_TAG, "dravs_tag"),
            other => {
                return Err(MdbError::UnknownCommand {
                    command: AVD_ADDRESS | code::EXPANSION,
                    sub: other,
                })
            }
        };
        let what = if function == Some(DRAVP) {
            "DRAVP"
        } else {
            "DRAVS"
        };
        // Y3 is the length of what follows: the value and the five-letter tag.
        if payload.len() != 10 {
            return Err(MdbError::BadLength {
                what,
                expected: 10,
                len: payload.len(),
            });
        }
        match payload.get(3) {
            Some(6) => {}
            other => {
                return Err(MdbError::BadValue {
                    field: "diagnostic_length",
                    value: other.copied().unwrap_or(0),
                })
            }
        }
        let value = payload.get(4).copied().unwrap_or(0);
        let got = payload.get(5..10).unwrap_or(&[]);
        if let Some((&bad, _)) = got.iter().zip(tag.iter()).find(|(g, t)| g != t) {
            return Err(MdbError::BadValue { field, value: bad });
        }
        Ok(if function == Some(DRAVP) {
            Self::Dravp { age: value }
        } else {
            Self::Dravs { y4: value }
        })
    }

    /// The whole block, checksum included.
    pub fn emit(&self) -> Result<heapless::Vec<u8, MAX_BLOCK>, MdbError> {
        let mut out = BlockBuf::default();
        let address = |command: u8| AVD_ADDRESS | command;
        match self {
            Self::Reset => out.push(address(code::RESET))?,
            Self::Poll => out.push(address(code::POLL))?,
            Self::Setup { vmc_level, rest } => {
                out.extend(&[address(code::SETUP), CONFIG_DATA, *vmc_level])?;
                out.extend(rest)?;
            }
            Self::Reader(sub) => {
                let sub = match sub {
                    Reader::Disable => 0x00,
                    Reader::Enable => 0x01,
                    Reader::Cancel => 0x02,
                };
                out.extend(&[address(code::READER), sub])?;
            }
            Self::RequestId { vmc_id } => {
                out.extend(&[address(code::EXPANSION), REQUEST_ID])?;
                if let Some(id) = vmc_id {
                    out.extend(id)?;
                }
            }
            Self::Dravp { age } => {
                out.extend(&[address(code::EXPANSION), DIAGNOSTICS, DRAVP, 6, *age])?;
                out.extend(DRAVP_TAG)?;
            }
            Self::Dravs { y4 } => {
                out.extend(&[address(code::EXPANSION), DIAGNOSTICS, DRAVS, 6, *y4])?;
                out.extend(DRAVS_TAG)?;
            }
        }
        out.finish()
    }
}

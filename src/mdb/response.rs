//! [`Response`]: the data blocks the Age Verification Device sends to the VMC, parsed,
//! with [`Response::parse`] (the VMC's side: tests, the simulator) and
//! [`Response::emit`].
//!
//! ```text
//! 00h                                  JUST RESET
//! 01h Z2 Z3 Z4                         SETUP: level, non-response time (s), options
//! 09h mfr(3) serial(12) model(12) sw(2) PERIPHERAL ID (ASCII; software version BCD)
//! FFh 05h 06h Z4 "DRAVP"               DRAVP answer: Z4 a feature byte (00h seen)
//! FFh 06h 07h Z4 Z5 "DRAVS"            DRAVS answer: the verification's result
//! ```
//!
//! The checksum follows (not shown); ACK and NAK alone are single words, not blocks.
//! Which layouts were read and which are inferred: docs/mdb.md.

use super::block::{exact_len as exact, Block, BlockBuf};
use super::command::{DRAVP, DRAVP_TAG, DRAVS, DRAVS_TAG};
use super::{MdbError, MAX_BLOCK};

const JUST_RESET: u8 = 0x00;
const SETUP_DATA: u8 = 0x01;
const PERIPHERAL_ID: u8 = 0x09;
const DIAGNOSTIC: u8 = 0xFF;

/// One data block from the AVD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    JustReset,
    /// The AVD's SETUP data: feature level, non-response time in seconds (how long the VMC
    /// should keep trying before it declares the AVD missing), miscellaneous options.
    SetupData {
        level: u8,
        non_response_s: u8,
        options: u8,
    },
    PeripheralId {
        manufacturer: [u8; 3],
        serial: [u8; 12],
        model: [u8; 12],
        /// Two BCD bytes, most significant first (`[0x01, 0x23]` is 1.23).
        software_version: [u8; 2],
    },
    Dravp {
        feature: u8,
    },
    Dravs {
        feature1: u8,
        feature2: u8,
    },
}

/// Whether every byte is printable ASCII, as the id fields must be.
pub(crate) fn is_ascii_field(bytes: &[u8]) -> Option<u8> {
    bytes.iter().copied().find(|b| !(0x20..=0x7E).contains(b))
}

/// The first byte that is not two BCD digits, if any.
pub(crate) fn non_bcd(bytes: &[u8]) -> Option<u8> {
    bytes
        .iter()
        .copied()
        .find(|b| (b >> 4) > 9 || (b & 0x0F) > 9)
}

fn array<const N: usize>(payload: &[u8], from: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = payload.get(from..from + N) {
        out.copy_from_slice(src);
    }
    out
}

impl Response {
    /// Parses a data block from the AVD (checks length and checksum itself).
    pub fn parse<T: AsRef<[u8]>>(block: &Block<T>) -> Result<Self, MdbError> {
        block.check_len()?;
        block.check_checksum()?;
        let p = block.payload();
        match block.first() {
            JUST_RESET => exact("JUST RESET", 1, p).map(|()| Self::JustReset),
            SETUP_DATA => exact("SETUP data", 4, p).map(|()| Self::SetupData {
                level: block.byte(1),
                non_response_s: block.byte(2),
                options: block.byte(3),
            }),
            PERIPHERAL_ID => {
                exact("PERIPHERAL ID", 30, p)?;
                let response = Self::PeripheralId {
                    manufacturer: array(p, 1),
                    serial: array(p, 4),
                    model: array(p, 16),
                    software_version: array(p, 28),
                };
                response.validate()?;
                Ok(response)
            }
            DIAGNOSTIC => {
                let (what, tag, len, field) = match block.byte(1) {
                    DRAVP => ("DRAVP answer", DRAVP_TAG, 9, "dravp_tag"),
                    DRAVS => ("DRAVS answer", DRAVS_TAG, 10, "dravs_tag"),
                    other => return Err(MdbError::UnknownResponse(other)),
                };
                exact(what, len, p)?;
                let declared = block.byte(2);
                if usize::from(declared) != len - 3 {
                    return Err(MdbError::BadValue {
                        field: "diagnostic_length",
                        value: declared,
                    });
                }
                let got = p.get(len - 5..).unwrap_or(&[]);
                if let Some((&bad, _)) = got.iter().zip(tag.iter()).find(|(g, t)| g != t) {
                    return Err(MdbError::BadValue { field, value: bad });
                }
                Ok(if len == 9 {
                    Self::Dravp {
                        feature: block.byte(3),
                    }
                } else {
                    Self::Dravs {
                        feature1: block.byte(3),
                        feature2: block.byte(4),
                    }
                })
            }
            other => Err(MdbError::UnknownResponse(other)),
        }
    }

    /// Field checks both `parse` and `emit` apply: the id is printable ASCII and BCD.
    fn validate(&self) -> Result<(), MdbError> {
        if let Self::PeripheralId {
            manufacturer,
            serial,
            model,
            software_version,
        } = self
        {
            for (field, bytes) in [
                ("manufacturer", &manufacturer[..]),
                ("serial", &serial[..]),
                ("model", &model[..]),
            ] {
                if let Some(value) = is_ascii_field(bytes) {
                    return Err(MdbError::BadValue { field, value });
                }
            }
            if let Some(value) = non_bcd(software_version) {
                return Err(MdbError::BadValue {
                    field: "software_version",
                    value,
                });
            }
        }
        Ok(())
    }

    /// The whole block, checksum included; refuses what `parse` would reject.
    pub fn emit(&self) -> Result<heapless::Vec<u8, MAX_BLOCK>, MdbError> {
        self.validate()?;
        let mut out = BlockBuf::default();
        match self {
            Self::JustReset => out.push(JUST_RESET)?,
            Self::SetupData {
                level,
                non_response_s,
                options,
            } => out.extend(&[SETUP_DATA, *level, *non_response_s, *options])?,
            Self::PeripheralId {
                manufacturer,
                serial,
                model,
                software_version,
            } => {
                out.push(PERIPHERAL_ID)?;
                out.extend(manufacturer)?;
                out.extend(serial)?;
                out.extend(model)?;
                out.extend(software_version)?;
            }
            Self::Dravp { feature } => {
                out.extend(&[DIAGNOSTIC, DRAVP, 6, *feature])?;
                out.extend(DRAVP_TAG)?;
            }
            Self::Dravs { feature1, feature2 } => {
                out.extend(&[DIAGNOSTIC, DRAVS, 7, *feature1, *feature2])?;
                out.extend(DRAVS_TAG)?;
            }
        }
        out.finish()
    }
}

//! [`Block`]: a checked view over one MDB block — its bytes, the last of which is the
//! checksum — and the checksum itself.
//!
//! ```text
//! VMC -> peripheral:  address+command byte, data bytes..., CHK   (mode bit on the first)
//! peripheral -> VMC:  data bytes..., CHK                         (mode bit on the last)
//! ```
//!
//! CHK is the low byte of the sum of every byte before it, the address byte included
//! (MDB §2 "Block Format"; ACK, RET and NAK are single bytes without one). Both
//! directions share this view; [`super::command::Command::parse`] and
//! [`super::response::Response::parse`] interpret the bytes.
//!
//! No method panics, whatever the buffer: accessors read through `get`.

use super::{MdbError, MAX_BLOCK};

/// The checksum of `bytes`: their sum, carries dropped.
pub(crate) fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// `payload` (a block without its checksum) has `expected` bytes, or `what` has the wrong
/// length.
pub(crate) fn exact_len(
    what: &'static str,
    expected: usize,
    payload: &[u8],
) -> Result<(), MdbError> {
    if payload.len() == expected {
        Ok(())
    } else {
        Err(MdbError::BadLength {
            what,
            expected,
            len: payload.len(),
        })
    }
}

/// A view over a buffer that holds exactly one block (the checksum is its last byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Block<T> {
    /// Wraps a buffer without looking at it; `parse` checks length and checksum.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    pub(crate) fn check_len(&self) -> Result<(), MdbError> {
        let len = self.buffer.as_ref().len();
        if len > MAX_BLOCK {
            return Err(MdbError::Oversize(len));
        }
        if len < 2 {
            return Err(MdbError::Truncated { need: 2, have: len });
        }
        Ok(())
    }

    pub(crate) fn check_checksum(&self) -> Result<(), MdbError> {
        let (received, computed) = (self.checksum(), self.computed_checksum());
        if received == computed {
            Ok(())
        } else {
            Err(MdbError::BadChecksum { received, computed })
        }
    }

    /// Everything but the checksum (empty for a buffer of fewer than two bytes).
    pub(crate) fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        data.split_last().map_or(&[][..], |(_, rest)| rest)
    }

    /// The checksum the block carries (0 for an empty buffer).
    pub(crate) fn checksum(&self) -> u8 {
        self.buffer.as_ref().last().copied().unwrap_or(0)
    }

    pub(crate) fn computed_checksum(&self) -> u8 {
        checksum(self.payload())
    }

    /// The first byte: from the VMC, the address and command byte.
    pub(crate) fn first(&self) -> u8 {
        self.payload().first().copied().unwrap_or(0)
    }

    /// Payload byte `at` (0 past the end).
    pub(crate) fn byte(&self, at: usize) -> u8 {
        self.payload().get(at).copied().unwrap_or(0)
    }
}

/// A block being built: payload bytes, then [`BlockBuf::finish`] appends the checksum.
/// Holds at most [`MAX_BLOCK`] bytes; pushing past that is an error, never a panic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BlockBuf {
    bytes: heapless::Vec<u8, MAX_BLOCK>,
}

impl BlockBuf {
    pub(crate) fn push(&mut self, b: u8) -> Result<(), MdbError> {
        self.bytes
            .push(b)
            .map_err(|_| MdbError::Oversize(MAX_BLOCK + 1))
    }

    pub(crate) fn extend(&mut self, bytes: &[u8]) -> Result<(), MdbError> {
        bytes.iter().try_for_each(|b| self.push(*b))
    }

    /// Appends the checksum and returns the whole block.
    pub(crate) fn finish(mut self) -> Result<heapless::Vec<u8, MAX_BLOCK>, MdbError> {
        let sum = checksum(&self.bytes);
        self.push(sum)?;
        Ok(self.bytes)
    }
}

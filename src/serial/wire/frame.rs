//! [`Frame`]: a checked view over the bytes of one frame, with an accessor per field.

use super::{crc16, WireError, HEADER_LEN, MAX_PAYLOAD, OVERHEAD, START};

mod field {
    pub const START: usize = 0;
    pub const LENGTH: usize = 1;
    pub const TYPE: usize = 2;
    pub const PAYLOAD: usize = 3;
}

/// A view over a buffer that holds one frame at its start (bytes after the frame are
/// ignored). See the module docs for the no-panic invariants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    pub(super) buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without looking at it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole frame with the start byte, a
    /// length within bounds and a matching CRC. The payload is not interpreted: that is
    /// [`super::Message::parse`]'s job.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        frame.check_start()?;
        frame.check_crc()?;
        Ok(frame)
    }

    /// The declared length is within `MAX_PAYLOAD` (32) and the buffer holds the whole frame.
    /// An oversize length is reported as soon as the length byte is present, so a caller
    /// streaming bytes need not wait for a frame that cannot be valid.
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if let Some(&len) = data.get(field::LENGTH) {
            if usize::from(len) > MAX_PAYLOAD {
                return Err(WireError::Oversize(len));
            }
        }
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated {
                need: HEADER_LEN,
                have: data.len(),
            });
        }
        let need = self.frame_len();
        if data.len() < need {
            return Err(WireError::Truncated {
                need,
                have: data.len(),
            });
        }
        Ok(())
    }

    pub fn check_start(&self) -> Result<(), WireError> {
        match self.start() {
            START => Ok(()),
            other => Err(WireError::BadStart(other)),
        }
    }

    pub fn check_crc(&self) -> Result<(), WireError> {
        let (received, computed) = (self.crc(), self.computed_crc());
        if received == computed {
            Ok(())
        } else {
            Err(WireError::BadCrc { received, computed })
        }
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref().get(at).copied().unwrap_or(0)
    }

    pub fn start(&self) -> u8 {
        self.byte(field::START)
    }

    /// Declared payload length (not checked against `MAX_PAYLOAD` (32); see `check_len`).
    pub fn payload_len(&self) -> usize {
        usize::from(self.byte(field::LENGTH))
    }

    pub fn msg_type(&self) -> u8 {
        self.byte(field::TYPE)
    }

    /// Bytes the whole frame occupies according to its length byte.
    pub fn frame_len(&self) -> usize {
        OVERHEAD + self.payload_len()
    }

    /// The payload, or an empty slice if the buffer is shorter than declared.
    pub fn payload(&self) -> &[u8] {
        let end = field::PAYLOAD + self.payload_len();
        self.buffer.as_ref().get(field::PAYLOAD..end).unwrap_or(&[])
    }

    /// The CRC the frame carries (0 if the buffer is too short to hold it).
    pub fn crc(&self) -> u16 {
        let at = field::PAYLOAD + self.payload_len();
        u16::from_le_bytes([self.byte(at), self.byte(at + 1)])
    }

    /// The CRC the frame's length, type and payload bytes give.
    pub fn computed_crc(&self) -> u16 {
        let end = field::PAYLOAD + self.payload_len();
        crc16(self.buffer.as_ref().get(field::LENGTH..end).unwrap_or(&[]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    fn set_byte(&mut self, at: usize, value: u8) {
        if let Some(b) = self.buffer.as_mut().get_mut(at) {
            *b = value;
        }
    }

    pub fn set_start(&mut self) {
        self.set_byte(field::START, START);
    }

    pub fn set_payload_len(&mut self, len: u8) {
        self.set_byte(field::LENGTH, len);
    }

    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.set_byte(field::TYPE, msg_type);
    }

    /// The payload area as declared by the length byte (set that first), or an empty slice
    /// if the buffer is too short.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = field::PAYLOAD + self.payload_len();
        self.buffer
            .as_mut()
            .get_mut(field::PAYLOAD..end)
            .unwrap_or(&mut [])
    }

    /// Writes the CRC of the current length, type and payload bytes.
    pub fn fill_crc(&mut self) {
        let crc = self.computed_crc().to_le_bytes();
        let at = field::PAYLOAD + self.payload_len();
        self.set_byte(at, crc[0]);
        self.set_byte(at + 1, crc[1]);
    }
}

//! Byte layout of one frame on the host serial line, in the manner of smoltcp's `wire`
//! module: [`Frame`] is a view over a byte buffer with accessors for each field, and
//! [`Message`] is the parsed, typed value with [`Message::parse`] and [`Message::emit`].
//!
//! ```text
//! offset  size  field
//! 0       1     start byte 0xA5
//! 1       1     payload length N (0..=32)
//! 2       1     message type
//! 3       N     payload (multi-byte integers little-endian)
//! 3+N     2     CRC-16/IBM-3740 (CCITT-FALSE) over bytes 1..3+N, little-endian
//! ```
//!
//! The full description, with worked examples, is `docs/serial-protocol.md`; the tests at
//! the bottom of this file check the document's example bytes.
//!
//! No-panic invariants (the decoder runs on whatever a serial line delivers):
//! * no method of [`Frame`] panics, whatever the buffer: accessors read through `get`, so
//!   a buffer shorter than the frame it declares yields zeros / an empty payload, and
//!   setters on a too-short buffer write nothing. [`Frame::check_len`] (called by
//!   [`Frame::new_checked`]) is what tells the caller whether the values mean anything;
//! * [`Message::parse`] re-checks length, start byte and CRC itself, so it is safe and
//!   correct on an unchecked view too, and never panics;
//! * [`Message::emit`] checks its own values and the buffer size before writing and
//!   returns an error instead of panicking or writing a frame `parse` would reject.
//!
//! Nothing here allocates: payloads are built in a stack array, the fault detail is a
//! fixed-capacity `heapless::String`.

use crc::{Crc, CRC_16_IBM_3740};

use crate::decide::Decision;

/// First byte of every frame.
pub const START: u8 = 0xA5;
/// Largest payload a frame may declare. Small enough that a false start byte in line
/// noise can make the decoder wait for at most a few dozen bytes before it resyncs.
pub const MAX_PAYLOAD: usize = 32;
/// Start, length and type.
pub const HEADER_LEN: usize = 3;
pub const CRC_LEN: usize = 2;
/// Bytes of a frame that are not payload.
pub const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// Largest frame on the wire.
pub const MAX_FRAME: usize = OVERHEAD + MAX_PAYLOAD;
/// Longest ASCII detail a FAULT may carry.
pub const MAX_DETAIL: usize = 16;

/// CRC-16/IBM-3740, a.k.a. CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection,
/// no final xor; check value ("123456789") 0x29B1.
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// The frame check sequence over `bytes` (length byte, type byte and payload).
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

mod field {
    pub const START: usize = 0;
    pub const LENGTH: usize = 1;
    pub const TYPE: usize = 2;
    pub const PAYLOAD: usize = 3;
}

/// Message type byte. The high bit gives the direction: clear from the host, set from
/// the device, so a host that hears its own echo cannot mistake it for a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    Request = 0x01,
    Cancel = 0x02,
    Ping = 0x03,
    Decision = 0x81,
    Heartbeat = 0x82,
    Fault = 0x83,
    Pong = 0x84,
}

impl MessageType {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0x01 => Self::Request,
            0x02 => Self::Cancel,
            0x03 => Self::Ping,
            0x81 => Self::Decision,
            0x82 => Self::Heartbeat,
            0x83 => Self::Fault,
            0x84 => Self::Pong,
            _ => return None,
        })
    }

    /// True for the messages the host sends to the device.
    pub fn is_from_host(self) -> bool {
        (self as u8) & 0x80 == 0
    }

    /// Payload sizes this type accepts, inclusive.
    pub fn payload_len(self) -> (usize, usize) {
        match self {
            Self::Request => (3, 3),
            Self::Cancel => (2, 2),
            Self::Ping | Self::Pong => (4, 4),
            Self::Decision => (5, 5),
            Self::Heartbeat => (5, 5),
            Self::Fault => (1, 1 + MAX_DETAIL),
        }
    }
}

/// What is wrong with a frame or a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("frame truncated: {need} bytes needed, {have} present")]
    Truncated { need: usize, have: usize },
    #[error("frame starts with {0:#04x}, not the start byte 0xa5")]
    BadStart(u8),
    #[error("declared payload length {0} exceeds the maximum of 32")]
    Oversize(u8),
    #[error("CRC mismatch: frame carries {received:#06x}, its contents give {computed:#06x}")]
    BadCrc { received: u16, computed: u16 },
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    #[error("message type {msg_type:#04x} takes {min}..={max} payload bytes, the frame has {len}")]
    BadLength {
        msg_type: u8,
        len: usize,
        min: usize,
        max: usize,
    },
    #[error("field `{field}` has invalid value {value:#04x}")]
    BadValue { field: &'static str, value: u8 },
    #[error("a buffer of {have} bytes cannot hold this {need}-byte frame")]
    BufferTooSmall { need: usize, have: usize },
}

/// A view over a buffer that holds one frame at its start (bytes after the frame are
/// ignored). See the module docs for the no-panic invariants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Wraps a buffer without looking at it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps a buffer after checking that it holds a whole frame with the start byte, a
    /// length within bounds and a matching CRC. The payload is not interpreted: that is
    /// [`Message::parse`]'s job.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        frame.check_start()?;
        frame.check_crc()?;
        Ok(frame)
    }

    /// The declared length is within [`MAX_PAYLOAD`] and the buffer holds the whole frame.
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

    /// Declared payload length (not checked against [`MAX_PAYLOAD`]; see `check_len`).
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

/// The age band a DECISION reports (index on the wire). Bands, not years, go to the
/// host: it needs no more to log or display, and less personal data leaves the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum AgeBand {
    /// 0–12
    Under13 = 0,
    /// 13–17
    From13To17 = 1,
    /// 18–24
    From18To24 = 2,
    /// 25–34
    From25To34 = 3,
    /// 35–49
    From35To49 = 4,
    /// 50 and over
    From50 = 5,
}

impl AgeBand {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Under13,
            1 => Self::From13To17,
            2 => Self::From18To24,
            3 => Self::From25To34,
            4 => Self::From35To49,
            5 => Self::From50,
            _ => return None,
        })
    }

    /// The band an estimated age (years) falls in; `None` for a non-finite or negative age,
    /// which has no band.
    pub fn from_age(age: f32) -> Option<Self> {
        if !(age.is_finite() && age >= 0.0) {
            return None;
        }
        Some(match age {
            a if a < 13.0 => Self::Under13,
            a if a < 18.0 => Self::From13To17,
            a if a < 25.0 => Self::From18To24,
            a if a < 35.0 => Self::From25To34,
            a if a < 50.0 => Self::From35To49,
            _ => Self::From50,
        })
    }
}

/// The state a HEARTBEAT reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DeviceState {
    /// Loading models, opening the camera; REQUESTs are answered REFER.
    Starting = 0,
    /// Waiting for a REQUEST.
    Ready = 1,
    /// A REQUEST is being decided.
    Deciding = 2,
    /// A fault holds the gate closed (see the last FAULT).
    Faulted = 3,
}

impl DeviceState {
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Starting,
            1 => Self::Ready,
            2 => Self::Deciding,
            3 => Self::Faulted,
            _ => return None,
        })
    }
}

/// A FAULT's code. Any byte is valid on the wire, so a host never drops a fault report
/// because its firmware is newer than the host's code list; the constants are the codes
/// this firmware sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaultCode(pub u8);

impl FaultCode {
    pub const CAMERA: Self = Self(0x01);
    pub const MODEL: Self = Self(0x02);
    pub const RELAY: Self = Self(0x03);
    pub const CONFIG: Self = Self(0x04);
    pub const SERIAL: Self = Self(0x05);
    pub const WATCHDOG: Self = Self(0x06);
    /// The device is shutting down (SIGTERM, SIGINT); a pending REQUEST gets no verdict
    /// but REFER.
    pub const SHUTDOWN: Self = Self(0x07);
    /// A REQUEST the device refuses (its required age below the board's floor, or
    /// impossible); it is answered REFER.
    pub const REQUEST: Self = Self(0x08);
    pub const INTERNAL: Self = Self(0xFF);
}

/// DECISION's verdict byte. Zero is deliberately not a verdict: an all-zero payload (a
/// stuck buffer, a host bug) must never read as anything, least of all ALLOW.
fn decision_to_u8(decision: Decision) -> u8 {
    match decision {
        Decision::Allow => 0x01,
        Decision::Deny => 0x02,
        Decision::Refer => 0x03,
    }
}

fn decision_from_u8(value: u8) -> Option<Decision> {
    match value {
        0x01 => Some(Decision::Allow),
        0x02 => Some(Decision::Deny),
        0x03 => Some(Decision::Refer),
        _ => None,
    }
}

fn is_printable_ascii(b: u8) -> bool {
    (0x20..=0x7E).contains(&b)
}

/// One message, host → device (REQUEST, CANCEL, PING) or device → host (the rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A restricted item was selected; the host wants a decision for customers of at
    /// least `required_age` years.
    Request {
        id: u16,
        required_age: u8,
    },
    /// The host no longer needs the decision for `id` (item deselected, sale voided).
    Cancel {
        id: u16,
    },
    Ping {
        nonce: u32,
    },
    /// The answer to REQUEST `id`. `confidence` is a percentage, 0..=100.
    Decision {
        id: u16,
        decision: Decision,
        band: AgeBand,
        confidence: u8,
    },
    Heartbeat {
        uptime_s: u32,
        state: DeviceState,
    },
    /// `detail`: up to 16 printable ASCII bytes (0x20..=0x7E), may be empty.
    Fault {
        code: FaultCode,
        detail: heapless::String<MAX_DETAIL>,
    },
    Pong {
        nonce: u32,
    },
}

impl Message {
    /// A FAULT whose detail is `detail` cut to 16 bytes, with anything but printable ASCII
    /// replaced by `?`: a fault report must go out even when its text is not wire-safe.
    pub fn fault(code: FaultCode, detail: &str) -> Self {
        let mut text = heapless::String::new();
        for b in detail.bytes().take(MAX_DETAIL) {
            let c = if is_printable_ascii(b) {
                char::from(b)
            } else {
                '?'
            };
            // Cannot fail: at most MAX_DETAIL one-byte chars go in.
            let _ = text.push(c);
        }
        Message::Fault { code, detail: text }
    }

    pub fn msg_type(&self) -> MessageType {
        match self {
            Message::Request { .. } => MessageType::Request,
            Message::Cancel { .. } => MessageType::Cancel,
            Message::Ping { .. } => MessageType::Ping,
            Message::Decision { .. } => MessageType::Decision,
            Message::Heartbeat { .. } => MessageType::Heartbeat,
            Message::Fault { .. } => MessageType::Fault,
            Message::Pong { .. } => MessageType::Pong,
        }
    }

    /// Parses a frame: checks length, start byte and CRC (so an unchecked view is fine),
    /// then the type, the payload length for that type and every field's range.
    pub fn parse<T: AsRef<[u8]>>(frame: &Frame<T>) -> Result<Message, WireError> {
        frame.check_len()?;
        frame.check_start()?;
        frame.check_crc()?;
        let raw_type = frame.msg_type();
        let msg_type = MessageType::from_u8(raw_type).ok_or(WireError::UnknownType(raw_type))?;
        let p = frame.payload();
        let (min, max) = msg_type.payload_len();
        let bad_len = WireError::BadLength {
            msg_type: raw_type,
            len: p.len(),
            min,
            max,
        };
        // Slice patterns rather than indexing: a payload of the wrong size cannot reach a
        // read, so nothing here can go out of bounds.
        let message = match (msg_type, p) {
            (MessageType::Request, &[i0, i1, required_age]) => Message::Request {
                id: u16::from_le_bytes([i0, i1]),
                required_age,
            },
            (MessageType::Cancel, &[i0, i1]) => Message::Cancel {
                id: u16::from_le_bytes([i0, i1]),
            },
            (MessageType::Ping, &[a, b, c, d]) => Message::Ping {
                nonce: u32::from_le_bytes([a, b, c, d]),
            },
            (MessageType::Pong, &[a, b, c, d]) => Message::Pong {
                nonce: u32::from_le_bytes([a, b, c, d]),
            },
            (MessageType::Decision, &[i0, i1, verdict, band, confidence]) => {
                let decision = decision_from_u8(verdict).ok_or(WireError::BadValue {
                    field: "decision",
                    value: verdict,
                })?;
                let band = AgeBand::from_u8(band).ok_or(WireError::BadValue {
                    field: "age_band",
                    value: band,
                })?;
                if confidence > 100 {
                    return Err(WireError::BadValue {
                        field: "confidence",
                        value: confidence,
                    });
                }
                Message::Decision {
                    id: u16::from_le_bytes([i0, i1]),
                    decision,
                    band,
                    confidence,
                }
            }
            (MessageType::Heartbeat, &[a, b, c, d, state]) => {
                let state = DeviceState::from_u8(state).ok_or(WireError::BadValue {
                    field: "state",
                    value: state,
                })?;
                Message::Heartbeat {
                    uptime_s: u32::from_le_bytes([a, b, c, d]),
                    state,
                }
            }
            (MessageType::Fault, &[code, ref detail @ ..]) if detail.len() <= MAX_DETAIL => {
                let mut text = heapless::String::new();
                for &b in detail {
                    if !is_printable_ascii(b) {
                        return Err(WireError::BadValue {
                            field: "fault_detail",
                            value: b,
                        });
                    }
                    // Cannot fail: the guard bounds the detail to the string's capacity.
                    let _ = text.push(char::from(b));
                }
                Message::Fault {
                    code: FaultCode(code),
                    detail: text,
                }
            }
            _ => return Err(bad_len),
        };
        Ok(message)
    }

    /// Bytes the emitted frame occupies.
    pub fn buffer_len(&self) -> usize {
        let payload = match self {
            Message::Fault { detail, .. } => 1 + detail.len(),
            other => other.msg_type().payload_len().0,
        };
        OVERHEAD + payload
    }

    /// Writes the payload into `out` and returns its length, refusing values `parse` would
    /// reject, so that whatever `emit` writes parses back to `self`.
    fn encode_payload(&self, out: &mut [u8; MAX_PAYLOAD]) -> Result<usize, WireError> {
        let mut put = |bytes: &[u8]| -> usize {
            let n = bytes.len().min(MAX_PAYLOAD);
            out[..n].copy_from_slice(&bytes[..n]);
            n
        };
        let n = match self {
            Message::Request { id, required_age } => {
                let [i0, i1] = id.to_le_bytes();
                put(&[i0, i1, *required_age])
            }
            Message::Cancel { id } => put(&id.to_le_bytes()),
            Message::Ping { nonce } | Message::Pong { nonce } => put(&nonce.to_le_bytes()),
            Message::Decision {
                id,
                decision,
                band,
                confidence,
            } => {
                if *confidence > 100 {
                    return Err(WireError::BadValue {
                        field: "confidence",
                        value: *confidence,
                    });
                }
                let [i0, i1] = id.to_le_bytes();
                put(&[i0, i1, decision_to_u8(*decision), *band as u8, *confidence])
            }
            Message::Heartbeat { uptime_s, state } => {
                let [a, b, c, d] = uptime_s.to_le_bytes();
                put(&[a, b, c, d, *state as u8])
            }
            Message::Fault { code, detail } => {
                if let Some(&b) = detail.as_bytes().iter().find(|&&b| !is_printable_ascii(b)) {
                    return Err(WireError::BadValue {
                        field: "fault_detail",
                        value: b,
                    });
                }
                let mut bytes = [0u8; 1 + MAX_DETAIL];
                bytes[0] = code.0;
                let len = detail.len().min(MAX_DETAIL);
                bytes[1..1 + len].copy_from_slice(&detail.as_bytes()[..len]);
                put(&bytes[..1 + len])
            }
        };
        Ok(n)
    }

    /// Writes the whole frame (start, length, type, payload, CRC) at the start of the
    /// frame's buffer and returns the number of bytes written. Nothing is written on error.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        frame: &mut Frame<T>,
    ) -> Result<usize, WireError> {
        let mut payload = [0u8; MAX_PAYLOAD];
        let n = self.encode_payload(&mut payload)?;
        let need = OVERHEAD + n;
        let have = frame.buffer.as_ref().len();
        if have < need {
            return Err(WireError::BufferTooSmall { need, have });
        }
        frame.set_start();
        // n <= 1 + MAX_DETAIL, so it fits a byte.
        frame.set_payload_len(n as u8);
        frame.set_msg_type(self.msg_type() as u8);
        // Equal lengths (the buffer size was checked above); zip keeps even a broken
        // invariant from panicking.
        for (dst, src) in frame.payload_mut().iter_mut().zip(payload.iter().take(n)) {
            *dst = *src;
        }
        frame.fill_crc();
        Ok(need)
    }

    /// The frame as bytes, ready for the serial port.
    pub fn to_bytes(&self) -> Result<heapless::Vec<u8, MAX_FRAME>, WireError> {
        let mut buf = [0u8; MAX_FRAME];
        let n = self.emit(&mut Frame::new_unchecked(&mut buf[..]))?;
        // Cannot fail: n <= MAX_FRAME, the vector's capacity.
        heapless::Vec::from_slice(buf.get(..n).unwrap_or(&[])).map_err(|()| {
            WireError::BufferTooSmall {
                need: n,
                have: MAX_FRAME,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Emits `msg`, compares with `expected` byte for byte, parses it back.
    fn round_trip(msg: Message, expected: &[u8]) {
        let bytes = msg.to_bytes().unwrap();
        assert_eq!(
            bytes.as_slice(),
            expected,
            "emit of {msg:?}: got {:02X?}",
            bytes.as_slice()
        );
        assert_eq!(msg.buffer_len(), expected.len());
        let frame = Frame::new_checked(expected).unwrap();
        assert_eq!(Message::parse(&frame).unwrap(), msg);
        // Trailing bytes after the frame are not part of it.
        let mut longer = expected.to_vec();
        longer.extend_from_slice(&[0xA5, 0x00, 0xFF]);
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&longer[..])).unwrap(),
            msg
        );
    }

    #[test]
    fn crc_is_ibm_3740() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    // The example frames in docs/serial-protocol.md; keep the two in step.
    const DOC_REQUEST: [u8; 8] = [0xA5, 0x03, 0x01, 0x34, 0x12, 0x19, 0x06, 0x76];
    const DOC_DECISION: [u8; 10] = [0xA5, 0x05, 0x81, 0x34, 0x12, 0x01, 0x03, 0x57, 0xBF, 0x22];

    #[test]
    fn doc_examples() {
        round_trip(
            Message::Request {
                id: 0x1234,
                required_age: 25,
            },
            &DOC_REQUEST,
        );
        round_trip(
            Message::Decision {
                id: 0x1234,
                decision: Decision::Allow,
                band: AgeBand::From25To34,
                confidence: 87,
            },
            &DOC_DECISION,
        );
        let doc = include_str!("../../docs/serial-protocol.md");
        for frame in [&DOC_REQUEST[..], &DOC_DECISION[..]] {
            let hex: Vec<String> = frame.iter().map(|b| format!("{b:02X}")).collect();
            assert!(
                doc.contains(&hex.join(" ")),
                "docs/serial-protocol.md lacks {}",
                hex.join(" ")
            );
        }
    }

    #[test]
    fn round_trip_every_message() {
        round_trip(
            Message::Cancel { id: 0xBEEF },
            &[0xA5, 0x02, 0x02, 0xEF, 0xBE, 0x51, 0x41],
        );
        round_trip(
            Message::Ping { nonce: 0xDEADBEEF },
            &[0xA5, 0x04, 0x03, 0xEF, 0xBE, 0xAD, 0xDE, 0x08, 0x12],
        );
        round_trip(
            Message::Pong { nonce: 0xDEADBEEF },
            &[0xA5, 0x04, 0x84, 0xEF, 0xBE, 0xAD, 0xDE, 0x0C, 0x57],
        );
        round_trip(
            Message::Decision {
                id: 7,
                decision: Decision::Deny,
                band: AgeBand::From13To17,
                confidence: 100,
            },
            &[0xA5, 0x05, 0x81, 0x07, 0x00, 0x02, 0x01, 0x64, 0x4E, 0x0F],
        );
        round_trip(
            Message::Decision {
                id: 8,
                decision: Decision::Refer,
                band: AgeBand::From50,
                confidence: 0,
            },
            &[0xA5, 0x05, 0x81, 0x08, 0x00, 0x03, 0x05, 0x00, 0x61, 0xBD],
        );
        round_trip(
            Message::Heartbeat {
                uptime_s: 3600,
                state: DeviceState::Ready,
            },
            &[0xA5, 0x05, 0x82, 0x10, 0x0E, 0x00, 0x00, 0x01, 0x28, 0x61],
        );
        round_trip(
            Message::fault(FaultCode::CAMERA, "no frames"),
            &[
                0xA5, 0x0A, 0x83, 0x01, b'n', b'o', b' ', b'f', b'r', b'a', b'm', b'e', b's', 0xFB,
                0x71,
            ],
        );
        round_trip(
            Message::fault(FaultCode::RELAY, ""),
            &[0xA5, 0x01, 0x83, 0x03, 0x04, 0x85],
        );
    }

    #[test]
    fn fault_detail_is_cut_and_sanitised() {
        let Message::Fault { detail, .. } =
            Message::fault(FaultCode::MODEL, "naïve\n0123456789abcdef")
        else {
            panic!("not a fault")
        };
        // 'ï' is two UTF-8 bytes, each replaced; the newline too; 16 bytes kept.
        assert_eq!(detail.as_str(), "na??ve?012345678");
        let msg = Message::Fault {
            code: FaultCode::MODEL,
            detail,
        };
        assert_eq!(
            Message::parse(&Frame::new_checked(&msg.to_bytes().unwrap()[..]).unwrap()).unwrap(),
            msg
        );
    }

    /// Rewrites the CRC so that a frame with hand-edited contents reaches the field checks.
    fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
        Frame::new_unchecked(&mut bytes[..]).fill_crc();
        bytes
    }

    #[test]
    fn parse_rejects_and_names_what_is_wrong() {
        let good = DOC_DECISION.to_vec();
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&good[..4])),
            Err(WireError::Truncated { need: 10, have: 4 })
        );
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&good[..2])),
            Err(WireError::Truncated { need: 3, have: 2 })
        );
        let mut bad_start = good.clone();
        bad_start[0] = 0x5A;
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&bad_start[..])),
            Err(WireError::BadStart(0x5A))
        );
        assert_eq!(
            Frame::new_checked(&[0xA5, 33][..]).err(),
            Some(WireError::Oversize(33))
        );
        let mut bad_crc = good.clone();
        bad_crc[9] ^= 0x01;
        assert_eq!(
            Frame::new_checked(&bad_crc[..]).err(),
            Some(WireError::BadCrc {
                received: 0x23BF,
                computed: 0x22BF
            })
        );
        let mut unknown = good.clone();
        unknown[2] = 0x42;
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&with_crc(unknown)[..])),
            Err(WireError::UnknownType(0x42))
        );
        let short = with_crc(vec![0xA5, 0x02, 0x81, 0x01, 0x00, 0, 0]);
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&short[..])),
            Err(WireError::BadLength {
                msg_type: 0x81,
                len: 2,
                min: 5,
                max: 5
            })
        );
        for (at, value, field) in [
            (5, 0x00, "decision"),
            (5, 0x04, "decision"),
            (6, 6, "age_band"),
            (7, 101, "confidence"),
        ] {
            let mut bytes = good.clone();
            bytes[at] = value;
            assert_eq!(
                Message::parse(&Frame::new_unchecked(&with_crc(bytes)[..])),
                Err(WireError::BadValue { field, value })
            );
        }
        let heartbeat = with_crc(vec![0xA5, 0x05, 0x82, 0, 0, 0, 0, 9, 0, 0]);
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&heartbeat[..])),
            Err(WireError::BadValue {
                field: "state",
                value: 9
            })
        );
        let fault = with_crc(vec![0xA5, 0x02, 0x83, 0x01, 0x0A, 0, 0]);
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&fault[..])),
            Err(WireError::BadValue {
                field: "fault_detail",
                value: 0x0A
            })
        );
        let long_fault = with_crc([&[0xA5, 18, 0x83, 0x01][..], &[b'x'; 17], &[0, 0]].concat());
        assert_eq!(
            Message::parse(&Frame::new_unchecked(&long_fault[..])),
            Err(WireError::BadLength {
                msg_type: 0x83,
                len: 18,
                min: 1,
                max: 17
            })
        );
    }

    #[test]
    fn emit_refuses_what_parse_would_reject() {
        let overconfident = Message::Decision {
            id: 1,
            decision: Decision::Allow,
            band: AgeBand::From50,
            confidence: 101,
        };
        assert_eq!(
            overconfident.to_bytes(),
            Err(WireError::BadValue {
                field: "confidence",
                value: 101
            })
        );
        let mut detail = heapless::String::new();
        detail.push_str("bad\ttab").unwrap();
        let fault = Message::Fault {
            code: FaultCode::INTERNAL,
            detail,
        };
        assert_eq!(
            fault.to_bytes(),
            Err(WireError::BadValue {
                field: "fault_detail",
                value: b'\t'
            })
        );
        let mut small = [0u8; 7];
        let request = Message::Request {
            id: 1,
            required_age: 18,
        };
        assert_eq!(
            request.emit(&mut Frame::new_unchecked(&mut small[..])),
            Err(WireError::BufferTooSmall { need: 8, have: 7 })
        );
        assert_eq!(small, [0u8; 7], "nothing written on error");
    }

    #[test]
    fn frame_accessors_never_panic_on_short_buffers() {
        for len in 0..MAX_FRAME {
            let bytes = [0xA5u8, 0x20, 0x81, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
            let frame = Frame::new_unchecked(&bytes[..len.min(bytes.len())]);
            let _ = (
                frame.start(),
                frame.msg_type(),
                frame.payload(),
                frame.crc(),
                frame.computed_crc(),
            );
            assert!(frame.check_len().is_err());
            let mut buf = [0u8; 4];
            let mut frame = Frame::new_unchecked(&mut buf[..len.min(4)]);
            frame.set_payload_len(0x20);
            frame.payload_mut().fill(1);
            frame.fill_crc();
        }
    }

    #[test]
    fn bands_and_directions() {
        assert_eq!(AgeBand::from_age(12.99), Some(AgeBand::Under13));
        assert_eq!(AgeBand::from_age(13.0), Some(AgeBand::From13To17));
        assert_eq!(AgeBand::from_age(17.9), Some(AgeBand::From13To17));
        assert_eq!(AgeBand::from_age(18.0), Some(AgeBand::From18To24));
        assert_eq!(AgeBand::from_age(34.9), Some(AgeBand::From25To34));
        assert_eq!(AgeBand::from_age(49.9), Some(AgeBand::From35To49));
        assert_eq!(AgeBand::from_age(90.0), Some(AgeBand::From50));
        assert_eq!(AgeBand::from_age(f32::NAN), None);
        assert_eq!(AgeBand::from_age(-1.0), None);
        assert!(MessageType::Request.is_from_host());
        assert!(!MessageType::Pong.is_from_host());
        for t in 0..=255u8 {
            if let Some(mt) = MessageType::from_u8(t) {
                assert_eq!(mt as u8, t);
            }
        }
    }
}

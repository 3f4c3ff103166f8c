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

mod frame;
mod message;

use crc::{Crc, CRC_16_IBM_3740};

pub use frame::Frame;
pub use message::{DeviceState, FaultCode, Message};

pub use crate::domain::AgeBand;

/// First byte of every frame.
pub(crate) const START: u8 = 0xA5;
/// Largest payload a frame may declare. Small enough that a false start byte in line
/// noise can make the decoder wait for at most a few dozen bytes before it resyncs.
pub(crate) const MAX_PAYLOAD: usize = 32;
/// Start, length and type.
pub(crate) const HEADER_LEN: usize = 3;
pub(crate) const CRC_LEN: usize = 2;
/// Bytes of a frame that are not payload.
pub(crate) const OVERHEAD: usize = HEADER_LEN + CRC_LEN;
/// Largest frame on the wire.
pub const MAX_FRAME: usize = OVERHEAD + MAX_PAYLOAD;
/// Longest ASCII detail a FAULT may carry.
pub(crate) const MAX_DETAIL: usize = 16;

/// CRC-16/IBM-3740, a.k.a. CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection,
/// no final xor; check value ("123456789") 0x29B1.
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_IBM_3740);

/// The frame check sequence over `bytes` (length byte, type byte and payload).
pub(crate) fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
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
    Reason = 0x85,
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
            0x85 => Self::Reason,
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
            Self::Reason => (3, 3),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Decision;

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
        let doc = include_str!("../../../docs/serial-protocol.md");
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
            Message::Reason {
                id: 9,
                reason: crate::domain::ReferReason::NoFace,
            },
            &[0xA5, 0x03, 0x85, 0x09, 0x00, 0x02, 0x70, 0x20],
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
    fn directions() {
        assert!(MessageType::Request.is_from_host());
        assert!(!MessageType::Pong.is_from_host());
        for t in 0..=255u8 {
            if let Some(mt) = MessageType::from_u8(t) {
                assert_eq!(mt as u8, t);
            }
        }
    }
}

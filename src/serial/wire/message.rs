//! [`Message`]: one frame's parsed, typed value, with [`Message::parse`] and
//! [`Message::emit`]; and the codes its fields carry.

use super::{Frame, MessageType, WireError, MAX_DETAIL, MAX_FRAME, MAX_PAYLOAD, OVERHEAD};
use crate::domain::{AgeBand, Decision, ReferReason};

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
    /// Why the REFER just sent for REQUEST `id` is a REFER (sent right after it; a host
    /// that does not know the type drops it).
    Reason {
        id: u16,
        reason: ReferReason,
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
            Message::Reason { .. } => MessageType::Reason,
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
            (MessageType::Reason, &[i0, i1, code]) => Message::Reason {
                id: u16::from_le_bytes([i0, i1]),
                reason: ReferReason::from_code(code).ok_or(WireError::BadValue {
                    field: "reason",
                    value: code,
                })?,
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
            Message::Reason { id, reason } => {
                let [i0, i1] = id.to_le_bytes();
                put(&[i0, i1, reason.code()])
            }
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

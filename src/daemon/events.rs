//! What the daemon did, as typed records: one per line of `agegate run`'s output (JSON)
//! and of the audit log. The event names and fields are a consumer interface: `decision`,
//! `serial_tx`, `serial_rx`, `pin`, `fault`, `recovered`, `policy_applied`, `mdb_rx`,
//! `mdb_tx`. Times are the frame clock's milliseconds. No record holds an image, a crop, an embedding or an estimated age.

use serde::Serialize;

use super::core::Origin;
use crate::actuate::PinChange;
use crate::domain::{AgeBand, Decision, ReferReason};
use crate::mdb::VmcRequest;
#[cfg(test)]
use crate::serial::FaultCode;
use crate::serial::{DeviceState, Message};

/// One event line.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Decision {
        t_ms: u64,
        id: u16,
        decision: Decision,
        /// The window's band, "none" when no face was seen.
        age_band: &'static str,
        sigma: f32,
        frames: usize,
        /// From the start of the window (REQUEST or first face) to the decision.
        decide_ms: u64,
        /// Why a REFER is a REFER (absent for ALLOW and DENY).
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<ReferReason>,
        /// What the host's DECISION carries (0 to 100). Not in the event line, whose
        /// fields stay as they are; telemetry's `decision` publishes it.
        #[serde(skip)]
        confidence: u8,
        /// Who asked: a host's REQUEST, a face, or a vending machine's session (whose
        /// answer telemetry publishes with it). Not in the event line.
        #[serde(skip)]
        origin: Origin,
    },
    SerialTx {
        t_ms: u64,
        message: WireMessage,
        hex: String,
    },
    SerialRx {
        t_ms: u64,
        message: WireMessage,
    },
    Pin {
        t_ms: u64,
        #[serde(flatten)]
        change: PinChange,
    },
    Fault {
        t_ms: u64,
        code: u8,
        detail: String,
        /// False when the FAULT message to the host was held back (the same code went out
        /// less than a second before).
        reported: bool,
    },
    Recovered {
        t_ms: u64,
        what: &'static str,
    },
    /// A policy offered over telemetry (`policy/set`) now decides the next windows.
    PolicyApplied {
        t_ms: u64,
    },
    /// A request from the vending machine (MDB): a verification, or its abort.
    MdbRx {
        t_ms: u64,
        #[serde(flatten)]
        request: VmcRequestFields,
    },
    /// The answer a VMC session gets on its next POLL: `approved`, `not_approved` or
    /// `not_verified`.
    MdbTx {
        t_ms: u64,
        id: u16,
        answer: &'static str,
    },
}

/// A [`VmcRequest`] as fields.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum VmcRequestFields {
    Verify { id: u16, required_age: u8 },
    Abort { id: u16 },
}

impl From<&VmcRequest> for VmcRequestFields {
    fn from(request: &VmcRequest) -> Self {
        match *request {
            VmcRequest::Verify {
                session,
                required_age,
            } => Self::Verify {
                id: session,
                required_age,
            },
            VmcRequest::Abort { session } => Self::Abort { id: session },
        }
    }
}

/// A serial message as fields, the same names as `docs/serial-protocol.md`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WireMessage {
    Request {
        id: u16,
        required_age: u8,
    },
    Cancel {
        id: u16,
    },
    Ping {
        nonce: u32,
    },
    Decision {
        id: u16,
        decision: Decision,
        band: &'static str,
        confidence: u8,
    },
    Heartbeat {
        uptime_s: u32,
        state: &'static str,
    },
    Fault {
        code: u8,
        detail: String,
    },
    Pong {
        nonce: u32,
    },
    Reason {
        id: u16,
        reason: ReferReason,
    },
}

fn state_name(state: DeviceState) -> &'static str {
    match state {
        DeviceState::Starting => "starting",
        DeviceState::Ready => "ready",
        DeviceState::Deciding => "deciding",
        DeviceState::Faulted => "faulted",
    }
}

impl From<&Message> for WireMessage {
    fn from(message: &Message) -> Self {
        match message {
            Message::Request { id, required_age } => Self::Request {
                id: *id,
                required_age: *required_age,
            },
            Message::Cancel { id } => Self::Cancel { id: *id },
            Message::Ping { nonce } => Self::Ping { nonce: *nonce },
            Message::Decision {
                id,
                decision,
                band,
                confidence,
            } => Self::Decision {
                id: *id,
                decision: *decision,
                band: AgeBand::name(*band),
                confidence: *confidence,
            },
            Message::Heartbeat { uptime_s, state } => Self::Heartbeat {
                uptime_s: *uptime_s,
                state: state_name(*state),
            },
            Message::Fault { code, detail } => Self::Fault {
                code: code.0,
                detail: detail.to_string(),
            },
            Message::Pong { nonce } => Self::Pong { nonce: *nonce },
            Message::Reason { id, reason } => Self::Reason {
                id: *id,
                reason: *reason,
            },
        }
    }
}

/// Space-separated upper-case hex, as the protocol document writes frames.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(s, "{sep}{b:02X}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_messages_become_fields() {
        let m = Message::Decision {
            id: 7,
            decision: Decision::Allow,
            band: AgeBand::From50,
            confidence: 99,
        };
        let json = serde_json::to_value(WireMessage::from(&m)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"type": "decision", "id": 7, "decision": "ALLOW", "band": "50+", "confidence": 99})
        );
        let event = Event::SerialTx {
            t_ms: 3,
            message: WireMessage::from(&Message::fault(FaultCode::SHUTDOWN, "stopping")),
            hex: hex(&[0xA5, 0x01]),
        };
        let json = serde_json::to_value(event).expect("json");
        assert_eq!(json["event"], "serial_tx");
        assert_eq!(json["message"]["type"], "fault");
        assert_eq!(json["message"]["code"], 7);
        assert_eq!(json["hex"], "A5 01");
    }
}

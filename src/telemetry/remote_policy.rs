//! `policy/set`: a fleet's back office replacing a unit's `[policy]`. Off unless the board
//! says `remote_policy = true` (the unit does not even subscribe then). A message is
//! bounded, checked like the board file's `[policy]`, and may only tighten the board's
//! own policy ([`Policy::no_looser_than`]): whoever may publish on the broker can make the
//! gate stricter, never let a younger person through. Applied by the daemon between
//! decisions, answered on `policy/ack`.

use serde_json::json;

use super::{lock, unix_ms, Shared};
use crate::decide::Policy;
use crate::digest::Sha256;

/// The largest `policy/set` payload taken: a `[policy]` section with its calibration is
/// well under 1 KiB. A larger one is refused with an ack naming this limit.
pub const MAX_POLICY_BYTES: usize = 8 * 1024;

/// The largest MQTT packet the policy link reads whole. Between [`MAX_POLICY_BYTES`] and
/// this, a message is read, refused and the link kept; a larger one the MQTT client refuses
/// from its header, which ends the link (the policy link only: telemetry has its own), so
/// it is refused from the size the client reports, without reading it.
pub(crate) const MAX_POLICY_PACKET_BYTES: usize = 64 * 1024;

/// How many refused messages are remembered, not to be acked again.
const REFUSALS_KEPT: usize = 8;

/// What the policy link has taken and what waits for the daemon.
#[derive(Default)]
pub(crate) struct RemotePolicy {
    /// The last payload taken, so the retained message coming again with every connection
    /// is not applied (nor logged) again.
    last_taken: Option<Sha256>,
    /// The last few refused, for the same reason: one ack per message, not one per
    /// connection (a retained one comes again with each).
    refused: std::collections::VecDeque<Refused>,
    /// Waiting to be applied: the mailbox count that says it was, and its summary.
    waiting: Option<(u64, serde_json::Value)>,
}

#[derive(PartialEq)]
enum Refused {
    Payload(Sha256),
    /// Refused from its size alone (over [`MAX_POLICY_PACKET_BYTES`]).
    Packet(usize),
}

impl RemotePolicy {
    /// A `policy/set` message as it arrived.
    pub(crate) fn receive(&mut self, shared: &Shared, payload: &[u8]) {
        let digest = Sha256::of_bytes(payload);
        if self.last_taken == Some(digest) {
            return;
        }
        let checked = if payload.len() > MAX_POLICY_BYTES {
            Err(format!(
                "{} bytes, over the {MAX_POLICY_BYTES}-byte limit of a policy/set message",
                payload.len()
            ))
        } else {
            std::str::from_utf8(payload)
                .map_err(|_| "not UTF-8 text".to_string())
                .and_then(|text| Policy::from_toml(text).map_err(|e| e.to_string()))
                .and_then(|policy| {
                    policy.no_looser_than(&shared.board_policy)?;
                    Ok(policy)
                })
        };
        match checked {
            Err(error) => self.refuse(shared, Refused::Payload(digest), &error),
            Ok(policy) => {
                self.last_taken = Some(digest);
                let target = shared.policies.applied() + 1;
                shared.policies.offer(policy);
                self.waiting = Some((target, super::policy_summary(&policy)));
            }
        }
    }

    /// A message the MQTT client refused from its header: `bytes` is the packet's length.
    pub(crate) fn refuse_oversize_packet(&mut self, shared: &Shared, bytes: usize) {
        let error = format!(
            "a message of about {bytes} bytes, over the {MAX_POLICY_BYTES}-byte limit of a \
             policy/set message"
        );
        self.refuse(shared, Refused::Packet(bytes), &error);
    }

    fn refuse(&mut self, shared: &Shared, what: Refused, error: &str) {
        if self.refused.contains(&what) {
            return;
        }
        if self.refused.len() == REFUSALS_KEPT {
            self.refused.pop_front();
        }
        self.refused.push_back(what);
        tracing::warn!("telemetry: policy/set refused: {}", error.escape_debug());
        shared.push(
            "policy/ack",
            json!({"ok": false, "error": format!("{error} (the old policy stays)"), "time_ms": unix_ms()}),
            false,
        );
    }

    /// Whether a policy waits for the daemon (the publisher then looks often).
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Acks the waiting policy once the daemon has applied it.
    pub(crate) fn ack_if_applied(&mut self, shared: &Shared) {
        let Some((target, summary)) = &self.waiting else {
            return;
        };
        if shared.policies.applied() < *target {
            return;
        }
        lock(&shared.info).policy = summary.clone();
        shared.push(
            "policy/ack",
            json!({"ok": true, "policy": summary, "time_ms": unix_ms()}),
            false,
        );
        shared.push_status();
        self.waiting = None;
    }
}

//! The broker links and the publisher. rumqttc's sync `Connection` makes progress only
//! while it is polled, and its `recv_timeout` drops the poll it times out: while connecting,
//! that is the connection attempt itself (TCP, TLS, CONNECT, CONNACK). Polled every 50 ms,
//! as it once was, no attempt over a link slower than that ever completed, and each poll
//! opened a new connection. So each link is polled here by a thread of its own with the
//! blocking `recv`, never cancelled: rumqttc's connect timeout bounds an attempt, and the
//! attempts follow the backoff. The publisher, another thread, hands the telemetry link the
//! queue's messages, a few unacknowledged at a time, through rumqttc's client handle.
//!
//! `policy/set` comes over a second connection, opened only with `remote_policy = true`:
//! a message too large for the MQTT client to take ends the connection that carried it,
//! and a retained one comes back with every subscription, so on a shared link one oversize
//! message would stop all telemetry. On its own link it costs only that link.

use std::time::{Duration, Instant};

use rumqttc::{
    Client, Connection, ConnectionError, Event as MqttEvent, LastWill, MqttOptions, NetworkOptions,
    Outgoing as MqttOutgoing, Packet, QoS, StateError, Transport,
};
use serde_json::json;

use super::remote_policy::MAX_POLICY_PACKET_BYTES;
use super::{lock, Outgoing, Shared};

/// How long one connection attempt may take, TCP and TLS handshakes and CONNECT to
/// CONNACK: a cellular link with a few hundred ms each way needs a few round trips.
const CONNECT_TIMEOUT_S: u64 = 10;
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long the publisher lets the net thread send a DISCONNECT at a stop.
const DISCONNECT_PATIENCE: Duration = Duration::from_millis(500);
/// How often the publisher looks whether the daemon applied a remote policy.
const POLICY_POLL: Duration = Duration::from_millis(50);
/// The publisher's pause when rumqttc's request queue is full, for the net thread to drain it.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(50);

/// The two ends of one MQTT connection: the handle that sends, the loop that drives it.
pub(crate) fn connect(
    shared: &Shared,
    client_suffix: &str,
    transport: Transport,
    password: Option<String>,
    will: bool,
) -> (Client, Connection) {
    let settings = &shared.settings;
    let mut options = MqttOptions::new(
        format!("agegate-{}{client_suffix}", settings.device_id),
        settings.host.clone(),
        settings.port,
    );
    options
        .set_transport(transport)
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        // The policy link reads a policy; the telemetry link reads only acks.
        .set_max_packet_size(MAX_POLICY_PACKET_BYTES, 64 * 1024);
    if will {
        let offline = json!({"state": "offline", "device_id": settings.device_id}).to_string();
        options.set_last_will(LastWill::new(
            settings.topic("status"),
            offline,
            QoS::AtLeastOnce,
            true,
        ));
    }
    if let Some(user) = &settings.username {
        options.set_credentials(user.clone(), password.unwrap_or_default());
    }
    let (client, mut connection) = Client::new(options, 16);
    let mut network = NetworkOptions::new();
    network.set_connection_timeout(CONNECT_TIMEOUT_S);
    // Small messages, one at a time: Nagle's delay would add to every round trip.
    network.set_tcp_nodelay(true);
    connection.eventloop.set_network_options(network);
    (client, connection)
}

/// The wait between connection attempts: doubling from 0.1 s to `reconnect_max`, and reset
/// only once a connection has carried something (a delivery, a keep-alive answered). A
/// CONNACK alone does not reset it: a broker that accepts the unit and drops it at once
/// would otherwise see a connection every 0.1 s.
struct Backoff {
    next: Duration,
    max: Duration,
    failures: u64,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Self {
            next: FIRST_BACKOFF,
            max,
            failures: 0,
        }
    }

    /// One more failed attempt: how long to wait before the next.
    fn failed(&mut self) -> Duration {
        self.failures += 1;
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// The link works: the failures before it.
    fn proved(&mut self) -> u64 {
        self.next = FIRST_BACKOFF;
        std::mem::take(&mut self.failures)
    }
}

/// Sleeps `wait`, woken early only by a stop: `false` if stopping.
fn sleep_unless_finishing(shared: &Shared, wait: Duration) -> bool {
    let queue = lock(&shared.queue);
    let (queue, _) = shared
        .wake
        .wait_timeout_while(queue, wait, |q| !q.finishing)
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    !queue.finishing
}

/// The telemetry link's thread: tells the publisher when it may send, hands a message
/// back to the queue when its connection is lost before the broker acknowledged it.
pub(crate) fn drive_telemetry(shared: &Shared, mut connection: Connection) {
    let settings = &shared.settings;
    let status_topic = settings.topic("status");
    let mut backoff = Backoff::new(settings.reconnect_max);
    let ended = |shared: &Shared| {
        lock(&shared.queue).link_ended = true;
        shared.wake.notify_all();
    };
    loop {
        match connection.recv() {
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                // A fresh retained status first on every connection (the will may have
                // replaced it); it supersedes any status still queued.
                let status = Outgoing {
                    topic: status_topic.clone(),
                    payload: shared.status().to_string().into_bytes(),
                    retain: true,
                };
                let mut queue = lock(&shared.queue);
                queue
                    .messages
                    .retain(|m| !(m.retain && m.topic == status_topic));
                queue.messages.push_front(status);
                queue.connected = true;
                drop(queue);
                shared.wake.notify_all();
            }
            Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => {
                let mut queue = lock(&shared.queue);
                if queue.in_flight.pop_front().is_some() {
                    shared.note_delivered();
                }
                drop(queue);
                shared.wake.notify_all();
                let failures = backoff.proved();
                if failures > 0 {
                    tracing::info!(failures, "telemetry: delivering to the broker again");
                }
            }
            Ok(Ok(MqttEvent::Outgoing(MqttOutgoing::Disconnect))) => {
                lock(&shared.queue).connected = false;
                return ended(shared);
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                let finishing = {
                    let mut queue = lock(&shared.queue);
                    queue.connected = false;
                    queue.take_back_in_flight();
                    queue.finishing
                };
                let wait = backoff.failed();
                // One warning per outage, not one per attempt.
                if backoff.failures == 1 {
                    tracing::warn!(
                        "telemetry: broker {}:{} unreachable ({e}); queueing up to {} messages",
                        settings.host,
                        settings.port,
                        settings.queue
                    );
                } else {
                    tracing::debug!(attempt = backoff.failures, "telemetry: connection: {e}");
                }
                if finishing || !sleep_unless_finishing(shared, wait) {
                    return ended(shared);
                }
            }
            // Every client handle is gone: the publisher has stopped.
            Err(rumqttc::RecvError) => return ended(shared),
        }
    }
}

/// The publisher's thread: a few unacknowledged messages at a time from the queue, `health`
/// on its interval, a remote policy's ack once the daemon has applied it.
pub(crate) fn publish(shared: &Shared, client: Client) {
    let interval = shared.settings.interval;
    let mut next_health = Instant::now() + interval;
    loop {
        let now = Instant::now();
        if now >= next_health {
            next_health = now + interval;
            shared.push("health", shared.health(), false);
        }
        let polling = {
            let mut remote = lock(&shared.remote);
            remote.ack_if_applied(shared);
            remote.is_waiting()
        };
        let patience = next_health.saturating_duration_since(now);
        let patience = if polling {
            patience.min(POLICY_POLL)
        } else {
            patience
        };
        let queue = lock(&shared.queue);
        let (mut queue, _) = shared
            .wake
            .wait_timeout_while(queue, patience, |q| !(q.can_send() || q.can_end()))
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if queue.can_send() {
            let Some(msg) = queue.messages.pop_front() else {
                continue;
            };
            match client.try_publish(
                msg.topic.clone(),
                QoS::AtLeastOnce,
                msg.retain,
                msg.payload.clone(),
            ) {
                Ok(()) => queue.in_flight.push_back(msg),
                Err(e) => {
                    // rumqttc's request queue is full: the net thread drains it.
                    tracing::warn!("telemetry: cannot queue a publish: {e}");
                    queue.messages.push_front(msg);
                    drop(queue);
                    std::thread::sleep(QUEUE_FULL_PAUSE);
                }
            }
        } else if queue.can_end() {
            if queue.connected {
                let _ = client.try_disconnect();
                // The net thread clears `connected` once the DISCONNECT is out.
                let _ = shared
                    .wake
                    .wait_timeout_while(queue, DISCONNECT_PATIENCE, |q| q.connected);
            }
            return;
        }
    }
}

/// The policy link's thread: subscribes to `policy/set` on every connection (a clean
/// session forgets it; the retained policy comes with it) and hands what arrives to
/// [`super::remote_policy::RemotePolicy`].
pub(crate) fn drive_policy(shared: &Shared, client: Client, mut connection: Connection) {
    let topic = shared.settings.topic("policy/set");
    let mut backoff = Backoff::new(shared.settings.reconnect_max);
    loop {
        match connection.recv() {
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtLeastOnce) {
                    tracing::warn!("telemetry: cannot subscribe to {topic}: {e}");
                }
            }
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(message)))) if message.topic == topic => {
                lock(&shared.remote).receive(shared, &message.payload);
                backoff.proved();
            }
            Ok(Ok(MqttEvent::Incoming(Packet::PingResp))) => {
                backoff.proved();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                if let ConnectionError::MqttState(StateError::Deserialization(
                    rumqttc::Error::PayloadSizeLimitExceeded(bytes),
                )) = e
                {
                    lock(&shared.remote).refuse_oversize_packet(shared, bytes);
                } else {
                    // The telemetry link warns of an outage; this one only notes it.
                    tracing::debug!("telemetry: policy link: {e}");
                }
                if !sleep_unless_finishing(shared, backoff.failed()) {
                    return;
                }
            }
            Err(rumqttc::RecvError) => return,
        }
    }
}

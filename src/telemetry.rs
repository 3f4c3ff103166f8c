//! Telemetry to an MQTT broker (`[telemetry]`): what a fleet's back office sees of each
//! unit, and never a face. One more consumer of the daemon's events: [`Telemetry::observe`]
//! turns an event into at most one message and puts it in a bounded queue (oldest dropped,
//! counted); a thread of its own owns the broker connection, so a broker that is down or
//! slow never blocks nor slows the frame loop.
//!
//! Topics under `agegate/<device_id>/`: `status` (retained: state, model hashes, policy,
//! version, uptime; the broker's last will sets it to `offline`), `decision` (one per
//! decision: id, time, verdict, band, confidence, reason, frames; no image, embedding nor
//! estimated age), `health` (every `interval_s`: counters, decide latency percentiles,
//! memory, CPU temperature where the board has a sensor) and `fault` (each as it happens).
//! All at QoS 1, one message in flight at a time: a message leaves the queue only once the
//! broker has acknowledged it, so a connection lost mid-way loses nothing (a message may
//! arrive twice; a decision's `id` tells).

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::daemon::{Event, LiveCounters, PolicyMailbox, WireMessage};
use crate::decide::{Policy, Rule};
use crate::settings::{in_range, KeyError};

/// `[telemetry]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// `mqtt://host[:port]` (1883 by default) or `mqtts://host[:port]` (TLS, 8883).
    pub broker: String,
    /// mqtts: the PEM certificate(s) of the CA that signed the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// mqtts: a client certificate and its key (PEM), for brokers that ask for one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub device_id: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub interval_s: Option<u64>,
    /// Messages held while the broker is unreachable.
    pub queue: Option<usize>,
    /// The longest wait between two connection attempts.
    pub reconnect_max_ms: Option<u64>,
    /// Whether a `policy/set` message may replace the board's `[policy]` (off by default:
    /// whoever may publish on the broker could then change what the gate allows).
    pub remote_policy: Option<bool>,
}

/// The files of an `mqtts://` connection.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A validated `[telemetry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    pub host: String,
    pub port: u16,
    /// `None`: plain MQTT.
    pub tls: Option<TlsFiles>,
    pub device_id: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub interval: Duration,
    pub queue: usize,
    pub reconnect_max: Duration,
    pub remote_policy: bool,
}

impl TelemetrySettings {
    /// `base` resolves a relative `password_file`.
    pub fn from_raw(raw: RawTelemetry, base: &std::path::Path) -> Result<Self, KeyError> {
        let (host, port, tls) = parse_broker(&raw.broker)?;
        let existing = |key: &str, p: &Option<PathBuf>| -> Result<Option<PathBuf>, KeyError> {
            let Some(p) = p else { return Ok(None) };
            let full = base.join(p);
            if !tls {
                return Err(KeyError::new(
                    key,
                    "given for an mqtt:// broker (it is for mqtts://)",
                ));
            }
            if full.is_file() {
                Ok(Some(full))
            } else {
                Err(KeyError::new(
                    key,
                    format!("no such file: {}", full.display()),
                ))
            }
        };
        let ca_file = existing("telemetry.ca_file", &raw.ca_file)?;
        let client_cert = existing("telemetry.client_cert", &raw.client_cert)?;
        let client_key = existing("telemetry.client_key", &raw.client_key)?;
        let tls =
            match (tls, ca_file) {
                (false, _) => None,
                (true, None) => return Err(KeyError::new(
                    "telemetry.ca_file",
                    "missing: an mqtts:// broker needs the CA that signed its certificate (PEM)",
                )),
                (true, Some(ca_file)) => Some(TlsFiles {
                    ca_file,
                    client: match (client_cert, client_key) {
                        (Some(cert), Some(key)) => Some((cert, key)),
                        (None, None) => None,
                        (Some(_), None) => {
                            return Err(KeyError::new(
                                "telemetry.client_key",
                                "missing: give it with client_cert",
                            ))
                        }
                        (None, Some(_)) => {
                            return Err(KeyError::new(
                                "telemetry.client_cert",
                                "missing: give it with client_key",
                            ))
                        }
                    },
                }),
            };
        let id_ok = !raw.device_id.is_empty()
            && raw.device_id.len() <= 64
            && raw
                .device_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err(KeyError::new(
                "telemetry.device_id",
                format!(
                    "`{}`: give 1 to 64 letters, digits, `.`, `_` or `-` (it is a topic level)",
                    raw.device_id
                ),
            ));
        }
        if raw.password_file.is_some() && raw.username.is_none() {
            return Err(KeyError::new(
                "telemetry.password_file",
                "given without telemetry.username",
            ));
        }
        let password_file = raw.password_file.map(|p| base.join(p));
        if let Some(p) = &password_file {
            if !p.is_file() {
                return Err(KeyError::new(
                    "telemetry.password_file",
                    format!("no such file: {}", p.display()),
                ));
            }
        }
        Ok(Self {
            host,
            port,
            tls,
            device_id: raw.device_id,
            username: raw.username,
            password_file,
            interval: Duration::from_secs(in_range(
                "telemetry.interval_s",
                raw.interval_s.unwrap_or(60),
                1..=86_400,
            )?),
            queue: in_range(
                "telemetry.queue",
                raw.queue.unwrap_or(10_000),
                16..=1_000_000,
            )?,
            reconnect_max: Duration::from_millis(in_range(
                "telemetry.reconnect_max_ms",
                raw.reconnect_max_ms.unwrap_or(30_000),
                100..=600_000,
            )?),
            remote_policy: raw.remote_policy.unwrap_or(false),
        })
    }

    pub fn topic(&self, leaf: &str) -> String {
        format!("agegate/{}/{leaf}", self.device_id)
    }
}

/// `(host, port, tls)` of `mqtt://host[:port]` or `mqtts://host[:port]`.
fn parse_broker(url: &str) -> Result<(String, u16, bool), KeyError> {
    let bad = |why: &str| KeyError::new("telemetry.broker", format!("`{url}`: {why}"));
    let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (rest, true, 8883)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (rest, false, 1883)
    } else {
        return Err(bad("give mqtt://host[:port] or mqtts://host[:port]"));
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port is not 1 to 65535"))?,
        ),
        None => (rest, default_port),
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(bad("no host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port, tls))
}

/// A policy as `status` and `policy/ack` show it.
pub fn policy_summary(policy: &Policy) -> Value {
    // Rounded: f32 thresholds print as 29.799999237060547 otherwise.
    let r = |v: f32| (f64::from(v) * 1000.0).round() / 1000.0;
    let rule = match policy.rule() {
        Rule::Margin { k_sigma } => json!({"kind": "margin", "k_sigma": r(k_sigma)}),
        Rule::Threshold {
            allow_at,
            deny_below,
        } => json!({"kind": "threshold", "allow_at": r(allow_at), "deny_below": r(deny_below)}),
        Rule::POver {
            age,
            allow_p,
            deny_p,
        } => json!({"kind": "p_over", "age": age, "allow_p": r(allow_p), "deny_p": r(deny_p)}),
    };
    json!({
        "legal_age": r(policy.legal_age()),
        "challenge_age": r(policy.challenge_age()),
        "rule": rule,
    })
}

/// What `status` says of the unit besides its state.
#[derive(Debug, Clone)]
pub struct UnitInfo {
    pub board: String,
    pub detector_sha256: Option<String>,
    pub age_sha256: Option<String>,
    pub policy: Value,
}

struct Outgoing {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

/// The queue between the daemon and the telemetry thread.
#[derive(Default)]
struct Queue {
    messages: VecDeque<Outgoing>,
    dropped: u64,
    finishing: bool,
}

/// What `observe` has seen, for `status` and `health`.
#[derive(Default)]
struct Seen {
    state: String,
    decisions: BTreeMap<&'static str, u64>,
    faults: BTreeMap<u8, u64>,
    /// The last decisions' window times, for percentiles.
    decide_ms: VecDeque<u64>,
    /// A decision waits for its serial message, which carries the confidence.
    pending: Option<Value>,
}

const LATENCY_WINDOW: usize = 256;

struct Shared {
    settings: TelemetrySettings,
    /// The policy in it changes when a `policy/set` is applied.
    info: Mutex<UnitInfo>,
    policies: Arc<PolicyMailbox>,
    started: Instant,
    queue: Mutex<Queue>,
    wake: Condvar,
    seen: Mutex<Seen>,
    counters: Arc<LiveCounters>,
    delivered: AtomicU64,
}

/// The daemon's side: cheap, never blocks on the network.
pub struct Telemetry {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Telemetry {
    /// Starts the telemetry thread; it connects (and reconnects) on its own. Fails only
    /// for what can be told at start: the password file.
    pub fn start(
        settings: TelemetrySettings,
        info: UnitInfo,
        counters: Arc<LiveCounters>,
        policies: Arc<PolicyMailbox>,
    ) -> Result<Self, String> {
        let password = match &settings.password_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("telemetry.password_file {}: {e}", p.display()))?
                    .trim_end_matches(['\n', '\r'])
                    .to_string(),
            ),
            None => None,
        };
        let transport = match &settings.tls {
            None => rumqttc::Transport::Tcp,
            Some(files) => {
                let read = |p: &PathBuf| {
                    std::fs::read(p).map_err(|e| format!("telemetry: {}: {e}", p.display()))
                };
                let client_auth = match &files.client {
                    Some((cert, key)) => Some((read(cert)?, read(key)?)),
                    None => None,
                };
                rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Simple {
                    ca: read(&files.ca_file)?,
                    alpn: None,
                    client_auth,
                })
            }
        };
        let shared = Arc::new(Shared {
            settings,
            info: Mutex::new(info),
            policies,
            started: Instant::now(),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            seen: Mutex::new(Seen {
                state: "starting".into(),
                ..Seen::default()
            }),
            counters,
            delivered: AtomicU64::new(0),
        });
        let for_worker = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || run_worker(&for_worker, password, transport))
            .map_err(|e| format!("cannot start the telemetry thread: {e}"))?;
        Ok(Self {
            shared,
            worker: Some(worker),
        })
    }

    /// Takes in one daemon event: a decision or a fault becomes a message, a heartbeat
    /// updates the state `status` reports.
    pub fn observe(&self, event: &Event) {
        let mut seen = lock(&self.shared.seen);
        match event {
            Event::Decision {
                id,
                decision,
                age_band,
                frames,
                decide_ms,
                reason,
                ..
            } => {
                if let Some(earlier) = seen.pending.take() {
                    self.shared.push("decision", earlier, false);
                }
                let verdict = match decision {
                    crate::domain::Decision::Allow => "ALLOW",
                    crate::domain::Decision::Deny => "DENY",
                    crate::domain::Decision::Refer => "REFER",
                };
                *seen.decisions.entry(verdict).or_default() += 1;
                seen.decide_ms.push_back(*decide_ms);
                if seen.decide_ms.len() > LATENCY_WINDOW {
                    seen.decide_ms.pop_front();
                }
                seen.pending = Some(json!({
                    "id": id,
                    "time_ms": unix_ms(),
                    "decision": verdict,
                    "band": age_band,
                    "reason": reason.map(|r| r.name()),
                    "frames": frames,
                    "decide_ms": decide_ms,
                }));
            }
            Event::SerialTx {
                message: WireMessage::Decision { id, confidence, .. },
                ..
            } => {
                if let Some(mut record) = seen.pending.take() {
                    if record["id"] == *id {
                        record["confidence"] = json!(confidence);
                    }
                    self.shared.push("decision", record, false);
                }
            }
            Event::SerialTx {
                message: WireMessage::Heartbeat { state, .. },
                ..
            } if seen.state != *state => {
                seen.state = state.to_string();
                drop(seen);
                self.shared.push_status();
            }
            Event::Fault {
                code,
                detail,
                reported,
                ..
            } => {
                *seen.faults.entry(*code).or_default() += 1;
                let fault = json!({
                    "time_ms": unix_ms(),
                    "code": code,
                    "detail": detail,
                    "reported_to_host": reported,
                });
                self.shared.push("fault", fault, false);
            }
            _ => {}
        }
    }

    /// Publishes what is queued and `status` offline, waiting at most `patience` for the
    /// broker; what is still queued then is counted in the log line.
    pub fn finish(mut self, patience: Duration) {
        let pending = lock(&self.shared.seen).pending.take();
        if let Some(record) = pending {
            self.shared.push("decision", record, false);
        }
        {
            let mut seen = lock(&self.shared.seen);
            seen.state = "offline".into();
        }
        self.shared.push_status();
        {
            let mut queue = lock(&self.shared.queue);
            queue.finishing = true;
        }
        self.shared.wake.notify_all();
        let deadline = Instant::now() + patience;
        if let Some(worker) = self.worker.take() {
            while !worker.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let left = lock(&self.shared.queue).messages.len();
            if worker.is_finished() {
                let _ = worker.join();
            } else {
                tracing::warn!(
                    left,
                    "telemetry: broker unreachable at exit; messages not sent"
                );
            }
            tracing::info!(
                delivered = self.shared.delivered.load(Ordering::Relaxed),
                dropped = lock(&self.shared.queue).dropped,
                left,
                "telemetry stopped"
            );
        }
    }
}

impl Shared {
    fn push(&self, leaf: &str, payload: Value, retain: bool) {
        let outgoing = Outgoing {
            topic: self.settings.topic(leaf),
            payload: payload.to_string().into_bytes(),
            retain,
        };
        let mut queue = lock(&self.queue);
        if queue.messages.len() >= self.settings.queue {
            queue.messages.pop_front();
            queue.dropped += 1;
        }
        queue.messages.push_back(outgoing);
        drop(queue);
        self.wake.notify_all();
    }

    fn status(&self) -> Value {
        let state = lock(&self.seen).state.clone();
        let info = lock(&self.info);
        json!({
            "state": state,
            "device_id": self.settings.device_id,
            "board": info.board,
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "models": {
                "detector_sha256": info.detector_sha256,
                "age_sha256": info.age_sha256,
            },
            "policy": info.policy,
        })
    }

    fn push_status(&self) {
        self.push("status", self.status(), true);
    }

    fn health(&self) -> Value {
        let seen = lock(&self.seen);
        let mut latencies: Vec<u64> = seen.decide_ms.iter().copied().collect();
        latencies.sort_unstable();
        let percentile = |p: f64| {
            (!latencies.is_empty())
                .then(|| latencies[((latencies.len() - 1) as f64 * p).round() as usize])
        };
        let queue = lock(&self.queue);
        json!({
            "time_ms": unix_ms(),
            "uptime_s": self.started.elapsed().as_secs(),
            "state": seen.state,
            "frames": self.counters.frames.load(Ordering::Relaxed),
            "bad_frames": self.counters.bad_frames.load(Ordering::Relaxed),
            "inferences": self.counters.inferences.load(Ordering::Relaxed),
            "decisions": seen.decisions,
            "faults_by_code": seen.faults.iter().map(|(c, n)| (c.to_string(), *n)).collect::<BTreeMap<_, _>>(),
            "decide_ms": {"p50": percentile(0.5), "p90": percentile(0.9), "p99": percentile(0.99)},
            "rss_mb": rss_mb(),
            "cpu_temp_c": cpu_temp_c(),
            "telemetry": {
                "queued": queue.messages.len(),
                "dropped": queue.dropped,
                "delivered": self.delivered.load(Ordering::Relaxed),
            },
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind: keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((kb / 1024.0 * 10.0).round() / 10.0)
}

/// The first thermal zone's temperature (Raspberry Pi, Jetson); `None` where there is none.
fn cpu_temp_c() -> Option<f64> {
    let milli: f64 = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(milli / 1000.0)
}

/// The telemetry thread: connects, publishes the queue one acknowledged message at a
/// time, reconnects with backoff, sends `health` on its interval.
fn run_worker(shared: &Shared, password: Option<String>, transport: rumqttc::Transport) {
    use rumqttc::{Client, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS};
    let settings = &shared.settings;
    let mut options = MqttOptions::new(
        format!("agegate-{}", settings.device_id),
        settings.host.clone(),
        settings.port,
    );
    let offline = json!({"state": "offline", "device_id": settings.device_id}).to_string();
    options
        .set_transport(transport)
        .set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true)
        .set_last_will(LastWill::new(
            settings.topic("status"),
            offline,
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(user) = &settings.username {
        options.set_credentials(user.clone(), password.unwrap_or_default());
    }
    let (client, mut connection) = Client::new(options, 16);
    let policy_topic = settings.topic("policy/set");
    let mut remote = RemotePolicy::default();
    let mut connected = false;
    let mut in_flight: Option<Outgoing> = None;
    let mut backoff = Duration::from_millis(100);
    let mut next_health = Instant::now() + settings.interval;
    let mut failures: u64 = 0;
    loop {
        if Instant::now() >= next_health {
            next_health += settings.interval;
            shared.push("health", shared.health(), false);
        }
        let finishing = {
            let queue = lock(&shared.queue);
            queue.finishing
        };
        remote.ack_if_applied(shared);
        if connected && in_flight.is_none() {
            let next = lock(&shared.queue).messages.pop_front();
            match next {
                Some(msg) => {
                    match client.try_publish(
                        msg.topic.clone(),
                        QoS::AtLeastOnce,
                        msg.retain,
                        msg.payload.clone(),
                    ) {
                        Ok(()) => in_flight = Some(msg),
                        Err(e) => {
                            tracing::warn!("telemetry: cannot queue a publish: {e}");
                            lock(&shared.queue).messages.push_front(msg);
                        }
                    }
                }
                None if finishing => {
                    let _ = client.try_disconnect();
                    // Let the disconnect go out before the thread ends.
                    let _ = connection.recv_timeout(Duration::from_millis(200));
                    return;
                }
                None => {}
            }
        }
        match connection.recv_timeout(Duration::from_millis(50)) {
            Ok(Ok(MqttEvent::Incoming(Packet::ConnAck(_)))) => {
                if failures > 0 {
                    tracing::info!(failures, "telemetry: connected to the broker again");
                }
                connected = true;
                failures = 0;
                backoff = Duration::from_millis(100);
                // A fresh retained status on every connection (the will may have replaced it).
                let status = Outgoing {
                    topic: settings.topic("status"),
                    payload: shared.status().to_string().into_bytes(),
                    retain: true,
                };
                lock(&shared.queue).messages.push_front(status);
                if let Some(msg) = in_flight.take() {
                    lock(&shared.queue).messages.push_front(msg);
                }
                // A clean session forgets subscriptions: again on every connection (the
                // retained policy, if any, comes with it).
                if let Err(e) = client.try_subscribe(policy_topic.clone(), QoS::AtLeastOnce) {
                    tracing::warn!("telemetry: cannot subscribe to {policy_topic}: {e}");
                }
            }
            Ok(Ok(MqttEvent::Incoming(Packet::Publish(publish))))
                if publish.topic == policy_topic =>
            {
                remote.receive(shared, &publish.payload);
            }
            Ok(Ok(MqttEvent::Incoming(Packet::PubAck(_)))) => {
                if in_flight.take().is_some() {
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                connected = false;
                if let Some(msg) = in_flight.take() {
                    lock(&shared.queue).messages.push_front(msg);
                }
                failures += 1;
                // One warning per outage, not one per attempt.
                if failures == 1 {
                    tracing::warn!(
                        "telemetry: broker {}:{} unreachable ({e}); queueing up to {} messages",
                        settings.host,
                        settings.port,
                        settings.queue
                    );
                }
                if finishing {
                    return;
                }
                // Sleep the backoff, woken early only to stop.
                let queue = lock(&shared.queue);
                let _ = shared
                    .wake
                    .wait_timeout_while(queue, backoff, |q| !q.finishing);
                backoff = (backoff * 2).min(settings.reconnect_max);
            }
            Err(rumqttc::RecvTimeoutError::Timeout) => {}
            Err(rumqttc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// `policy/set`: checked here like the board file's `[policy]`, applied by the daemon
/// between decisions, answered on `policy/ack`.
#[derive(Default)]
struct RemotePolicy {
    /// The last payload taken, so the retained message coming again with every connection
    /// is not applied (nor logged) again.
    last: Option<Vec<u8>>,
    /// Waiting to be applied: the mailbox count that says it was, and its summary.
    waiting: Option<(u64, Value)>,
}

impl RemotePolicy {
    fn receive(&mut self, shared: &Shared, payload: &[u8]) {
        if self.last.as_deref() == Some(payload) {
            return;
        }
        let refuse = |error: String| {
            tracing::warn!("telemetry: policy/set refused: {error}");
            shared.push(
                "policy/ack",
                json!({"ok": false, "error": error, "time_ms": unix_ms()}),
                false,
            );
        };
        if !shared.settings.remote_policy {
            return refuse(
                "remote policy changes are off on this unit (telemetry.remote_policy)".into(),
            );
        }
        let parsed = std::str::from_utf8(payload)
            .map_err(|_| "not UTF-8 text".to_string())
            .and_then(crate::bundle::parse_policy);
        match parsed {
            Err(error) => refuse(format!("{error} (the old policy stays)")),
            Ok(policy) => {
                self.last = Some(payload.to_vec());
                let target = shared.policies.applied() + 1;
                shared.policies.offer(policy);
                self.waiting = Some((target, policy_summary(&policy)));
            }
        }
    }

    fn ack_if_applied(&mut self, shared: &Shared) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(broker: &str, device_id: &str) -> RawTelemetry {
        RawTelemetry {
            broker: broker.into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            device_id: device_id.into(),
            username: None,
            password_file: None,
            interval_s: None,
            queue: None,
            reconnect_max_ms: None,
            remote_policy: None,
        }
    }

    #[test]
    fn brokers_and_device_ids_are_checked_by_key() {
        let ok = TelemetrySettings::from_raw(raw("mqtt://10.0.0.2:1884", "kiosk-7"), "/".as_ref())
            .unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("10.0.0.2", 1884));
        assert_eq!(ok.topic("status"), "agegate/kiosk-7/status");
        let default_port =
            TelemetrySettings::from_raw(raw("mqtt://broker.local", "a"), "/".as_ref()).unwrap();
        assert_eq!(default_port.port, 1883);
        let err = |b: &str, id: &str| {
            TelemetrySettings::from_raw(raw(b, id), "/".as_ref())
                .unwrap_err()
                .to_string()
        };
        assert!(err("tcp://x", "a").contains("telemetry.broker"));
        assert!(err("mqtt://x:0", "a").contains("port"));
        assert!(err("mqtt://:1883", "a").contains("no host"));
        assert!(err("mqtts://x", "a").contains("telemetry.ca_file"));
        assert!(err("mqtt://x", "a/b").contains("telemetry.device_id"));
        assert!(err("mqtt://x", "#").contains("telemetry.device_id"));
        assert!(err("mqtt://x", "").contains("telemetry.device_id"));
    }

    #[test]
    fn the_queue_drops_the_oldest_and_counts() {
        let settings = TelemetrySettings {
            queue: 16,
            ..TelemetrySettings::from_raw(raw("mqtt://127.0.0.1:9", "t"), "/".as_ref()).unwrap()
        };
        let shared = Shared {
            settings,
            info: Mutex::new(UnitInfo {
                board: "dev".into(),
                detector_sha256: None,
                age_sha256: None,
                policy: json!({}),
            }),
            policies: Arc::default(),
            started: Instant::now(),
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            seen: Mutex::new(Seen::default()),
            counters: Arc::default(),
            delivered: AtomicU64::new(0),
        };
        for i in 0..20 {
            shared.push("fault", json!({ "n": i }), false);
        }
        let queue = lock(&shared.queue);
        assert_eq!(queue.dropped, 4);
        assert_eq!(queue.messages.len(), 16);
        assert_eq!(queue.messages[0].payload, br#"{"n":4}"#);
    }
}

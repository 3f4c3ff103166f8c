//! Telemetry to an MQTT broker (`[telemetry]`): what a fleet's back office sees of each
//! unit, and never a face. One more consumer of the daemon's events: [`Telemetry::observe`]
//! turns an event into at most one message and puts it in a bounded queue (oldest dropped,
//! counted); threads of their own own the broker connections (`link`), so a broker that
//! is down, slow or far away never blocks nor slows the frame loop.
//!
//! Topics under `agegate/<device_id>/`: `status` (retained: state, model hashes, policy,
//! version, uptime; the broker's last will sets it to `offline`), `decision` (one per
//! decision: id, time, verdict, band, confidence, reason, frames; no image, embedding nor
//! estimated age), `health` (every `interval_s`: counters, decide latency percentiles,
//! memory, CPU temperature where the board has a sensor) and `fault` (each as it happens).
//! All at QoS 1, a few messages in flight at a time: a message leaves the queue only once
//! the broker has acknowledged it, so a connection lost mid-way loses nothing (a message
//! may arrive twice; a decision's `id` tells).

mod link;
mod remote_policy;
mod settings;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::core::Origin;
use crate::daemon::{Event, LiveCounters, PolicyMailbox, WireMessage};
use crate::decide::{round3, rule_name, Policy, Rule};
use crate::mdb::VerificationResult;
use remote_policy::RemotePolicy;
pub use remote_policy::MAX_POLICY_BYTES;
pub use settings::{RawTelemetry, TelemetrySettings, TlsFiles};

/// A policy as `status` and `policy/ack` show it.
pub fn policy_summary(policy: &Policy) -> Value {
    let r = round3;
    let kind = rule_name(policy.rule());
    let rule = match policy.rule() {
        Rule::Margin { k_sigma } => json!({"kind": kind, "k_sigma": r(k_sigma)}),
        Rule::Threshold {
            allow_at,
            deny_below,
        } => json!({"kind": kind, "allow_at": r(allow_at), "deny_below": r(deny_below)}),
        Rule::POver {
            age,
            allow_p,
            deny_p,
        } => json!({"kind": kind, "age": age, "allow_p": r(allow_p), "deny_p": r(deny_p)}),
    };
    let mut summary = json!({
        "legal_age": r(policy.legal_age()),
        "challenge_age": r(policy.challenge_age()),
        "rule": rule,
    });
    if let Some(cap) = policy.max_sigma() {
        summary["max_sigma"] = json!(r(cap));
    }
    summary
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

/// The queue between the daemon and the telemetry threads, and the link's state: one
/// lock, one condition variable for all of it.
#[derive(Default)]
struct Queue {
    messages: VecDeque<Outgoing>,
    dropped: u64,
    finishing: bool,
    /// The telemetry link has its CONNACK.
    connected: bool,
    /// Sent, not yet acknowledged, in the order sent (a broker acknowledges QoS 1 in
    /// that order, MQTT 3.1.1 4.6): back to the queue's front if the connection is lost.
    in_flight: VecDeque<Outgoing>,
    /// The telemetry link's thread has stopped (a stop met an outage).
    link_ended: bool,
}

impl Queue {
    fn can_send(&self) -> bool {
        self.connected && self.in_flight.len() < MAX_IN_FLIGHT && !self.messages.is_empty()
    }

    /// The connection is lost: what it had not acknowledged goes first next time.
    fn take_back_in_flight(&mut self) {
        while let Some(msg) = self.in_flight.pop_back() {
            self.messages.push_front(msg);
        }
    }

    /// Stopping, with everything delivered or no link left to deliver it.
    fn can_end(&self) -> bool {
        self.finishing
            && (self.link_ended
                || (self.connected && self.in_flight.is_empty() && self.messages.is_empty()))
    }
}

/// What `observe` has seen, for `status` and `health`.
#[derive(Default)]
struct Seen {
    state: String,
    decisions: BTreeMap<&'static str, u64>,
    faults: BTreeMap<u8, u64>,
    /// The last decisions' window times, for percentiles.
    decide_ms: VecDeque<u64>,
}

/// The `decision` topic's payload: one decision, no image, embedding nor estimated age.
/// Fields in alphabetical order, the order the untyped payload had.
#[derive(Debug, serde::Serialize)]
struct DecisionPayload<'a> {
    band: &'a str,
    confidence: u8,
    decide_ms: u64,
    decision: &'static str,
    frames: usize,
    id: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    mdb_answer: Option<&'static str>,
    reason: Option<&'static str>,
    time_ms: u64,
}

const LATENCY_WINDOW: usize = 256;
/// Messages sent and not yet acknowledged at most: one at a time, a link with 300 ms of
/// round trip carries about 3 a second, fewer than a busy unit makes.
const MAX_IN_FLIGHT: usize = 8;

struct Shared {
    settings: TelemetrySettings,
    /// The policy in it changes when a `policy/set` is applied.
    info: Mutex<UnitInfo>,
    /// The board file's own: a remote policy may only tighten it.
    board_policy: Policy,
    policies: Arc<PolicyMailbox>,
    remote: Mutex<RemotePolicy>,
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
    /// The publisher: it ends once everything is delivered or the link has given up.
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Telemetry {
    /// Starts the telemetry threads; they connect (and reconnect) on their own. Fails only
    /// for what can be told at start: the password file. `board_policy` is the board
    /// file's, the one a remote policy may only tighten.
    pub fn start(
        settings: TelemetrySettings,
        info: UnitInfo,
        board_policy: Policy,
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
            board_policy,
            policies,
            remote: Mutex::default(),
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
        let spawn = |name: &str, job: Box<dyn FnOnce(&Shared) + Send>| {
            let for_thread = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || job(&for_thread))
                .map_err(|e| format!("cannot start the {name} thread: {e}"))
        };
        if shared.settings.remote_policy {
            let (client, connection) = link::connect(
                &shared,
                "-policy",
                transport.clone(),
                password.clone(),
                false,
            );
            spawn(
                "telemetry-policy",
                Box::new(move |s| link::drive_policy(s, client, connection)),
            )?;
        }
        let (client, connection) = link::connect(&shared, "", transport, password, true);
        spawn(
            "telemetry-net",
            Box::new(move |s| link::drive_telemetry(s, connection)),
        )?;
        let worker = spawn("telemetry", Box::new(move |s| link::publish(s, client)))?;
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
                confidence,
                origin,
                ..
            } => {
                let verdict = decision.name();
                *seen.decisions.entry(verdict).or_default() += 1;
                seen.decide_ms.push_back(*decide_ms);
                if seen.decide_ms.len() > LATENCY_WINDOW {
                    seen.decide_ms.pop_front();
                }
                drop(seen);
                let payload = DecisionPayload {
                    band: age_band,
                    confidence: *confidence,
                    decide_ms: *decide_ms,
                    decision: verdict,
                    frames: *frames,
                    id: *id,
                    // A vending machine's session: what the VMC was told.
                    mdb_answer: (*origin == Origin::Vmc)
                        .then(|| VerificationResult::from_decision(*decision).name()),
                    reason: reason.map(|r| r.name()),
                    time_ms: unix_ms(),
                };
                self.shared.push("decision", json!(payload), false);
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
            let left = {
                let queue = lock(&self.shared.queue);
                queue.messages.len() + queue.in_flight.len()
            };
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
    fn note_delivered(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

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
        let percentile = |p: f64| crate::numeric::nearest_rank(&latencies, p);
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
            "mdb": self.counters.mdb.get().map(|m| *lock(m)),
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

#[cfg(test)]
mod tests {
    use super::settings::tests::raw;
    use super::*;

    #[test]
    fn the_queue_drops_the_oldest_and_counts() {
        let settings = TelemetrySettings {
            queue: 16,
            ..TelemetrySettings::from_raw(raw("mqtt://127.0.0.1:9", "t"), "/".as_ref()).unwrap()
        };
        let shared = Shared {
            settings,
            board_policy: Policy::new(18.0, 25.0, 1.0).expect("policy"),
            remote: Mutex::default(),
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

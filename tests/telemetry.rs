//! Telemetry against a real broker: each test starts its own Mosquitto on a free port of
//! 127.0.0.1 (Debian's `mosquitto`, `mosquitto-clients`; `.ci/run` installs them) and
//! watches what the daemon publishes with `mosquitto_sub`. Loopback only, every wait
//! bounded.

mod common;
#[path = "telemetry/links.rs"]
mod links;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn have_mosquitto(test: &str) -> bool {
    let found = ["mosquitto", "mosquitto_sub"].iter().all(|bin| {
        Command::new("sh")
            .args([
                "-c",
                &format!("command -v {bin} || test -x /usr/sbin/{bin}"),
            ])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        skip(
            test,
            "no mosquitto or mosquitto_sub (apt install mosquitto mosquitto-clients)",
        );
    }
    found
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address").port()
}

fn wait_until(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience;
    while !done() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A Mosquitto of the test's own.
struct Broker {
    child: Child,
}

impl Broker {
    fn start(dir: &Path, port: u16) -> Self {
        let conf = dir.join("mosquitto.conf");
        write(
            &conf,
            &format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
        );
        Self::with_conf(&conf, port)
    }

    /// A broker on a configuration of the test's own; `port` shows it is up.
    fn with_conf(conf: &Path, port: u16) -> Self {
        let bin = if Path::new("/usr/sbin/mosquitto").exists() {
            "/usr/sbin/mosquitto"
        } else {
            "mosquitto"
        };
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        wait_until("the broker to listen", Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The network between the daemon and the broker: a TCP relay on its own port. Cutting it
/// (`cut`) closes every relayed connection and refuses new ones, as a broker that went
/// down does, while the watcher, connected to the broker directly, misses nothing.
struct Relay {
    open: Arc<std::sync::atomic::AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(port: u16, broker_port: u16) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("relay port");
        listener.set_nonblocking(true).expect("nonblocking");
        let open = Arc::new(AtomicBool::new(true));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (still_open, tracked) = (Arc::clone(&open), Arc::clone(&streams));
        std::thread::spawn(move || {
            while still_open.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for (mut from, mut to) in [
                    (
                        client.try_clone().expect("clone"),
                        upstream.try_clone().expect("clone"),
                    ),
                    (
                        upstream.try_clone().expect("clone"),
                        client.try_clone().expect("clone"),
                    ),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
                tracked.lock().expect("lock").extend([client, upstream]);
            }
            // Dropping the listener here: new connections are refused.
        });
        Self { open, streams }
    }

    fn cut(self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        for stream in self.streams.lock().expect("lock").drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        // Until the accept loop has noticed, connections are still accepted: wait for it.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `mosquitto_sub` on `agegate/#` at QoS 1: every message it gets, as (topic, payload).
struct Watcher {
    child: Child,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Watcher {
    fn start(port: u16) -> Self {
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        // Subscribed once a message of its own comes back. A `mosquitto_sub` whose connect
        // was refused exits (seen once on a loaded machine, right after the broker's port
        // answered): start another rather than wait on a watcher that is gone.
        let mut probe = Command::new("mosquitto_pub");
        probe
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-t", "agegate/probe/ready", "-m", "{}"]);
        let mut child = Self::subscribe(port, &seen);
        wait_until("the watcher to subscribe", Duration::from_secs(20), || {
            if matches!(child.try_wait(), Ok(Some(_))) {
                child = Self::subscribe(port, &seen);
            }
            let _ = probe.status();
            seen.lock()
                .expect("lock")
                .iter()
                .any(|(t, _)| t == "agegate/probe/ready")
        });
        Self { child, seen }
    }

    /// `mosquitto_sub` on `agegate/#`, its messages pushed into `seen`.
    fn subscribe(port: u16, seen: &Arc<Mutex<Vec<(String, Value)>>>) -> Child {
        let mut child = Command::new("mosquitto_sub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-t",
                "agegate/#",
                "-v",
            ])
            .args(["-q", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto_sub");
        let stdout = child.stdout.take().expect("stdout");
        let into = Arc::clone(seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some((topic, payload)) = line.split_once(' ') {
                    let value = serde_json::from_str(payload).unwrap_or(Value::Null);
                    into.lock().expect("lock").push((topic.to_string(), value));
                }
            }
        });
        child
    }

    fn on(&self, leaf: &str) -> Vec<Value> {
        let topic = format!("agegate/kiosk-1/{leaf}");
        let seen = self.seen.lock().expect("lock");
        seen.iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn decision_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .on("decision")
            .iter()
            .filter_map(|d| d["id"].as_u64())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test's own broker and a watcher on it, in a folder of its own; `None` (the test is
/// skipped, saying why) without Mosquitto.
struct Site {
    dir: tempfile::TempDir,
    port: u16,
    _broker: Broker,
    watcher: Watcher,
}

fn site(test: &str) -> Option<Site> {
    if !have_mosquitto(test) {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let broker = Broker::start(dir.path(), port);
    let watcher = Watcher::start(port);
    Some(Site {
        dir,
        port,
        _broker: broker,
        watcher,
    })
}

/// The dev board with `[telemetry]` to `port`; `extra` goes into its `[capture]`.
fn telemetry_board(dir: &Path, port: u16, capture_extra: &str) -> PathBuf {
    telemetry_board_with(dir, port, capture_extra, "")
}

fn telemetry_board_with(
    dir: &Path,
    port: u16,
    capture_extra: &str,
    telemetry_extra: &str,
) -> PathBuf {
    let dev = std::fs::read_to_string(root().join("boards/dev.toml")).expect("dev board");
    let text = dev
        .replace("\"../", &format!("\"{}/", root().display()))
        .replace("[capture]\n", &format!("[capture]\n{capture_extra}"))
        + &format!(
            "\n[telemetry]\nbroker = \"mqtt://127.0.0.1:{port}\"\ndevice_id = \"kiosk-1\"\n\
             interval_s = 1\nreconnect_max_ms = 300\n{telemetry_extra}"
        );
    let path = dir.join("telemetry.toml");
    write(&path, &text);
    path
}

/// `agegate run` on `board` to its end, which must be a success.
fn run_ok(board: &Path) -> std::process::Output {
    let out = agegate()
        .args(["run", "--board"])
        .arg(board)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits for a daemon started with its stderr piped, which must end in success; its log.
fn wait_ok(mut daemon: Child) -> String {
    use std::io::Read;
    let status = daemon.wait().expect("wait");
    let mut stderr = String::new();
    let _ = daemon
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    assert!(status.success(), "{stderr}");
    stderr
}

/// A daemon whose stdout lines are collected as they come.
struct Collecting {
    daemon: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
}

impl Collecting {
    /// Waits for the daemon, which must end in success, and for its last lines: its log.
    fn finish(self) -> String {
        let stderr = wait_ok(self.daemon);
        self.reader.join().expect("reader");
        stderr
    }
}

/// `agegate run` on `board` (with `extra` arguments), its stdout collected.
fn start_collecting(board: &Path, extra: &[&str]) -> Collecting {
    let mut daemon = agegate()
        .args(["run", "--board"])
        .arg(board)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let stdout = daemon.stdout.take().expect("stdout");
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let into = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            into.lock().expect("lock").push(line);
        }
    });
    Collecting {
        daemon,
        lines,
        reader,
    }
}

/// The decisions a run printed.
fn printed_decisions(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "decision")
        .collect()
}

/// What a payload may hold: never an estimated age, a sigma, an image or an embedding.
/// (The policy's own settings, `k_sigma` and `max_sigma`, are not a person's.)
fn assert_private(payload: &Value) {
    let text = payload.to_string();
    for word in [
        "\"age\"",
        "\"sigma\"",
        "estimate",
        "embedding",
        "image",
        "crop",
        "keypoints",
    ] {
        assert!(
            !text.contains(word),
            "{word} in a telemetry payload: {text}"
        );
    }
}

#[test]
fn each_decision_is_published_once_and_status_goes_offline_at_the_end() {
    let Some(Site {
        dir,
        port,
        _broker,
        watcher,
    }) = site("each_decision_is_published_once")
    else {
        return;
    };
    let board = telemetry_board(dir.path(), port, "");
    let stdout = run_board(&board);
    let printed = printed_decisions(&stdout);
    assert_eq!(printed.len(), 2, "{stdout}");
    wait_until("the decisions", Duration::from_secs(10), || {
        watcher.on("decision").len() >= printed.len()
    });
    let published = watcher.on("decision");
    assert_eq!(published.len(), printed.len(), "{published:?}");
    for (p, d) in printed.iter().zip(&published) {
        assert_eq!(p["id"], d["id"]);
        assert_eq!(p["decision"], d["decision"]);
        assert_eq!(p["age_band"], d["band"]);
        assert_eq!(p["frames"], d["frames"]);
        assert!(d["confidence"].as_u64().is_some_and(|c| c <= 100), "{d}");
        // The payload's fields, as before it was typed (no `mdb_answer` off a VMC).
        let keys: Vec<&str> = d
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "band",
                "confidence",
                "decide_ms",
                "decision",
                "frames",
                "id",
                "reason",
                "time_ms"
            ],
            "{d}"
        );
        assert_private(d);
    }
    wait_until("status offline", Duration::from_secs(10), || {
        watcher
            .on("status")
            .last()
            .is_some_and(|s| s["state"] == "offline")
    });
    let status = watcher.on("status");
    let first = &status[0];
    assert_eq!(first["board"], "dev");
    assert_eq!(
        first["models"]["age_sha256"],
        agegate::config::Board::load(&board)
            .expect("board")
            .age_sha256
            .expect("pinned")
            .to_string()
    );
    assert_eq!(first["policy"]["rule"]["kind"], "threshold");
    for health in watcher.on("health") {
        assert!(health["frames"].as_u64().is_some(), "{health}");
        // A percentile of the decisions so far: none before the first (a loaded machine
        // may send a health that early).
        let decided: u64 = health["decisions"]
            .as_object()
            .expect("decisions by verdict")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        let p50 = &health["decide_ms"]["p50"];
        assert_eq!(p50.as_u64().is_some(), decided > 0, "{health}");
        assert_private(&health);
    }
    for s in &status {
        assert_private(s);
    }
}

#[test]
fn a_broker_stopped_mid_run_loses_no_decision() {
    let Some(Site {
        dir,
        port,
        _broker,
        watcher,
    }) = site("a_broker_stopped_mid_run_loses_no_decision")
    else {
        return;
    };
    let relay_port = free_port();
    let relay = Relay::start(relay_port, port);
    // The recording over and over, until the test stops it once the broker is back.
    let board = telemetry_board(dir.path(), relay_port, "loop = true\n");
    let run = start_collecting(&board, &[]);
    let lines = Arc::clone(&run.lines);
    wait_until(
        "the first decision published",
        Duration::from_secs(60),
        || !watcher.decision_ids().is_empty(),
    );
    // The broker is gone for the daemon while it decides on.
    relay.cut();
    let printed_count = || printed_decisions(&lines.lock().expect("lock").join("\n")).len();
    let before = printed_count();
    wait_until(
        "two decisions while the broker is unreachable",
        Duration::from_secs(60),
        || printed_count() >= before + 2,
    );
    let _relay = Relay::start(relay_port, port);
    let back = printed_count();
    wait_until(
        "a decision after the broker is back",
        Duration::from_secs(60),
        || printed_count() > back,
    );
    unsafe { libc::kill(run.daemon.id() as i32, libc::SIGTERM) };
    let stderr = run.finish();
    assert!(
        stderr.contains("unreachable"),
        "the outage is not in the log: {stderr}"
    );
    let printed: Vec<u64> = printed_decisions(&lines.lock().expect("lock").join("\n"))
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    assert!(printed.len() >= 4, "{printed:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while watcher.decision_ids() != printed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        watcher.decision_ids(),
        printed,
        "published, printed; log: {stderr}"
    );
}

#[test]
fn a_killed_daemon_is_offline_by_its_last_will() {
    let Some(Site {
        dir,
        port,
        _broker,
        watcher,
    }) = site("a_killed_daemon_is_offline_by_its_last_will")
    else {
        return;
    };
    let board = telemetry_board(dir.path(), port, "loop = true\n");
    let mut daemon = agegate()
        .args(["run", "--quiet", "--board"])
        .arg(&board)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run");
    wait_until("a status", Duration::from_secs(60), || {
        !watcher.on("status").is_empty()
    });
    daemon.kill().expect("SIGKILL");
    let _ = daemon.wait();
    wait_until(
        "status offline by the will",
        Duration::from_secs(20),
        || {
            watcher
                .on("status")
                .last()
                .is_some_and(|s| s["state"] == "offline")
        },
    );
    // Retained: a back office that looks later sees it too.
    let later = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "agegate/kiosk-1/status",
        ])
        .args(["-C", "1", "-W", "5"])
        .output()
        .expect("mosquitto_sub");
    let retained: Value = serde_json::from_slice(&later.stdout).expect("retained status");
    assert_eq!(retained["state"], "offline");
}

#[test]
fn no_broker_at_all_changes_no_decision() {
    if !have_mosquitto("no_broker_at_all_changes_no_decision") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A port nothing listens on.
    let board = telemetry_board(dir.path(), free_port(), "");
    let with = agegate()
        .args(["run", "--board"])
        .arg(&board)
        .output()
        .expect("run");
    let without = agegate()
        .args(["run", "--board"])
        .arg(root().join("boards/dev.toml"))
        .current_dir(root())
        .output()
        .expect("run");
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let decisions = |o: &std::process::Output| {
        printed_decisions(&String::from_utf8_lossy(&o.stdout))
            .iter()
            .map(|d| {
                (
                    d["id"].clone(),
                    d["decision"].clone(),
                    d["age_band"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(decisions(&with), decisions(&without));
    let stderr = String::from_utf8_lossy(&with.stderr);
    assert!(stderr.contains("unreachable"), "{stderr}");
}

fn publish_policy(port: u16, text: &str) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-r"])
        .args(["-t", "agegate/kiosk-1/policy/set", "-m", text])
        .status()
        .expect("mosquitto_pub");
    assert!(status.success());
}

#[test]
fn a_bad_policy_is_refused_and_a_good_one_changes_the_next_decisions() {
    let Some(Site {
        dir,
        port,
        _broker,
        watcher,
    }) = site("a_bad_policy_is_refused_and_a_good_one_changes_the_next_decisions")
    else {
        return;
    };
    // Retained before the daemon starts: it arrives as the daemon subscribes.
    publish_policy(
        port,
        "[policy]\nlegal_age = 18\nchallenge_age = 12\nk_sigma = 1.0\n",
    );
    let board = telemetry_board_with(dir.path(), port, "loop = true\n", "remote_policy = true\n");
    let daemon = agegate()
        .args(["run", "--quiet", "--max-frames", "200", "--board"])
        .arg(&board)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    wait_until("the bad policy's refusal", Duration::from_secs(60), || {
        !watcher.on("policy/ack").is_empty()
    });
    let refusal = watcher.on("policy/ack")[0].clone();
    assert_eq!(refusal["ok"], false, "{refusal}");
    assert!(
        refusal["error"]
            .as_str()
            .is_some_and(|e| e.contains("challenge_age")),
        "{refusal}"
    );
    // The old policy decides on: the astronaut (25-34) is allowed.
    let astronaut = |d: &Value| d["band"] == "25-34";
    wait_until("the astronaut allowed", Duration::from_secs(60), || {
        watcher
            .on("decision")
            .iter()
            .any(|d| astronaut(d) && d["decision"] == "ALLOW")
    });
    // ALLOW at 40 or over: the astronaut is referred from the next decision on (the
    // board's sigma cap kept: a remote policy may not drop it).
    let strict = "[policy]\nlegal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\n\
                  allow_at = 40\ndeny_below = 17.3\nmax_sigma = 14\n";
    publish_policy(port, strict);
    wait_until("the good policy's ack", Duration::from_secs(30), || {
        watcher.on("policy/ack").len() >= 2
    });
    let ack = watcher.on("policy/ack")[1].clone();
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["policy"]["rule"]["allow_at"], 40.0, "{ack}");
    let applied_at = ack["time_ms"].as_u64().expect("ack time");
    let stderr = wait_ok(daemon);
    assert!(
        stderr.contains("policy replaced"),
        "the audit log does not say: {stderr}"
    );
    wait_until("status offline", Duration::from_secs(10), || {
        watcher
            .on("status")
            .last()
            .is_some_and(|s| s["state"] == "offline")
    });
    let after: Vec<Value> = watcher
        .on("decision")
        .into_iter()
        .filter(|d| d["time_ms"].as_u64().is_some_and(|t| t > applied_at) && astronaut(d))
        .collect();
    assert!(
        !after.is_empty(),
        "no astronaut decision after the new policy"
    );
    for d in &after {
        assert_eq!(d["decision"], "REFER", "{d}");
    }
    let last_status = watcher.on("status").last().cloned().expect("status");
    assert_eq!(
        last_status["policy"]["rule"]["allow_at"], 40.0,
        "{last_status}"
    );
}

/// A folder for a test's TLS files that Mosquitto's own user can reach (Mosquitto started
/// as root drops to it).
fn tls_folder(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tls = dir.join("tls");
    std::fs::create_dir(&tls).expect("mkdir");
    for path in [dir, tls.as_path()] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    tls
}

/// The dev board with `[telemetry]` to an mqtts listener on `secure`, plus `lines` in it.
fn mqtts_board(dir: &Path, name: &str, secure: u16, lines: &str) -> PathBuf {
    let text = std::fs::read_to_string(telemetry_board(dir, secure, "")).expect("board");
    let text = text.replace(
        &format!("mqtt://127.0.0.1:{secure}"),
        &format!("mqtts://localhost:{secure}"),
    ) + lines;
    let path = dir.join(format!("{name}.toml"));
    write(&path, &text);
    path
}

/// A run the broker would not take: it says so in the log and decides as it would alone.
fn assert_refused_by_broker(out: &std::process::Output, case: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unreachable"), "{case}: {stderr}");
    let printed = printed_decisions(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(printed.len(), 2, "{case}");
}

/// A test CA, a server certificate it signed for localhost and 127.0.0.1, and a client
/// certificate it signed (`{name}-client.pem`, `.key`), made with openssl.
fn test_ca(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (apt install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca_key, ca, key, csr, cert) = (
        format!("{name}-ca.key"),
        format!("{name}-ca.pem"),
        format!("{name}-server.key"),
        format!("{name}-server.csr"),
        format!("{name}-server.pem"),
    );
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-days",
        "1",
        "-subj",
        "/CN=agegate test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/CN=localhost",
    ]);
    write(
        &dir.join("san.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    );
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-days",
        "1",
        "-extfile",
        "san.cnf",
    ]);
    let (client_key, client_csr, client) = (
        format!("{name}-client.key"),
        format!("{name}-client.csr"),
        format!("{name}-client.pem"),
    );
    // X.509 v3 (extensions make it so): rustls refuses v1 certificates.
    write(
        &dir.join("client.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &client_key,
        "-out",
        &client_csr,
        "-subj",
        "/CN=kiosk-1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &client_csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &client,
        "-days",
        "1",
        "-extfile",
        "client.cnf",
    ]);
    // Mosquitto started as root drops to its own user, which must read these.
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir).expect("ls") {
        let path = entry.expect("entry").path();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    (dir.join(ca), dir.join(cert), dir.join(key))
}

/// A broker with a TLS listener (`cert`, `key`, clients checked against `ca`) for the
/// daemon and a plain one for its watcher: the broker, the watcher, the TLS port.
fn tls_broker(
    tls_dir: &Path,
    name: &str,
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> (Broker, Watcher, u16) {
    let (plain, secure) = (free_port(), free_port());
    let conf = tls_dir.join(format!("{name}.conf"));
    write(
        &conf,
        &format!(
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             listener {plain} 127.0.0.1\n\
             listener {secure} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    let broker = Broker::with_conf(&conf, secure);
    (broker, Watcher::start(plain), secure)
}

#[test]
fn mqtts_with_the_brokers_ca_publishes_and_another_ca_is_refused() {
    let Some(Site {
        dir,
        _broker,
        watcher,
        ..
    }) = site("mqtts_with_the_brokers_ca_publishes_and_another_ca_is_refused")
    else {
        return;
    };
    // A second broker with a TLS listener for the daemon and a plain one for its watcher.
    let tls_dir = tls_folder(dir.path());
    let (ca, cert, key) = test_ca(&tls_dir, "good");
    let (other_ca, _, _) = test_ca(&tls_dir, "other");
    let (_tls_broker, tls_watcher, secure) = tls_broker(&tls_dir, "mosquitto", &cert, &key, &ca);
    let ca_line = |ca: &Path| format!("ca_file = \"{}\"\n", ca.display());
    let out = run_ok(&mqtts_board(dir.path(), "good", secure, &ca_line(&ca)));
    let printed = printed_decisions(&String::from_utf8_lossy(&out.stdout));
    wait_until("the decisions over TLS", Duration::from_secs(10), || {
        tls_watcher.on("decision").len() >= printed.len()
    });
    assert_eq!(tls_watcher.on("decision").len(), 2);
    // A CA that did not sign the broker's certificate: no connection, the same decisions.
    let other = mqtts_board(dir.path(), "other", secure, &ca_line(&other_ca));
    assert_refused_by_broker(&run_ok(&other), "another CA");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        tls_watcher.on("decision").len(),
        2,
        "a decision went through an untrusted broker"
    );
    assert!(watcher.on("decision").is_empty());
}

#[test]
fn a_broker_asking_for_a_password_and_a_client_certificate_gets_them() {
    let Some(Site { dir, _broker, .. }) =
        site("a_broker_asking_for_a_password_and_a_client_certificate_gets_them")
    else {
        return;
    };
    let tls_dir = tls_folder(dir.path());
    let (ca, cert, key) = test_ca(&tls_dir, "fleet");
    use std::os::unix::fs::PermissionsExt;
    let passwords = tls_dir.join("passwords");
    let made = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&passwords)
        .args(["kiosk-1", "s3cret"])
        .status()
        .expect("mosquitto_passwd");
    assert!(made.success());
    std::fs::set_permissions(&passwords, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (plain, secure) = (free_port(), free_port());
    let conf = tls_dir.join("mosquitto.conf");
    write(
        &conf,
        &format!(
            "per_listener_settings true\npersistence false\n\
             listener {plain} 127.0.0.1\nallow_anonymous true\n\
             listener {secure} 127.0.0.1\nallow_anonymous false\npassword_file {}\n\
             cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
            passwords.display(),
            ca.display(),
            cert.display(),
            key.display()
        ),
    );
    let _secure_broker = Broker::with_conf(&conf, secure);
    let watcher = Watcher::start(plain);
    let password_file = tls_dir.join("kiosk.pass");
    let wrong_file = tls_dir.join("wrong.pass");
    write(&password_file, "s3cret\n");
    write(&wrong_file, "guess\n");
    let board_with = |name: &str, lines: &str| {
        let ca_and_user = format!("ca_file = \"{}\"\nusername = \"kiosk-1\"\n", ca.display());
        mqtts_board(dir.path(), name, secure, &format!("{ca_and_user}{lines}"))
    };
    let client = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"\n",
        tls_dir.join("fleet-client.pem").display(),
        tls_dir.join("fleet-client.key").display()
    );
    let password = |file: &Path| format!("password_file = \"{}\"\n", file.display());
    // Both right: delivered.
    let out = run_ok(&board_with(
        "right",
        &format!("{client}{}", password(&password_file)),
    ));
    let printed = printed_decisions(&String::from_utf8_lossy(&out.stdout));
    wait_until("the decisions", Duration::from_secs(10), || {
        watcher.on("decision").len() >= printed.len()
    });
    assert_eq!(watcher.on("decision").len(), 2);
    // A wrong password, or no client certificate: refused, nothing delivered.
    for (name, lines) in [
        (
            "wrong password",
            format!("{client}{}", password(&wrong_file)),
        ),
        ("no certificate", password(&password_file)),
    ] {
        assert_refused_by_broker(&run_ok(&board_with(&name.replace(' ', "_"), &lines)), name);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        watcher.on("decision").len(),
        2,
        "a refused client's decision arrived"
    );
}

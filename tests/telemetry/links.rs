//! Telemetry over links as they are in the field: a delay each way (cellular, WAN), TLS on
//! top, a broker that accepts and never answers, and `policy/set` messages too large or
//! too loose to take. Every proxy and broker here is the test's own, on 127.0.0.1.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

/// A TCP relay in front of a broker that holds each chunk `one_way` in each direction (a
/// link's latency, not its bandwidth) and counts the connections it accepts.
struct DelayLink {
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicBool>,
}

impl DelayLink {
    fn start(port: u16, broker_port: u16, one_way: Duration) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("link port");
        listener.set_nonblocking(true).expect("nonblocking");
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicBool::new(true));
        let (count, still_open) = (Arc::clone(&accepted), Arc::clone(&open));
        std::thread::spawn(move || {
            while still_open.load(Ordering::SeqCst) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nonblocking(false);
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", broker_port)) else {
                    continue;
                };
                let _ = upstream.set_nodelay(true);
                let _ = client.set_nodelay(true);
                delayed_copy(
                    client.try_clone().expect("clone"),
                    upstream.try_clone().expect("clone"),
                    one_way,
                );
                delayed_copy(upstream, client, one_way);
            }
        });
        Self { accepted, open }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.open.store(false, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; ends both ways at
/// the first end of either.
fn delayed_copy(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        for (due, chunk) in rx {
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

/// The round trips a unit meets: loopback, a good WAN, a poor one, cellular.
const ROUND_TRIPS_MS: [u64; 4] = [0, 60, 150, 300];

/// One run of the dev board through a [`DelayLink`] of `rtt_ms` to a broker on
/// `broker_port` (`board` makes the board for the link's port): every printed decision
/// reaches `watcher`, over a single connection.
fn assert_delivered_over_one_connection(
    case: &str,
    broker_port: u16,
    watcher: &Watcher,
    rtt_ms: u64,
    board: impl Fn(u16) -> PathBuf,
) {
    let link_port = free_port();
    let link = DelayLink::start(link_port, broker_port, Duration::from_millis(rtt_ms / 2));
    let out = run_ok(&board(link_port));
    let printed: Vec<u64> = printed_decisions(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    assert_eq!(printed.len(), 2, "{case}");
    wait_until(
        &format!("{case}: the decisions"),
        Duration::from_secs(20),
        || watcher.decision_ids() == printed,
    );
    assert_eq!(
        link.connections(),
        1,
        "{case}: connections opened; log: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_decision_crosses_a_slow_link_over_one_connection() {
    if !have_mosquitto("every_decision_crosses_a_slow_link_over_one_connection") {
        return;
    }
    for rtt_ms in ROUND_TRIPS_MS {
        // A broker and watcher per case: decision ids start again with each run.
        let Some(site) = site("every_decision_crosses_a_slow_link_over_one_connection") else {
            return;
        };
        let dir = site.dir.path();
        assert_delivered_over_one_connection(
            &format!("mqtt://, {rtt_ms} ms round trip"),
            site.port,
            &site.watcher,
            rtt_ms,
            |link_port| telemetry_board(dir, link_port, ""),
        );
    }
}

#[test]
fn every_decision_crosses_a_slow_tls_link_over_one_connection() {
    let Some(Site { dir, .. }) = site("every_decision_crosses_a_slow_tls_link_over_one_connection")
    else {
        return;
    };
    let tls_dir = tls_folder(dir.path());
    let (ca, cert, key) = test_ca(&tls_dir, "slow");
    for rtt_ms in ROUND_TRIPS_MS {
        let (_broker, watcher, secure) =
            tls_broker(&tls_dir, &format!("mosquitto-{rtt_ms}"), &cert, &key, &ca);
        let ca_line = format!("ca_file = \"{}\"\n", ca.display());
        assert_delivered_over_one_connection(
            &format!("mqtts://, {rtt_ms} ms round trip"),
            secure,
            &watcher,
            rtt_ms,
            |link_port| mqtts_board(dir.path(), &format!("slow-{rtt_ms}"), link_port, &ca_line),
        );
    }
}

#[test]
fn a_broker_that_never_answers_gets_one_attempt_at_a_time() {
    if !have_mosquitto("a_broker_that_never_answers_gets_one_attempt_at_a_time") {
        return;
    }
    // Accepts every connection and holds it, never a byte back (no CONNACK).
    let listener = TcpListener::bind("127.0.0.1:0").expect("port");
    let port = listener.local_addr().expect("address").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().map_while(Result::ok) {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let board = telemetry_board(dir.path(), port, "loop = true\n");
    let daemon = agegate()
        .args(["run", "--quiet", "--board"])
        .arg(&board)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    // An attempt lasts the connect timeout (10 s) and the next follows the backoff: the
    // 6 s after the first hold no other, where the 50-ms poll of old opened over a hundred.
    wait_until("the first attempt", Duration::from_secs(60), || {
        accepted.load(Ordering::SeqCst) > 0
    });
    std::thread::sleep(Duration::from_secs(6));
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let stderr = wait_ok(daemon);
    let attempts = accepted.load(Ordering::SeqCst);
    assert_eq!(
        attempts, 1,
        "connection attempts in 6 s after the first; log: {stderr}"
    );
}

/// A `[policy]` as TOML that says what the board's says, padded with a comment to
/// `bytes` long.
fn padded_policy(bytes: usize) -> String {
    let policy = "[policy]\nlegal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\n\
                  allow_at = 40\ndeny_below = 17.3\nmax_sigma = 14\n#";
    format!("{policy}{}\n", "x".repeat(bytes - policy.len() - 1))
}

/// Publishes `text` from a file (too long for an argument) on the unit's `policy/set`.
fn publish_policy_file(dir: &Path, port: u16, text: &str, retain: bool) {
    let file = dir.join("policy-message");
    write(&file, text);
    let mut publish = Command::new("mosquitto_pub");
    publish
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", "agegate/kiosk-1/policy/set", "-f"])
        .arg(&file);
    if retain {
        publish.arg("-r");
    }
    assert!(publish.status().expect("mosquitto_pub").success());
}

/// Every decision a looping daemon printed is published, and `status` never said offline
/// before the end (the symptom of a link that kept dropping).
fn assert_delivered_without_flapping(watcher: &Watcher, lines: &Arc<Mutex<Vec<String>>>) {
    let printed: Vec<u64> = printed_decisions(&lines.lock().expect("lock").join("\n"))
        .iter()
        .filter_map(|d| d["id"].as_u64())
        .collect();
    assert!(printed.len() >= 2, "{printed:?}");
    wait_until("every decision published", Duration::from_secs(20), || {
        watcher.decision_ids() == printed
    });
    let status = watcher.on("status");
    let offline = status.iter().filter(|s| s["state"] == "offline").count();
    assert!(
        offline <= 1 && status.last().is_some_and(|s| s["state"] == "offline"),
        "status went offline mid-run: {status:?}"
    );
}

#[test]
fn an_oversize_or_looser_policy_is_refused_and_telemetry_keeps_delivering() {
    let Some(Site {
        dir,
        port,
        _broker,
        watcher,
    }) = site("an_oversize_or_looser_policy_is_refused_and_telemetry_keeps_delivering")
    else {
        return;
    };
    let limit = agegate::telemetry::MAX_POLICY_BYTES;
    // Retained before the daemon starts: over rumqttc's own 10 KiB packet limit, it used
    // to end the connection at every subscription.
    publish_policy_file(dir.path(), port, &padded_policy(10 * 1024 + 1), true);
    let board = telemetry_board_with(dir.path(), port, "loop = true\n", "remote_policy = true\n");
    let run = start_collecting(&board, &["--max-frames", "300"]);
    let lines = Arc::clone(&run.lines);
    let acks = || watcher.on("policy/ack");
    let refused_with = |n: usize, what: &str| {
        wait_until(what, Duration::from_secs(60), || acks().len() >= n);
        let ack = acks()[n - 1].clone();
        assert_eq!(ack["ok"], false, "{what}: {ack}");
        ack["error"].as_str().unwrap_or_default().to_string()
    };
    let e = refused_with(1, "the 10 KiB + 1 policy's refusal");
    assert!(e.contains(&format!("over the {limit}-byte limit")), "{e}");
    // What a hostile tester had acked: the legal age and the REQUEST floor lowered to 10.
    publish_policy(
        port,
        "[policy]\nlegal_age = 10\nchallenge_age = 10\nrule = \"threshold\"\nallow_at = 10\n\
         deny_below = 0\n",
    );
    let e = refused_with(2, "the lower legal age's refusal");
    assert!(e.contains("legal_age 10 is below the board's 18"), "{e}");
    // Larger than the link reads whole: refused from its size, not read.
    publish_policy_file(dir.path(), port, &padded_policy(4 << 20), false);
    let e = refused_with(3, "the 4 MiB policy's refusal");
    assert!(e.contains(&format!("over the {limit}-byte limit")), "{e}");
    let stderr = run.finish();
    assert_delivered_without_flapping(&watcher, &lines);
    // None of them changed what the gate allows: the board's policy decided throughout.
    let status = watcher.on("status");
    let last = status.last().expect("status");
    assert_eq!(last["policy"]["rule"]["allow_at"], 29.8, "{last}; {stderr}");
}

#[test]
fn with_remote_policy_off_no_policy_is_even_read() {
    let Some(Site {
        dir,
        port,
        _broker,
        watcher,
    }) = site("with_remote_policy_off_no_policy_is_even_read")
    else {
        return;
    };
    publish_policy_file(dir.path(), port, &padded_policy(11 * 1024), true);
    let board = telemetry_board(dir.path(), port, "loop = true\n");
    let run = start_collecting(&board, &["--max-frames", "150"]);
    let lines = Arc::clone(&run.lines);
    let stderr = run.finish();
    assert_delivered_without_flapping(&watcher, &lines);
    assert!(watcher.on("policy/ack").is_empty(), "{stderr}");
    assert!(!stderr.contains("policy/set"), "{stderr}");
    // The board's own policy decided: both bundled adults allowed.
    let decisions = printed_decisions(&lines.lock().expect("lock").join("\n"));
    assert!(
        decisions.iter().all(|d| d["decision"] == "ALLOW"),
        "{decisions:?}"
    );
}

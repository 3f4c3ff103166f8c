//! What a hostile tester found (issue 11), as tests of the real binary: every catchable
//! stop signal in every state of the gate, a closed stdout, serial frames sent byte by
//! byte to a board replaying a recording, recordings of damaged frames.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{agegate, photo, root, write};
use serde_json::Value;

/// Under an emulator (the aarch64 run) a process is 10-20x slower: fewer cases, longer
/// waits.
fn emulated() -> bool {
    std::env::var("AGEGATE_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty())
}

fn patience() -> Duration {
    Duration::from_secs(if emulated() { 900 } else { 120 })
}

/// The dev board in `dir` with `edits` (a `(from, to)` list of text replacements) applied.
fn board(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join("boards/dev.toml")).expect("dev board");
    text = text.replace("../", &format!("{}/", root().display()));
    for (from, to) in edits {
        assert!(text.contains(from), "dev.toml has no `{from}`");
        text = text.replacen(from, to, 1);
    }
    let path = dir.join(format!("{name}.toml"));
    write(&path, &text);
    path
}

/// A board of the signal tests. Under qemu the shipped age model costs minutes to load and
/// run in each of their daemons, and what they check (signals, the relay, the host line)
/// does not depend on it: there the board runs the fixture age model, which estimates the
/// bundled adult at 31 (ALLOW) as the shipped one does (77).
fn state_board(dir: &Path, name: &str, edits: &[(&str, &str)]) -> PathBuf {
    let path = board(dir, name, edits);
    if emulated() {
        let text = std::fs::read_to_string(&path).expect("board");
        let light: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with("age_sha256"))
            .collect();
        let light = light.join("\n").replace(
            "models/age_student_int8.onnx",
            "tests/fixtures/age_fixture.onnx",
        );
        write(&path, &light);
    }
    path
}

/// A running `agegate run` whose event lines arrive on a channel.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Daemon {
    fn start(board: &Path, extra: &[&str]) -> Self {
        let mut child = agegate()
            .args(["run", "--board"])
            .arg(board)
            .args(extra)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agegate");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads events until one satisfies `until`; panics after [`patience`].
    fn wait_for(&mut self, what: &str, until: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + patience();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("not JSON: {line}: {e}"));
                    let hit = until(&event);
                    self.seen.push(event);
                    if hit {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("no {what} within {:?}: {:?}", patience(), self.seen);
                }
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal})");
    }

    /// Every remaining event, the exit code and stderr.
    fn finish(mut self) -> (Vec<Value>, Option<i32>, String) {
        let deadline = Instant::now() + patience();
        while let Ok(line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if let Ok(event) = serde_json::from_str(&line) {
                self.seen.push(event);
            }
        }
        let out = self.child.wait_with_output().expect("wait");
        (
            self.seen,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// A `serial_tx` event of message type `kind` (`heartbeat`, `fault`, `decision`...).
fn is_tx(event: &Value, kind: &str) -> bool {
    event["event"] == "serial_tx" && event["message"]["type"] == kind
}

fn is_shutdown_fault(event: &Value) -> bool {
    is_tx(event, "fault") && event["message"]["code"] == 7
}

fn is_heartbeat(event: &Value, state: &str) -> bool {
    is_tx(event, "heartbeat") && event["message"]["state"] == state
}

fn is_relay(event: &Value, active: bool) -> bool {
    event["event"] == "pin" && event["line"] == "relay" && event["active"] == active
}

/// A recording of Grace Hopper alone: the bundled photo, twenty times.
fn one_adult(dir: &Path) -> PathBuf {
    let photo = std::fs::read(root().join("tests/photos/grace_hopper.jpg")).expect("photo");
    let path = dir.join("one_adult.mjpeg");
    std::fs::write(&path, photo.repeat(20)).expect("write");
    path
}

/// The three states a signal may find the gate in, each a board and the event that shows
/// the daemon is in it.
/// A state's name, its board, and the event that shows the daemon is in it.
type State = (&'static str, PathBuf, fn(&Value) -> bool);

fn states(dir: &Path) -> Vec<State> {
    let fast_heartbeat = ("[session]", "[daemon]\nheartbeat_ms = 50\n\n[session]");
    vec![
        (
            // No host to send a REQUEST: ready, never deciding.
            "idle",
            state_board(
                dir,
                "idle",
                &[
                    fast_heartbeat,
                    ("trigger = \"face\"", "trigger = \"request\""),
                ],
            ),
            |e| is_heartbeat(e, "ready"),
        ),
        (
            // A window that cannot fill (64 frames of one person) nor time out soon.
            "deciding",
            state_board(
                dir,
                "deciding",
                &[
                    fast_heartbeat,
                    ("min_frames = 5", "min_frames = 64\nmax_frames = 64"),
                    ("timeout_ms = 4000", "timeout_ms = 3600000"),
                ],
            ),
            |e| is_heartbeat(e, "deciding"),
        ),
        (
            // The ALLOW's pulse held for a minute, on a recording of one adult only (the
            // next person's decision would end the pulse).
            "pulsing",
            state_board(
                dir,
                "pulsing",
                &[
                    ("relay_pulse_ms = 1000", "relay_pulse_ms = 60000"),
                    (
                        &format!("{}/tests/frames/demo.mjpeg", root().display()),
                        &one_adult(dir).display().to_string(),
                    ),
                ],
            ),
            |e| is_relay(e, true),
        ),
    ]
}

#[test]
fn every_stop_signal_in_every_state_closes_the_gate_and_tells_the_host() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Under qemu each case costs minutes of emulated inference: the three kinds of stop (a
    // hang-up, the service manager's, a closed pipe's) stand for the rest, one per state,
    // and the three states run side by side (one batch), so the emulated daemons load and
    // infer on both cores.
    let emulated_cases = ["SIGTERM", "SIGHUP", "SIGPIPE"];
    let mut pending = Vec::new();
    for (i, (state, board, ready)) in states(dir.path()).into_iter().enumerate() {
        pending.extend(
            agegate::daemon::STOP_SIGNALS
                .iter()
                .copied()
                .filter(|(_, n)| !emulated() || emulated_cases[i % emulated_cases.len()] == *n)
                .map(|(n, name)| (state, name, n, Daemon::start(&board, &["--loop"]), ready)),
        );
        // Natively, one batch per state: a state's daemons load their models side by side,
        // and the next state's start once these have stopped.
        if !emulated() {
            stop_and_check(std::mem::take(&mut pending));
        }
    }
    stop_and_check(pending);
}

type Case<'a> = (&'a str, &'a str, libc::c_int, Daemon, fn(&Value) -> bool);

/// Signals each daemon once it shows its state, then checks how each stopped.
fn stop_and_check(mut running: Vec<Case>) {
    for (state, name, n, daemon, ready) in &mut running {
        daemon.wait_for(&format!("{state} state ({name})"), *ready);
        daemon.signal(*n);
    }
    for (state, name, _, daemon, _) in running {
        let case = format!("{name} while {state}");
        let (events, code, stderr) = daemon.finish();
        assert_eq!(code, Some(0), "{case}: {stderr}");
        assert!(!stderr.contains("panicked"), "{case}: {stderr}");
        let fault = events
            .iter()
            .position(is_shutdown_fault)
            .unwrap_or_else(|| panic!("{case}: no FAULT shutdown in {events:?}"));
        // The relay is inactive at exit: its last level is off (or it never moved).
        let relay: Vec<&Value> = events.iter().filter(|e| e["line"] == "relay").collect();
        assert!(
            relay.last().is_none_or(|e| e["active"] == false),
            "{case}: relay left on: {relay:?}"
        );
        match state {
            "idle" => assert!(relay.is_empty(), "{case}: {relay:?}"),
            "deciding" => {
                assert!(relay.is_empty(), "{case}: {relay:?}");
                assert!(
                    events[fault..]
                        .iter()
                        .any(|e| is_tx(e, "decision") && e["message"]["decision"] == "REFER"),
                    "{case}: the open window is not answered REFER: {events:?}"
                );
            }
            _ => assert!(
                events[fault..].iter().any(|e| is_relay(e, false)),
                "{case}: the relay was not pulsing when the signal came: {events:?}"
            ),
        }
        assert!(
            stderr.contains(name),
            "{case}: the log does not name the signal: {stderr}"
        );
    }
}

#[test]
fn a_closed_stdout_is_a_fault_not_a_panic() {
    // `agegate run | head -2`: the reader goes away while the daemon runs.
    let mut child = agegate()
        .args(["run", "--board", "boards/dev.toml", "--loop"])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start agegate");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        stdout.read_line(&mut line).expect("a line");
    }
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("event output closed"), "{stderr}");
}

/// The frames of the bundled recording, each cut to `keep` of its length with an end
/// marker appended: what a lenient decoder shows half grey.
fn cut_recording(dir: &Path, keep: f64) -> PathBuf {
    let data = std::fs::read(root().join("tests/frames/demo.mjpeg")).expect("recording");
    let mut out = Vec::new();
    let mut at = 0;
    let mut frames = 0;
    while let Some(start) = agegate::jpeg::find_start(&data, at) {
        let len = agegate::jpeg::frame_len(&data[start..]).expect("a whole frame");
        let cut = (len as f64 * keep) as usize;
        out.extend_from_slice(&data[start..start + cut]);
        out.extend_from_slice(&[0xFF, 0xD9]);
        at = start + len;
        frames += 1;
    }
    assert!(frames > 30, "{frames} frames");
    let path = dir.join(format!("cut{}.mjpeg", (keep * 100.0) as u32));
    std::fs::write(&path, out).expect("write");
    path
}

#[test]
fn a_recording_of_cut_frames_decides_nothing_and_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    for keep in [0.5, 0.9] {
        let recording = cut_recording(dir.path(), keep);
        let recording = recording.display().to_string();
        let board = board(
            dir.path(),
            "cut",
            &[(
                &format!("{}/tests/frames/demo.mjpeg", root().display()),
                &recording,
            )],
        );
        let daemon = Daemon::start(&board, &[]);
        let (events, code, stderr) = daemon.finish();
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            !events.iter().any(|e| e["event"] == "decision"),
            "{keep}: decided on damaged frames: {events:?}"
        );
        assert!(!events.iter().any(|e| is_relay(e, true)));
        assert!(
            stderr.contains("RecordingEnded") && stderr.contains("frames: 0"),
            "{keep}: {stderr}"
        );
        assert!(events.iter().any(|e| e["event"] == "fault"), "{events:?}");
    }
}

#[test]
fn run_loops_the_bundled_recording_from_the_command_line() {
    // The first four frames of the bundled recording (the empty scene before anyone walks
    // up: the detector runs, the age model does not, so this stays quick under the
    // emulator), played with --loop for three passes and a bit.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = std::fs::read(root().join("tests/frames/demo.mjpeg")).expect("recording");
    let mut head = Vec::new();
    let mut at = 0;
    for _ in 0..4 {
        let start = agegate::jpeg::find_start(&data, at).expect("a frame");
        let len = agegate::jpeg::frame_len(&data[start..]).expect("a whole frame");
        head.extend_from_slice(&data[start..start + len]);
        at = start + len;
    }
    let recording = dir.path().join("head.mjpeg");
    std::fs::write(&recording, head).expect("write");
    let demo = root().join("tests/frames/demo.mjpeg").display().to_string();
    let board = board(
        dir.path(),
        "head",
        &[(demo.as_str(), recording.to_str().expect("utf-8 path"))],
    );
    let out = agegate()
        .args(["run", "--board"])
        .arg(&board)
        .args(["--loop", "--quiet", "--max-frames", "14"])
        .current_dir(root())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // Without the loop the run would have ended after the recording's 4 frames.
    let frames: u64 = stderr
        .split("frames: ")
        .nth(1)
        .and_then(|s| s.split([',', ' ', '}']).next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no frame count in the stats line: {stderr}"));
    assert_eq!(frames, 14, "{stderr}");
}

#[cfg(not(target_arch = "aarch64"))]
mod serial_line {
    //! A pseudo-terminal opened by path (qemu-user 7.2 lacks TCGETS2: native only).

    use super::*;
    use agegate::serial::{Decoder, Message};
    use serialport::SerialPort;
    use std::io::{Read, Write};

    /// A pseudo-terminal pair and the dev board talking to its device end by path. The
    /// device end stays open here until the host's end has been read (Linux drops what
    /// the master has not read once every slave handle is closed).
    fn pty_board(dir: &Path) -> (serialport::TTYPort, serialport::TTYPort, PathBuf) {
        let (host, device) = serialport::TTYPort::pair().expect("pty pair");
        let path = device.name().expect("pty name");
        let board = board(
            dir,
            "serial",
            &[(
                "kind = \"none\"",
                &format!("kind = \"port\"\npath = \"{path}\""),
            )],
        );
        (host, device, board)
    }

    /// Appends what the host's end has to read (until a read times out).
    fn drain(host: &mut serialport::TTYPort, received: &mut Vec<u8>) {
        let mut buf = [0u8; 512];
        while let Ok(n) = host.read(&mut buf) {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
    }

    /// The FAULTs (code, detail) the host's end has to read once the daemon has exited;
    /// the device end is closed after the read (see `pty_board`).
    fn faults_heard(
        host: &mut serialport::TTYPort,
        device: serialport::TTYPort,
    ) -> Vec<(u8, String)> {
        host.set_timeout(Duration::from_millis(200))
            .expect("timeout");
        let mut bytes = Vec::new();
        drain(host, &mut bytes);
        drop(device);
        let mut faults = Vec::new();
        Decoder::new().feed(&bytes, |m| {
            if let Message::Fault { code, detail } = m {
                faults.push((code.0, detail.to_string()));
            }
        });
        faults
    }

    #[test]
    fn pings_sent_byte_by_byte_are_answered_with_a_recording_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut host, _device, board) = pty_board(dir.path());
        let mut daemon = Daemon::start(&board, &["--loop"]);
        daemon.wait_for("the first heartbeat", |e| is_tx(e, "heartbeat"));
        host.set_timeout(Duration::from_millis(20))
            .expect("timeout");
        let mut received = Vec::new();
        for nonce in 0..30u32 {
            let frame = Message::Ping { nonce }.to_bytes().expect("encode");
            for b in frame.iter() {
                host.write_all(&[*b]).expect("write");
                host.flush().expect("flush");
                std::thread::sleep(Duration::from_millis(3));
            }
            drain(&mut host, &mut received);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let pongs = |bytes: &[u8]| {
            let mut decoder = Decoder::new();
            let mut nonces = Vec::new();
            decoder.feed(bytes, |m| {
                if let Message::Pong { nonce } = m {
                    nonces.push(nonce);
                }
            });
            nonces
        };
        while pongs(&received).len() < 30 && Instant::now() < deadline {
            drain(&mut host, &mut received);
        }
        daemon.signal(libc::SIGTERM);
        let (_, code, stderr) = daemon.finish();
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(pongs(&received), (0..30).collect::<Vec<u32>>());
    }

    #[test]
    fn a_closed_stdout_tells_the_host() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut host, device, board) = pty_board(dir.path());
        let mut child = agegate()
            .args(["run", "--board"])
            .arg(&board)
            .arg("--loop")
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start agegate");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("a line");
        drop(stdout);
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(3));
        let faults = faults_heard(&mut host, device);
        assert!(faults.iter().any(|(code, _)| *code == 0xFF), "{faults:?}");
    }

    #[test]
    fn a_model_that_is_not_the_pinned_one_is_a_fault_the_host_hears() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut host, device, board) = pty_board(dir.path());
        let text = std::fs::read_to_string(&board).expect("board");
        let pin = text
            .lines()
            .find_map(|l| l.strip_prefix("age_sha256 = \""))
            .map(|l| l.trim_end_matches('"').to_string())
            .expect("the dev board pins its age model");
        write(&board, &text.replace(&pin, &"0".repeat(64)));
        let out = agegate()
            .args(["run", "--board"])
            .arg(&board)
            .current_dir(root())
            .output()
            .expect("run agegate");
        assert_eq!(out.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("age_student_int8.onnx") && stderr.contains(&pin),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "no event, no decision");
        let faults = faults_heard(&mut host, device);
        assert_eq!(faults, vec![(0x02, "model pin wrong".to_string())]);
    }
}

#[test]
fn a_recording_that_keeps_failing_retries_and_reports_on_the_wall_clock() {
    // A folder of frames that goes away mid-run: every reopen then fails. On the
    // recording's clock, which a wait only moves on, the daemon once retried and sent
    // FAULT camera as fast as the CPU allowed (470 a second to the host).
    let dir = tempfile::tempdir().expect("tempdir");
    let frames = dir.path().join("frames");
    std::fs::create_dir(&frames).expect("mkdir");
    for i in 0..4 {
        std::fs::copy(
            photo("grace_hopper.jpg"),
            frames.join(format!("{i:04}.jpg")),
        )
        .expect("copy frame");
    }
    let source = format!(
        "source = \"image-dir\"\npath = \"{}\"\nloop = true",
        frames.display()
    );
    let board = state_board(
        dir.path(),
        "vanishing",
        &[(
            &format!(
                "source = \"mjpeg-file\"\npath = \"{}/tests/frames/demo.mjpeg\"",
                root().display()
            ),
            &source,
        )],
    );
    let mut daemon = Daemon::start(&board, &[]);
    daemon.wait_for("a first frame's heartbeat", |e| is_heartbeat(e, "ready"));
    std::fs::remove_dir_all(&frames).expect("rm frames");
    let camera = agegate::serial::FaultCode::CAMERA.0;
    daemon.wait_for("the camera fault", |e| {
        e["event"] == "fault" && e["code"] == camera
    });
    let watched = Duration::from_secs(4);
    std::thread::sleep(watched);
    daemon.signal(libc::SIGTERM);
    let (events, code, stderr) = daemon.finish();
    assert_eq!(code, Some(0), "{stderr}");
    let faults: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "fault" && e["code"] == camera)
        .collect();
    let reported = faults.iter().filter(|e| e["reported"] == true).count();
    // Reopens back off from 250 ms, doubling: about five in 4 s; FAULT at most once a
    // second, and the shutdown's own.
    assert!(
        faults.len() <= 8,
        "{} camera faults: {faults:?}",
        faults.len()
    );
    assert!(reported <= 6, "{reported} FAULT camera sent: {faults:?}");
}

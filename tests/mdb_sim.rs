//! `agegate mdb-sim` end to end: a simulated vending machine controller drives the real
//! daemon (pipeline, models, policy, window, liveness, the AVD's thread) over the
//! in-memory MDB bus, and the answers must be what a machine may rely on.

mod common;

use std::path::{Path, PathBuf};

use common::{agegate, root, shared_data, skip};
use serde_json::Value;

/// Children's faces from UTKFace val, the first two of each age from 5 to 10 in the
/// manifest's order, copied into `dir` as one scene.
fn child_scene(data: &Path, dir: &Path) -> PathBuf {
    let manifest = std::fs::read_to_string(data.join("utkface/val.csv")).expect("val.csv");
    let scene = dir.join("child");
    std::fs::create_dir_all(&scene).expect("mkdir");
    let mut taken = [0usize; 11];
    let children = manifest.lines().skip(1).filter_map(|line| {
        let mut cols = line.split(',');
        let (path, age) = (cols.next()?, cols.next()?.parse::<usize>().ok()?);
        let count = taken.get_mut(age).filter(|_| age >= 5)?;
        *count += 1;
        (*count <= 2).then(|| data.join("utkface").join(path))
    });
    for (i, photo) in children.enumerate() {
        std::fs::copy(&photo, scene.join(format!("{i:02}.jpg"))).expect("copy a child's photo");
    }
    scene
}

struct Run {
    sessions: Vec<Value>,
    summary: Value,
}

fn simulate(board: &str, sessions: usize, scenes: &[String]) -> Run {
    let mut cmd = agegate();
    cmd.args(["mdb-sim", "--board"])
        .arg(root().join(board))
        .args(["--sessions", &sessions.to_string(), "--seed", "7"])
        .args(["--abort-percent", "15"]);
    for scene in scenes {
        cmd.args(["--scene", scene]);
    }
    let out = cmd.output().expect("starting agegate mdb-sim");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mdb-sim failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let (summary, sessions) = lines.split_last().expect("a summary line");
    Run {
        sessions: sessions.to_vec(),
        summary: summary.clone(),
    }
}

fn count(run: &Run, scene: &str, answer: &str) -> u64 {
    run.summary["summary"]["answers"][scene][answer]
        .as_u64()
        .unwrap_or(0)
}

fn check_sessions(run: &Run, expected: usize) {
    assert_eq!(run.sessions.len(), expected);
    for line in &run.sessions {
        for key in [
            "answer",
            "decision",
            "required_age",
            "response_ms_max",
            "exchanges",
        ] {
            assert!(line.get(key).is_some(), "no `{key}` in {line}");
        }
        let answer = line["answer"].as_str().expect("answer");
        assert!(
            ["approved", "not_approved", "not_verified", "aborted"].contains(&answer),
            "{line}"
        );
        if answer == "approved" {
            assert_eq!(line["decision"], "ALLOW", "{line}");
            assert_eq!(line["scene"], "adult", "{line}");
        }
    }
    let summary = &run.summary["summary"];
    assert_eq!(summary["violations"], Value::Array(vec![]), "{summary}");
    assert!(summary["resets"].as_u64() >= Some(1));
    assert_eq!(summary["resets"], summary["just_reset_after_reset"]);
    // The bus: every command answered, none garbled.
    assert_eq!(run.summary["bus"]["garbled"], 0, "{}", run.summary);
}

#[test]
fn a_vending_machine_gets_approvals_for_adults_only() {
    let Some(data) = shared_data() else {
        return skip(
            "a_vending_machine_gets_approvals_for_adults_only",
            "no ../shared/data for the child scene",
        );
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let child = child_scene(&data, dir.path());
    let frames = root().join("tests/frames");
    let scenes = [
        format!("adult={}:4-13,23-32", frames.join("demo.mjpeg").display()),
        format!("empty={}:0-3,14-22", frames.join("demo.mjpeg").display()),
        format!("child={}", child.display()),
    ];
    let sessions = 30;
    let run = simulate("boards/dev-mdb.toml", sessions, &scenes);
    check_sessions(&run, sessions);
    assert!(count(&run, "adult", "approved") >= 1, "{}", run.summary);
    for scene in ["child", "empty"] {
        assert_eq!(count(&run, scene, "approved"), 0, "{}", run.summary);
    }
    // The children are told "not approved" (DENY), not merely "could not verify".
    assert!(count(&run, "child", "not_approved") >= 1, "{}", run.summary);
    assert!(
        run.sessions.iter().any(|l| l["answer"] == "aborted"),
        "no abort was tried"
    );
}

#[test]
fn with_liveness_on_no_photo_or_attack_is_approved() {
    // The vending board as shipped: passive+motion liveness. The bundled adults are still
    // photos and the attacks prints and screens: none may be approved.
    let sessions = 6;
    let run = simulate("boards/vending-mdb.toml", sessions, &[]);
    check_sessions(&run, sessions);
    for scene in ["adult", "empty", "attack"] {
        assert_eq!(count(&run, scene, "approved"), 0, "{}", run.summary);
    }
}

/// The stream transport as a VMC outside the process uses it: two bytes a word over the
/// Unix socket `agegate run` listens on.
struct SocketVmc {
    stream: std::os::unix::net::UnixStream,
}

impl SocketVmc {
    fn connect(path: &Path) -> Self {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
                        .expect("timeout");
                    return Self { stream };
                }
                Err(e) if std::time::Instant::now() > until => panic!("no socket: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    /// Sends a command block and reads the reply's data bytes (ACKing a data block); an
    /// empty reply is silence, which a VMC answers by asking again.
    fn exchange(&mut self, command: &agegate::mdb::Command) -> Vec<u8> {
        use std::io::{Read, Write};
        let bytes = command.emit().expect("emit");
        for _ in 0..20 {
            let out: Vec<u8> = bytes
                .iter()
                .enumerate()
                .flat_map(|(i, b)| {
                    agegate::mdb::Word {
                        data: *b,
                        mode: i == 0,
                    }
                    .to_stream()
                })
                .collect();
            self.stream.write_all(&out).expect("send");
            let mut reply = Vec::new();
            let mut word = [0u8; 2];
            while self.stream.read_exact(&mut word).is_ok() {
                reply.push(word[1]);
                if word[0] == 1 {
                    break;
                }
            }
            if reply.len() > 1 {
                self.stream.write_all(&[0, 0x00]).expect("ACK");
            }
            if !reply.is_empty() {
                return reply;
            }
        }
        panic!("no reply to {command:?}");
    }
}

#[test]
fn agegate_run_answers_a_vmc_on_the_stream_socket() {
    use agegate::mdb::Command;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("mdb.sock");
    let board = std::fs::read_to_string(root().join("boards/dev-mdb.toml"))
        .expect("board")
        .replace(
            "path = \"/tmp/agegate-mdb.sock\"",
            &format!("path = {socket:?}"),
        )
        .replace(
            "../tests/frames/",
            &format!("{}/tests/frames/", root().display()),
        )
        .replace("../models/", &format!("{}/models/", root().display()));
    let board_path = dir.path().join("board.toml");
    common::write(&board_path, &board);
    let child = agegate()
        .args(["run", "--loop", "--board"])
        .arg(&board_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start agegate run");
    let mut vmc = SocketVmc::connect(&socket);
    assert_eq!(vmc.exchange(&Command::Reset), vec![0x00]);
    assert_eq!(vmc.exchange(&Command::Poll), vec![0x00, 0x00], "JUST RESET");
    assert_eq!(vmc.exchange(&Command::Dravp { age: 18 }), vec![0x00]);
    assert_eq!(
        vmc.exchange(&Command::Poll).first(),
        Some(&0xFF),
        "the DRAVP answer"
    );
    assert_eq!(vmc.exchange(&Command::Dravs { y4: 0 }), vec![0x00]);
    let mut answer = None;
    for _ in 0..600 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        let reply = vmc.exchange(&Command::Poll);
        if reply.len() > 1 {
            answer = Some(reply);
            break;
        }
    }
    // SIGTERM: the daemon stops as on the device; its event lines end.
    // SAFETY: kill(2) with the child's own pid and a valid signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().expect("agegate run ends");
    let answer = answer.expect("the DRAVS answered within 30 s");
    // FF 06 07 Z4 Z5 "DRAVS" CHK
    assert_eq!(
        answer.get(..3),
        Some(&[0xFF, 0x06, 0x07][..]),
        "{answer:02X?}"
    );
    let verdict = match (answer[3], answer[4]) {
        (0x1E, 0x10) => "approved",
        (0x0E, 0x10) => "not_approved",
        (0x00, 0x00) => "not_verified",
        other => panic!("feature bytes {other:02X?}"),
    };
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let tx = events
        .iter()
        .find(|e| e["event"] == "mdb_tx")
        .expect("an mdb_tx event");
    assert_eq!(tx["answer"], verdict, "the VMC heard what the log says");
    let decision = events
        .iter()
        .find(|e| e["event"] == "decision" && e["id"] == tx["id"])
        .expect("the session's decision event");
    let expected = match verdict {
        "approved" => "ALLOW",
        "not_approved" => "DENY",
        _ => "REFER",
    };
    assert_eq!(decision["decision"], expected);
    assert!(events
        .iter()
        .any(|e| e["event"] == "mdb_rx" && e["request"] == "verify" && e["required_age"] == 18));
}

//! The AVD's thread on the in-memory bus: a VMC's words in, the daemon's channel ends out.

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use super::*;
use crate::mdb::transport::memory::{self, VmcEnd};
use crate::mdb::{Block, Command, Response, Word};

/// The VMC's end on a manual clock: words a word's time apart, replies read at once, so
/// how fast the thread runs (an emulator, a loaded machine) never makes it late.
struct Vmc {
    end: VmcEnd,
}

impl Vmc {
    /// Sends `command`; returns the reply's words (ACKing a data block).
    fn send(&self, command: Command) -> Vec<Word> {
        let bytes = command.emit().expect("emit");
        for (i, b) in bytes.iter().enumerate() {
            self.end.clock().advance(crate::mdb::timing::WORD_US);
            self.end.send(Word {
                data: *b,
                mode: i == 0,
            });
        }
        let mut words = Vec::new();
        while let Some((word, _)) = self.end.receive(Duration::from_secs(5)) {
            words.push(word);
            if word.mode {
                break;
            }
        }
        if words.len() > 1 {
            self.end.send(Word::data(0x00));
        }
        // The VMC's next command comes later than any answer is awaited.
        self.end.clock().advance(20_000);
        words
    }

    fn response(&self, command: Command) -> Option<Response> {
        let words = self.send(command);
        let bytes: Vec<u8> = words.iter().map(|w| w.data).collect();
        (bytes.len() > 1)
            .then(|| Response::parse(&Block::new_unchecked(&bytes[..])).expect("a block"))
    }
}

fn started() -> (MdbDevice, VmcPort, Vmc) {
    let clock = BusClock::manual(1_000_000);
    let (avd, end) = memory::pair(clock.clone());
    let settings = DeviceSettings {
        avd: AvdSettings::default(),
        sched_fifo_priority: None,
    };
    let (device, port) = MdbDevice::start(settings, Box::new(avd), clock).expect("start");
    let vmc = Vmc { end };
    assert_eq!(vmc.send(Command::Reset), vec![Word::with_mode(0x00)]);
    assert_eq!(vmc.response(Command::Poll), Some(Response::JustReset));
    assert_eq!(
        vmc.send(Command::Dravp { age: 21 }),
        vec![Word::with_mode(0x00)]
    );
    assert_eq!(
        vmc.response(Command::Poll),
        Some(Response::Dravp { feature: 0 })
    );
    (device, port, vmc)
}

fn request(port: &VmcPort) -> VmcRequest {
    port.requests
        .recv_timeout(Duration::from_secs(5))
        .expect("a request from the MDB thread")
}

#[test]
fn a_dravs_reaches_the_daemon_and_its_answer_the_next_poll() {
    let (device, port, vmc) = started();
    vmc.send(Command::Dravs { y4: 0 });
    let VmcRequest::Verify {
        session,
        required_age,
    } = request(&port)
    else {
        panic!("not a verification");
    };
    assert_eq!(required_age, 21);
    // While the daemon decides, POLL is answered ACK.
    assert_eq!(vmc.send(Command::Poll), vec![Word::with_mode(0x00)]);
    // An answer for another session is dropped, never sent.
    port.answers
        .send(VmcAnswer {
            session: session.wrapping_add(1),
            decision: Decision::Allow,
        })
        .expect("send");
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(vmc.send(Command::Poll), vec![Word::with_mode(0x00)]);
    port.answers
        .send(VmcAnswer {
            session,
            decision: Decision::Deny,
        })
        .expect("send");
    std::thread::sleep(Duration::from_millis(30));
    let (f1, f2) = VerificationResult::NotApproved.feature_bytes();
    assert_eq!(
        vmc.response(Command::Poll),
        Some(Response::Dravs {
            feature1: f1,
            feature2: f2
        })
    );
    let health = *device.health().lock().expect("health");
    assert_eq!(health.device.stale_answers, 1);
    assert_eq!(health.device.sessions, 1);
}

#[test]
fn an_abort_reaches_the_daemon_and_a_late_answer_is_dropped() {
    let (_device, port, vmc) = started();
    vmc.send(Command::Dravs { y4: 0 });
    let VmcRequest::Verify { session, .. } = request(&port) else {
        panic!("not a verification");
    };
    vmc.send(Command::Reset);
    assert_eq!(request(&port), VmcRequest::Abort { session });
    port.answers
        .send(VmcAnswer {
            session,
            decision: Decision::Allow,
        })
        .expect("send");
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(vmc.response(Command::Poll), Some(Response::JustReset));
    assert_eq!(
        vmc.send(Command::Poll),
        vec![Word::with_mode(0x00)],
        "no approval"
    );
    // Nothing else was asked of the daemon.
    assert_eq!(
        port.requests.recv_timeout(Duration::from_millis(50)),
        Err(RecvTimeoutError::Timeout)
    );
}

#[test]
fn the_thread_stops_when_the_daemon_is_gone() {
    let (device, port, _vmc) = started();
    assert!(device.is_running());
    drop(port);
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while device.is_running() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!device.is_running(), "the MDB thread outlived the daemon");
}

//! The link and the AVD session, driven word by word with exact times; and property-style
//! tests over random bus traffic from a small deterministic PRNG.

use super::block::Block;
use super::command::Command;
use super::response::Response;
use super::tests::with_chk;
use super::*;
use crate::tools::stats::Rng;

/// A VMC and a clock: sends blocks word by word, a word's time apart, and collects what
/// the AVD does.
struct Bus {
    avd: Peripheral,
    now: u64,
}

#[derive(Debug, Default)]
struct Got {
    words: Option<Vec<Word>>,
    events: Vec<Event>,
    notes: Vec<Note>,
}

impl Got {
    fn take(&mut self, outcome: Outcome) {
        if let Some(t) = outcome.transmit {
            assert!(self.words.is_none(), "two transmissions for one block");
            self.words = Some(t.words.to_vec());
        }
        self.events.extend(outcome.event);
        self.notes.extend(outcome.note);
    }

    fn single(&self) -> Option<u8> {
        match self.words.as_deref() {
            Some([w]) if w.mode => Some(w.data),
            _ => None,
        }
    }

    fn is_ack(&self) -> bool {
        self.single() == Some(ACK)
    }

    fn is_nak(&self) -> bool {
        self.single() == Some(NAK)
    }

    /// The data block sent: the mode bit on its last word only, a good checksum.
    fn data(&self) -> Response {
        let words = self.words.as_deref().expect("nothing sent");
        let last = words.len() - 1;
        for (i, w) in words.iter().enumerate() {
            assert_eq!(w.mode, i == last, "mode bit of word {i} in {words:02X?}");
        }
        let bytes: Vec<u8> = words.iter().map(|w| w.data).collect();
        Response::parse(&Block::new_unchecked(&bytes[..])).expect("a good block")
    }
}

impl Bus {
    fn new(settings: AvdSettings) -> Self {
        Self {
            avd: Peripheral::new(settings),
            now: 1_000_000,
        }
    }

    fn tick(&mut self, us: u64) -> Micros {
        self.now += us;
        Micros(self.now)
    }

    /// The VMC sends `bytes`, the first with the mode bit, a word's time apart.
    fn words(&mut self, bytes: &[u8]) -> Got {
        let mut got = Got::default();
        for (i, b) in bytes.iter().enumerate() {
            let word = Word {
                data: *b,
                mode: i == 0,
            };
            let now = self.tick(timing::WORD_US);
            got.take(self.avd.on_word(word, now));
        }
        got
    }

    /// The VMC sends `bytes` (the first with the mode bit), then the line stays quiet.
    fn vmc(&mut self, bytes: &[u8]) -> Got {
        let mut got = self.words(bytes);
        if got.words.is_none() {
            let now = self.tick(timing::GAP_US + 1);
            got.take(self.avd.on_idle(now));
        }
        // The reply goes out.
        let sent = got.words.as_ref().map_or(0, Vec::len) as u64;
        self.tick(sent * timing::WORD_US);
        got
    }

    fn command(&mut self, command: Command) -> Got {
        self.vmc(&command.emit().unwrap())
    }

    /// The VMC's ACK, RET or NAK: a data word.
    fn answer(&mut self, byte: u8) -> Got {
        let mut got = Got::default();
        let now = self.tick(timing::WORD_US + 500);
        got.take(self.avd.on_word(Word::data(byte), now));
        got
    }

    /// A POLL whose data block, if any, the VMC ACKs.
    fn poll_acked(&mut self) -> Got {
        let got = self.command(Command::Poll);
        if !got.is_ack() {
            assert!(self.answer(ACK).words.is_none());
        }
        got
    }

    /// RESET, the JUST RESET poll, DRAVP `age` answered on the next POLL.
    fn started(settings: AvdSettings, age: u8) -> Self {
        let mut bus = Self::new(settings);
        assert!(bus.command(Command::Reset).is_ack());
        assert_eq!(bus.poll_acked().data(), Response::JustReset);
        assert!(bus.command(Command::Dravp { age }).is_ack());
        assert_eq!(bus.poll_acked().data(), Response::Dravp { feature: 0 });
        bus
    }
}

fn dravs_answer(result: VerificationResult) -> Response {
    let (feature1, feature2) = result.feature_bytes();
    Response::Dravs { feature1, feature2 }
}

#[test]
fn session_dravp_answered_on_the_next_poll() {
    let mut bus = Bus::new(AvdSettings::default());
    assert!(bus.command(Command::Reset).is_ack());
    assert_eq!(bus.poll_acked().data(), Response::JustReset);
    assert!(bus.poll_acked().is_ack(), "JUST RESET is sent once");
    let setup = bus.vmc(&with_chk(&[0x69, 0x00, 0x03, 0x10, 0x02, 0x01]));
    assert!(matches!(setup.data(), Response::SetupData { level: 1, .. }));
    bus.answer(ACK);
    let id = bus.command(Command::RequestId { vmc_id: None });
    assert!(
        matches!(id.data(), Response::PeripheralId { manufacturer, .. } if &manufacturer == b"AGG")
    );
    bus.answer(ACK);
    assert!(bus.command(Command::Dravp { age: 18 }).is_ack());
    assert_eq!(bus.avd.required_age(), Some(18));
    assert_eq!(bus.poll_acked().data(), Response::Dravp { feature: 0 });
    assert!(bus.poll_acked().is_ack());

    let dravs = bus.command(Command::Dravs { y4: 0 });
    assert!(dravs.is_ack());
    assert_eq!(
        dravs.events,
        [Event::StartVerification {
            required_age: 18,
            replaced: false
        }]
    );
    assert!(bus.poll_acked().is_ack(), "no answer before the result");
    assert!(bus.avd.verification_result(VerificationResult::Approved));
    assert_eq!(
        bus.poll_acked().data(),
        dravs_answer(VerificationResult::Approved)
    );
    assert!(bus.poll_acked().is_ack(), "the result is sent once");
    assert_eq!(bus.avd.counters().commands, 12);
}

#[test]
fn session_dravp_answered_at_once() {
    let settings = AvdSettings {
        dravp_answer: DravpAnswer::Immediate,
        ..AvdSettings::default()
    };
    let mut bus = Bus::new(settings);
    assert_eq!(bus.poll_acked().data(), Response::JustReset);
    let dravp = bus.command(Command::Dravp { age: 21 });
    assert_eq!(dravp.data(), Response::Dravp { feature: 0 });
    bus.answer(ACK);
    assert!(bus.poll_acked().is_ack());
    assert_eq!(bus.avd.required_age(), Some(21));
}

#[test]
fn nak_silence_and_ret_never_lose_the_result() {
    let mut bus = Bus::started(AvdSettings::default(), 18);
    bus.command(Command::Dravs { y4: 0 });
    assert!(bus.avd.verification_result(VerificationResult::NotApproved));
    let expected = dravs_answer(VerificationResult::NotApproved);

    assert_eq!(bus.command(Command::Poll).data(), expected);
    assert!(bus.answer(NAK).words.is_none());
    // Silence: the VMC's next command comes instead of an answer.
    assert_eq!(bus.command(Command::Poll).data(), expected);
    let first = bus.command(Command::Poll);
    assert_eq!(first.data(), expected);
    let again = bus.answer(RET);
    assert_eq!(again.words, first.words, "RET sends the same words");
    // No answer in time at all.
    let now = bus.tick(50_000);
    assert!(bus.avd.on_idle(now).transmit.is_none());
    assert_eq!(bus.poll_acked().data(), expected);
    assert!(bus.poll_acked().is_ack());
    let c = bus.avd.counters();
    assert_eq!((c.unacknowledged, c.retransmissions), (3, 1));
}

#[test]
fn bad_checksum_and_unknown_commands_are_naked() {
    let mut bus = Bus::new(AvdSettings::default());
    assert!(bus.vmc(&[0x6A, 0x6B]).is_nak());
    assert!(bus.vmc(&with_chk(&[0x6B, 0x01])).is_nak());
    assert!(bus.vmc(&with_chk(&[0x6F, 0x42])).is_nak());
    let dravp_bad_tag = with_chk(&[0x6F, 0xFF, 0x05, 0x06, 0x12, b'D', b'R', b'A', b'V', b'X']);
    assert!(bus.vmc(&dravp_bad_tag).is_nak());
    assert_eq!(bus.avd.required_age(), None);
    let c = bus.avd.counters();
    assert_eq!((c.bad_checksum, c.unknown_commands, c.malformed), (1, 2, 1));
}

#[test]
fn other_peripherals_traffic_is_never_answered() {
    let mut bus = Bus::new(AvdSettings::default());
    // A cashless device's POLL, SETUP and DRAVP, an address just below and just above.
    for block in [
        with_chk(&[0x12]),
        with_chk(&[0x11, 0x00, 0x03, 0x20, 0x01, 0x00]),
        with_chk(&[0x17, 0xFF, 0x05, 0x06, 0x12, b'D', b'R', b'A', b'V', b'P']),
        with_chk(&[0x67]),
        with_chk(&[0x70]),
    ] {
        let got = bus.vmc(&block);
        assert!(got.words.is_none(), "answered {block:02X?}");
        // The VMC's ACK to that peripheral.
        assert!(bus.answer(ACK).words.is_none());
    }
    assert_eq!(bus.avd.counters().foreign_blocks, 5);
    assert_eq!(bus.avd.counters().stray_words, 0);
    assert_eq!(bus.avd.required_age(), None);
}

#[test]
fn truncated_blocks_and_missing_mode_bits_are_silent() {
    let mut bus = Bus::new(AvdSettings::default());
    // DRAVP cut after five bytes: the line goes quiet.
    let dravp = Command::Dravp { age: 18 }.emit().unwrap();
    assert!(bus.vmc(&dravp[..5]).words.is_none());
    // DRAVP cut by the next address byte: the POLL is still answered.
    assert!(bus.words(&dravp[..4]).words.is_none());
    assert_eq!(bus.vmc(&[0x6A, 0x6A]).data(), Response::JustReset);
    bus.answer(ACK);
    // POLL without the mode bit on its address byte.
    for b in [0x6A, 0x6A] {
        let now = bus.tick(timing::WORD_US);
        assert!(bus.avd.on_word(Word::data(b), now).transmit.is_none());
    }
    // A gap longer than t-inter-byte inside a block.
    let now = bus.tick(timing::WORD_US);
    assert!(bus
        .avd
        .on_word(Word::with_mode(0x6A), now)
        .transmit
        .is_none());
    let now = bus.tick(timing::GAP_US + 1);
    assert!(bus.avd.on_word(Word::data(0x6A), now).transmit.is_none());
    let c = bus.avd.counters();
    assert_eq!((c.truncated, c.stray_words), (3, 3));
    assert_eq!(bus.avd.required_age(), None);
}

#[test]
fn a_reply_later_than_t_response_is_not_sent() {
    let mut bus = Bus::new(AvdSettings::default());
    // REQUEST ID ends at idle; the transport noticed the quiet line 6 ms late.
    assert!(bus.words(&[0x6F, 0x00, 0x6F]).words.is_none());
    let now = bus.tick(6_000);
    assert!(bus.avd.on_idle(now).transmit.is_none());
    assert_eq!(bus.avd.counters().missed_replies, 1);
    // In time, the deadline is t-response after the last byte.
    assert!(bus.words(&[0x6F, 0x00, 0x6F]).words.is_none());
    let last = bus.now;
    let now = bus.tick(timing::GAP_US + 1);
    let outcome = bus.avd.on_idle(now);
    assert_eq!(
        outcome.transmit.map(|t| t.deadline),
        Some(Micros(last + timing::RESPONSE_US))
    );
}

#[test]
fn aborts_drop_the_running_verification() {
    let abort = |cause| Event::AbortVerification { cause };
    for (command, cause) in [
        (Command::Dravp { age: 0x00 }, AbortCause::AgeOff),
        (Command::Dravp { age: 0xFF }, AbortCause::AgeOff),
        (Command::Dravp { age: 21 }, AbortCause::AgeChanged),
        (Command::Reset, AbortCause::Reset),
        (Command::Reader(command::Reader::Cancel), AbortCause::Reader),
    ] {
        let mut bus = Bus::started(AvdSettings::default(), 18);
        bus.command(Command::Dravs { y4: 0 });
        let got = bus.command(command.clone());
        assert_eq!(got.events, [abort(cause)], "{command:?}");
        assert!(!bus.avd.verification_result(VerificationResult::Approved));
        assert_eq!(bus.avd.counters().stray_results, 1);
        for _ in 0..3 {
            let poll = bus.poll_acked();
            assert!(
                poll.is_ack() || !matches!(poll.data(), Response::Dravs { .. }),
                "{command:?}"
            );
        }
    }
    // The same age again does not abort; a bus reset does.
    let mut bus = Bus::started(AvdSettings::default(), 18);
    bus.command(Command::Dravs { y4: 0 });
    assert!(bus.command(Command::Dravp { age: 18 }).events.is_empty());
    assert_eq!(bus.avd.on_bus_reset().event, Some(abort(AbortCause::Reset)));
    assert_eq!(bus.poll_acked().data(), Response::JustReset);
}

#[test]
fn a_new_dravs_replaces_the_running_one() {
    let mut bus = Bus::started(AvdSettings::default(), 18);
    bus.command(Command::Dravs { y4: 0 });
    let again = bus.command(Command::Dravs { y4: 0 });
    assert_eq!(
        again.events,
        [Event::StartVerification {
            required_age: 18,
            replaced: true
        }]
    );
}

#[test]
fn a_required_age_below_the_floor_is_raised() {
    let settings = AvdSettings {
        min_request_age: 18,
        ..AvdSettings::default()
    };
    let mut bus = Bus::new(settings);
    let got = bus.command(Command::Dravp { age: 16 });
    assert_eq!(
        got.notes,
        [Note::AgeRaised {
            requested: 16,
            floor: 18
        }]
    );
    let dravs = bus.command(Command::Dravs { y4: 0 });
    assert_eq!(
        dravs.events,
        [Event::StartVerification {
            required_age: 18,
            replaced: false
        }]
    );
    assert_eq!(bus.avd.counters().ages_raised, 1);
}

#[test]
fn dravs_while_off_starts_nothing() {
    let mut bus = Bus::new(AvdSettings::default());
    let got = bus.command(Command::Dravs { y4: 0 });
    assert!(got.is_ack() && got.events.is_empty());
    assert_eq!(bus.avd.counters().dravs_while_off, 1);
}

/// Every age byte a DRAVP can carry: no verification starts from DRAVP itself, nothing is
/// approved, and only 1..=254 switch verification on.
#[test]
fn every_dravp_age_byte_is_handled_and_approves_nothing() {
    for age in 0..=255u8 {
        let mut bus = Bus::new(AvdSettings::default());
        let got = bus.command(Command::Dravp { age });
        assert!(got.is_ack() && got.events.is_empty(), "age {age}");
        assert_eq!(bus.avd.required_age().is_some(), age != 0 && age != 0xFF);
        for _ in 0..3 {
            let poll = bus.poll_acked();
            if let Some(words) = poll.words.as_deref() {
                assert!(words.len() == 1 || !matches!(poll.data(), Response::Dravs { .. }));
            }
        }
    }
}

/// Whether `words` carry an approval (a DRAVS answer with bit 4 of its first feature byte).
fn approves(words: &[Word]) -> bool {
    let bytes: Vec<u8> = words.iter().map(|w| w.data).collect();
    matches!(
        Response::parse(&Block::new_unchecked(&bytes[..])),
        Ok(Response::Dravs { feature1, .. }) if feature1 & 0x10 != 0
    )
}

/// Random traffic: raw words, and well-formed blocks to the AVD and to others, mangled
/// now and then, with random gaps, idles, bus resets and (non-approving) results.
/// Whatever comes: no panic, no answer unless the last address byte was the AVD's, no
/// approval, and the receiver's buffer bounded (a block never exceeds 36 bytes).
#[test]
fn random_traffic_never_answers_others_and_never_approves() {
    let mut rng = Rng::new(30);
    let blocks: Vec<Vec<u8>> = vec![
        Command::Reset.emit().unwrap().to_vec(),
        Command::Poll.emit().unwrap().to_vec(),
        Command::Dravp { age: 18 }.emit().unwrap().to_vec(),
        Command::Dravp { age: 0 }.emit().unwrap().to_vec(),
        Command::Dravs { y4: 0 }.emit().unwrap().to_vec(),
        Command::RequestId { vmc_id: None }.emit().unwrap().to_vec(),
        with_chk(&[0x69, 0x00, 0x01]),
        with_chk(&[0x12]),
        with_chk(&[0x17, 0xFF, 0x06, 0x06, 0x00, b'D', b'R', b'A', b'V', b'S']),
    ];
    for round in 0..1000 {
        let mut avd = Peripheral::new(AvdSettings::default());
        let mut now = 0u64;
        let mut last_address: Option<u8> = None;
        for _ in 0..400 {
            now += match rng.below(4) {
                0 => timing::GAP_US + rng.below(10_000) as u64,
                _ => rng.below(2 * timing::WORD_US as usize) as u64,
            };
            let outcome = match rng.below(20) {
                0 => avd.on_idle(Micros(now)),
                1 if rng.below(10) == 0 => {
                    last_address = None;
                    avd.on_bus_reset()
                }
                2 => {
                    let result = if rng.below(2) == 0 {
                        VerificationResult::NotApproved
                    } else {
                        VerificationResult::CouldNotVerify
                    };
                    avd.verification_result(result);
                    Outcome::default()
                }
                3..=8 => {
                    let mut block = blocks[rng.below(blocks.len())].clone();
                    if rng.below(4) == 0 {
                        let at = rng.below(block.len());
                        block[at] ^= 1 << rng.below(8);
                    }
                    let mut merged = Outcome::default();
                    for (i, b) in block.iter().enumerate() {
                        let word = Word {
                            data: *b,
                            mode: i == 0,
                        };
                        if word.mode {
                            last_address = Some(word.data);
                        }
                        now += timing::WORD_US;
                        let o = avd.on_word(word, Micros(now));
                        if o.transmit.is_some() {
                            merged = o;
                            check(&merged, last_address, round);
                        }
                    }
                    merged
                }
                _ => {
                    let word = Word {
                        data: rng.next_u64() as u8,
                        mode: rng.below(3) == 0,
                    };
                    if word.mode {
                        last_address = Some(word.data);
                    }
                    avd.on_word(word, Micros(now))
                }
            };
            check(&outcome, last_address, round);
        }
    }

    fn check(outcome: &Outcome, last_address: Option<u8>, round: usize) {
        if let Some(t) = &outcome.transmit {
            assert!(
                matches!(last_address, Some(a) if a & 0xF8 == 0x68),
                "round {round}: answered after address {last_address:02X?}"
            );
            assert!(!t.words.is_empty() && t.words.len() <= MAX_BLOCK);
            assert!(
                !approves(&t.words),
                "round {round}: approval without a result"
            );
        }
    }
}

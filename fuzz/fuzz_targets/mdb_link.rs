//! Fuzzes the MDB receiver and the Age Verification Device: `Command::parse` and
//! `Response::parse` on raw bytes, and arbitrary bus words at arbitrary times, quiet-line
//! calls, bus resets and verification results.
//!
//! Run: `cargo fuzz run mdb_link` from the crate root (`scripts/fuzz` runs every target).
//! Input: a sequence of operations, each an op byte and an argument byte (see `step`).
//! What must hold for every input: nothing panics; whatever parses re-emits to the very
//! bytes it came from (the encoding is canonical); the AVD transmits only while the last
//! address byte on the bus was its own (68h..6Fh); every transmission is 1..=36 words with
//! the mode bit on the last only; and no approval (a DRAVS answer with bit 4 of its first
//! feature byte) goes out unless an `Approved` result was handed in and accepted.

#![no_main]

use agegate::mdb::{
    AvdSettings, Block, Command, Micros, Peripheral, Response, Transmit, VerificationResult, Word,
    MAX_BLOCK,
};
use libfuzzer_sys::fuzz_target;

/// A DRAVS answer that approves: `FF 06 07 Z4 Z5 "DRAVS" CHK` with Z4 bit 4 set.
fn approves(t: &Transmit) -> bool {
    let data: Vec<u8> = t.words.iter().map(|w| w.data).collect();
    data.len() == 11 && data[..3] == [0xFF, 0x06, 0x07] && data[3] & 0x10 != 0
}

fuzz_target!(|data: &[u8]| {
    if let Ok(command) = Command::parse(&Block::new_unchecked(data)) {
        let bytes = command.emit().expect("a parsed command must emit");
        assert_eq!(&bytes[..], data, "non-canonical encoding of {command:?}");
    }
    if let Ok(response) = Response::parse(&Block::new_unchecked(data)) {
        let bytes = response.emit().expect("a parsed response must emit");
        assert_eq!(&bytes[..], data, "non-canonical encoding of {response:?}");
    }

    let mut avd = Peripheral::new(AvdSettings::default());
    let mut now = 0u64;
    let mut last_address: Option<u8> = None;
    let mut approved_given = false;
    for op in data.chunks_exact(2) {
        let (kind, arg) = (op[0], op[1]);
        let outcome = match kind % 16 {
            0 => {
                now += u64::from(arg) * 50;
                avd.on_idle(Micros(now))
            }
            1 => {
                last_address = None;
                avd.on_bus_reset()
            }
            2 => {
                let result = match arg % 3 {
                    0 => VerificationResult::Approved,
                    1 => VerificationResult::NotApproved,
                    _ => VerificationResult::CouldNotVerify,
                };
                let accepted = avd.verification_result(result);
                approved_given |= accepted && result == VerificationResult::Approved;
                continue;
            }
            _ => {
                // The op byte's upper bits: the time since the last word, 0..=4.5 ms.
                now += u64::from(kind >> 4) * 300;
                let word = Word {
                    data: arg,
                    mode: kind & 0x08 != 0,
                };
                if word.mode {
                    last_address = Some(word.data);
                }
                avd.on_word(word, Micros(now))
            }
        };
        if let Some(t) = &outcome.transmit {
            assert!(
                matches!(last_address, Some(a) if a & 0xF8 == 0x68),
                "answered after address {last_address:02X?}"
            );
            assert!(!t.words.is_empty() && t.words.len() <= MAX_BLOCK);
            let last = t.words.len() - 1;
            assert!(t
                .words
                .iter()
                .enumerate()
                .all(|(i, w)| w.mode == (i == last)));
            assert!(approved_given || !approves(t), "approval without a result");
        }
    }
});

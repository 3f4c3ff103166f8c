//! Fuzzes the board-file reader: any text as a board file, through both stages (the raw
//! TOML, then every section's validation).
//!
//! Run: `cargo fuzz run board_file` from the crate root, seeded with `boards/*.toml`
//! (`scripts/fuzz` does both). What must hold for every input: nothing panics; a refused
//! board names the file; an accepted one holds only values its validation allows.

#![no_main]

use std::path::Path;

use agegate::config::Board;
use agegate::decide::Rule;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Relative paths resolve against the repository's boards/ folder, so the shipped
    // models are found and the fuzzer gets past the models section.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/fuzz.toml");
    match Board::parse(text, &path) {
        Err(e) => assert!(e.to_string().contains("fuzz.toml"), "{e}"),
        Ok(board) => {
            let p = board.policy;
            assert!((10.0..=30.0).contains(&p.legal_age()));
            assert!(
                p.challenge_age() >= p.legal_age() && p.challenge_age() <= p.legal_age() + 15.0
            );
            // Every rule a board can carry is within the ranges it was validated against.
            match p.rule() {
                Rule::Margin { k_sigma } => assert!((0.0..=5.0).contains(&k_sigma)),
                Rule::Threshold {
                    allow_at,
                    deny_below,
                } => {
                    assert!(allow_at >= p.legal_age() && allow_at <= p.legal_age() + 25.0);
                    assert!((0.0..=p.legal_age()).contains(&deny_below));
                }
                Rule::POver {
                    allow_p, deny_p, ..
                } => {
                    assert!(allow_p > 0.5 && allow_p < 1.0 && (0.0..0.5).contains(&deny_p));
                }
            }
            assert!((1..=64).contains(&board.runtime.threads));
            assert!(board.daemon.max_bad_frames >= 1 && board.daemon.max_model_errors >= 1);
        }
    }
});

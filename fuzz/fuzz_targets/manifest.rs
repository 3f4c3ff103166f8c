//! Fuzzes the labelled-photo manifest reader (`agegate eval`, `agegate crops`): any bytes
//! as a manifest's text.
//!
//! Run: `cargo fuzz run manifest` from the crate root (`scripts/fuzz` runs every target
//! for a bounded time). What must hold for every input: nothing panics; an accepted
//! manifest has at least one row, every row a non-empty path and an age from 0 to 130, and a
//! relative path resolves under the root (an absolute one is taken as written).

#![no_main]

use std::path::Path;

use agegate::tools::manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = manifest::parse(data, Path::new("fuzz.csv"), Path::new("/data")) {
        assert!(!entries.is_empty());
        for e in &entries {
            assert!(!e.rel_path.is_empty());
            assert!(e.age.is_finite() && (0.0..=130.0).contains(&e.age), "{e:?}");
            if Path::new(&e.rel_path).is_absolute() {
                assert_eq!(e.path, Path::new(&e.rel_path));
            } else {
                assert!(e.path.starts_with("/data"), "{e:?}");
            }
        }
    }
});

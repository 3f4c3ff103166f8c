//! The corrupt-input suite: damaged JPEGs of every kind a camera, a disk or an attacker
//! produces, through the decoder the daemon and the photo commands share. Nothing may
//! panic, nothing damaged may decode, and no image larger than the bound is allocated.

mod common;

use agegate::jpeg::{decode_into, JpegError, DEFAULT_MAX_PIXELS};
use common::{photo, shared_data, skip};
use image::RgbImage;

/// The bundled JPEG photos.
fn photos() -> Vec<(&'static str, Vec<u8>)> {
    [
        "astronaut.jpg",
        "astronaut_grey.jpg",
        "grace_hopper.jpg",
        "grace_hopper_tight_crop.jpg",
        "rocket_no_face.jpg",
    ]
    .into_iter()
    .map(|name| (name, std::fs::read(photo(name)).expect("bundled photo")))
    .collect()
}

/// xorshift64*: seeded, so every run tries the same variants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn decode(bytes: &[u8], max_pixels: u64) -> (Result<(), JpegError>, RgbImage) {
    let mut frame = RgbImage::new(1, 1);
    let result = decode_into(bytes, &mut Vec::new(), &mut frame, max_pixels).map(|_| ());
    (result, frame)
}

#[test]
fn bundled_photos_decode_as_the_lenient_decoder_sees_them() {
    for (name, bytes) in photos() {
        let (result, frame) = decode(&bytes, DEFAULT_MAX_PIXELS);
        result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let lenient = image::load_from_memory(&bytes)
            .expect("lenient")
            .into_rgb8();
        assert_eq!(frame.dimensions(), lenient.dimensions(), "{name}");
    }
}

#[test]
fn a_thousand_bit_flips_of_each_photo_never_panic_nor_outgrow_the_bound() {
    // Under an emulator a tenth of the variants: the same code, ten times slower.
    let emulated = std::env::var("AGEGATE_TEST_RUNNER").is_ok_and(|r| !r.trim().is_empty());
    let variants = if emulated { 100 } else { 1000 };
    // A small bound, so a flip that inflates the header's size is refused, not decoded.
    let max_pixels = 1 << 20;
    let mut refused = 0;
    for (i, (name, bytes)) in photos().into_iter().enumerate() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
        for v in 0..variants {
            let mut bad = bytes.clone();
            // One to four flipped bits anywhere in the file.
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bad.len());
                bad[at] ^= 1 << rng.below(8);
            }
            let (result, frame) = decode(&bad, max_pixels);
            assert!(
                u64::from(frame.width()) * u64::from(frame.height()) <= max_pixels,
                "{name} variant {v}: a {}x{} frame",
                frame.width(),
                frame.height()
            );
            match result {
                Err(_) => refused += 1,
                // A flip the format cannot see (a coefficient's value, a comment, a code
                // the Huffman stream resynchronises after): whatever the lenient decoder
                // refuses, the strict one refused too, and the size is the declared one.
                Ok(()) => {
                    let lenient = image::load_from_memory(&bad).unwrap_or_else(|e| {
                        panic!("{name} variant {v}: accepted what the lenient decoder refuses: {e}")
                    });
                    assert_eq!(frame.dimensions(), (lenient.width(), lenient.height()));
                }
            }
        }
    }
    // Many flips desynchronise the entropy-coded data; Huffman codes resynchronise after
    // others, which no decoder can tell from a sound image. (Measured: 2,363 of 5,000.)
    assert!(refused > variants, "only {refused} refused");
    eprintln!("{refused} of {} variants refused", 5 * variants);
}

#[test]
fn truncated_with_an_end_marker_and_missing_scans_are_refused() {
    for (name, bytes) in photos() {
        let sos = bytes
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .expect("a scan");
        for cut in (sos + 20..bytes.len() - 2).step_by((bytes.len() - sos) / 40) {
            let mut cut_bytes = bytes[..cut].to_vec();
            cut_bytes.extend_from_slice(&[0xFF, 0xD9]);
            let (result, _) = decode(&cut_bytes, DEFAULT_MAX_PIXELS);
            assert!(result.is_err(), "{name} cut at {cut}: decoded");
        }
        // Headers only, the scan gone.
        let mut no_scan = bytes[..sos].to_vec();
        no_scan.extend_from_slice(&[0xFF, 0xD9]);
        assert!(decode(&no_scan, DEFAULT_MAX_PIXELS).0.is_err(), "{name}");
    }
}

#[test]
fn every_utkface_val_photo_decodes_strictly() {
    // The strict decoder must not refuse a sound photo: the whole val split.
    let Some(data) = shared_data() else {
        return skip(
            "every_utkface_val_photo_decodes_strictly",
            "../shared/data is absent",
        );
    };
    let manifest =
        agegate::tools::manifest::read(&data.join("utkface/val.csv"), None).expect("val");
    let mut refused = Vec::new();
    for entry in &manifest {
        let bytes = std::fs::read(&entry.path).expect("photo");
        if let (Err(e), _) = decode(&bytes, DEFAULT_MAX_PIXELS) {
            refused.push(format!("{}: {e}", entry.rel_path));
        }
    }
    assert!(
        refused.is_empty(),
        "{} refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
}

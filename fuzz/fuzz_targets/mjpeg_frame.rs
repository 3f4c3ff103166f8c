//! Fuzzes what a camera (or a recording) hands the daemon: MJPEG frame splitting and the
//! strict JPEG decoder (with or without Huffman tables), and raw YUYV conversion.
//!
//! Run: `cargo fuzz run mjpeg_frame` from the crate root (`scripts/fuzz` runs every
//! target for a bounded time). What must hold for every input: nothing panics; a frame
//! length, when found, lies within the input; a decoded frame has a size matching its
//! buffer and never more pixels than the bound.

#![no_main]

use agegate::capture::yuv;
use agegate::jpeg;
use image::RgbImage;
use libfuzzer_sys::fuzz_target;

/// A small bound, so the fuzzer spends its time in the parsers, not in big allocations.
const MAX_PIXELS: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(len) = jpeg::frame_len(data) {
        assert!(len <= data.len());
    }
    let mut scratch = Vec::new();
    let mut frame = RgbImage::new(1, 1);
    if jpeg::decode_into(data, &mut scratch, &mut frame, MAX_PIXELS).is_ok() {
        let (w, h) = frame.dimensions();
        assert_eq!(frame.as_raw().len(), (w * h * 3) as usize);
        assert!(u64::from(w) * u64::from(h) <= MAX_PIXELS);
    }
    let width = u32::from(data.first().copied().unwrap_or(2) & 0x3E).max(2);
    let height = (data.len() as u32 / (width * 2)).max(1);
    let _ = yuv::yuyv_into(data, width, height, &mut frame);
});

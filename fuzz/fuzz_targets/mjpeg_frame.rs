//! Fuzzes what a camera (or a recording) hands the daemon: MJPEG frame splitting and
//! decoding, with or without Huffman tables, and raw YUYV conversion.
//!
//! Run: `cargo fuzz run mjpeg_frame` (nightly, cargo-fuzz), from the crate root.
//! What must hold for every input: nothing panics; a frame length, when found, lies within
//! the input; a decoded frame has a size matching its buffer.

#![no_main]

use agegate::capture::yuv;
use agegate::jpeg as mjpeg;
use image::RgbImage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(len) = mjpeg::frame_len(data) {
        assert!(len <= data.len());
    }
    let mut scratch = Vec::new();
    let mut frame = RgbImage::new(1, 1);
    // A frame may decode to any size: cap the work a hostile header can ask for.
    if data.len() < 1 << 16 && mjpeg::decode_into(data, &mut scratch, &mut frame, mjpeg::DEFAULT_MAX_PIXELS).is_ok() {
        let (w, h) = frame.dimensions();
        assert_eq!(frame.as_raw().len(), (w * h * 3) as usize);
    }
    let width = u32::from(data.first().copied().unwrap_or(2) & 0x3E).max(2);
    let height = (data.len() as u32 / (width * 2)).max(1);
    let _ = yuv::yuyv_into(data, width, height, &mut frame);
});

//! Fuzzes the serial host protocol: `Message::parse` on raw bytes and the streaming
//! `Decoder` on arbitrary input split into arbitrary chunks.
//!
//! Run: `cargo fuzz run serial_decoder` (nightly, cargo-fuzz), from the crate root.
//! What must hold for every input: nothing panics; whatever parses re-emits to the very
//! bytes it came from (the encoding is canonical); every message the decoder yields
//! survives a round trip; the decoder never holds a whole frame's worth of bytes, and
//! counts exactly the messages it hands out.

#![no_main]

use agegate::serial::{Decoder, Frame, Message, MAX_FRAME};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::parse(&Frame::new_unchecked(data)) {
        let bytes = message.to_bytes().expect("a parsed message must emit");
        assert_eq!(
            &bytes[..],
            &data[..bytes.len()],
            "non-canonical encoding of {message:?}"
        );
    }

    // The first byte picks the chunk size, so the fuzzer explores split points too.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split % 40) + 1;
    let mut decoder = Decoder::new();
    let mut yielded = 0u32;
    let mut check = |message: Message| {
        yielded += 1;
        let bytes = message.to_bytes().expect("a decoded message must emit");
        let again = Message::parse(&Frame::new_unchecked(&bytes[..])).expect("and parse back");
        assert_eq!(again, message);
    };
    for piece in stream.chunks(chunk) {
        decoder.feed(piece, &mut check);
        assert!(decoder.pending() < MAX_FRAME);
    }
    decoder.line_idle(&mut check);
    assert_eq!(decoder.pending(), 0);
    assert_eq!(decoder.stats().messages, yielded);
});

//! MJPEG: splitting a stream of concatenated JPEG frames, and decoding frames that lack
//! Huffman tables.
//!
//! Many UVC webcams save bandwidth by sending MJPEG frames without a DHT segment: the
//! JPEG standard's example tables (ITU T.81 Annex K.3) are implied, as AVI1 MJPEG
//! specifies. A general JPEG decoder refuses such a frame, so [`decode_into`] inserts the
//! standard tables before the start of scan when a frame has none.
//!
//! No function here panics on any input: every index is checked.

use image::codecs::jpeg::JpegDecoder;
use image::{ColorType, ImageDecoder, RgbImage};

/// One DHT segment with the four Annex K.3 tables (luminance DC, luminance AC,
/// chrominance DC, chrominance AC), 420 bytes: the tables libjpeg writes by default.
pub const STANDARD_DHT: [u8; 420] = [
    0xFF, 0xC4, 0x01, 0xA2, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A,
    0x0B, 0x10, 0x00, 0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00,
    0x01, 0x7D, 0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51,
    0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52,
    0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26,
    0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47,
    0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67,
    0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5,
    0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3,
    0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA,
    0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6,
    0xF7, 0xF8, 0xF9, 0xFA, 0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A,
    0x0B, 0x11, 0x00, 0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01,
    0x02, 0x77, 0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07,
    0x61, 0x71, 0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33,
    0x52, 0xF0, 0x15, 0x62, 0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19,
    0x1A, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46,
    0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66,
    0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85,
    0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3,
    0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA,
    0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8,
    0xD9, 0xDA, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6,
    0xF7, 0xF8, 0xF9, 0xFA,
];

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;

/// Why a frame could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("not a JPEG frame (no start-of-image marker)")]
    NoStart,
    #[error("JPEG frame cut short (no end-of-image marker)")]
    Truncated,
    #[error("JPEG frame: malformed marker segment at byte {0}")]
    BadSegment(usize),
    #[error("JPEG frame: {0}")]
    Decode(String),
    #[error("JPEG frame: unsupported colour type {0}")]
    ColourType(String),
    #[error("JPEG frame: {0}x{1} is larger than any camera frame agegate takes (8K)")]
    TooLarge(u32, u32),
}

/// Largest frame decoded (7680 x 4320): a corrupt or hostile header cannot make the
/// daemon allocate gigabytes.
const MAX_PIXELS: u64 = 7680 * 4320;

/// Where the header segments end: the offset of the start-of-scan marker, and whether a
/// DHT segment came before it. `jpeg` must begin with SOI.
fn scan_header(jpeg: &[u8]) -> Result<(usize, bool), JpegError> {
    let mut i = 2;
    let mut has_dht = false;
    loop {
        let (Some(&ff), Some(&marker)) = (jpeg.get(i), jpeg.get(i + 1)) else {
            return Err(JpegError::Truncated);
        };
        if ff != 0xFF {
            return Err(JpegError::BadSegment(i));
        }
        match marker {
            // fill bytes before a marker
            0xFF => i += 1,
            SOS => return Ok((i, has_dht)),
            EOI => return Err(JpegError::Truncated),
            // markers without a length
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let (Some(&hi), Some(&lo)) = (jpeg.get(i + 2), jpeg.get(i + 3)) else {
                    return Err(JpegError::Truncated);
                };
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                if len < 2 {
                    return Err(JpegError::BadSegment(i));
                }
                has_dht |= marker == DHT;
                i += 2 + len;
            }
        }
    }
}

/// The length of the first JPEG frame in `stream`, which must begin with SOI: header
/// segments are skipped by their lengths (so a thumbnail inside an EXIF segment does not
/// end the frame early), then the entropy-coded data is scanned for EOI.
pub fn frame_len(stream: &[u8]) -> Result<usize, JpegError> {
    if stream.get(..2) != Some(&[0xFF, SOI][..]) {
        return Err(JpegError::NoStart);
    }
    let (sos, _) = scan_header(stream)?;
    let mut i = sos + 2;
    // Inside entropy-coded data a 0xFF data byte is followed by 0x00 (stuffing) and the
    // only markers are RSTn and, for progressive frames, further segments; EOI ends it.
    while let Some(pos) = stream
        .get(i..)
        .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
    {
        let at = i + pos;
        match stream.get(at + 1) {
            Some(&EOI) => return Ok(at + 2),
            Some(_) => i = at + 1,
            None => break,
        }
    }
    Err(JpegError::Truncated)
}

/// Offset of the next SOI marker at or after `from` (to resynchronise after garbage).
pub fn find_start(stream: &[u8], from: usize) -> Option<usize> {
    let rest = stream.get(from..)?;
    rest.windows(2)
        .position(|w| w == [0xFF, SOI])
        .map(|p| from + p)
}

/// Decodes one JPEG frame into `frame` (resized only when the frame size changes),
/// inserting the standard Huffman tables when the frame has none. `scratch` is reused
/// for the patched copy. Greyscale frames are expanded to RGB.
pub fn decode_into(
    jpeg: &[u8],
    scratch: &mut Vec<u8>,
    frame: &mut RgbImage,
) -> Result<(), JpegError> {
    let len = frame_len(jpeg)?;
    let jpeg = jpeg.get(..len).ok_or(JpegError::Truncated)?;
    let (sos, has_dht) = scan_header(jpeg)?;
    let bytes: &[u8] = if has_dht {
        jpeg
    } else {
        scratch.clear();
        scratch.extend_from_slice(jpeg.get(..sos).ok_or(JpegError::Truncated)?);
        scratch.extend_from_slice(&STANDARD_DHT);
        scratch.extend_from_slice(jpeg.get(sos..).ok_or(JpegError::Truncated)?);
        scratch
    };
    let decoder = JpegDecoder::new(std::io::Cursor::new(bytes))
        .map_err(|e| JpegError::Decode(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(JpegError::TooLarge(width, height));
    }
    if frame.dimensions() != (width, height) {
        *frame = RgbImage::new(width, height);
    }
    match decoder.color_type() {
        ColorType::Rgb8 => decoder
            .read_image(frame.as_mut())
            .map_err(|e| JpegError::Decode(e.to_string())),
        ColorType::L8 => {
            let pixels = (width as usize) * (height as usize);
            // Decode the grey plane into the tail third of the RGB buffer, then expand
            // in place front to back: pixel i is read at 2n+i before it is overwritten.
            let buf: &mut [u8] = frame.as_mut();
            let grey_at = buf.len() - pixels;
            decoder
                .read_image(&mut buf[grey_at..])
                .map_err(|e| JpegError::Decode(e.to_string()))?;
            for i in 0..pixels {
                let v = buf[grey_at + i];
                buf[3 * i..3 * i + 3].fill(v);
            }
            Ok(())
        }
        other => Err(JpegError::ColourType(format!("{other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &RgbImage) -> Vec<u8> {
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(img)
            .expect("encode");
        out
    }

    fn test_image() -> RgbImage {
        RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 10) as u8, 90])
        })
    }

    /// The same frame with every DHT segment removed, as webcams send it.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        loop {
            let marker = jpeg[i + 1];
            if marker == SOS {
                out.extend_from_slice(&jpeg[i..]);
                return out;
            }
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            if marker != DHT {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
    }

    #[test]
    fn frame_without_huffman_tables_decodes_like_the_original() {
        // image's encoder writes the standard tables, so removing them and letting
        // decode_into put STANDARD_DHT back must give the very same pixels.
        let jpeg = encode(&test_image());
        let stripped = strip_dht(&jpeg);
        assert!(
            stripped.len() < jpeg.len(),
            "the encoder wrote DHT segments"
        );
        assert!(image::load_from_memory(&stripped).is_err());
        let (mut a, mut b) = (RgbImage::new(1, 1), RgbImage::new(1, 1));
        let mut scratch = Vec::new();
        decode_into(&jpeg, &mut scratch, &mut a).expect("original");
        decode_into(&stripped, &mut scratch, &mut b).expect("stripped");
        assert_eq!(a.dimensions(), (40, 24));
        assert_eq!(a, b);
    }

    #[test]
    fn frames_split_at_their_end_markers() {
        let one = encode(&test_image());
        let two = strip_dht(&encode(&RgbImage::new(8, 8)));
        let mut stream = one.clone();
        stream.extend_from_slice(&two);
        assert_eq!(frame_len(&stream), Ok(one.len()));
        assert_eq!(frame_len(&stream[one.len()..]), Ok(two.len()));
    }

    #[test]
    fn cut_and_garbage_frames_are_errors_not_panics() {
        let jpeg = encode(&test_image());
        let mut scratch = Vec::new();
        let mut frame = RgbImage::new(1, 1);
        for cut in [0, 1, 2, 3, 10, jpeg.len() / 2, jpeg.len() - 1] {
            assert!(
                decode_into(&jpeg[..cut], &mut scratch, &mut frame).is_err(),
                "cut {cut}"
            );
        }
        assert_eq!(frame_len(b"hello"), Err(JpegError::NoStart));
        assert_eq!(find_start(b"xx\xff\xd8yy", 0), Some(2));
        // Every prefix and a sweep of single-byte corruptions: no panic.
        for i in 0..jpeg.len() {
            let mut bad = jpeg.clone();
            bad[i] ^= 0x5A;
            let _ = decode_into(&bad, &mut scratch, &mut frame);
        }
    }

    #[test]
    fn a_header_claiming_a_huge_frame_is_refused_before_allocating() {
        let mut jpeg = encode(&test_image());
        // SOF0: FF C0, length (2), precision (1), height (2), width (2)
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline SOF0");
        // 8000 x 8000: within what the JPEG decoder itself accepts, beyond 8K video
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0x1F, 0x40, 0x1F, 0x40]);
        let mut frame = RgbImage::new(1, 1);
        let err = decode_into(&jpeg, &mut Vec::new(), &mut frame);
        assert_eq!(err, Err(JpegError::TooLarge(8000, 8000)));
        assert_eq!(frame.dimensions(), (1, 1));
    }

    #[test]
    fn greyscale_frames_expand_to_rgb() {
        let grey = image::GrayImage::from_fn(16, 8, |x, _| image::Luma([(x * 16) as u8]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&grey)
            .expect("encode");
        let mut frame = RgbImage::new(1, 1);
        decode_into(&jpeg, &mut Vec::new(), &mut frame).expect("decode");
        let px = frame.get_pixel(8, 4);
        assert_eq!(px[0], px[1]);
        assert_eq!(px[1], px[2]);
        assert!((i32::from(px[0]) - 128).abs() < 8, "{px:?}");
    }
}

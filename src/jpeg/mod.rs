//! JPEG: the one decoder for camera frames, recordings and photos, and the splitting of a
//! stream of concatenated frames (MJPEG).
//!
//! **Strict decoding.** A general-purpose JPEG decoder fills a cut-off or damaged scan with
//! grey and carries on, which is right for a browser and wrong for a gate: the first half
//! of a face with grey below it must never reach the age model. [`decode_into`] first walks
//! the whole file (`walk`: every segment, and every scan's entropy-coded data symbol by
//! symbol), so entropy data that runs out before the last block, a bad or missing restart
//! marker, data left over after a scan, a missing scan or a code no table defines is an
//! error and the frame does not count; then it decodes with zune-jpeg in strict mode,
//! which refuses what it notices itself. (zune-jpeg alone, even strict, fills a scan cut
//! short by an end marker with zeros and reports nothing.)
//!
//! **Bounded memory.** Before anything is allocated, the declared size is checked against
//! the caller's `max_pixels` (the board's `[capture] max_pixels`) and against the data
//! that came with it: every 8x8 block of a baseline or progressive JPEG costs at least
//! one bit of entropy-coded data, so a header that claims far more pixels than its bytes
//! can hold (88 KB claiming 16000 x 16000) is refused without decoding.
//!
//! **Frames without Huffman tables.** Many UVC webcams save bandwidth by sending MJPEG
//! frames without a DHT segment: the JPEG standard's example tables (ITU T.81 Annex K.3)
//! are implied, as AVI1 MJPEG specifies. [`decode_into`] inserts the standard tables before
//! the start of scan when a frame has none.
//!
//! No function here panics on any input: every index is checked.

mod walk;

use image::metadata::Orientation;
use image::RgbImage;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

/// One DHT segment with the four Annex K.3 tables (luminance DC, luminance AC,
/// chrominance DC, chrominance AC), 420 bytes: the tables libjpeg writes by default.
pub(crate) const STANDARD_DHT: [u8; 420] = [
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

/// Why a JPEG could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("not a JPEG (no start-of-image marker)")]
    NoStart,
    #[error("JPEG cut short (no end-of-image marker after the image data)")]
    Truncated,
    #[error("JPEG: malformed marker segment at byte {0}")]
    BadSegment(usize),
    #[error("JPEG damaged: {0}")]
    Decode(String),
    #[error("JPEG: unsupported colour type {0}")]
    ColourType(String),
    #[error("JPEG: {width}x{height} is more than the {max_pixels} pixels allowed ([capture] max_pixels)")]
    TooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error("JPEG: the header claims {width}x{height} but only {data_bytes} bytes of image data follow, too few for that size")]
    TooLittleData {
        width: u32,
        height: u32,
        data_bytes: usize,
    },
}

/// The default bound on decoded pixels (7680 x 4320, 8K video; about 100 MB as RGB), for
/// boards and commands that do not set `[capture] max_pixels`.
pub const DEFAULT_MAX_PIXELS: u64 = 7680 * 4320;

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

/// The length of the first JPEG frame in `stream`, which must begin with SOI: marker
/// segments are skipped by their lengths (so a thumbnail inside an EXIF segment, or a
/// table between progressive scans, does not end the frame early) and entropy-coded data
/// is scanned for the next marker that is not a restart marker, until EOI.
pub fn frame_len(stream: &[u8]) -> Result<usize, JpegError> {
    if stream.get(..2) != Some(&[0xFF, SOI][..]) {
        return Err(JpegError::NoStart);
    }
    let (mut i, _) = scan_header(stream)?;
    loop {
        // `i` is at a marker: EOI ends the frame, SOS starts entropy data, the rest are
        // segments with a length.
        match stream.get(i + 1) {
            None => return Err(JpegError::Truncated),
            Some(&EOI) => return Ok(i + 2),
            Some(&0xFF) => {
                i += 1;
                continue;
            }
            Some(&SOS) | Some(_) => {}
        }
        let marker = stream[i + 1];
        let (Some(&hi), Some(&lo)) = (stream.get(i + 2), stream.get(i + 3)) else {
            return Err(JpegError::Truncated);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < 2 {
            return Err(JpegError::BadSegment(i));
        }
        i += 2 + len;
        if marker != SOS {
            if stream.get(i) != Some(&0xFF) {
                return Err(JpegError::BadSegment(i));
            }
            continue;
        }
        // Entropy-coded data: FF 00 is a stuffed byte, FF D0..D7 a restart marker, fill
        // bytes FF FF may precede a marker.
        loop {
            let pos = stream
                .get(i..)
                .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
                .ok_or(JpegError::Truncated)?;
            let at = i + pos;
            let mut m = at + 1;
            while stream.get(m) == Some(&0xFF) {
                m += 1;
            }
            match stream.get(m) {
                None => return Err(JpegError::Truncated),
                Some(0x00) | Some(0xD0..=0xD7) => i = m + 1,
                Some(_) => {
                    i = m - 1;
                    break;
                }
            }
        }
    }
}

/// Offset of the next SOI marker at or after `from` (to resynchronise after garbage).
pub fn find_start(stream: &[u8], from: usize) -> Option<usize> {
    let rest = stream.get(from..)?;
    rest.windows(2)
        .position(|w| w == [0xFF, SOI])
        .map(|p| from + p)
}

/// The frame size the header (SOF, before the first scan at `sos`) declares, held to
/// `max_pixels` and to what the data after it can hold: every 8x8 block of the frame
/// costs at least one bit of entropy-coded data (a DC difference code, in baseline and
/// progressive alike).
fn check_size(jpeg: &[u8], sos: usize, max_pixels: u64) -> Result<(), JpegError> {
    let mut i = 2;
    let (width, height) = loop {
        if i + 9 > sos {
            return Err(JpegError::Decode(
                "no frame header (SOF) before the scan".into(),
            ));
        }
        let marker = jpeg[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, DHT | 0xC8 | 0xCC) {
            let height = u16::from_be_bytes([jpeg[i + 5], jpeg[i + 6]]);
            let width = u16::from_be_bytes([jpeg[i + 7], jpeg[i + 8]]);
            break (u32::from(width), u32::from(height));
        }
        i += 2 + len;
    };
    if width == 0 || height == 0 || u64::from(width) * u64::from(height) > max_pixels {
        return Err(JpegError::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    let blocks = u64::from(width.div_ceil(8)) * u64::from(height.div_ceil(8));
    let data_bytes = jpeg.len().saturating_sub(sos);
    if (data_bytes as u64).saturating_mul(8) < blocks {
        return Err(JpegError::TooLittleData {
            width,
            height,
            data_bytes,
        });
    }
    Ok(())
}

/// Decodes one JPEG into `frame` (reallocated only when the size changes), strictly (see
/// the module docs): damage the decoder notices, a declared size above `max_pixels`, or a
/// declared size the data cannot hold, is an error and leaves `frame` unspecified but
/// allocated no larger than `max_pixels`. The standard Huffman tables are inserted when
/// the frame has none; `scratch` is reused for that patched copy. Greyscale is expanded to
/// RGB. Returns the EXIF orientation (photos apply it; camera frames have none).
pub fn decode_into(
    jpeg: &[u8],
    scratch: &mut Vec<u8>,
    frame: &mut RgbImage,
    max_pixels: u64,
) -> Result<Orientation, JpegError> {
    let len = frame_len(jpeg)?;
    let jpeg = jpeg.get(..len).ok_or(JpegError::Truncated)?;
    let (sos, has_dht) = scan_header(jpeg)?;
    // Size first, from the frame header alone: the walk keeps a bit set per block of a
    // progressive frame, so it must not run on a hostile size.
    check_size(jpeg, sos, max_pixels)?;
    let bytes: &[u8] = if has_dht {
        jpeg
    } else {
        scratch.clear();
        scratch.extend_from_slice(jpeg.get(..sos).ok_or(JpegError::Truncated)?);
        scratch.extend_from_slice(&STANDARD_DHT);
        scratch.extend_from_slice(jpeg.get(sos..).ok_or(JpegError::Truncated)?);
        scratch
    };
    if has_dht {
        walk::walk(jpeg)?;
    } else {
        walk::walk(bytes)?;
    }
    let damaged = |e: zune_jpeg::errors::DecodeErrors| JpegError::Decode(e.to_string());
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder.decode_headers().map_err(damaged)?;
    let (w, h) = decoder.dimensions().ok_or(JpegError::Truncated)?;
    let (width, height) = (
        u32::try_from(w).unwrap_or(u32::MAX),
        u32::try_from(h).unwrap_or(u32::MAX),
    );
    if u64::from(width) * u64::from(height) > max_pixels {
        // check_size read the same header; a decoder that disagrees is not trusted.
        return Err(JpegError::TooLarge {
            width,
            height,
            max_pixels,
        });
    }
    let grey = match decoder.input_colorspace() {
        Some(ColorSpace::Luma) => true,
        Some(ColorSpace::YCbCr | ColorSpace::RGB | ColorSpace::CMYK | ColorSpace::YCCK) => false,
        other => return Err(JpegError::ColourType(format!("{other:?}"))),
    };
    let out = if grey {
        ColorSpace::Luma
    } else {
        ColorSpace::RGB
    };
    decoder.set_options(options.jpeg_set_out_colorspace(out));
    let orientation = decoder
        .exif()
        .and_then(|exif| Orientation::from_exif_chunk(exif))
        .unwrap_or(Orientation::NoTransforms);
    if frame.dimensions() != (width, height) {
        *frame = RgbImage::new(width, height);
    }
    let buf: &mut [u8] = frame.as_mut();
    if grey {
        let pixels = buf.len() / 3;
        // Decode the grey plane into the tail third of the RGB buffer, then expand in
        // place front to back: pixel i is read at 2n+i before it is overwritten.
        let grey_at = buf.len() - pixels;
        decoder.decode_into(&mut buf[grey_at..]).map_err(damaged)?;
        for i in 0..pixels {
            let v = buf[grey_at + i];
            buf[3 * i..3 * i + 3].fill(v);
        }
    } else {
        decoder.decode_into(buf).map_err(damaged)?;
    }
    Ok(orientation)
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

    const MAX: u64 = DEFAULT_MAX_PIXELS;

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
        decode_into(&jpeg, &mut scratch, &mut a, MAX).expect("original");
        decode_into(&stripped, &mut scratch, &mut b, MAX).expect("stripped");
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
                decode_into(&jpeg[..cut], &mut scratch, &mut frame, MAX).is_err(),
                "cut {cut}"
            );
        }
        assert_eq!(frame_len(b"hello"), Err(JpegError::NoStart));
        assert_eq!(find_start(b"xx\xff\xd8yy", 0), Some(2));
        // Every prefix and a sweep of single-byte corruptions: no panic.
        for i in 0..jpeg.len() {
            let mut bad = jpeg.clone();
            bad[i] ^= 0x5A;
            let _ = decode_into(&bad, &mut scratch, &mut frame, MAX);
        }
    }

    /// The same JPEG with its baseline SOF0 header claiming `width` x `height`.
    fn claiming(jpeg: &[u8], width: u16, height: u16) -> Vec<u8> {
        let mut jpeg = jpeg.to_vec();
        // SOF0: FF C0, length (2), precision (1), height (2), width (2)
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline SOF0");
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn a_header_claiming_a_huge_frame_is_refused_before_allocating() {
        let jpeg = claiming(&encode(&test_image()), 8000, 8000);
        let mut frame = RgbImage::new(1, 1);
        let err = decode_into(&jpeg, &mut Vec::new(), &mut frame, DEFAULT_MAX_PIXELS);
        assert_eq!(
            err,
            Err(JpegError::TooLarge {
                width: 8000,
                height: 8000,
                max_pixels: DEFAULT_MAX_PIXELS
            })
        );
        assert_eq!(frame.dimensions(), (1, 1));
        // The board's bound, not a fixed one: 640 x 480 is refused under a smaller bound.
        let vga = encode(&RgbImage::new(640, 480));
        let small = decode_into(&vga, &mut Vec::new(), &mut frame, 320 * 240);
        assert!(
            matches!(small, Err(JpegError::TooLarge { .. })),
            "{small:?}"
        );
        assert_eq!(frame.dimensions(), (1, 1));
    }

    #[test]
    fn a_header_claiming_more_pixels_than_its_data_can_hold_is_refused() {
        // Within any pixel bound, but 40x24 pixels of data cannot fill 4000 x 4000 (a
        // quarter of a million blocks need at least 31 KB).
        let jpeg = claiming(&encode(&test_image()), 4000, 4000);
        let mut frame = RgbImage::new(1, 1);
        let err = decode_into(&jpeg, &mut Vec::new(), &mut frame, u64::MAX);
        assert!(
            matches!(
                err,
                Err(JpegError::TooLittleData {
                    width: 4000,
                    height: 4000,
                    ..
                })
            ),
            "{err:?}"
        );
        assert_eq!(frame.dimensions(), (1, 1));
        // A flat frame compresses to almost nothing and still passes.
        let flat = encode(&RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90])));
        decode_into(&flat, &mut Vec::new(), &mut frame, u64::MAX).expect("flat frame");
    }

    #[test]
    fn a_cut_frame_with_an_end_marker_appended_is_refused() {
        // What a lenient decoder shows half grey: the first half of the data, then EOI.
        let jpeg = encode(&RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        }));
        let mut frame = RgbImage::new(1, 1);
        let mut lenient_accepts = 0;
        for cut in [
            jpeg.len() / 2,
            jpeg.len() / 2 + 1,
            jpeg.len() * 3 / 4,
            jpeg.len() - 8,
        ] {
            let mut half = jpeg[..cut].to_vec();
            half.extend_from_slice(&[0xFF, EOI]);
            let err = decode_into(&half, &mut Vec::new(), &mut frame, MAX);
            assert!(err.is_err(), "cut {cut}: {err:?}");
            lenient_accepts += usize::from(image::load_from_memory(&half).is_ok());
        }
        // What a lenient decoder makes of them: pictures, grey below the cut.
        assert!(lenient_accepts > 0, "the reason for strict decoding");
    }

    #[test]
    fn greyscale_frames_expand_to_rgb() {
        let grey = image::GrayImage::from_fn(16, 8, |x, _| image::Luma([(x * 16) as u8]));
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 95)
            .encode_image(&grey)
            .expect("encode");
        let mut frame = RgbImage::new(1, 1);
        decode_into(&jpeg, &mut Vec::new(), &mut frame, MAX).expect("decode");
        let px = frame.get_pixel(8, 4);
        assert_eq!(px[0], px[1]);
        assert_eq!(px[1], px[2]);
        assert!((i32::from(px[0]) - 128).abs() < 8, "{px:?}");
    }

    /// The fixtures of `tests/fixtures/jpeg/` (progressive, restart markers, 4:2:2, grey).
    fn fixtures() -> Vec<(&'static str, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
        [
            "prog420", "prog444", "proggrey", "rst_base", "rst_prog", "base422",
        ]
        .into_iter()
        .map(|name| {
            let bytes = std::fs::read(dir.join(format!("{name}.jpg"))).expect("fixture");
            (name, bytes)
        })
        .collect()
    }

    /// Offsets of every marker `FF <marker>` outside entropy data, found by walking the
    /// segments (as frame_len does).
    fn markers(jpeg: &[u8], marker: u8) -> Vec<usize> {
        let end = frame_len(jpeg).expect("frame");
        (0..end - 1)
            .filter(|&i| jpeg[i] == 0xFF && jpeg[i + 1] == marker)
            .collect()
    }

    #[test]
    fn progressive_restart_and_subsampled_jpegs_decode() {
        for (name, jpeg) in fixtures() {
            let mut frame = RgbImage::new(1, 1);
            decode_into(&jpeg, &mut Vec::new(), &mut frame, MAX)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(frame.dimensions(), (96, 120), "{name}");
            // The same pixels as the lenient decoder: strictness refuses, never alters.
            let lenient = image::load_from_memory(&jpeg).expect("lenient").into_rgb8();
            assert_eq!(frame, lenient, "{name}");
        }
    }

    #[test]
    fn every_cut_with_an_end_marker_is_refused() {
        for (name, jpeg) in fixtures() {
            let first_scan = markers(&jpeg, SOS)[0];
            // Every cut inside the image data (a few bytes apart), EOI appended.
            for cut in (first_scan + 12..jpeg.len() - 2).step_by(7) {
                let mut cut_jpeg = jpeg[..cut].to_vec();
                cut_jpeg.extend_from_slice(&[0xFF, EOI]);
                let mut frame = RgbImage::new(1, 1);
                let result = decode_into(&cut_jpeg, &mut Vec::new(), &mut frame, MAX);
                assert!(
                    result.is_err(),
                    "{name} cut at {cut} of {} decoded",
                    jpeg.len()
                );
            }
        }
    }

    #[test]
    fn a_missing_scan_is_refused() {
        for (name, jpeg) in fixtures()
            .into_iter()
            .filter(|(n, _)| n.starts_with("prog"))
        {
            let scans = markers(&jpeg, SOS);
            assert!(scans.len() > 2, "{name}: progressive");
            // Drop each scan after the first (its header and data, up to the next marker
            // segment): the image is incomplete.
            for w in scans.windows(2).skip(1) {
                // Segments between scans (DHT) stay: cut from this SOS to the next marker
                // that starts a segment before the next SOS.
                let (from, next) = (w[0], w[1]);
                let to = (from + 2..next)
                    .find(|&i| jpeg[i] == 0xFF && !matches!(jpeg[i + 1], 0x00 | 0xD0..=0xD7 | 0xFF))
                    .unwrap_or(next);
                let missing = [&jpeg[..from], &jpeg[to..]].concat();
                let mut frame = RgbImage::new(1, 1);
                let result = decode_into(&missing, &mut Vec::new(), &mut frame, MAX);
                assert!(result.is_err(), "{name}: scan at {from} removed, decoded");
            }
        }
    }

    #[test]
    fn bad_restart_markers_are_refused() {
        for (name, jpeg) in fixtures().into_iter().filter(|(n, _)| n.starts_with("rst")) {
            let rst: Vec<usize> = (0..jpeg.len() - 1)
                .filter(|&i| jpeg[i] == 0xFF && (0xD0..=0xD7).contains(&jpeg[i + 1]))
                .collect();
            assert!(rst.len() > 4, "{name}: has restart markers");
            let mut frame = RgbImage::new(1, 1);
            // Misnumbered.
            let mut bad = jpeg.clone();
            bad[rst[2] + 1] = 0xD0 + (bad[rst[2] + 1] - 0xD0 + 3) % 8;
            let e = decode_into(&bad, &mut Vec::new(), &mut frame, MAX);
            assert!(matches!(e, Err(JpegError::Decode(_))), "{name}: {e:?}");
            // Missing.
            let dropped = [&jpeg[..rst[3]], &jpeg[rst[3] + 2..]].concat();
            let e = decode_into(&dropped, &mut Vec::new(), &mut frame, MAX);
            assert!(matches!(e, Err(JpegError::Decode(_))), "{name}: {e:?}");
        }
    }

    #[test]
    fn data_left_after_the_last_block_is_refused() {
        let jpeg = encode(&test_image());
        let eoi = jpeg.len() - 2;
        let padded = [&jpeg[..eoi], &[0x12, 0x34, 0x56][..], &jpeg[eoi..]].concat();
        let e = decode_into(&padded, &mut Vec::new(), &mut RgbImage::new(1, 1), MAX);
        assert!(
            matches!(&e, Err(JpegError::Decode(m)) if m.contains("after the scan")),
            "{e:?}"
        );
    }

    #[test]
    fn frame_len_skips_tables_between_progressive_scans() {
        for (name, jpeg) in fixtures() {
            let mut stream = jpeg.clone();
            stream.extend_from_slice(&jpeg);
            assert_eq!(frame_len(&stream), Ok(jpeg.len()), "{name}");
        }
    }
}

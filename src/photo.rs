//! Reading still photos from disk (the `estimate`, `eval` and `crops` commands).
//!
//! Every photo becomes 8-bit RGB: greyscale scans are replicated into three channels so
//! the rest of the pipeline has one pixel format. EXIF orientation is applied, so a phone
//! photo stored sideways is seen upright.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader, RgbImage};

#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    #[error("{path}: cannot read it: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not an image (no known image format in its first bytes)")]
    NotAnImage { path: PathBuf },
    #[error("{path}: corrupt or truncated image: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: image is empty ({width}x{height})")]
    Empty {
        path: PathBuf,
        width: u32,
        height: u32,
    },
}

/// Largest side accepted, so a hostile header cannot make us allocate gigabytes.
const MAX_SIDE: u32 = 16_384;

pub fn load_rgb(path: &Path) -> Result<RgbImage, PhotoError> {
    let owned = || path.to_path_buf();
    let bytes = std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => PhotoError::Missing { path: owned() },
        _ => PhotoError::Unreadable {
            path: owned(),
            source,
        },
    })?;
    decode_rgb(&bytes, path)
}

/// Decodes an in-memory encoded image; `path` only names it in errors.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage, PhotoError> {
    let owned = || path.to_path_buf();
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|source| PhotoError::Unreadable {
            path: owned(),
            source,
        })?;
    if reader.format().is_none() {
        return Err(PhotoError::NotAnImage { path: owned() });
    }
    if reader.format() == Some(image::ImageFormat::Jpeg) && !jpeg_has_end_after_scan(bytes) {
        // The JPEG decoder fills a cut-off scan with grey instead of failing: a face half
        // grey must not reach the model, so a missing end marker is an error here.
        return Err(PhotoError::Corrupt {
            path: owned(),
            reason: "truncated JPEG (no end-of-image marker after the image data)".into(),
        });
    }
    let corrupt = |e: image::ImageError| PhotoError::Corrupt {
        path: owned(),
        reason: e.to_string(),
    };
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PhotoError::Empty {
            path: owned(),
            width,
            height,
        });
    }
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(PhotoError::Corrupt {
            path: owned(),
            reason: format!("{width}x{height} is larger than {MAX_SIDE} pixels a side"),
        });
    }
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan marker (FF DA).
/// Inside entropy-coded data a literal FF is always stuffed as FF 00, so FF D9 there is the
/// real end; an EXIF thumbnail's own FF D9 comes before the main scan and does not count.
fn jpeg_has_end_after_scan(bytes: &[u8]) -> bool {
    let last_scan = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_scan {
        Some(start) => bytes[start..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}

//! Reading still photos from disk (the `estimate`, `eval` and `crops` commands).
//!
//! Every photo becomes 8-bit RGB: greyscale scans are replicated into three channels so
//! the rest of the pipeline has one pixel format. EXIF orientation is applied, so a phone
//! photo stored sideways is seen upright. JPEG goes through the strict decoder of
//! [`crate::jpeg`] (a damaged photo is an error, never a half-grey face); every format is
//! held to the same pixel bound before anything is decoded.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::input_file;
use crate::jpeg::{self, JpegError};

#[derive(Debug, thiserror::Error)]
pub enum PhotoError {
    #[error("{path}: no such file")]
    Missing { path: PathBuf },
    #[error("{path}: cannot read it: {cause}")]
    Unreadable {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: not an image (no known image format in its first bytes)")]
    NotAnImage { path: PathBuf },
    #[error("{path}: {format} images are not supported: give JPEG, PNG, BMP or PNM")]
    Unsupported { path: PathBuf, format: String },
    #[error("{path}: corrupt or truncated image: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: image is empty ({width}x{height})")]
    Empty {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error("{path}: {width}x{height} is more than the {max_pixels} pixels allowed ([capture] max_pixels)")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_pixels: u64,
    },
}

/// Formats this build decodes (image's features in Cargo.toml, plus the strict JPEG path).
fn supported(format: ImageFormat) -> bool {
    matches!(
        format,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp | ImageFormat::Pnm
    )
}

/// Reads and decodes a photo of at most [`jpeg::DEFAULT_MAX_PIXELS`] pixels.
pub fn load_rgb(path: &Path) -> Result<RgbImage, PhotoError> {
    load_rgb_within(path, jpeg::DEFAULT_MAX_PIXELS)
}

/// Reads and decodes a photo of at most `max_pixels` pixels (a board's bound).
pub fn load_rgb_within(path: &Path, max_pixels: u64) -> Result<RgbImage, PhotoError> {
    let owned = || path.to_path_buf();
    let bytes = input_file::read(path, input_file::PHOTO).map_err(|e| match e.problem {
        input_file::Problem::Missing => PhotoError::Missing { path: owned() },
        _ => PhotoError::Unreadable {
            path: owned(),
            cause: e.into(),
        },
    })?;
    decode_rgb(&bytes, path, max_pixels)
}

/// Decodes an in-memory encoded image of at most `max_pixels` pixels; `path` only names it
/// in errors.
pub fn decode_rgb(bytes: &[u8], path: &Path, max_pixels: u64) -> Result<RgbImage, PhotoError> {
    let owned = || path.to_path_buf();
    let format =
        image::guess_format(bytes).map_err(|_| PhotoError::NotAnImage { path: owned() })?;
    if !supported(format) {
        return Err(PhotoError::Unsupported {
            path: owned(),
            format: format!("{format:?}").to_uppercase(),
        });
    }
    if format == ImageFormat::Jpeg {
        let mut rgb = RgbImage::new(1, 1);
        let orientation = jpeg::decode_into(bytes, &mut Vec::new(), &mut rgb, max_pixels).map_err(
            |e| match e {
                JpegError::TooLarge {
                    width,
                    height,
                    max_pixels,
                } => PhotoError::TooLarge {
                    path: owned(),
                    width,
                    height,
                    max_pixels,
                },
                other => PhotoError::Corrupt {
                    path: owned(),
                    reason: other.to_string(),
                },
            },
        )?;
        let mut image = DynamicImage::ImageRgb8(rgb);
        image.apply_orientation(orientation);
        return Ok(image.into_rgb8());
    }
    let corrupt = |e: image::ImageError| PhotoError::Corrupt {
        path: owned(),
        reason: e.to_string(),
    };
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    // What the decoder may allocate: the RGBA image and as much again for its working
    // buffers (a PNG's rows, a BMP's palette expansion).
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(corrupt)?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(PhotoError::Empty {
            path: owned(),
            width,
            height,
        });
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(PhotoError::TooLarge {
            path: owned(),
            width,
            height,
            max_pixels,
        });
    }
    let orientation = decoder.orientation().map_err(corrupt)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

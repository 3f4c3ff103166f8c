//! Capture: where the daemon's frames come from.
//!
//! [`FrameSource`] is the one interface; [`camera`] is a V4L2 camera (MJPEG or YUYV) and
//! [`files`] plays recordings (a folder of JPEG/PNG frames, a concatenated MJPEG file,
//! raw YUYV, y4m) for boards without a camera and for tests. Which one runs is the board
//! file's choice (`[capture] source`), never a silent fallback.
//!
//! Frames are written into a caller-owned [`RgbImage`] that is reallocated only when the
//! frame size changes, so the frame loop does not allocate a frame per frame. Frames
//! never touch the disk.

#[cfg(feature = "camera")]
pub mod camera;
pub mod files;
mod settings;
pub mod yuv;

pub use settings::{CameraFormat, CaptureSettings, RawCapture, SourceKind, SourceSettings};

use image::RgbImage;

/// What came with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    /// Frames delivered since the source was opened (a recording that loops keeps
    /// counting).
    pub index: u64,
    /// For recordings: the frame's time in the recording, `index * 1000 / fps` ms. The
    /// daemon uses it as its clock, so a recording replays deterministically and as fast
    /// as the pipeline runs. `None` for live sources: the daemon reads its own clock.
    pub timestamp_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// The source cannot deliver frames: camera unplugged or refused, file unreadable.
    /// The daemon faults (gate closed) and calls [`FrameSource::reopen`] with backoff.
    #[error("{source_name}: {message}")]
    Lost {
        source_name: String,
        message: String,
    },
    /// One frame could not be decoded (corrupt JPEG, short read); the next may be fine.
    #[error("{source_name}: frame {index}: {message}")]
    BadFrame {
        source_name: String,
        index: u64,
        message: String,
    },
}

/// A source of camera frames.
pub trait FrameSource {
    /// What this is, for logs and errors (device path or file).
    fn name(&self) -> &str;

    /// Writes the next frame into `frame`. `Ok(None)` at the end of a recording that does
    /// not loop; a live source blocks until a frame arrives (or reports `Lost`).
    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<Option<FrameMeta>, CaptureError>;

    /// Tries to get the source back after [`CaptureError::Lost`].
    fn reopen(&mut self) -> Result<(), CaptureError>;
}

/// Opens the source a board asks for.
pub fn open(settings: &CaptureSettings) -> Result<Box<dyn FrameSource>, CaptureError> {
    let max_pixels = settings.max_pixels;
    Ok(match settings.source.clone() {
        #[cfg(feature = "camera")]
        SourceSettings::Camera {
            device,
            format,
            width,
            height,
            fps,
        } => Box::new(camera::V4lCamera::open(
            device, format, width, height, fps, max_pixels,
        )?),
        #[cfg(not(feature = "camera"))]
        SourceSettings::Camera { device, .. } => {
            return Err(CaptureError::Lost {
                source_name: device.display().to_string(),
                message: "this build has no camera support (cargo feature `camera`)".into(),
            })
        }
        SourceSettings::ImageDir { path, fps, looped } => {
            Box::new(files::ImageDir::open(path, fps, looped, max_pixels)?)
        }
        SourceSettings::MjpegFile { path, fps, looped } => {
            Box::new(files::MjpegFile::open(path, fps, looped, max_pixels)?)
        }
        SourceSettings::YuyvFile {
            path,
            width,
            height,
            fps,
            looped,
        } => Box::new(files::YuyvFile::open(
            path, width, height, fps, looped, max_pixels,
        )?),
        SourceSettings::Y4mFile { path, fps, looped } => {
            Box::new(files::Y4mFile::open(path, fps, looped, max_pixels)?)
        }
    })
}

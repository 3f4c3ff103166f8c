//! A V4L2 camera (`/dev/videoN`): USB webcams, and the Pi camera through its V4L2
//! driver. MJPEG or YUYV at the board's size and rate.
//!
//! The driver may grant something other than what was asked (another size, another
//! pixel format); [`V4lCamera::open`] checks what it granted and refuses a pixel format
//! it cannot decode, and logs a different size (the pipeline copes with any size). When
//! the camera disappears (unplugged, driver reset) a read fails and the source reports
//! [`CaptureError::Lost`]; the daemon then calls [`FrameSource::reopen`] with backoff.

use std::path::PathBuf;
use std::time::Duration;

use image::RgbImage;
use v4l::buffer::Type;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, FourCC};

use super::{yuv, CameraFormat, CaptureError, FrameMeta, FrameSource};
use crate::jpeg;

/// Buffers the driver fills while a frame is processed: few, so frames are fresh.
const BUFFERS: u32 = 3;
/// A read that takes longer than this means the camera stopped delivering.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

struct Opened {
    // The stream holds its own handle to the device; the device is kept for controls.
    _device: Device,
    stream: Stream<'static>,
    width: u32,
    height: u32,
    format: CameraFormat,
}

pub struct V4lCamera {
    device: PathBuf,
    name: String,
    format: CameraFormat,
    width: u32,
    height: u32,
    fps: u32,
    opened: Option<Opened>,
    index: u64,
    scratch: Vec<u8>,
    max_pixels: u64,
}

fn fourcc(format: CameraFormat) -> FourCC {
    match format {
        CameraFormat::Mjpeg => FourCC::new(b"MJPG"),
        CameraFormat::Yuyv => FourCC::new(b"YUYV"),
    }
}

impl V4lCamera {
    pub fn open(
        device: PathBuf,
        format: CameraFormat,
        width: u32,
        height: u32,
        fps: u32,
        max_pixels: u64,
    ) -> Result<Self, CaptureError> {
        let mut camera = Self {
            name: device.display().to_string(),
            device,
            format,
            width,
            height,
            fps,
            opened: None,
            index: 0,
            scratch: Vec::new(),
            max_pixels,
        };
        camera.reopen()?;
        Ok(camera)
    }

    fn lost(&self, message: impl std::fmt::Display) -> CaptureError {
        CaptureError::Lost {
            source_name: self.name.clone(),
            message: message.to_string(),
        }
    }

    fn start(&self) -> Result<Opened, CaptureError> {
        let device = Device::with_path(&self.device).map_err(|e| self.lost(e))?;
        let mut wanted = device.format().map_err(|e| self.lost(e))?;
        wanted.width = self.width;
        wanted.height = self.height;
        wanted.fourcc = fourcc(self.format);
        let granted = device.set_format(&wanted).map_err(|e| self.lost(e))?;
        let format = if granted.fourcc == fourcc(CameraFormat::Mjpeg) {
            CameraFormat::Mjpeg
        } else if granted.fourcc == fourcc(CameraFormat::Yuyv) {
            CameraFormat::Yuyv
        } else {
            return Err(self.lost(format!(
                "asked for {} and the driver granted {}, which agegate cannot decode",
                fourcc(self.format),
                granted.fourcc
            )));
        };
        if u64::from(granted.width) * u64::from(granted.height) > self.max_pixels {
            return Err(self.lost(format!(
                "the driver granted {}x{}, more than [capture] max_pixels ({})",
                granted.width, granted.height, self.max_pixels
            )));
        }
        if format != self.format || (granted.width, granted.height) != (self.width, self.height) {
            tracing::warn!(
                camera = %self.name,
                asked = %format_args!("{} {}x{}", fourcc(self.format), self.width, self.height),
                granted = %format_args!("{} {}x{}", granted.fourcc, granted.width, granted.height),
                "camera granted a different format"
            );
        }
        match device.set_params(&v4l::video::capture::Parameters::with_fps(self.fps)) {
            Ok(params) => {
                tracing::info!(camera = %self.name, interval = %params.interval, "frame interval")
            }
            Err(e) => tracing::warn!(camera = %self.name, "cannot set {} fps: {e}", self.fps),
        }
        let mut stream =
            Stream::with_buffers(&device, Type::VideoCapture, BUFFERS).map_err(|e| self.lost(e))?;
        stream.set_timeout(READ_TIMEOUT);
        Ok(Opened {
            _device: device,
            stream,
            width: granted.width,
            height: granted.height,
            format,
        })
    }
}

impl FrameSource for V4lCamera {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<Option<FrameMeta>, CaptureError> {
        let Some(opened) = self.opened.as_mut() else {
            return Err(self.lost("not open"));
        };
        let (buf, meta) = match opened.stream.next() {
            Ok(next) => next,
            Err(e) => {
                // Dropping the stream and device releases the buffers and the fd, so a
                // replugged camera can be opened again.
                self.opened = None;
                return Err(self.lost(format!("read failed: {e}")));
            }
        };
        let used = (meta.bytesused as usize).min(buf.len());
        let data = &buf[..used];
        let index = self.index;
        self.index += 1;
        let decoded = match opened.format {
            CameraFormat::Mjpeg => {
                jpeg::decode_into(data, &mut self.scratch, frame, self.max_pixels)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            CameraFormat::Yuyv => yuv::yuyv_into(data, opened.width, opened.height, frame),
        };
        decoded
            .map(|()| {
                Some(FrameMeta {
                    index,
                    timestamp_ms: None,
                })
            })
            .map_err(|message| CaptureError::BadFrame {
                source_name: self.name.clone(),
                index,
                message,
            })
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        self.opened = None;
        let opened = self.start()?;
        tracing::info!(camera = %self.name, width = opened.width, height = opened.height, format = ?opened.format, "camera streaming");
        self.opened = Some(opened);
        Ok(())
    }
}

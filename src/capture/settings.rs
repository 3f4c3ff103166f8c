//! `[capture]`: where `agegate run` gets its frames, and how large a frame may be.

use std::path::PathBuf;

use serde::Deserialize;

use crate::input_file;
use crate::settings::{in_range, KeyError};

/// `[capture]` as written (paths already resolved against the board file's folder).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapture {
    pub source: SourceKind,
    pub device: Option<PathBuf>,
    pub path: Option<PathBuf>,
    pub format: Option<CameraFormat>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<u32>,
    #[serde(rename = "loop")]
    pub looped: Option<bool>,
    /// Largest frame decoded, in pixels (default 7680 x 4320).
    pub max_pixels: Option<u64>,
}

/// `[capture] source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    Camera,
    ImageDir,
    MjpegFile,
    YuyvFile,
    Y4mFile,
}

impl SourceKind {
    /// As a board file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Camera => "camera",
            Self::ImageDir => "image-dir",
            Self::MjpegFile => "mjpeg-file",
            Self::YuyvFile => "yuyv-file",
            Self::Y4mFile => "y4m-file",
        }
    }
}

/// Pixel format asked of a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraFormat {
    Mjpeg,
    Yuyv,
}

/// A validated `[capture]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptureSettings {
    pub source: SourceSettings,
    /// Largest frame decoded, in pixels (`[capture] max_pixels`): a corrupt or hostile
    /// frame header cannot make the daemon allocate more.
    pub max_pixels: u64,
}

/// Where frames come from (`[capture] source` and its keys).
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSettings {
    Camera {
        device: PathBuf,
        format: CameraFormat,
        width: u32,
        height: u32,
        fps: u32,
    },
    ImageDir {
        path: PathBuf,
        fps: u32,
        looped: bool,
    },
    MjpegFile {
        path: PathBuf,
        fps: u32,
        looped: bool,
    },
    YuyvFile {
        path: PathBuf,
        width: u32,
        height: u32,
        fps: u32,
        looped: bool,
    },
    Y4mFile {
        path: PathBuf,
        fps: u32,
        looped: bool,
    },
}

/// `[capture] max_pixels` bounds: a 160 x 120 frame at least, 64 megapixels at most (about
/// 200 MB as RGB, beyond what the smallest board can spare).
const MAX_PIXELS_RANGE: std::ops::RangeInclusive<u64> = (160 * 120)..=(64 << 20);

impl CaptureSettings {
    pub fn from_raw(raw: RawCapture) -> Result<Self, KeyError> {
        let fps = in_range("capture.fps", raw.fps.unwrap_or(15), 1..=120)?;
        let looped = raw.looped.unwrap_or(false);
        let max_pixels = in_range(
            "capture.max_pixels",
            raw.max_pixels.unwrap_or(crate::jpeg::DEFAULT_MAX_PIXELS),
            MAX_PIXELS_RANGE,
        )?;
        let source_name = raw.source.name();
        let no =
            |key: &str| KeyError::new(key, format!("does not apply to source `{source_name}`"));
        let size = |default: (u32, u32)| -> Result<(u32, u32), KeyError> {
            let (w, h) = (
                raw.width.unwrap_or(default.0),
                raw.height.unwrap_or(default.1),
            );
            if !(16..=7680).contains(&w) || w % 2 != 0 {
                return Err(KeyError::new(
                    "capture.width",
                    format!("{w}: give an even width, 16 to 7680"),
                ));
            }
            let h = in_range("capture.height", h, 16..=4320)?;
            Ok((w, h))
        };
        let file = |must_be_dir: bool| -> Result<PathBuf, KeyError> {
            let Some(path) = raw.path.clone() else {
                return Err(KeyError::new(
                    "capture.path",
                    format!("missing; source `{source_name}` reads a recording"),
                ));
            };
            if must_be_dir {
                if !path.is_dir() {
                    return Err(KeyError::new(
                        "capture.path",
                        format!("no such folder: {}", path.display()),
                    ));
                }
            } else {
                // Missing, a FIFO, a device or a folder is named here, at start.
                input_file::open(&path, input_file::RECORDING)
                    .map_err(|e| KeyError::new("capture.path", e.to_string()))?;
            }
            Ok(path)
        };
        // Only a camera and raw YUYV are told their frame size; JPEG, PNM and y4m frames
        // carry their own, and a width given for them would be silently ignored.
        if !matches!(raw.source, SourceKind::Camera | SourceKind::YuyvFile) {
            for (key, given) in [
                ("capture.width", raw.width.is_some()),
                ("capture.height", raw.height.is_some()),
            ] {
                if given {
                    return Err(KeyError::new(
                        key,
                        format!(
                            "does not apply to source `{source_name}`: its frames carry \
                             their own size"
                        ),
                    ));
                }
            }
        }
        if raw.source != SourceKind::Camera {
            if raw.device.is_some() {
                return Err(no("capture.device"));
            }
            if raw.format.is_some() {
                return Err(no("capture.format"));
            }
        }
        let source = match raw.source {
            SourceKind::Camera => {
                if raw.path.is_some() {
                    return Err(no("capture.path"));
                }
                if raw.looped.is_some() {
                    return Err(no("capture.loop"));
                }
                let Some(device) = raw.device.clone() else {
                    return Err(KeyError::new(
                        "capture.device",
                        "missing, e.g. \"/dev/video0\"",
                    ));
                };
                if !device.exists() {
                    return Err(KeyError::new(
                        "capture.device",
                        format!(
                            "no such device: {} (is the camera plugged in? `v4l2-ctl --list-devices`)",
                            device.display()
                        ),
                    ));
                }
                let (width, height) = size((640, 480))?;
                if u64::from(width) * u64::from(height) > max_pixels {
                    return Err(KeyError::new(
                        "capture.max_pixels",
                        format!("{max_pixels} is less than the camera's {width}x{height}"),
                    ));
                }
                SourceSettings::Camera {
                    device,
                    format: raw.format.unwrap_or(CameraFormat::Mjpeg),
                    width,
                    height,
                    fps,
                }
            }
            SourceKind::ImageDir => SourceSettings::ImageDir {
                path: file(true)?,
                fps,
                looped,
            },
            SourceKind::MjpegFile => SourceSettings::MjpegFile {
                path: file(false)?,
                fps,
                looped,
            },
            SourceKind::Y4mFile => SourceSettings::Y4mFile {
                path: file(false)?,
                fps,
                looped,
            },
            SourceKind::YuyvFile => {
                if raw.width.is_none() || raw.height.is_none() {
                    return Err(KeyError::new(
                        "capture.width",
                        "raw YUYV needs width and height",
                    ));
                }
                let (width, height) = size((0, 0))?;
                SourceSettings::YuyvFile {
                    path: file(false)?,
                    width,
                    height,
                    fps,
                    looped,
                }
            }
        };
        Ok(Self { source, max_pixels })
    }

    /// Makes a recording play over and over (`agegate run --loop`); a camera cannot loop.
    pub fn loop_recording(&mut self) -> Result<(), String> {
        match &mut self.source {
            SourceSettings::Camera { .. } => Err("the board's source is a camera".into()),
            SourceSettings::ImageDir { looped, .. }
            | SourceSettings::MjpegFile { looped, .. }
            | SourceSettings::YuyvFile { looped, .. }
            | SourceSettings::Y4mFile { looped, .. } => {
                *looped = true;
                Ok(())
            }
        }
    }
}

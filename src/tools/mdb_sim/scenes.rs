//! What the camera sees during each simulated session: scenes decoded once from the
//! bundled recordings (or an operator's own), one of them in view at a time, chosen by
//! the simulator before it asks for a verification.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use image::RgbImage;

use crate::capture::files::{ImageDir, MjpegFile};
use crate::capture::{CaptureError, FrameMeta, FrameSource};

/// What a scene holds, and so what the gate may answer for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SceneKind {
    /// An adult's face: the only scene that may be approved.
    Adult,
    /// A child's face: never approved.
    Child,
    /// Nobody in view: never approved.
    Empty,
    /// A presentation attack (print, screen): never approved with liveness on.
    Attack,
}

impl SceneKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Adult => "adult",
            Self::Child => "child",
            Self::Empty => "empty",
            Self::Attack => "attack",
        }
    }

    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "adult" => Self::Adult,
            "child" => Self::Child,
            "empty" => Self::Empty,
            "attack" => Self::Attack,
            other => bail!("scene `{other}`: adult, child, empty or attack"),
        })
    }
}

/// One scene: its frames, played in a loop while it is in view.
pub struct Scene {
    pub kind: SceneKind,
    pub source: String,
    frames: Vec<RgbImage>,
}

/// `NAME=PATH[:FIRST-LAST,...]`: an MJPEG recording, a folder of frames or one photo,
/// optionally only some frames (0-based, both ends included).
pub fn parse_spec(spec: &str, max_pixels: u64) -> Result<Scene> {
    let (name, rest) = spec
        .split_once('=')
        .with_context(|| format!("--scene `{spec}`: NAME=PATH[:FIRST-LAST,...]"))?;
    let kind = SceneKind::parse(name)?;
    let (path, ranges) = match rest.rsplit_once(':') {
        Some((path, ranges))
            if ranges
                .chars()
                .all(|c| c.is_ascii_digit() || ",-".contains(c)) =>
        {
            (path, Some(ranges))
        }
        _ => (rest, None),
    };
    let path = PathBuf::from(path);
    let all = load_frames(&path, max_pixels)?;
    let frames = match ranges {
        None => all,
        Some(ranges) => pick(&all, ranges).with_context(|| format!("--scene `{spec}`"))?,
    };
    if frames.is_empty() {
        bail!("--scene `{spec}`: no frames");
    }
    Ok(Scene {
        kind,
        source: rest.to_string(),
        frames,
    })
}

fn pick(all: &[RgbImage], ranges: &str) -> Result<Vec<RgbImage>> {
    let mut out = Vec::new();
    for range in ranges.split(',') {
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (usize, usize) = (a.parse()?, b.parse()?);
        if a > b || b >= all.len() {
            bail!("frames {a}-{b}: the recording has {} (0-based)", all.len());
        }
        out.extend(all.get(a..=b).unwrap_or_default().iter().cloned());
    }
    Ok(out)
}

fn load_frames(path: &Path, max_pixels: u64) -> Result<Vec<RgbImage>> {
    let mut source: Box<dyn FrameSource> = if path.is_dir() {
        Box::new(ImageDir::open(path.to_path_buf(), 15, false, max_pixels)?)
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("mjpeg"))
    {
        Box::new(MjpegFile::open(path.to_path_buf(), 15, false, max_pixels)?)
    } else {
        return Ok(vec![crate::photo::load_rgb_within(path, max_pixels)
            .with_context(|| format!("scene {}", path.display()))?]);
    };
    let mut frames = Vec::new();
    let mut frame = RgbImage::new(1, 1);
    while let Some(_meta) = source.next_frame(&mut frame)? {
        frames.push(frame.clone());
    }
    Ok(frames)
}

/// The scenes as a camera: the one in view loops; frames are stamped at `fps`.
pub struct SceneSource {
    scenes: Arc<Vec<Scene>>,
    current: Arc<AtomicUsize>,
    index: u64,
    position: usize,
    fps: u64,
}

impl SceneSource {
    pub fn new(scenes: Arc<Vec<Scene>>, current: Arc<AtomicUsize>, fps: u32) -> Self {
        Self {
            scenes,
            current,
            index: 0,
            position: 0,
            fps: u64::from(fps.max(1)),
        }
    }
}

impl FrameSource for SceneSource {
    fn name(&self) -> &str {
        "simulated scenes"
    }

    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<Option<FrameMeta>, CaptureError> {
        let scene = self.current.load(Ordering::SeqCst);
        let Some(frames) = self.scenes.get(scene).map(|s| &s.frames) else {
            return Err(CaptureError::Lost {
                source_name: self.name().into(),
                message: format!("no scene {scene}"),
            });
        };
        let Some(image) = frames.get(self.position % frames.len().max(1)) else {
            return Err(CaptureError::Lost {
                source_name: self.name().into(),
                message: "an empty scene".into(),
            });
        };
        frame.clone_from(image);
        self.position = self.position.wrapping_add(1);
        let meta = FrameMeta {
            index: self.index,
            timestamp_ms: Some(self.index * 1000 / self.fps),
        };
        self.index += 1;
        Ok(Some(meta))
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        Ok(())
    }
}

//! Raw recordings: packed YUYV frames of a size the board gives, and y4m (YUV4MPEG2).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{lost, Timeline, MAX_RAW_FRAME_BYTES};
use crate::capture::yuv::{self, Chroma};
use crate::capture::{CaptureError, FrameMeta, FrameSource};
use crate::input_file;

/// Reads fixed-size raw frames; shared by YUYV and the body of y4m.
struct RawReader {
    reader: BufReader<File>,
    /// Where the first frame starts (after a y4m header).
    data_start: u64,
}

impl RawReader {
    fn open(path: &Path) -> Result<Self, CaptureError> {
        // Streamed, so no bound on size; but a FIFO would block the open and a device
        // never end.
        let file =
            input_file::open(path, input_file::RECORDING).map_err(|e| lost(path, e.reason()))?;
        Ok(Self {
            reader: BufReader::new(file),
            data_start: 0,
        })
    }

    fn rewind(&mut self, path: &Path) -> Result<(), CaptureError> {
        self.seek_to(path, self.data_start)
    }

    fn seek_to(&mut self, path: &Path, position: u64) -> Result<(), CaptureError> {
        self.reader
            .seek(std::io::SeekFrom::Start(position))
            .map(|_| ())
            .map_err(|e| lost(path, e))
    }

    /// The same file opened again at the place `self` had reached.
    fn reopened(&mut self, path: &Path) -> Result<Self, CaptureError> {
        let position = self.reader.stream_position().unwrap_or(self.data_start);
        let mut again = Self::open(path)?;
        again.data_start = self.data_start;
        again.seek_to(path, position.max(self.data_start))?;
        Ok(again)
    }

    /// Fills `buf`; `Ok(false)` at a clean end of file, an error on a partial frame.
    fn read_frame(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..]) {
                Ok(0) if filled == 0 => return Ok(false),
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("last frame cut short: {filled} of {} bytes", buf.len()),
                    ))
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Raw packed YUYV 4:2:2 frames of a size given in the board file.
pub struct YuyvFile {
    path: PathBuf,
    name: String,
    width: u32,
    height: u32,
    reader: RawReader,
    looped: bool,
    timeline: Timeline,
    buf: Vec<u8>,
}

impl YuyvFile {
    pub fn open(
        path: PathBuf,
        width: u32,
        height: u32,
        fps: u32,
        looped: bool,
        max_pixels: u64,
    ) -> Result<Self, CaptureError> {
        let bytes = width as usize * height as usize * 2;
        if u64::from(width) * u64::from(height) > max_pixels {
            return Err(lost(
                &path,
                format!("YUYV frame size {width}x{height} is more than [capture] max_pixels ({max_pixels})"),
            ));
        }
        if width == 0 || height == 0 || width % 2 != 0 || bytes > MAX_RAW_FRAME_BYTES {
            return Err(lost(
                &path,
                format!("YUYV frame size {width}x{height}: give an even width and a size under 8K"),
            ));
        }
        Ok(Self {
            reader: RawReader::open(&path)?,
            name: path.display().to_string(),
            path,
            width,
            height,
            looped,
            timeline: Timeline::new(fps),
            buf: vec![0; bytes],
        })
    }
}

impl FrameSource for YuyvFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<Option<FrameMeta>, CaptureError> {
        let mut have = self.reader.read_frame(&mut self.buf);
        if matches!(have, Ok(false)) && self.looped {
            self.reader.rewind(&self.path)?;
            have = self.reader.read_frame(&mut self.buf);
        }
        match have {
            Ok(true) => match yuv::yuyv_into(&self.buf, self.width, self.height, frame) {
                Ok(()) => Ok(Some(self.timeline.advance())),
                Err(e) => Err(self.timeline.bad_frame(&self.name, e)),
            },
            Ok(false) => Ok(None),
            Err(e) => Err(self.timeline.bad_frame(&self.name, e)),
        }
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        self.reader = self.reader.reopened(&self.path)?;
        Ok(())
    }
}

/// The parsed `YUV4MPEG2` stream header.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Y4mHeader {
    pub width: u32,
    pub height: u32,
    pub chroma: Chroma,
    /// Frame rate from the `F` tag, when it has one.
    pub fps: Option<f64>,
}

impl Y4mHeader {
    /// Parses the header line (without its newline).
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut tags = line.split(' ');
        if tags.next() != Some("YUV4MPEG2") {
            return Err("not a y4m file (no YUV4MPEG2 signature)".into());
        }
        let (mut width, mut height, mut chroma, mut fps) = (None, None, Chroma::C420, None);
        for tag in tags.filter(|t| !t.is_empty()) {
            let (key, value) = tag.split_at(1);
            match key {
                "W" => width = value.parse::<u32>().ok(),
                "H" => height = value.parse::<u32>().ok(),
                "F" => {
                    let mut parts = value.split(':').map(|p| p.parse::<f64>().ok());
                    if let (Some(Some(n)), Some(Some(d))) = (parts.next(), parts.next()) {
                        fps = (d > 0.0 && n > 0.0).then_some(n / d);
                    }
                }
                "C" => {
                    chroma = match value {
                        v if v.starts_with("420") => Chroma::C420,
                        "422" => Chroma::C422,
                        "444" => Chroma::C444,
                        "mono" => Chroma::Mono,
                        other => {
                            return Err(format!(
                                "y4m colour space C{other} is not supported (420, 422, 444, mono)"
                            ))
                        }
                    }
                }
                _ => {}
            }
        }
        match (width, height) {
            (Some(w), Some(h))
                if w > 0 && h > 0 && chroma.frame_bytes(w, h) <= MAX_RAW_FRAME_BYTES =>
            {
                Ok(Self {
                    width: w,
                    height: h,
                    chroma,
                    fps,
                })
            }
            _ => Err(format!("y4m header `{line}`: missing or impossible W/H")),
        }
    }
}

/// A y4m (YUV4MPEG2) file: 8-bit 4:2:0, 4:2:2, 4:4:4 or mono.
pub struct Y4mFile {
    path: PathBuf,
    name: String,
    header: Y4mHeader,
    reader: RawReader,
    looped: bool,
    timeline: Timeline,
    buf: Vec<u8>,
    line: Vec<u8>,
}

impl Y4mFile {
    pub fn open(
        path: PathBuf,
        fps: u32,
        looped: bool,
        max_pixels: u64,
    ) -> Result<Self, CaptureError> {
        let (reader, header) = Self::read_header(&path)?;
        if u64::from(header.width) * u64::from(header.height) > max_pixels {
            return Err(lost(
                &path,
                format!(
                    "y4m frame size {}x{} is more than [capture] max_pixels ({max_pixels})",
                    header.width, header.height
                ),
            ));
        }
        // The file's own frame rate wins over the board's default.
        let fps = header.fps.map_or(fps, |f| f.round().max(1.0) as u32);
        Ok(Self {
            name: path.display().to_string(),
            buf: vec![0; header.chroma.frame_bytes(header.width, header.height)],
            path,
            header,
            reader,
            looped,
            timeline: Timeline::new(fps),
            line: Vec::new(),
        })
    }

    fn read_header(path: &Path) -> Result<(RawReader, Y4mHeader), CaptureError> {
        let mut reader = RawReader::open(path)?;
        let mut line = Vec::new();
        (&mut reader.reader)
            .take(1024)
            .read_until(b'\n', &mut line)
            .map_err(|e| lost(path, e))?;
        if line.pop() != Some(b'\n') {
            return Err(lost(path, "not a y4m file (no header line)"));
        }
        let header =
            Y4mHeader::parse(&String::from_utf8_lossy(&line)).map_err(|e| lost(path, e))?;
        reader.data_start = line.len() as u64 + 1;
        Ok((reader, header))
    }

    /// Reads one `FRAME[ params]\n` line; `Ok(false)` at the end of the file.
    fn frame_line(&mut self) -> std::io::Result<bool> {
        self.line.clear();
        (&mut self.reader.reader)
            .take(256)
            .read_until(b'\n', &mut self.line)?;
        if self.line.is_empty() {
            return Ok(false);
        }
        if !self.line.starts_with(b"FRAME") || self.line.last() != Some(&b'\n') {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "expected a FRAME line",
            ));
        }
        Ok(true)
    }
}

impl FrameSource for Y4mFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<Option<FrameMeta>, CaptureError> {
        let mut have = self.frame_line();
        if matches!(have, Ok(false)) && self.looped {
            self.reader.rewind(&self.path)?;
            have = self.frame_line();
        }
        let result = have.and_then(|more| {
            if more {
                self.reader.read_frame(&mut self.buf)
            } else {
                Ok(false)
            }
        });
        match result {
            Ok(true) => {
                let Y4mHeader {
                    width,
                    height,
                    chroma,
                    ..
                } = self.header;
                match yuv::planar_into(&self.buf, width, height, chroma, frame) {
                    Ok(()) => Ok(Some(self.timeline.advance())),
                    Err(e) => Err(self.timeline.bad_frame(&self.name, e)),
                }
            }
            Ok(false) => Ok(None),
            // A broken FRAME line or a short frame: the stream has lost its framing, so
            // the rest of the file cannot be trusted; play it as ended (or start over).
            Err(e) => {
                let err = self.timeline.bad_frame(&self.name, e);
                if self.looped {
                    self.reader.rewind(&self.path)?;
                } else {
                    self.reader
                        .reader
                        .seek(std::io::SeekFrom::End(0))
                        .map_err(|e| lost(&self.path, e))?;
                }
                Err(err)
            }
        }
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        let (_, header) = Self::read_header(&self.path)?;
        if header != self.header {
            return Err(lost(&self.path, "the file's y4m header changed"));
        }
        self.reader = self.reader.reopened(&self.path)?;
        Ok(())
    }
}

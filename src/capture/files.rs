//! Recorded frames: a folder of JPEG/PNG/BMP/PNM frames, a concatenated MJPEG file (as a
//! webcam streams it, Huffman tables optional), raw packed YUYV, and y4m (YUV4MPEG2).
//!
//! A recording has a nominal frame rate; each frame's timestamp is `index * 1000 / fps`
//! ms. With `looped`, the recording starts over at its end and timestamps keep rising.
//! A frame that cannot be decoded is a [`CaptureError::BadFrame`] and the next call
//! moves on; a file that cannot be read at all is [`CaptureError::Lost`].
//!
//! [`FrameSource::reopen`] reads the file again but keeps the place in it: a recording
//! plays through once (or loops) whatever faults happen on the way, so a recording of
//! nothing but bad frames ends instead of starting over after every camera fault.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use image::RgbImage;

use super::yuv::{self, Chroma};
use super::{CaptureError, FrameMeta, FrameSource};
use crate::jpeg;

/// Largest MJPEG recording read into memory.
const MAX_MJPEG_BYTES: u64 = 512 << 20;
/// Largest frame of a raw recording (8K RGB-ish), against absurd header values.
const MAX_RAW_FRAME_BYTES: usize = 128 << 20;

fn lost(path: &Path, message: impl std::fmt::Display) -> CaptureError {
    CaptureError::Lost {
        source_name: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Frame counter and timestamps of a recording.
#[derive(Debug, Clone, Copy)]
struct Timeline {
    fps: u32,
    next_index: u64,
}

impl Timeline {
    fn new(fps: u32) -> Self {
        Self {
            fps: fps.max(1),
            next_index: 0,
        }
    }

    fn advance(&mut self) -> FrameMeta {
        let index = self.next_index;
        self.next_index += 1;
        FrameMeta {
            index,
            timestamp_ms: Some(index * 1000 / u64::from(self.fps)),
        }
    }

    fn bad_frame(&mut self, name: &str, message: impl std::fmt::Display) -> CaptureError {
        let index = self.advance().index;
        CaptureError::BadFrame {
            source_name: name.to_string(),
            index,
            message: message.to_string(),
        }
    }
}

/// A folder of still frames, played in file-name order.
pub struct ImageDir {
    path: PathBuf,
    name: String,
    files: Vec<PathBuf>,
    position: usize,
    looped: bool,
    timeline: Timeline,
    bytes: Vec<u8>,
    scratch: Vec<u8>,
    max_pixels: u64,
}

impl ImageDir {
    pub fn open(
        path: PathBuf,
        fps: u32,
        looped: bool,
        max_pixels: u64,
    ) -> Result<Self, CaptureError> {
        let mut me = Self {
            name: path.display().to_string(),
            path,
            files: Vec::new(),
            position: 0,
            looped,
            timeline: Timeline::new(fps),
            bytes: Vec::new(),
            scratch: Vec::new(),
            max_pixels,
        };
        me.reopen()?;
        Ok(me)
    }
}

impl FrameSource for ImageDir {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<Option<FrameMeta>, CaptureError> {
        if self.position >= self.files.len() {
            if !self.looped {
                return Ok(None);
            }
            self.position = 0;
        }
        let Some(file) = self.files.get(self.position).cloned() else {
            return Ok(None);
        };
        self.position += 1;
        self.bytes.clear();
        if let Err(e) = File::open(&file).and_then(|mut f| f.read_to_end(&mut self.bytes)) {
            return Err(self.timeline.bad_frame(&file.display().to_string(), e));
        }
        let is_jpeg = self.bytes.starts_with(&[0xFF, 0xD8]);
        let decoded = if is_jpeg {
            jpeg::decode_into(&self.bytes, &mut self.scratch, frame, self.max_pixels)
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            crate::photo::decode_rgb(&self.bytes, &file, self.max_pixels)
                .map(|rgb| *frame = rgb)
                .map_err(|e| e.to_string())
        };
        match decoded {
            Ok(()) => Ok(Some(self.timeline.advance())),
            Err(e) => Err(self.timeline.bad_frame(&file.display().to_string(), e)),
        }
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| lost(&self.path, e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(
                        e.to_ascii_lowercase().as_str(),
                        "jpg" | "jpeg" | "png" | "bmp" | "ppm" | "pgm"
                    )
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(lost(
                &self.path,
                "no JPEG, PNG, BMP or PNM frames in this folder",
            ));
        }
        // The place in the recording is kept (see the module docs).
        self.files = files;
        Ok(())
    }
}

/// Concatenated JPEG frames, read into memory once (recordings are short clips).
pub struct MjpegFile {
    path: PathBuf,
    name: String,
    data: Vec<u8>,
    offset: usize,
    looped: bool,
    timeline: Timeline,
    scratch: Vec<u8>,
    max_pixels: u64,
}

impl MjpegFile {
    pub fn open(
        path: PathBuf,
        fps: u32,
        looped: bool,
        max_pixels: u64,
    ) -> Result<Self, CaptureError> {
        let mut me = Self {
            name: path.display().to_string(),
            path,
            data: Vec::new(),
            offset: 0,
            looped,
            timeline: Timeline::new(fps),
            scratch: Vec::new(),
            max_pixels,
        };
        me.reopen()?;
        Ok(me)
    }
}

impl FrameSource for MjpegFile {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_frame(&mut self, frame: &mut RgbImage) -> Result<Option<FrameMeta>, CaptureError> {
        let start = match jpeg::find_start(&self.data, self.offset) {
            Some(start) => start,
            None if self.looped => match jpeg::find_start(&self.data, 0) {
                Some(start) => start,
                None => return Err(lost(&self.path, "no JPEG frame in the file")),
            },
            None => {
                self.offset = self.data.len();
                return Ok(None);
            }
        };
        let rest = self.data.get(start..).unwrap_or(&[]);
        let result = jpeg::frame_len(rest).and_then(|len| {
            jpeg::decode_into(rest, &mut self.scratch, frame, self.max_pixels)?;
            Ok(len)
        });
        match result {
            Ok(len) => {
                self.offset = start + len;
                Ok(Some(self.timeline.advance()))
            }
            Err(e) => {
                // Skip this start marker; the next call resynchronises on the next one.
                self.offset = start + 2;
                Err(self.timeline.bad_frame(&self.name, e))
            }
        }
    }

    fn reopen(&mut self) -> Result<(), CaptureError> {
        let file = File::open(&self.path).map_err(|e| lost(&self.path, e))?;
        let len = file.metadata().map_err(|e| lost(&self.path, e))?.len();
        if len > MAX_MJPEG_BYTES {
            return Err(lost(
                &self.path,
                format!("{len} bytes: MJPEG recordings are read into memory, keep them under {MAX_MJPEG_BYTES}"),
            ));
        }
        let mut data = Vec::with_capacity(len as usize);
        file.take(MAX_MJPEG_BYTES)
            .read_to_end(&mut data)
            .map_err(|e| lost(&self.path, e))?;
        if jpeg::find_start(&data, 0).is_none() {
            return Err(lost(
                &self.path,
                "no JPEG frame (start-of-image marker) in the file",
            ));
        }
        // The place in the recording is kept (see the module docs).
        self.offset = self.offset.min(data.len());
        self.data = data;
        Ok(())
    }
}

/// Reads fixed-size raw frames; shared by YUYV and the body of y4m.
struct RawReader {
    reader: BufReader<File>,
    /// Where the first frame starts (after a y4m header).
    data_start: u64,
}

impl RawReader {
    fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = File::open(path).map_err(|e| lost(path, e))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::yuv::tests::to_ycbcr;

    const MAX: u64 = crate::jpeg::DEFAULT_MAX_PIXELS;

    fn drain(source: &mut dyn FrameSource, frame: &mut RgbImage) -> (usize, usize, Vec<u64>) {
        let (mut good, mut bad, mut times) = (0, 0, Vec::new());
        for _ in 0..1000 {
            match source.next_frame(frame) {
                Ok(Some(meta)) => {
                    good += 1;
                    times.push(meta.timestamp_ms.expect("recordings have timestamps"));
                }
                Ok(None) => break,
                Err(CaptureError::BadFrame { .. }) => bad += 1,
                Err(e) => panic!("{e}"),
            }
        }
        (good, bad, times)
    }

    fn jpeg(colour: [u8; 3], w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, image::Rgb(colour));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .expect("encode");
        out
    }

    #[test]
    fn mjpeg_file_plays_skips_garbage_and_loops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("clip.mjpeg");
        let mut data = b"noise".to_vec();
        data.extend(jpeg([200, 10, 10], 32, 16));
        data.extend(&jpeg([10, 200, 10], 32, 16)[..40]); // a frame cut short
        data.extend(jpeg([10, 10, 200], 32, 16));
        std::fs::write(&path, &data).expect("write");
        let mut frame = RgbImage::new(1, 1);
        let mut src = MjpegFile::open(path.clone(), 10, false, MAX).expect("open");
        let (good, bad, times) = drain(&mut src, &mut frame);
        assert_eq!((good, bad), (2, 1));
        assert_eq!(times, vec![0, 200]);
        assert!(frame.get_pixel(5, 5)[2] > 150, "last frame is the blue one");

        let mut looped = MjpegFile::open(path, 10, true, MAX).expect("open");
        let mut seen = 0;
        for _ in 0..9 {
            if let Ok(Some(_)) = looped.next_frame(&mut frame) {
                seen += 1;
            }
        }
        assert_eq!(seen, 6, "3 passes of 2 good frames and 1 bad");
    }

    #[test]
    fn reopening_a_recording_keeps_its_place() {
        // The daemon reopens a source after a fault; a recording that started over each
        // time would never end.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut frame = RgbImage::new(1, 1);
        let clip = dir.path().join("clip.mjpeg");
        let colours = [[200, 10, 10], [10, 200, 10], [10, 10, 200]];
        std::fs::write(&clip, colours.map(|c| jpeg(c, 16, 16)).concat()).expect("write");
        let mut src = MjpegFile::open(clip, 15, false, MAX).expect("open");
        assert!(src.next_frame(&mut frame).expect("1st").is_some());
        src.reopen().expect("reopen");
        assert!(src.next_frame(&mut frame).expect("2nd").is_some());
        assert!(
            frame.get_pixel(4, 4)[1] > 150,
            "the second frame, not the first"
        );
        src.reopen().expect("reopen");
        assert!(src.next_frame(&mut frame).expect("3rd").is_some());
        src.reopen().expect("reopen");
        assert_eq!(src.next_frame(&mut frame), Ok(None));

        let raw = dir.path().join("clip.yuyv");
        std::fs::write(&raw, [[16u8, 128, 16, 128]; 4].concat()).expect("write");
        let mut src = YuyvFile::open(raw, 2, 2, 15, false, MAX).expect("open");
        assert!(src.next_frame(&mut frame).expect("1st").is_some());
        src.reopen().expect("reopen");
        assert!(src.next_frame(&mut frame).expect("2nd").is_some());
        src.reopen().expect("reopen");
        assert_eq!(src.next_frame(&mut frame), Ok(None));

        let frames = dir.path().join("frames");
        std::fs::create_dir(&frames).expect("mkdir");
        for (i, c) in colours.iter().enumerate() {
            std::fs::write(frames.join(format!("{i}.jpg")), jpeg(*c, 8, 8)).expect("write");
        }
        let mut src = ImageDir::open(frames, 15, false, MAX).expect("open");
        for _ in 0..3 {
            assert!(src.next_frame(&mut frame).expect("frame").is_some());
            src.reopen().expect("reopen");
        }
        assert_eq!(src.next_frame(&mut frame), Ok(None));
    }

    #[test]
    fn frames_beyond_max_pixels_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clip = dir.path().join("clip.mjpeg");
        std::fs::write(&clip, jpeg([1, 2, 3], 64, 48)).expect("write");
        let mut frame = RgbImage::new(1, 1);
        let mut src = MjpegFile::open(clip, 15, false, 32 * 32).expect("open");
        let e = src.next_frame(&mut frame);
        assert!(
            matches!(&e, Err(CaptureError::BadFrame { message, .. }) if message.contains("max_pixels")),
            "{e:?}"
        );
        assert!(frame.len() <= 3 * 32 * 32);
        let e = YuyvFile::open(dir.path().join("x.yuyv"), 64, 48, 15, false, 32 * 32).err();
        assert!(e.is_some_and(|e| e.to_string().contains("max_pixels")));
    }

    #[test]
    fn missing_or_empty_recordings_are_lost_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = MjpegFile::open(dir.path().join("none.mjpeg"), 15, false, MAX).err();
        assert!(matches!(e, Some(CaptureError::Lost { .. })), "{e:?}");
        std::fs::write(dir.path().join("x.mjpeg"), b"not a jpeg").expect("write");
        let e = MjpegFile::open(dir.path().join("x.mjpeg"), 15, false, MAX).err();
        assert!(e.is_some_and(|e| e.to_string().contains("no JPEG frame")));
        let e = ImageDir::open(dir.path().to_path_buf(), 15, false, MAX).err();
        assert!(e.is_some_and(|e| e.to_string().contains("no JPEG, PNG")));
    }

    #[test]
    fn image_dir_plays_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("b.jpg"), jpeg([10, 10, 200], 8, 8)).expect("write");
        RgbImage::from_pixel(8, 8, image::Rgb([200, 10, 10]))
            .save(dir.path().join("a.png"))
            .expect("png");
        std::fs::write(dir.path().join("c.jpg"), b"corrupt").expect("write");
        std::fs::write(dir.path().join("notes.txt"), b"ignored").expect("write");
        let mut frame = RgbImage::new(1, 1);
        let mut src = ImageDir::open(dir.path().to_path_buf(), 15, false, MAX).expect("open");
        assert!(src.next_frame(&mut frame).expect("a").is_some());
        assert_eq!(frame.get_pixel(0, 0).0, [200, 10, 10]);
        assert!(src.next_frame(&mut frame).expect("b").is_some());
        assert!(frame.get_pixel(0, 0)[2] > 150);
        assert!(matches!(
            src.next_frame(&mut frame),
            Err(CaptureError::BadFrame { .. })
        ));
        assert_eq!(src.next_frame(&mut frame), Ok(None));
    }

    #[test]
    fn yuyv_and_y4m_recordings_decode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let [y, cb, cr] = to_ycbcr([20, 180, 60]);
        // one 4x2 frame: 8 pixels, 4 bytes per 2 pixels
        let yuyv: Vec<u8> = [y, cb, y, cr].repeat(4);
        let path = dir.path().join("clip.yuyv");
        // two 4x2 frames and a cut-off third
        std::fs::write(
            &path,
            [yuyv.clone(), yuyv.clone(), yuyv[..5].to_vec()].concat(),
        )
        .expect("write");
        let mut frame = RgbImage::new(1, 1);
        let mut src = YuyvFile::open(path, 4, 2, 15, false, MAX).expect("open");
        let (good, bad, _) = drain(&mut src, &mut frame);
        assert_eq!((good, bad), (2, 1));
        let px = frame.get_pixel(3, 1);
        assert!((i32::from(px[1]) - 180).abs() <= 3, "{px:?}");

        let w = 4;
        let h = 2;
        let mut y4m = format!("YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C420jpeg\n").into_bytes();
        for _ in 0..3 {
            y4m.extend(b"FRAME\n");
            y4m.extend(std::iter::repeat_n(y, 8));
            y4m.extend([cb, cb, cr, cr]);
        }
        let path = dir.path().join("clip.y4m");
        std::fs::write(&path, &y4m).expect("write");
        let mut src = Y4mFile::open(path.clone(), 15, false, MAX).expect("open");
        let (good, bad, times) = drain(&mut src, &mut frame);
        assert_eq!((good, bad), (3, 0));
        assert_eq!(times, vec![0, 40, 80], "the file's F25:1 wins");
        assert!((i32::from(frame.get_pixel(0, 0)[0]) - 20).abs() <= 3);

        std::fs::write(&path, b"YUV4MPEG2 W0 H2\n").expect("write");
        assert!(Y4mFile::open(path.clone(), 15, false, MAX).is_err());
        std::fs::write(&path, b"YUV4MPEG2 W4 H2 C411\n").expect("write");
        let e = Y4mFile::open(path, 15, false, MAX).err();
        assert!(e.is_some_and(|e| e.to_string().contains("C411")));
    }
}

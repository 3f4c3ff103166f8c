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

use std::path::{Path, PathBuf};

use image::RgbImage;

mod raw;

pub use raw::{Y4mFile, Y4mHeader, YuyvFile};

use super::{CaptureError, FrameMeta, FrameSource};
use crate::input_file;
use crate::jpeg;

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
        // A frame file that is a FIFO or a device is a bad frame, not a hang.
        if let Err(e) = input_file::read_into(&file, input_file::PHOTO, &mut self.bytes) {
            return Err(self
                .timeline
                .bad_frame(&file.display().to_string(), e.reason()));
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
        // Read into memory whole, so held to a recording's bound.
        let data = input_file::read(&self.path, input_file::RECORDING)
            .map_err(|e| lost(&self.path, e.reason()))?;
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

    /// A FIFO nobody writes to once blocked every recording's open (and a frame's), and
    /// `/dev/zero` as an MJPEG file was read up to 512 MB.
    #[test]
    fn fifos_and_devices_are_lost_sources_and_bad_frames_not_hangs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("clip.jpg");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.expect("mkfifo").success());
        for path in [fifo.clone(), PathBuf::from("/dev/zero")] {
            let lost = |e: Option<CaptureError>| {
                let m = e.map(|e| e.to_string()).unwrap_or_default();
                assert!(m.contains("not a regular file"), "{m}");
            };
            lost(MjpegFile::open(path.clone(), 15, false, MAX).err());
            lost(YuyvFile::open(path.clone(), 64, 48, 15, false, MAX).err());
            lost(Y4mFile::open(path, 15, false, MAX).err());
        }
        let mut frames = ImageDir::open(dir.path().to_path_buf(), 15, false, MAX).expect("open");
        let e = frames.next_frame(&mut RgbImage::new(1, 1));
        assert!(
            matches!(&e, Err(CaptureError::BadFrame { message, .. }) if message == "is a FIFO, not a regular file"),
            "{e:?}"
        );
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

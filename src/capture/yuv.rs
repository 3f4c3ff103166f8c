//! Raw YUV frames to RGB: packed YUYV (4:2:2, what UVC webcams send uncompressed) and
//! planar 4:2:0 / 4:2:2 / 4:4:4 / mono (what y4m files hold).
//!
//! Both use ITU-R BT.601 with limited ("studio") range, Y in 16..235 and Cb/Cr in
//! 16..240: the default of UVC cameras and of ffmpeg's y4m output. Fixed-point
//! arithmetic, no allocation; the caller sizes the buffers (checked, never panics).

use image::RgbImage;

/// Which chroma layout a planar frame has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chroma {
    /// Cb and Cr at half width and half height.
    C420,
    /// Cb and Cr at half width, full height.
    C422,
    /// Cb and Cr at full resolution.
    C444,
    /// Luma only.
    Mono,
}

impl Chroma {
    /// (horizontal, vertical) subsampling shifts.
    fn shifts(self) -> (u32, u32) {
        match self {
            Chroma::C420 => (1, 1),
            Chroma::C422 => (1, 0),
            Chroma::C444 | Chroma::Mono => (0, 0),
        }
    }

    /// Bytes in one planar frame of `width` x `height`.
    pub fn frame_bytes(self, width: u32, height: u32) -> usize {
        let luma = width as usize * height as usize;
        if self == Chroma::Mono {
            return luma;
        }
        let (sx, sy) = self.shifts();
        let cw = width.div_ceil(1 << sx) as usize;
        let ch = height.div_ceil(1 << sy) as usize;
        luma + 2 * cw * ch
    }
}

/// BT.601 limited range, 16.16 fixed point.
fn to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let c = (i32::from(y) - 16) * 76_309;
    let d = i32::from(cb) - 128;
    let e = i32::from(cr) - 128;
    let clamp = |v: i32| ((v + 32_768) >> 16).clamp(0, 255) as u8;
    [
        clamp(c + 104_597 * e),
        clamp(c - 25_675 * d - 53_279 * e),
        clamp(c + 132_201 * d),
    ]
}

/// Writes a packed YUYV frame into `frame` (resized only when the size changes).
/// `src` must hold `width * height * 2` bytes; `width` must be even.
pub fn yuyv_into(src: &[u8], width: u32, height: u32, frame: &mut RgbImage) -> Result<(), String> {
    let need = width as usize * height as usize * 2;
    if width % 2 != 0 || src.len() < need {
        return Err(format!(
            "YUYV {width}x{height} needs an even width and {need} bytes, got {}",
            src.len()
        ));
    }
    if frame.dimensions() != (width, height) {
        *frame = RgbImage::new(width, height);
    }
    let out: &mut [u8] = frame.as_mut();
    for (pair, rgb) in src[..need].chunks_exact(4).zip(out.chunks_exact_mut(6)) {
        let (y0, cb, y1, cr) = (pair[0], pair[1], pair[2], pair[3]);
        rgb[..3].copy_from_slice(&to_rgb(y0, cb, cr));
        rgb[3..].copy_from_slice(&to_rgb(y1, cb, cr));
    }
    Ok(())
}

/// Writes a planar frame (Y plane, then Cb, then Cr) into `frame`.
pub(crate) fn planar_into(
    src: &[u8],
    width: u32,
    height: u32,
    chroma: Chroma,
    frame: &mut RgbImage,
) -> Result<(), String> {
    let need = chroma.frame_bytes(width, height);
    if src.len() < need {
        return Err(format!(
            "planar {chroma:?} {width}x{height} needs {need} bytes, got {}",
            src.len()
        ));
    }
    if frame.dimensions() != (width, height) {
        *frame = RgbImage::new(width, height);
    }
    let (w, h) = (width as usize, height as usize);
    let (sx, sy) = chroma.shifts();
    let cw = width.div_ceil(1 << sx) as usize;
    let ch = height.div_ceil(1 << sy) as usize;
    let (luma, rest) = src.split_at(w * h);
    let (cb_plane, cr_plane) = rest.split_at(rest.len().min(cw * ch));
    let out: &mut [u8] = frame.as_mut();
    for y in 0..h {
        for x in 0..w {
            let l = luma[y * w + x];
            let rgb = if chroma == Chroma::Mono {
                to_rgb(l, 128, 128)
            } else {
                let ci = (y >> sy) * cw + (x >> sx);
                to_rgb(l, cb_plane[ci], cr_plane[ci])
            };
            out[3 * (y * w + x)..3 * (y * w + x) + 3].copy_from_slice(&rgb);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// BT.601 limited-range forward transform (the inverse of `to_rgb`), for test data.
    pub(crate) fn to_ycbcr(rgb: [u8; 3]) -> [u8; 3] {
        let [r, g, b] = rgb.map(f32::from);
        let y = 16.0 + 0.256_79 * r + 0.504_13 * g + 0.097_91 * b;
        let cb = 128.0 - 0.148_22 * r - 0.290_99 * g + 0.439_21 * b;
        let cr = 128.0 + 0.439_21 * r - 0.367_79 * g - 0.071_42 * b;
        [y, cb, cr].map(|v| v.round().clamp(0.0, 255.0) as u8)
    }

    #[test]
    fn primaries_and_greys_round_trip() {
        for rgb in [
            [0, 0, 0],
            [255, 255, 255],
            [128, 128, 128],
            [255, 0, 0],
            [0, 255, 0],
            [0, 0, 255],
            [30, 160, 90],
        ] {
            let [y, cb, cr] = to_ycbcr(rgb);
            let back = to_rgb(y, cb, cr);
            for c in 0..3 {
                assert!(
                    (i32::from(back[c]) - i32::from(rgb[c])).abs() <= 3,
                    "{rgb:?} -> {back:?}"
                );
            }
        }
    }

    #[test]
    fn yuyv_frame_converts_and_checks_its_size() {
        // 4x1: two YUYV pairs, red then blue.
        let [yr, cbr, crr] = to_ycbcr([255, 0, 0]);
        let [yb, cbb, crb] = to_ycbcr([0, 0, 255]);
        let src = [yr, cbr, yr, crr, yb, cbb, yb, crb];
        let mut frame = RgbImage::new(1, 1);
        yuyv_into(&src, 4, 1, &mut frame).expect("convert");
        assert!(frame.get_pixel(1, 0)[0] > 250 && frame.get_pixel(1, 0)[2] < 5);
        assert!(frame.get_pixel(3, 0)[2] > 250 && frame.get_pixel(3, 0)[0] < 5);
        assert!(yuyv_into(&src[..7], 4, 1, &mut frame).is_err());
        assert!(yuyv_into(&src, 3, 1, &mut frame).is_err());
    }

    #[test]
    fn planar_sizes_and_mono() {
        assert_eq!(Chroma::C420.frame_bytes(4, 2), 8 + 2 * 2);
        assert_eq!(Chroma::C420.frame_bytes(5, 3), 15 + 2 * 3 * 2);
        assert_eq!(Chroma::C422.frame_bytes(4, 2), 8 + 2 * 4);
        assert_eq!(Chroma::C444.frame_bytes(4, 2), 24);
        let mut frame = RgbImage::new(1, 1);
        planar_into(&[235; 6], 3, 2, Chroma::Mono, &mut frame).expect("mono");
        assert_eq!(frame.get_pixel(2, 1).0, [255, 255, 255]);
        assert!(planar_into(&[0; 5], 3, 2, Chroma::Mono, &mut frame).is_err());
    }
}

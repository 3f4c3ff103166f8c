//! The face crop the liveness models were made for, sampled the way their package samples
//! it (`@vladmandic/human` 3.0.7, `models/README.md` has the references): the detector's
//! box enlarged 1.4 times and made square around its centre (`blazeface.ts`:
//! `enlargeBox`, `squarifyBox`), cut out with `tf.image.cropAndResize` to the face mesh's
//! 192 x 192 (`facemeshutil.ts`: `cutAndResize`), then `tf.image.resizeBilinear` (corners
//! not aligned, no half-pixel centres) to each classifier's input (`antispoof.ts`,
//! `liveness.ts`). Values stay 0..255: the graphs divide by 255 themselves.
//!
//! Both samplers are plain bilinear without antialiasing, like TF's, so a downscale
//! aliases as it did for the models' makers.

use image::RgbImage;

use crate::detect::BBox;

/// The package's enlargement of the detector's box (`faceBoxScaleFactor`).
const ENLARGE: f32 = 1.4;

/// The square the crop is cut from: `[x0, y0, x1, y1]` in photo pixels, its corners
/// rounded to whole pixels as `squarifyBox` rounds them (JavaScript's `Math.round`: half
/// up).
pub(crate) fn face_square(bbox: &BBox) -> [f32; 4] {
    let (cx, cy) = bbox.centre();
    let half = ENLARGE * bbox.width().max(bbox.height()) / 2.0;
    [cx - half, cy - half, cx + half, cy + half].map(|v| (v + 0.5).floor())
}

/// `tf.image.cropAndResize` of `square` (photo pixels, as the package passes it: divided
/// by the photo's size) to `size x size`, HWC, 0..255; outside the photo reads 0.
pub(crate) fn square_crop(photo: &RgbImage, square: [f32; 4], size: usize, out: &mut Vec<f32>) {
    let (w, h) = (photo.width() as f32, photo.height() as f32);
    let [x0, y0, x1, y1] = square;
    // cropAndResize takes the box as fractions of the image and samples
    // y = y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (size - 1).
    let (bx0, bx1) = (x0 / w, x1 / w);
    let (by0, by1) = (y0 / h, y1 / h);
    let step = |a: f32, b: f32, extent: f32| {
        if size > 1 {
            (b - a) * (extent - 1.0) / (size as f32 - 1.0)
        } else {
            0.0
        }
    };
    let (sx, sy) = (step(bx0, bx1, w), step(by0, by1, h));
    out.clear();
    out.resize(size * size * 3, 0.0);
    for i in 0..size {
        let y = by0 * (h - 1.0) + i as f32 * sy;
        for j in 0..size {
            let x = bx0 * (w - 1.0) + j as f32 * sx;
            let o = (i * size + j) * 3;
            if let Some(p) = bilinear(photo, x, y) {
                out[o..o + 3].copy_from_slice(&p);
            }
        }
    }
}

/// Where point `(u, v)` of a [`square_crop`] of `square` (side `size`) lies in the photo
/// (`width x height`): the inverse of the crop's sampling.
pub(crate) fn crop_to_photo(
    square: [f32; 4],
    width: u32,
    height: u32,
    size: usize,
    [u, v]: [f32; 2],
) -> [f32; 2] {
    let (w, h) = (width as f32, height as f32);
    let [x0, y0, x1, y1] = square;
    let per = (size.max(2) - 1) as f32;
    [
        x0 / w * (w - 1.0) + u * (x1 - x0) / w * (w - 1.0) / per,
        y0 / h * (h - 1.0) + v * (y1 - y0) / h * (h - 1.0) / per,
    ]
}

/// The bilinear sample of `photo` at `(x, y)` (pixel centres on integers), `None` outside.
fn bilinear(photo: &RgbImage, x: f32, y: f32) -> Option<[f32; 3]> {
    let (w, h) = (photo.width(), photo.height());
    if !(x >= 0.0 && y >= 0.0 && x <= (w - 1) as f32 && y <= (h - 1) as f32) {
        return None;
    }
    let (xf, yf) = (x.floor(), y.floor());
    let (x0, y0) = (xf as u32, yf as u32);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - xf, y - yf);
    let px = |x: u32, y: u32| photo.get_pixel(x, y).0;
    let (a, b, c, d) = (px(x0, y0), px(x1, y0), px(x0, y1), px(x1, y1));
    let mut out = [0.0f32; 3];
    for (k, v) in out.iter_mut().enumerate() {
        let top = f32::from(a[k]) + (f32::from(b[k]) - f32::from(a[k])) * fx;
        let bottom = f32::from(c[k]) + (f32::from(d[k]) - f32::from(c[k])) * fx;
        *v = top + (bottom - top) * fy;
    }
    Some(out)
}

/// `tf.image.resizeBilinear(x, [size, size], false)` of an HWC square of side `from`:
/// source `= i * from / size`, no half-pixel centres.
pub(crate) fn resize_bilinear(input: &[f32], from: usize, size: usize, out: &mut Vec<f32>) {
    out.clear();
    out.resize(size * size * 3, 0.0);
    if from == 0 || input.len() < from * from * 3 {
        return;
    }
    let scale = from as f32 / size as f32;
    for i in 0..size {
        let y = i as f32 * scale;
        let y0 = (y.floor() as usize).min(from - 1);
        let y1 = (y0 + 1).min(from - 1);
        let fy = y - y0 as f32;
        for j in 0..size {
            let x = j as f32 * scale;
            let x0 = (x.floor() as usize).min(from - 1);
            let x1 = (x0 + 1).min(from - 1);
            let fx = x - x0 as f32;
            for c in 0..3 {
                let at = |y: usize, x: usize| input[(y * from + x) * 3 + c];
                let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * fx;
                let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * fx;
                out[(i * size + j) * 3 + c] = top + (bottom - top) * fy;
            }
        }
    }
}

/// HWC to the models' NCHW input.
pub(crate) fn to_nchw(hwc: &[f32], size: usize, out: &mut [f32]) {
    let plane = size * size;
    for (i, p) in hwc.chunks_exact(3).enumerate().take(plane) {
        for c in 0..3 {
            out[c * plane + i] = p[c];
        }
    }
}

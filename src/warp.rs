//! Affine resampling of RGB images, shared by the detector's letterbox and the face
//! alignment, so both see pixels sampled the same way.
//!
//! Convention: pixel `(i, j)` covers `[i, i+1) x [j, j+1)`; its centre is `(i+0.5, j+0.5)`.
//! An [`Affine`] maps output coordinates to source coordinates. When the output is smaller
//! than the source (scale > 1), each output pixel averages `n x n` bilinear taps spread
//! over its footprint, so downscaling a large photo does not alias.

use image::{Rgb, RgbImage};

/// `source = [a b; c d] * output + [tx; ty]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub a: f32,
    pub b: f32,
    pub c: f32,
    pub d: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Affine {
    /// Output pixel -> source: uniform `scale` (source pixels per output pixel) and offset.
    pub fn scale_translate(scale: f32, tx: f32, ty: f32) -> Self {
        Self {
            a: scale,
            b: 0.0,
            c: 0.0,
            d: scale,
            tx,
            ty,
        }
    }

    pub fn apply(&self, x: f32, y: f32) -> (f32, f32) {
        (
            self.a * x + self.b * y + self.tx,
            self.c * x + self.d * y + self.ty,
        )
    }

    /// Source pixels per output pixel along one axis (square root of the area ratio).
    pub fn linear_scale(&self) -> f32 {
        (self.a * self.d - self.b * self.c).abs().sqrt()
    }
}

/// What a tap outside the source image reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Border {
    /// Black, as the detector's letterbox padding.
    Black,
    /// The nearest edge pixel, so an aligned crop near the photo's edge has no hard black
    /// wedge that the age model never saw in training.
    Replicate,
}

/// Most taps per axis when downscaling; beyond 4x4 the gain is invisible at our sizes.
const MAX_TAPS: usize = 4;

pub fn warp(source: &RgbImage, map: &Affine, width: u32, height: u32, border: Border) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    warp_into(source, map, border, &mut out);
    out
}

/// Fills `out` (its size is the output size), reusing its buffer.
pub fn warp_into(source: &RgbImage, map: &Affine, border: Border, out: &mut RgbImage) {
    let taps = (map.linear_scale().ceil() as usize).clamp(1, MAX_TAPS);
    let step = 1.0 / taps as f32;
    let weight = 1.0 / (taps * taps) as f32;
    for (u, v, pixel) in out.enumerate_pixels_mut() {
        let mut acc = [0.0f32; 3];
        for ty in 0..taps {
            for tx in 0..taps {
                let ox = u as f32 + (tx as f32 + 0.5) * step;
                let oy = v as f32 + (ty as f32 + 0.5) * step;
                let (sx, sy) = map.apply(ox, oy);
                let rgb = bilinear(source, sx - 0.5, sy - 0.5, border);
                for k in 0..3 {
                    acc[k] += rgb[k];
                }
            }
        }
        *pixel = Rgb(acc.map(|s| (s * weight).round().clamp(0.0, 255.0) as u8));
    }
}

/// Bilinear read at continuous pixel-index coordinates (`(0,0)` = centre of pixel 0).
fn bilinear(source: &RgbImage, x: f32, y: f32, border: Border) -> [f32; 3] {
    let (w, h) = (source.width() as i64, source.height() as i64);
    let x0 = x.floor();
    let y0 = y.floor();
    let fx = x - x0;
    let fy = y - y0;
    let (x0, y0) = (x0 as i64, y0 as i64);
    let read = |xi: i64, yi: i64| -> [f32; 3] {
        let inside = xi >= 0 && yi >= 0 && xi < w && yi < h;
        if !inside && border == Border::Black {
            return [0.0; 3];
        }
        let p = source.get_pixel(xi.clamp(0, w - 1) as u32, yi.clamp(0, h - 1) as u32);
        [p[0] as f32, p[1] as f32, p[2] as f32]
    };
    let p00 = read(x0, y0);
    let p10 = read(x0 + 1, y0);
    let p01 = read(x0, y0 + 1);
    let p11 = read(x0 + 1, y0 + 1);
    let mut out = [0.0; 3];
    for k in 0..3 {
        let top = p00[k] + (p10[k] - p00[k]) * fx;
        let bottom = p01[k] + (p11[k] - p01[k]) * fx;
        out[k] = top + (bottom - top) * fy;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7 % 256) as u8, (y * 5 % 256) as u8, 100])
        })
    }

    #[test]
    fn identity_map_copies_the_image() {
        let img = gradient(17, 9);
        let out = warp(
            &img,
            &Affine::scale_translate(1.0, 0.0, 0.0),
            17,
            9,
            Border::Black,
        );
        assert_eq!(out, img);
    }

    #[test]
    fn halving_averages_two_by_two_blocks() {
        let img = RgbImage::from_fn(4, 2, |x, _| {
            if x % 2 == 0 {
                Rgb([0, 0, 0])
            } else {
                Rgb([200, 100, 50])
            }
        });
        let out = warp(
            &img,
            &Affine::scale_translate(2.0, 0.0, 0.0),
            2,
            1,
            Border::Replicate,
        );
        assert_eq!(out.get_pixel(0, 0), &Rgb([100, 50, 25]));
        assert_eq!(out.get_pixel(1, 0), &Rgb([100, 50, 25]));
    }

    #[test]
    fn borders_read_black_or_the_edge() {
        let img = RgbImage::from_pixel(4, 4, Rgb([90, 90, 90]));
        let shifted = Affine::scale_translate(1.0, -10.0, 0.0);
        assert_eq!(
            warp(&img, &shifted, 4, 4, Border::Black).get_pixel(0, 0),
            &Rgb([0, 0, 0])
        );
        assert_eq!(
            warp(&img, &shifted, 4, 4, Border::Replicate).get_pixel(0, 0),
            &Rgb([90, 90, 90])
        );
    }
}

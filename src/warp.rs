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
pub(crate) enum Border {
    /// Black, as the detector's letterbox padding.
    Black,
    /// The nearest edge pixel, so an aligned crop near the photo's edge has no hard black
    /// wedge that the age model never saw in training.
    Replicate,
}

/// Most taps per axis when downscaling; beyond 4x4 the gain is invisible at our sizes.
const MAX_TAPS: usize = 4;

#[cfg(test)]
pub(crate) fn warp(
    source: &RgbImage,
    map: &Affine,
    width: u32,
    height: u32,
    border: Border,
) -> RgbImage {
    let mut out = RgbImage::new(width, height);
    warp_into(source, map, border, &mut out);
    out
}

/// Fills `out` (its size is the output size), reusing its buffer.
///
/// A map without rotation or shear (the detector's letterbox, every crop of an upright
/// face) takes the separable path: the same taps and bilinear weights, summed per axis,
/// which is about ten times faster than sampling each tap in 2-D. The two paths agree to
/// float rounding (at most one level of 255 on a rare pixel).
pub(crate) fn warp_into(source: &RgbImage, map: &Affine, border: Border, out: &mut RgbImage) {
    if source.width() == 0 || source.height() == 0 {
        out.fill(0);
        return;
    }
    let taps = taps_per_axis(map);
    if map.b == 0.0 && map.c == 0.0 {
        warp_separable(source, map, border, taps, out);
    } else {
        warp_general(source, map, border, taps, out);
    }
}

/// Taps per axis: enough to cover an output pixel's footprint when downscaling.
fn taps_per_axis(map: &Affine) -> usize {
    (map.linear_scale().ceil() as usize).clamp(1, MAX_TAPS)
}

fn warp_general(source: &RgbImage, map: &Affine, border: Border, taps: usize, out: &mut RgbImage) {
    let step = 1.0 / taps as f32;
    let weight = 1.0 / (taps * taps) as f32;
    let view = Source::new(source, border);
    for (u, v, pixel) in out.enumerate_pixels_mut() {
        let mut acc = [0.0f32; 3];
        for ty in 0..taps {
            for tx in 0..taps {
                let ox = u as f32 + (tx as f32 + 0.5) * step;
                let oy = v as f32 + (ty as f32 + 0.5) * step;
                let (sx, sy) = map.apply(ox, oy);
                let rgb = view.bilinear(sx - 0.5, sy - 0.5);
                for k in 0..3 {
                    acc[k] += rgb[k];
                }
            }
        }
        *pixel = Rgb(acc.map(|s| to_u8(s * weight)));
    }
}

fn to_u8(value: f32) -> u8 {
    value.round().clamp(0.0, 255.0) as u8
}

/// The source pixels with the border rule applied to reads outside them.
struct Source<'a> {
    pixels: &'a [u8],
    width: i64,
    height: i64,
    border: Border,
}

impl<'a> Source<'a> {
    /// `image` must not be empty.
    fn new(image: &'a RgbImage, border: Border) -> Self {
        Self {
            pixels: image.as_raw(),
            width: image.width() as i64,
            height: image.height() as i64,
            border,
        }
    }

    fn read(&self, x: i64, y: i64) -> [f32; 3] {
        let inside = x >= 0 && y >= 0 && x < self.width && y < self.height;
        if !inside && self.border == Border::Black {
            return [0.0; 3];
        }
        let (x, y) = (x.clamp(0, self.width - 1), y.clamp(0, self.height - 1));
        let at = 3 * (y * self.width + x) as usize;
        let p = &self.pixels[at..at + 3];
        [p[0] as f32, p[1] as f32, p[2] as f32]
    }

    /// Bilinear read at continuous pixel-index coordinates (`(0,0)` = centre of pixel 0).
    fn bilinear(&self, x: f32, y: f32) -> [f32; 3] {
        let x0 = x.floor();
        let y0 = y.floor();
        let fx = x - x0;
        let fy = y - y0;
        let (x0, y0) = (x0 as i64, y0 as i64);
        let p00 = self.read(x0, y0);
        let p10 = self.read(x0 + 1, y0);
        let p01 = self.read(x0, y0 + 1);
        let p11 = self.read(x0 + 1, y0 + 1);
        let mut out = [0.0; 3];
        for k in 0..3 {
            let top = p00[k] + (p10[k] - p00[k]) * fx;
            let bottom = p01[k] + (p11[k] - p01[k]) * fx;
            out[k] = top + (bottom - top) * fy;
        }
        out
    }
}

/// Source indices and weights that make one output sample along one axis.
#[derive(Debug)]
struct AxisTaps {
    /// `(source index, weight)`; the weights of one output sample sum to 1, less what a
    /// black border takes away.
    taps: Vec<(usize, f32)>,
    /// `taps[offsets[i]..offsets[i + 1]]` belong to output sample `i`.
    offsets: Vec<usize>,
}

impl AxisTaps {
    /// Output sample `i` averages `taps` bilinear reads at `scale * (i + (t + 0.5) / taps) +
    /// shift - 0.5`, exactly as the 2-D path places them.
    fn new(
        outputs: usize,
        scale: f32,
        shift: f32,
        taps: usize,
        len: usize,
        border: Border,
    ) -> Self {
        let step = 1.0 / taps as f32;
        let last = len as i64 - 1;
        let mut axis = AxisTaps {
            taps: Vec::with_capacity(outputs * taps * 2),
            offsets: Vec::with_capacity(outputs + 1),
        };
        axis.offsets.push(0);
        for i in 0..outputs {
            for t in 0..taps {
                let position = scale * (i as f32 + (t as f32 + 0.5) * step) + shift - 0.5;
                let floor = position.floor();
                let frac = position - floor;
                let floor = floor as i64;
                for (index, weight) in [(floor, 1.0 - frac), (floor + 1, frac)] {
                    if weight == 0.0 {
                        continue;
                    }
                    let index = match border {
                        Border::Black if index < 0 || index > last => continue,
                        Border::Black => index,
                        Border::Replicate => index.clamp(0, last),
                    };
                    // each of the `taps` reads carries 1 / taps = `step` of the sample
                    axis.taps.push((index as usize, weight * step));
                }
            }
            axis.offsets.push(axis.taps.len());
        }
        axis
    }

    fn of(&self, i: usize) -> &[(usize, f32)] {
        &self.taps[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The smallest and largest source index any output sample reads.
    fn span(&self) -> Option<(usize, usize)> {
        let min = self.taps.iter().map(|t| t.0).min()?;
        let max = self.taps.iter().map(|t| t.0).max()?;
        Some((min, max))
    }
}

/// Scale-and-shift maps: filter the needed source rows horizontally, then the columns.
fn warp_separable(
    source: &RgbImage,
    map: &Affine,
    border: Border,
    taps: usize,
    out: &mut RgbImage,
) {
    let (out_w, out_h) = (out.width() as usize, out.height() as usize);
    let (src_w, src_h) = (source.width() as usize, source.height() as usize);
    let columns = AxisTaps::new(out_w, map.a, map.tx, taps, src_w, border);
    let rows = AxisTaps::new(out_h, map.d, map.ty, taps, src_h, border);
    let Some((first_row, last_row)) = rows.span() else {
        // Every output row reads outside a black-bordered source.
        out.fill(0);
        return;
    };
    let pixels = source.as_raw();
    let row_len = 3 * out_w;
    let mut filtered = vec![0.0f32; (last_row - first_row + 1) * row_len];
    for (y, line) in (first_row..=last_row).zip(filtered.chunks_exact_mut(row_len)) {
        let src_row = &pixels[3 * y * src_w..3 * (y + 1) * src_w];
        for (u, acc) in line.chunks_exact_mut(3).enumerate() {
            for &(x, w) in columns.of(u) {
                let p = &src_row[3 * x..3 * x + 3];
                acc[0] += p[0] as f32 * w;
                acc[1] += p[1] as f32 * w;
                acc[2] += p[2] as f32 * w;
            }
        }
    }
    let mut acc = vec![0.0f32; row_len];
    for (v, out_row) in out.chunks_exact_mut(row_len).enumerate() {
        acc.iter_mut().for_each(|a| *a = 0.0);
        for &(y, w) in rows.of(v) {
            let line = &filtered[(y - first_row) * row_len..(y - first_row + 1) * row_len];
            for (a, &f) in acc.iter_mut().zip(line) {
                *a += f * w;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = to_u8(a);
        }
    }
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

    /// A busy, non-periodic test card, so a misplaced tap shows.
    fn busy(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let n = x
                .wrapping_mul(2_654_435_761)
                .wrapping_add(y.wrapping_mul(40_503));
            Rgb([
                (n >> 24) as u8,
                (x * 3 + y * 11 % 256) as u8,
                ((x ^ y) * 5 % 256) as u8,
            ])
        })
    }

    #[test]
    fn separable_path_matches_two_dimensional_sampling() {
        let img = busy(61, 47);
        // Up- and downscaling (1 to 4 taps), shifts that leave the source, both borders.
        let maps = [
            Affine::scale_translate(1.0, 0.0, 0.0),
            Affine::scale_translate(0.37, 3.2, -1.7),
            Affine::scale_translate(1.6, -5.5, 2.25),
            Affine::scale_translate(2.5, -20.0, -12.0),
            Affine::scale_translate(3.9, 0.3, 0.6),
            Affine {
                a: 2.2,
                b: 0.0,
                c: 0.0,
                d: 1.3,
                tx: 4.0,
                ty: -3.0,
            },
        ];
        for map in &maps {
            for border in [Border::Black, Border::Replicate] {
                let taps = taps_per_axis(map);
                let mut fast = RgbImage::new(40, 33);
                let mut reference = RgbImage::new(40, 33);
                warp_separable(&img, map, border, taps, &mut fast);
                warp_general(&img, map, border, taps, &mut reference);
                for (f, r) in fast.as_raw().iter().zip(reference.as_raw()) {
                    assert!(
                        f.abs_diff(*r) <= 1,
                        "{map:?} {border:?}: separable {f}, 2-D {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_rotated_map_still_samples_in_two_dimensions() {
        // 90 degrees: output (u, v) reads source (v, 3 - u); pixel centres land on centres.
        let img = busy(6, 4);
        let map = Affine {
            a: 0.0,
            b: 1.0,
            c: -1.0,
            d: 0.0,
            tx: 0.0,
            ty: 4.0,
        };
        let out = warp(&img, &map, 4, 6, Border::Black);
        for v in 0..6 {
            for u in 0..4 {
                assert_eq!(out.get_pixel(u, v), img.get_pixel(v, 3 - u), "({u}, {v})");
            }
        }
    }

    #[test]
    fn an_empty_source_gives_black() {
        let out = warp(
            &RgbImage::new(0, 0),
            &Affine::scale_translate(1.0, 0.0, 0.0),
            3,
            2,
            Border::Replicate,
        );
        assert!(out.as_raw().iter().all(|&p| p == 0));
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

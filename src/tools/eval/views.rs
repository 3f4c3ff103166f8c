//! `--views N`: a photo seen as a camera sees a person standing still, N frames that
//! differ a little: shifted, scaled and turned slightly, brighter or darker, with sensor
//! noise. Seeded per photo and view, so every run sees the same views.

use image::{Rgb, RgbImage};

use crate::tools::stats::Rng;
use crate::warp::{warp_into, Affine, Border};

fn uniform(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    let u = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
    lo + (hi - lo) * u
}

/// One jittered view: up to 3 % shift, 5 % scale, 5 degrees of rotation, 10 % brightness
/// and noise of 3 levels.
pub(super) fn jitter(photo: &RgbImage, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    let (w, h) = (photo.width() as f32, photo.height() as f32);
    let side = w.min(h);
    let scale = uniform(&mut rng, 0.95, 1.05);
    let angle = uniform(&mut rng, -5.0, 5.0).to_radians();
    let (dx, dy) = (
        uniform(&mut rng, -0.03, 0.03) * side,
        uniform(&mut rng, -0.03, 0.03) * side,
    );
    let gain = uniform(&mut rng, 0.9, 1.1);
    // Output -> source: rotate and scale about the centre, then shift.
    let (c, s) = (angle.cos() / scale, angle.sin() / scale);
    let (cx, cy) = (w / 2.0, h / 2.0);
    let map = Affine {
        a: c,
        b: -s,
        c: s,
        d: c,
        tx: cx - (c * cx - s * cy) + dx,
        ty: cy - (s * cx + c * cy) + dy,
    };
    let mut out = RgbImage::new(photo.width(), photo.height());
    warp_into(photo, &map, Border::Replicate, &mut out);
    for p in out.pixels_mut() {
        let noise = (uniform(&mut rng, -1.0, 1.0) + uniform(&mut rng, -1.0, 1.0)) * 3.0 / 0.8165;
        *p = Rgb(p
            .0
            .map(|v| (f32::from(v) * gain + noise).round().clamp(0.0, 255.0) as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_seeded_small_changes() {
        let photo = RgbImage::from_fn(80, 60, |x, y| Rgb([(x * 3) as u8, (y * 4) as u8, 128]));
        let a = jitter(&photo, 1);
        assert_eq!(a, jitter(&photo, 1));
        assert_ne!(a, jitter(&photo, 2));
        assert_eq!(a.dimensions(), photo.dimensions());
        // Small: the mean absolute change stays well under a tenth of the range.
        let diff: f64 = a
            .pixels()
            .zip(photo.pixels())
            .map(|(p, q)| (0..3).map(|c| f64::from(p[c].abs_diff(q[c]))).sum::<f64>())
            .sum::<f64>()
            / (80.0 * 60.0 * 3.0);
        assert!(diff > 0.5 && diff < 25.0, "{diff}");
    }
}

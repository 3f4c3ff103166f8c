//! Face alignment: a similarity transform (rotation, uniform scale, shift) that carries the
//! detector's eye, nose and mouth keypoints onto a fixed template, then an `S x S` crop.
//!
//! The template is where those keypoints sit, on average, in the UTKFace training crops
//! (measured with our own detector on the validation split), so an aligned crop of any
//! photo is framed like the crops the age model learnt from. The age model's training data
//! is made by this very code (`agegate crops`), so the framing is the same by construction.

use image::RgbImage;

use crate::detect::{Face, LEFT_EYE, MOUTH_CENTRE, NOSE_TIP, RIGHT_EYE};
pub use crate::warp::Affine;
use crate::warp::{warp_into, Border};

/// Template positions in the crop, as fractions of its side: right eye, left eye, nose tip,
/// mouth centre (the subject's right eye is on the image's left).
pub const TEMPLATE: [[f32; 2]; 4] = [
    [0.2859, 0.2973],
    [0.6929, 0.2852],
    [0.4869, 0.5148],
    [0.4940, 0.7208],
];

const TEMPLATE_KEYPOINTS: [usize; 4] = [RIGHT_EYE, LEFT_EYE, NOSE_TIP, MOUTH_CENTRE];

/// Least-squares similarity mapping crop pixels (of a `size` crop) to photo pixels.
pub fn crop_to_photo(face: &Face, size: u32) -> Affine {
    let side = size as f32;
    let q: Vec<[f32; 2]> = TEMPLATE
        .iter()
        .map(|t| [t[0] * side, t[1] * side])
        .collect();
    let p: Vec<[f32; 2]> = TEMPLATE_KEYPOINTS
        .iter()
        .map(|&k| face.keypoints[k])
        .collect();
    fit_similarity(&q, &p).unwrap_or_else(|| box_fallback(face, size))
}

/// Solves `p ~= [a -b; b a] q + t` in the least-squares sense. `None` when the `q` points
/// coincide (no scale can be recovered).
fn fit_similarity(q: &[[f32; 2]], p: &[[f32; 2]]) -> Option<Affine> {
    let n = q.len() as f32;
    let mean = |pts: &[[f32; 2]]| {
        let (sx, sy) = pts
            .iter()
            .fold((0.0, 0.0), |(x, y), v| (x + v[0], y + v[1]));
        [sx / n, sy / n]
    };
    let (mq, mp) = (mean(q), mean(p));
    let (mut dot, mut cross, mut norm) = (0.0f32, 0.0f32, 0.0f32);
    for (qi, pi) in q.iter().zip(p) {
        let (qx, qy) = (qi[0] - mq[0], qi[1] - mq[1]);
        let (px, py) = (pi[0] - mp[0], pi[1] - mp[1]);
        dot += qx * px + qy * py;
        cross += qx * py - qy * px;
        norm += qx * qx + qy * qy;
    }
    if norm <= f32::EPSILON {
        return None;
    }
    let (a, b) = (dot / norm, cross / norm);
    if !(a.is_finite() && b.is_finite()) || a * a + b * b <= f32::EPSILON {
        return None;
    }
    Some(Affine {
        a,
        b: -b,
        c: b,
        d: a,
        tx: mp[0] - (a * mq[0] - b * mq[1]),
        ty: mp[1] - (b * mq[0] + a * mq[1]),
    })
}

/// When the keypoints are degenerate (all on one spot), frame the detector's box instead.
fn box_fallback(face: &Face, size: u32) -> Affine {
    let (cx, cy) = face.bbox.centre();
    let side = face.bbox.width().max(face.bbox.height()).max(1.0) * 1.4;
    let scale = side / size as f32;
    Affine::scale_translate(scale, cx - side / 2.0, cy - side / 2.0)
}

/// The aligned `size x size` crop of `face` in `photo`.
pub fn aligned_crop(photo: &RgbImage, face: &Face, size: u32) -> RgbImage {
    let mut crop = RgbImage::new(size, size);
    aligned_crop_into(photo, face, &mut crop);
    crop
}

/// As [`aligned_crop`], reusing `crop`'s buffer (its size is the crop size).
pub fn aligned_crop_into(photo: &RgbImage, face: &Face, crop: &mut RgbImage) {
    let map = crop_to_photo(face, crop.width());
    warp_into(photo, &map, Border::Replicate, crop);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;

    fn face_with(keypoints: [[f32; 2]; 4]) -> Face {
        let mut kp = [[0.0; 2]; 6];
        for (i, &k) in TEMPLATE_KEYPOINTS.iter().enumerate() {
            kp[k] = keypoints[i];
        }
        Face {
            bbox: BBox {
                x0: 10.0,
                y0: 10.0,
                x1: 60.0,
                y1: 60.0,
            },
            score: 0.9,
            keypoints: kp,
        }
    }

    #[test]
    fn template_keypoints_map_onto_the_template() {
        // A face rotated by 30 degrees, scaled by 2.5 and shifted: the fit must recover it.
        let (s, th) = (2.5f32, 30f32.to_radians());
        let (tx, ty) = (40.0, -7.0);
        let size = 112;
        let kp = TEMPLATE.map(|t| {
            let (u, v) = (t[0] * size as f32, t[1] * size as f32);
            [
                s * (th.cos() * u - th.sin() * v) + tx,
                s * (th.sin() * u + th.cos() * v) + ty,
            ]
        });
        let map = crop_to_photo(&face_with(kp), size);
        for (t, k) in TEMPLATE.iter().zip(kp) {
            let (x, y) = map.apply(t[0] * size as f32, t[1] * size as f32);
            assert!(
                (x - k[0]).abs() < 1e-2 && (y - k[1]).abs() < 1e-2,
                "{x},{y} vs {k:?}"
            );
        }
        assert!((map.linear_scale() - s).abs() < 1e-4);
    }

    #[test]
    fn degenerate_keypoints_fall_back_to_the_box() {
        let map = crop_to_photo(&face_with([[5.0, 5.0]; 4]), 100);
        assert!(map.linear_scale() > 0.0);
        let (x, y) = map.apply(50.0, 50.0);
        assert!((x - 35.0).abs() < 1e-3 && (y - 35.0).abs() < 1e-3);
    }
}

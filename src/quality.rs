//! Face quality: whether a detected face is good enough to estimate an age from. A face
//! too small, turned too far, blurred or badly exposed gives an estimate the model's sigma
//! does not cover; such a frame does not count toward a decision (the session says so in
//! its reason, `low_quality`).
//!
//! Measured per face: the interocular distance in source pixels, yaw and roll from the
//! keypoints, the sharpness of the aligned crop (variance of its Laplacian) and its
//! exposure (mean luma, share of clipped pixels). Yaw is an estimate from the nose's
//! offset off the eyes' midpoint, `atan(2 d / iod)` (the nose tip stands about half an
//! interocular distance in front of the eyes), good to a few degrees up to 45 degrees.

use image::RgbImage;
use serde::Deserialize;

use crate::detect::{Face, LEFT_EYE, NOSE_TIP, RIGHT_EYE};
use crate::settings::KeyError;

/// What one face measures.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Quality {
    /// Distance between the eyes, source pixels.
    pub iod_px: f32,
    /// Head turn left or right, degrees (0 frontal), estimated from the keypoints.
    pub yaw_deg: f32,
    /// Head tilt, degrees (0 upright): the angle of the eye line.
    pub roll_deg: f32,
    /// Variance of the 4-neighbour Laplacian of the aligned crop's luma.
    pub sharpness: f32,
    /// Mean luma of the aligned crop, 0..255.
    pub brightness: f32,
    /// Share of the crop's pixels at or below 5 or at or above 250.
    pub clipped: f32,
}

impl Quality {
    /// Measures `face` (in source coordinates) and its aligned `crop`.
    pub fn measure(face: &Face, crop: &RgbImage) -> Self {
        let [rx, ry] = face.keypoints[RIGHT_EYE];
        let [lx, ly] = face.keypoints[LEFT_EYE];
        let [nx, ny] = face.keypoints[NOSE_TIP];
        let (dx, dy) = (lx - rx, ly - ry);
        let iod = (dx * dx + dy * dy).sqrt();
        let roll_deg = dy.atan2(dx).to_degrees();
        // The nose's offset along the eye line, from the eyes' midpoint.
        let (cx, cy) = ((rx + lx) / 2.0, (ry + ly) / 2.0);
        let along = if iod > 0.0 {
            ((nx - cx) * dx + (ny - cy) * dy) / iod
        } else {
            0.0
        };
        let yaw_deg = if iod > 0.0 {
            (2.0 * along / iod).atan().to_degrees()
        } else {
            90.0
        };
        let (sharpness, brightness, clipped) = crop_statistics(crop);
        Self {
            iod_px: iod,
            yaw_deg,
            roll_deg,
            sharpness,
            brightness,
            clipped,
        }
    }
}

fn crop_statistics(crop: &RgbImage) -> (f32, f32, f32) {
    let (w, h) = (crop.width() as usize, crop.height() as usize);
    if w < 3 || h < 3 {
        return (0.0, 0.0, 1.0);
    }
    let luma: Vec<f32> = crop
        .pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    let n = luma.len() as f32;
    let brightness = luma.iter().sum::<f32>() / n;
    let clipped = luma.iter().filter(|&&v| !(5.0..250.0).contains(&v)).count() as f32 / n;
    let (mut sum, mut sum2, mut count) = (0.0f64, 0.0f64, 0.0f64);
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            let at = |x: usize, y: usize| f64::from(luma[y * w + x]);
            let lap = at(x - 1, y) + at(x + 1, y) + at(x, y - 1) + at(x, y + 1) - 4.0 * at(x, y);
            sum += lap;
            sum2 += lap * lap;
            count += 1.0;
        }
    }
    let mean = sum / count;
    let sharpness = (sum2 / count - mean * mean).max(0.0) as f32;
    (sharpness, brightness, clipped)
}

/// `[quality]` as written: every threshold optional (absent: not checked).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawQuality {
    pub min_iod_px: Option<f32>,
    pub max_yaw_deg: Option<f32>,
    pub max_roll_deg: Option<f32>,
    pub min_sharpness: Option<f32>,
    pub min_brightness: Option<f32>,
    pub max_brightness: Option<f32>,
    pub max_clipped: Option<f32>,
}

/// The board's quality gate: a face below any threshold does not count.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QualitySettings {
    pub min_iod_px: Option<f32>,
    pub max_yaw_deg: Option<f32>,
    pub max_roll_deg: Option<f32>,
    pub min_sharpness: Option<f32>,
    pub min_brightness: Option<f32>,
    pub max_brightness: Option<f32>,
    pub max_clipped: Option<f32>,
}

impl QualitySettings {
    pub fn from_raw(raw: RawQuality) -> Result<Self, KeyError> {
        let check = |key: &str, v: Option<f32>, lo: f32, hi: f32| match v {
            Some(v) if !(lo..=hi).contains(&v) => Err(KeyError::new(
                format!("quality.{key}"),
                format!("{v}: give {lo} to {hi}"),
            )),
            other => Ok(other),
        };
        let settings = Self {
            min_iod_px: check("min_iod_px", raw.min_iod_px, 0.0, 1000.0)?,
            max_yaw_deg: check("max_yaw_deg", raw.max_yaw_deg, 0.0, 90.0)?,
            max_roll_deg: check("max_roll_deg", raw.max_roll_deg, 0.0, 180.0)?,
            min_sharpness: check("min_sharpness", raw.min_sharpness, 0.0, 1e6)?,
            min_brightness: check("min_brightness", raw.min_brightness, 0.0, 255.0)?,
            max_brightness: check("max_brightness", raw.max_brightness, 0.0, 255.0)?,
            max_clipped: check("max_clipped", raw.max_clipped, 0.0, 1.0)?,
        };
        if let (Some(lo), Some(hi)) = (settings.min_brightness, settings.max_brightness) {
            if lo >= hi {
                return Err(KeyError::new(
                    "quality.max_brightness",
                    format!("{hi} is not above min_brightness {lo}"),
                ));
            }
        }
        Ok(settings)
    }

    /// The first threshold `q` fails, by name; `None` when the face is good enough. A
    /// measurement that is not a number fails every threshold it meets.
    pub fn failure(&self, q: &Quality) -> Option<&'static str> {
        use std::cmp::Ordering::{Equal, Greater, Less};
        let below = |v: f32, min: Option<f32>| {
            min.is_some_and(|m| !matches!(v.partial_cmp(&m), Some(Greater | Equal)))
        };
        let above = |v: f32, max: Option<f32>| {
            max.is_some_and(|m| !matches!(v.partial_cmp(&m), Some(Less | Equal)))
        };
        if below(q.iod_px, self.min_iod_px) {
            Some("face too small")
        } else if above(q.yaw_deg.abs(), self.max_yaw_deg) {
            Some("head turned")
        } else if above(q.roll_deg.abs(), self.max_roll_deg) {
            Some("head tilted")
        } else if below(q.sharpness, self.min_sharpness) {
            Some("blurred")
        } else if below(q.brightness, self.min_brightness) {
            Some("too dark")
        } else if above(q.brightness, self.max_brightness) {
            Some("too bright")
        } else if above(q.clipped, self.max_clipped) {
            Some("clipped")
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::BBox;

    fn face(right: [f32; 2], left: [f32; 2], nose: [f32; 2]) -> Face {
        Face {
            bbox: BBox {
                x0: 0.0,
                y0: 0.0,
                x1: 100.0,
                y1: 100.0,
            },
            score: 0.9,
            keypoints: [right, left, nose, [50.0, 80.0], [0.0, 40.0], [100.0, 40.0]],
        }
    }

    fn checker(w: u32) -> RgbImage {
        RgbImage::from_fn(w, w, |x, y| {
            image::Rgb([if (x + y) % 2 == 0 { 40 } else { 200 }; 3])
        })
    }

    #[test]
    fn geometry_from_keypoints() {
        let crop = checker(32);
        let frontal = Quality::measure(&face([30.0, 40.0], [70.0, 40.0], [50.0, 60.0]), &crop);
        assert!((frontal.iod_px - 40.0).abs() < 1e-4);
        assert!(frontal.yaw_deg.abs() < 1e-3 && frontal.roll_deg.abs() < 1e-3);
        // The nose half an interocular distance to one side: atan(1) = 45 degrees.
        let turned = Quality::measure(&face([30.0, 40.0], [70.0, 40.0], [70.0, 60.0]), &crop);
        assert!((turned.yaw_deg - 45.0).abs() < 1e-3, "{}", turned.yaw_deg);
        // The eye line at 45 degrees.
        let tilted = Quality::measure(&face([30.0, 30.0], [60.0, 60.0], [40.0, 50.0]), &crop);
        assert!((tilted.roll_deg - 45.0).abs() < 1e-3);
    }

    #[test]
    fn sharpness_and_exposure_from_the_crop() {
        let f = face([30.0, 40.0], [70.0, 40.0], [50.0, 60.0]);
        let sharp = Quality::measure(&f, &checker(32));
        let flat = Quality::measure(&f, &RgbImage::from_pixel(32, 32, image::Rgb([120; 3])));
        assert!(sharp.sharpness > 1000.0 && flat.sharpness == 0.0);
        assert!((flat.brightness - 120.0).abs() < 0.01 && flat.clipped == 0.0);
        let black = Quality::measure(&f, &RgbImage::new(32, 32));
        assert_eq!(black.clipped, 1.0);
    }

    #[test]
    fn the_gate_names_the_first_failure() {
        let raw = RawQuality {
            min_iod_px: Some(20.0),
            max_yaw_deg: Some(30.0),
            min_sharpness: Some(10.0),
            ..Default::default()
        };
        let gate = QualitySettings::from_raw(raw).unwrap();
        let crop = checker(32);
        let good = Quality::measure(&face([30.0, 40.0], [70.0, 40.0], [50.0, 60.0]), &crop);
        assert_eq!(gate.failure(&good), None);
        let small = Quality::measure(&face([45.0, 40.0], [55.0, 40.0], [50.0, 50.0]), &crop);
        assert_eq!(gate.failure(&small), Some("face too small"));
        let turned = Quality::measure(&face([30.0, 40.0], [70.0, 40.0], [70.0, 60.0]), &crop);
        assert_eq!(gate.failure(&turned), Some("head turned"));
        let nan = Quality {
            sharpness: f32::NAN,
            ..good
        };
        assert_eq!(gate.failure(&nan), Some("blurred"));
        assert_eq!(QualitySettings::default().failure(&small), None);
        let bad = RawQuality {
            max_clipped: Some(2.0),
            ..Default::default()
        };
        assert_eq!(
            QualitySettings::from_raw(bad).unwrap_err().key,
            "quality.max_clipped"
        );
    }
}

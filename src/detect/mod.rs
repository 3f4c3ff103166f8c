//! Face detection with MediaPipe's BlazeFace (short or full range), run by tract.
//!
//! The photo is letterboxed into a square canvas (black padding), resized to the model's
//! input, and the SSD outputs are decoded against MediaPipe's anchors, filtered by score
//! and merged by weighted non-maximum suppression. Boxes and keypoints come back in the
//! photo's pixel coordinates.
//!
//! The short-range model was trained on faces that fill roughly a third to a half of the
//! frame. A tight crop (the face fills the frame) is often missed as is, so the detector
//! tries a list of canvas scales in turn — 1.0 means the square around the photo, 2.0 a
//! canvas twice that size with the photo in its centre — and keeps the first that finds a
//! face.

#[cfg(feature = "inference")]
mod model;

#[cfg(feature = "inference")]
pub use model::FaceDetector;

use serde::Deserialize;

use crate::settings::KeyError;

// Keypoint order as BlazeFace emits them (the subject's right eye is on the image's left):
// right eye, left eye, nose tip, mouth centre, right ear tragion, left ear tragion.
pub(crate) const RIGHT_EYE: usize = 0;
pub(crate) const LEFT_EYE: usize = 1;
pub(crate) const NOSE_TIP: usize = 2;
pub(crate) const MOUTH_CENTRE: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

impl BBox {
    pub fn width(&self) -> f32 {
        (self.x1 - self.x0).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y1 - self.y0).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    pub fn centre(&self) -> (f32, f32) {
        ((self.x0 + self.x1) / 2.0, (self.y0 + self.y1) / 2.0)
    }
    pub fn iou(&self, other: &BBox) -> f32 {
        let ix = (self.x1.min(other.x1) - self.x0.max(other.x0)).max(0.0);
        let iy = (self.y1.min(other.y1) - self.y0.max(other.y0)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Face {
    pub bbox: BBox,
    pub score: f32,
    /// `[x, y]` in photo pixels: right eye, left eye, nose tip, mouth centre, right ear
    /// tragion, left ear tragion (the subject's right eye is on the image's left).
    pub keypoints: [[f32; 2]; 6],
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSettings {
    pub score_threshold: f32,
    /// IoU above which overlapping candidates merge into one face (MediaPipe: 0.3).
    pub merge_iou: f32,
    /// Canvas scales tried in order until one finds a face (see module docs).
    pub canvas_scales: Vec<f32>,
}

/// The most `[detector] canvas_scales`: each scale is one more detector pass on every frame
/// without a face, so a long list starves the frame loop (and the watchdog restarts it).
/// Scale 8 already finds a face an eighth of the frame wide; four passes are room for a
/// finer ladder than the shipped boards' `[1.0, 2.0]`.
const MAX_CANVAS_SCALES: usize = 4;

/// `[detector]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    pub score_threshold: Option<f32>,
    pub merge_iou: Option<f32>,
    pub canvas_scales: Option<Vec<f32>>,
}

impl DetectorSettings {
    pub fn from_raw(raw: RawDetector) -> Result<Self, KeyError> {
        let defaults = Self::default();
        let score_threshold = raw.score_threshold.unwrap_or(defaults.score_threshold);
        if !(score_threshold > 0.0 && score_threshold < 1.0) {
            return Err(KeyError::new(
                "detector.score_threshold",
                format!("{score_threshold} is not in (0, 1)"),
            ));
        }
        let merge_iou = raw.merge_iou.unwrap_or(defaults.merge_iou);
        if !(merge_iou > 0.0 && merge_iou < 1.0) {
            return Err(KeyError::new(
                "detector.merge_iou",
                format!("{merge_iou} is not in (0, 1)"),
            ));
        }
        let canvas_scales = raw.canvas_scales.unwrap_or(defaults.canvas_scales);
        if !(1..=MAX_CANVAS_SCALES).contains(&canvas_scales.len()) {
            return Err(KeyError::new(
                "detector.canvas_scales",
                format!(
                    "{} scales: give 1 to {MAX_CANVAS_SCALES}",
                    canvas_scales.len()
                ),
            ));
        }
        if canvas_scales
            .iter()
            .any(|s| !(s.is_finite() && *s >= 1.0 && *s <= 8.0))
        {
            return Err(KeyError::new(
                "detector.canvas_scales",
                format!("{canvas_scales:?}: give scales between 1 and 8"),
            ));
        }
        Ok(Self {
            score_threshold,
            merge_iou,
            canvas_scales,
        })
    }
}

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            score_threshold: 0.5,
            merge_iou: 0.3,
            canvas_scales: vec![1.0, 2.0],
        }
    }
}

#[cfg(feature = "inference")]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[cfg(feature = "inference")]
fn face_is_finite(face: &Face) -> bool {
    let b = &face.bbox;
    [b.x0, b.y0, b.x1, b.y1, face.score]
        .iter()
        .all(|v| v.is_finite())
        && face.keypoints.iter().flatten().all(|v| v.is_finite())
        && b.x1 > b.x0
        && b.y1 > b.y0
}

#[cfg(feature = "inference")]
/// MediaPipe's WEIGHTED suppression: the best remaining candidate absorbs every candidate
/// that overlaps it by more than `merge_iou`; box and keypoints become the score-weighted
/// mean of the group, the score stays the best one's.
pub(crate) fn weighted_nms(mut candidates: Vec<Face>, merge_iou: f32) -> Vec<Face> {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut faces = Vec::new();
    while !candidates.is_empty() {
        let best = candidates[0].bbox;
        let (group, rest): (Vec<Face>, Vec<Face>) = candidates
            .into_iter()
            .partition(|c| c.bbox.iou(&best) > merge_iou || c.bbox == best);
        candidates = rest;
        let total: f32 = group.iter().map(|f| f.score).sum();
        let mut merged = group[0].clone();
        let mean = |get: &dyn Fn(&Face) -> f32| {
            group.iter().map(|f| get(f) * f.score).sum::<f32>() / total
        };
        merged.bbox = BBox {
            x0: mean(&|f| f.bbox.x0),
            y0: mean(&|f| f.bbox.y0),
            x1: mean(&|f| f.bbox.x1),
            y1: mean(&|f| f.bbox.y1),
        };
        for k in 0..6 {
            for a in 0..2 {
                merged.keypoints[k][a] = mean(&|f| f.keypoints[k][a]);
            }
        }
        faces.push(merged);
    }
    faces
}

#[cfg(feature = "inference")]
/// Drops a face whose box lies mostly (over half its area) inside a better-scoring face's
/// box: on tight crops BlazeFace sometimes fires a second, small box on the cheek or mouth
/// of the face it already found, and two real faces never nest like that.
pub(crate) fn drop_nested(faces: Vec<Face>) -> Vec<Face> {
    let mut kept: Vec<Face> = Vec::with_capacity(faces.len());
    for face in faces {
        let nested = kept.iter().any(|k| {
            let ix = (k.bbox.x1.min(face.bbox.x1) - k.bbox.x0.max(face.bbox.x0)).max(0.0);
            let iy = (k.bbox.y1.min(face.bbox.y1) - k.bbox.y0.max(face.bbox.y0)).max(0.0);
            ix * iy > 0.5 * face.bbox.area()
        });
        if !nested {
            kept.push(face);
        }
    }
    kept
}

/// The face a kiosk serves: the largest, discounted by its distance from the photo's
/// centre, so a big face at the edge loses to a slightly smaller one in front of the camera.
pub fn main_face(faces: &[Face], width: u32, height: u32) -> Option<usize> {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let half_diagonal = (cx * cx + cy * cy).sqrt().max(1.0);
    let weight = |f: &Face| {
        let (fx, fy) = f.bbox.centre();
        let off_centre = ((fx - cx).powi(2) + (fy - cy).powi(2)).sqrt() / half_diagonal;
        f.bbox.area() * (1.0 - 0.5 * off_centre.min(1.0))
    };
    (0..faces.len()).max_by(|&a, &b| weight(&faces[a]).total_cmp(&weight(&faces[b])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x0: f32, score: f32) -> Face {
        Face {
            bbox: BBox {
                x0,
                y0: 0.0,
                x1: x0 + 10.0,
                y1: 10.0,
            },
            score,
            keypoints: [[x0, 0.0]; 6],
        }
    }

    #[cfg(feature = "inference")]
    #[test]
    fn weighted_nms_merges_overlaps_by_score() {
        let faces = weighted_nms(vec![face(1.0, 0.25), face(0.0, 0.75), face(50.0, 0.6)], 0.3);
        assert_eq!(faces.len(), 2);
        assert!((faces[0].bbox.x0 - 0.25).abs() < 1e-6);
        assert_eq!(faces[0].score, 0.75);
        assert!((faces[0].keypoints[3][0] - 0.25).abs() < 1e-6);
        assert_eq!(faces[1].bbox.x0, 50.0);
    }

    #[cfg(feature = "inference")]
    #[test]
    fn a_box_inside_a_better_face_is_dropped() {
        let big = Face {
            bbox: BBox {
                x0: 0.0,
                y0: 0.0,
                x1: 100.0,
                y1: 100.0,
            },
            ..face(0.0, 0.9)
        };
        let inner = Face {
            bbox: BBox {
                x0: 40.0,
                y0: 60.0,
                x1: 60.0,
                y1: 80.0,
            },
            ..face(0.0, 0.55)
        };
        let apart = Face {
            bbox: BBox {
                x0: 150.0,
                y0: 0.0,
                x1: 200.0,
                y1: 50.0,
            },
            ..face(0.0, 0.5)
        };
        let kept = drop_nested(vec![big.clone(), inner, apart.clone()]);
        assert_eq!(kept, vec![big, apart]);
    }

    #[test]
    fn main_face_prefers_large_and_central() {
        let small_centre = Face {
            bbox: BBox {
                x0: 45.0,
                y0: 45.0,
                x1: 55.0,
                y1: 55.0,
            },
            ..face(0.0, 0.9)
        };
        let big_corner = Face {
            bbox: BBox {
                x0: 0.0,
                y0: 0.0,
                x1: 30.0,
                y1: 30.0,
            },
            ..face(0.0, 0.9)
        };
        assert_eq!(
            main_face(&[small_centre.clone(), big_corner.clone()], 100, 100),
            Some(1)
        );
        let big_centre = Face {
            bbox: BBox {
                x0: 40.0,
                y0: 40.0,
                x1: 68.0,
                y1: 68.0,
            },
            ..face(0.0, 0.9)
        };
        assert_eq!(main_face(&[big_corner, big_centre], 100, 100), Some(1));
        assert_eq!(main_face(&[], 100, 100), None);
    }

    #[test]
    fn canvas_scales_are_bounded_in_number_and_size() {
        let scales = |v: Vec<f32>| {
            DetectorSettings::from_raw(RawDetector {
                canvas_scales: Some(v),
                ..RawDetector::default()
            })
        };
        assert!(scales(vec![1.0, 1.5, 2.0, 4.0]).is_ok());
        // A million scales once meant a million detector passes on every empty frame; the
        // message names the count, not the list.
        let e = scales(vec![1.0; 1_000_000]).unwrap_err();
        assert_eq!(e.key, "detector.canvas_scales");
        assert_eq!(e.message, "1000000 scales: give 1 to 4");
        assert_eq!(scales(vec![]).unwrap_err().message, "0 scales: give 1 to 4");
        assert!(scales(vec![1.0, 9.0]).is_err());
    }
}

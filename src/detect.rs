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

use std::path::Path;

use image::RgbImage;

use crate::engine::{Dim, ModelError, OnnxFile, OnnxModel, Runtime};
use crate::warp::{warp_into, Affine, Border};

/// Keypoint order as BlazeFace emits them (the subject's right eye is on the image's left).
pub const KEYPOINT_NAMES: [&str; 6] = [
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_centre",
    "right_ear_tragion",
    "left_ear_tragion",
];
pub const RIGHT_EYE: usize = 0;
pub const LEFT_EYE: usize = 1;
pub const NOSE_TIP: usize = 2;
pub const MOUTH_CENTRE: usize = 3;

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
    /// `[x, y]` in photo pixels, in [`KEYPOINT_NAMES`] order.
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

impl Default for DetectorSettings {
    fn default() -> Self {
        Self {
            score_threshold: 0.5,
            merge_iou: 0.3,
            canvas_scales: vec![1.0, 2.0],
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    cx: f32,
    cy: f32,
}

/// MediaPipe's SSD anchors with `fixed_anchor_size` (width = height = 1): per stride, one
/// feature map; layers that share a stride stack their anchors on the same cells, two per
/// layer when an interpolated-scale anchor is configured.
fn ssd_anchors(input_size: usize, strides: &[usize], anchors_per_layer: usize) -> Vec<Anchor> {
    let mut anchors = Vec::new();
    let mut layer = 0;
    while layer < strides.len() {
        let stride = strides[layer];
        let mut repeats = 0;
        while layer < strides.len() && strides[layer] == stride {
            repeats += 1;
            layer += 1;
        }
        let cells = input_size.div_ceil(stride);
        for y in 0..cells {
            for x in 0..cells {
                for _ in 0..repeats * anchors_per_layer {
                    anchors.push(Anchor {
                        cx: (x as f32 + 0.5) / cells as f32,
                        cy: (y as f32 + 0.5) / cells as f32,
                    });
                }
            }
        }
    }
    anchors
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `[1, H, W, 3]`, as tflite2onnx keeps TFLite's layout.
    Nhwc,
    /// `[1, 3, H, W]`.
    Nchw,
}

pub struct FaceDetector {
    model: OnnxModel,
    size: usize,
    layout: Layout,
    anchors: Vec<Anchor>,
    /// Which of the two outputs holds the 16 box/keypoint regressors (the other: scores).
    regressor_output: usize,
    settings: DetectorSettings,
}

impl std::fmt::Debug for FaceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceDetector")
            .field("model", &self.model)
            .field("size", &self.size)
            .finish()
    }
}

const REGRESSORS: usize = 16;

impl FaceDetector {
    /// Loads the detector on tract, one thread.
    pub fn load(path: &Path, settings: DetectorSettings) -> Result<Self, ModelError> {
        Self::load_on(path, settings, &Runtime::single_thread())
    }

    /// Loads the detector on `runtime`'s engine and threads.
    pub fn load_on(
        path: &Path,
        settings: DetectorSettings,
        runtime: &Runtime,
    ) -> Result<Self, ModelError> {
        let file = OnnxFile::read(path)?;
        let iface = &file.interface;
        if iface.inputs.len() != 1 {
            return Err(file.contract_error(format!(
                "a face detector has one input, this graph has {}",
                iface.inputs.len()
            )));
        }
        let input = &iface.inputs[0];
        let dims: Vec<Option<usize>> = match &input.shape {
            Some(shape) if shape.len() == 4 => shape
                .iter()
                .map(|d| match d {
                    Dim::Fixed(v) => Some(*v),
                    Dim::Free => None,
                })
                .collect(),
            _ => return Err(file.contract_error(format!("input `{}` is not rank 4", input.name))),
        };
        let (layout, size) = match (dims[1], dims[2], dims[3]) {
            (Some(h), Some(w), Some(3)) if h == w => (Layout::Nhwc, h),
            (Some(3), Some(h), Some(w)) if h == w => (Layout::Nchw, h),
            _ => {
                return Err(file.contract_error(format!(
                    "input `{}` is not a fixed square RGB image (shape {:?})",
                    input.name, input.shape
                )))
            }
        };
        // Short range: 128 px, strides 8,16,16,16, two anchors per layer (896 in all).
        // Full range: 192 px, stride 4, one anchor per cell (2304 in all).
        let anchors = match size {
            128 => ssd_anchors(128, &[8, 16, 16, 16], 2),
            192 => ssd_anchors(192, &[4], 1),
            other => {
                return Err(file.contract_error(format!(
                    "input size {other} is neither BlazeFace short range (128) nor full range (192)"
                )))
            }
        };
        if iface.outputs.len() != 2 {
            return Err(file.contract_error(format!(
                "BlazeFace has two outputs (regressors, scores), this graph has {}",
                iface.outputs.len()
            )));
        }
        let last_dim = |i: usize| match iface.outputs[i].shape.as_ref().and_then(|s| s.last()) {
            Some(Dim::Fixed(v)) => Some(*v),
            _ => None,
        };
        let regressor_output = match (last_dim(0), last_dim(1)) {
            (Some(REGRESSORS), Some(1)) => 0,
            (Some(1), Some(REGRESSORS)) => 1,
            _ => {
                return Err(file.contract_error(
                    "outputs are not [1, anchors, 16] regressors and [1, anchors, 1] scores",
                ))
            }
        };
        let names: Vec<String> = iface.outputs.iter().map(|o| o.name.clone()).collect();
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let shape = match layout {
            Layout::Nhwc => [1, size, size, 3],
            Layout::Nchw => [1, 3, size, size],
        };
        let model = file.into_runnable(&shape, &name_refs, runtime)?;
        Ok(Self {
            model,
            size,
            layout,
            anchors,
            regressor_output,
            settings,
        })
    }

    pub fn path(&self) -> &Path {
        self.model.path()
    }

    /// The graph itself, for timing it alone.
    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// Input side of the network, in pixels.
    pub fn input_size(&self) -> usize {
        self.size
    }

    /// All faces in `photo`, best first.
    pub fn detect(&self, photo: &RgbImage) -> Result<Vec<Face>, ModelError> {
        let mut canvas = RgbImage::new(self.size as u32, self.size as u32);
        let mut input = vec![0.0f32; 3 * self.size * self.size];
        for &scale in &self.settings.canvas_scales {
            let faces = self.detect_at(photo, scale, &mut canvas, &mut input)?;
            if !faces.is_empty() {
                return Ok(faces);
            }
        }
        Ok(Vec::new())
    }

    fn detect_at(
        &self,
        photo: &RgbImage,
        canvas_scale: f32,
        canvas: &mut RgbImage,
        input: &mut [f32],
    ) -> Result<Vec<Face>, ModelError> {
        let (w, h) = (photo.width() as f32, photo.height() as f32);
        let side = w.max(h) * canvas_scale;
        let origin_x = (w - side) / 2.0;
        let origin_y = (h - side) / 2.0;
        let px = side / self.size as f32; // photo pixels per network pixel
        let map = Affine::scale_translate(px, origin_x, origin_y);
        warp_into(photo, &map, Border::Black, canvas);
        self.fill_input(canvas, input);
        let outputs = self.model.run(input)?;
        let regressors = &outputs[self.regressor_output];
        let scores = &outputs[1 - self.regressor_output];
        let n = self.anchors.len();
        if scores.len() != n || regressors.len() != n * REGRESSORS {
            return Err(ModelError::Run {
                path: self.model.path().to_path_buf(),
                reason: format!(
                    "expected {n} anchors, got {} scores and {} regressors",
                    scores.len(),
                    regressors.len()
                ),
            });
        }
        let size = self.size as f32;
        let to_photo = |nx: f32, ny: f32| [origin_x + nx * side, origin_y + ny * side];
        let mut candidates = Vec::new();
        for (i, anchor) in self.anchors.iter().enumerate() {
            let score = sigmoid(scores[i].clamp(-100.0, 100.0));
            if score.is_nan() || score < self.settings.score_threshold {
                continue;
            }
            let r = &regressors[i * REGRESSORS..(i + 1) * REGRESSORS];
            let cx = anchor.cx + r[0] / size;
            let cy = anchor.cy + r[1] / size;
            let bw = r[2] / size;
            let bh = r[3] / size;
            let [x0, y0] = to_photo(cx - bw / 2.0, cy - bh / 2.0);
            let [x1, y1] = to_photo(cx + bw / 2.0, cy + bh / 2.0);
            let mut keypoints = [[0.0; 2]; 6];
            for (k, kp) in keypoints.iter_mut().enumerate() {
                *kp = to_photo(
                    anchor.cx + r[4 + 2 * k] / size,
                    anchor.cy + r[5 + 2 * k] / size,
                );
            }
            let face = Face {
                bbox: BBox { x0, y0, x1, y1 },
                score,
                keypoints,
            };
            if face_is_finite(&face) {
                candidates.push(face);
            }
        }
        Ok(drop_nested(weighted_nms(
            candidates,
            self.settings.merge_iou,
        )))
    }

    /// MediaPipe's normalisation: pixel / 127.5 - 1, in the model's layout.
    fn fill_input(&self, canvas: &RgbImage, input: &mut [f32]) {
        let plane = self.size * self.size;
        for (i, p) in canvas.pixels().enumerate() {
            for c in 0..3 {
                let v = p[c] as f32 / 127.5 - 1.0;
                match self.layout {
                    Layout::Nhwc => input[i * 3 + c] = v,
                    Layout::Nchw => input[c * plane + i] = v,
                }
            }
        }
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn face_is_finite(face: &Face) -> bool {
    let b = &face.bbox;
    [b.x0, b.y0, b.x1, b.y1, face.score]
        .iter()
        .all(|v| v.is_finite())
        && face.keypoints.iter().flatten().all(|v| v.is_finite())
        && b.x1 > b.x0
        && b.y1 > b.y0
}

/// MediaPipe's WEIGHTED suppression: the best remaining candidate absorbs every candidate
/// that overlaps it by more than `merge_iou`; box and keypoints become the score-weighted
/// mean of the group, the score stays the best one's.
pub fn weighted_nms(mut candidates: Vec<Face>, merge_iou: f32) -> Vec<Face> {
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

/// Drops a face whose box lies mostly (over half its area) inside a better-scoring face's
/// box: on tight crops BlazeFace sometimes fires a second, small box on the cheek or mouth
/// of the face it already found, and two real faces never nest like that.
pub fn drop_nested(faces: Vec<Face>) -> Vec<Face> {
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

    #[test]
    fn anchor_counts_match_mediapipe() {
        assert_eq!(ssd_anchors(128, &[8, 16, 16, 16], 2).len(), 896);
        assert_eq!(ssd_anchors(192, &[4], 1).len(), 2304);
        let a = ssd_anchors(128, &[8, 16, 16, 16], 2);
        assert_eq!((a[0].cx, a[0].cy), (0.5 / 16.0, 0.5 / 16.0));
        assert_eq!((a[1].cx, a[2].cx), (0.5 / 16.0, 1.5 / 16.0));
        assert_eq!((a[512].cx, a[512].cy), (0.5 / 8.0, 0.5 / 8.0));
        assert_eq!(a[517].cx, 0.5 / 8.0);
        assert_eq!(a[518].cx, 1.5 / 8.0);
    }

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

    #[test]
    fn weighted_nms_merges_overlaps_by_score() {
        let faces = weighted_nms(vec![face(1.0, 0.25), face(0.0, 0.75), face(50.0, 0.6)], 0.3);
        assert_eq!(faces.len(), 2);
        assert!((faces[0].bbox.x0 - 0.25).abs() < 1e-6);
        assert_eq!(faces[0].score, 0.75);
        assert!((faces[0].keypoints[3][0] - 0.25).abs() < 1e-6);
        assert_eq!(faces[1].bbox.x0, 50.0);
    }

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
}

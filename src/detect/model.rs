//! The detector model itself: BlazeFace run by the inference engine, its SSD outputs
//! decoded against MediaPipe's anchors (see the parent module for the rest).

use std::path::Path;

use image::RgbImage;

use super::{drop_nested, face_is_finite, sigmoid, weighted_nms, BBox, DetectorSettings, Face};
use crate::engine::{Dim, ModelError, OnnxFile, OnnxModel, Runtime};
use crate::warp::{warp_into, Affine, Border};

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
}

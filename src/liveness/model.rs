//! The liveness models, run by the board's engine: the anti-spoof and liveness classifiers
//! and the face mesh (for the eye aspect ratio). Contracts: `models/README.md`.

use std::path::Path;

use image::RgbImage;

use super::crop::{crop_to_photo, face_square, resize_bilinear, square_crop, to_nchw};
use super::{FrameEvidence, LivenessConfig, LivenessMode, MESH_TRACKED};
use crate::detect::Face;
use crate::engine::{Dim, ModelError, OnnxFile, OnnxModel, Runtime, ONNX_FLOAT};

const INPUT: &str = "image";
/// The face mesh's input side, which is also the crop both classifiers are resized from.
pub const MESH_SIZE: usize = 192;
const ANTISPOOF_SIZE: usize = 128;
const LIVENESS_SIZE: usize = 32;
const MESH_POINTS: usize = 468;
/// Below this face score the mesh did not find a face in the crop: no eye ratio.
const MESH_MIN_SCORE: f32 = 0.5;

/// MediaPipe face-mesh indices of the six-point eye aspect ratio, per eye: the corners
/// (p1, p4) and two upper (p2, p3) and two lower (p6, p5) lid points.
const RIGHT_EYE: [usize; 6] = [33, 160, 158, 133, 153, 144];
const LEFT_EYE: [usize; 6] = [362, 385, 387, 263, 373, 380];

/// One classifier or the mesh, loaded and checked.
struct Graph {
    model: OnnxModel,
    size: usize,
}

impl Graph {
    /// Loads `path`, holding it to input `image` `[1, 3, size, size]` and `outputs`
    /// (name, values per image).
    fn load(
        path: &Path,
        what: &str,
        size: usize,
        outputs: &[(&str, usize)],
        runtime: &Runtime,
    ) -> Result<Self, ModelError> {
        let file = OnnxFile::read(path)?;
        let iface = &file.interface;
        let input = match iface.inputs.as_slice() {
            [only] => only,
            other => {
                return Err(file.contract_error(format!(
                    "{what} has exactly one input `{INPUT}`, this graph has {}",
                    other.len()
                )))
            }
        };
        let shape_ok = matches!(
            input.shape.as_deref(),
            Some([_, Dim::Fixed(3), Dim::Fixed(h), Dim::Fixed(w)]) if *h == size && *w == size
        );
        if input.name != INPUT || input.elem_type != ONNX_FLOAT || !shape_ok {
            return Err(file.contract_error(format!(
                "{what} takes float32 `{INPUT}` [1, 3, {size}, {size}]; this graph's input is \
                 `{}` {:?}",
                input.name, input.shape
            )));
        }
        for (name, _) in outputs {
            if !iface.outputs.iter().any(|o| o.name == *name) {
                return Err(file.contract_error(format!("{what} has no output named `{name}`")));
            }
        }
        let names: Vec<&str> = outputs.iter().map(|(n, _)| *n).collect();
        let model = file.into_runnable(&[1, 3, size, size], &names, runtime)?;
        Ok(Self { model, size })
    }

    fn run(&self, nchw: &[f32], expect: &[(&str, usize)]) -> Result<Vec<Vec<f32>>, ModelError> {
        let outputs = self.model.run(nchw)?;
        for ((name, len), got) in expect.iter().zip(&outputs) {
            if got.len() != *len || got.iter().any(|v| !v.is_finite()) {
                return Err(ModelError::Run {
                    path: self.model.path().to_path_buf(),
                    reason: format!(
                        "output `{name}` has {} values (or a non-finite one); the contract is {len}",
                        got.len()
                    ),
                });
            }
        }
        Ok(outputs)
    }
}

const REAL: [(&str, usize); 1] = [("real", 1)];
const LIVE: [(&str, usize); 1] = [("live", 2)];
const MESH: [(&str, usize); 2] = [("landmarks", MESH_POINTS * 3), ("face_score", 1)];

/// The models a board's `[liveness] mode` needs, with their reused buffers.
pub struct LivenessModels {
    antispoof: Graph,
    liveness: Graph,
    mesh: Option<Graph>,
    buffers: std::cell::RefCell<Buffers>,
}

#[derive(Default)]
struct Buffers {
    crop: Vec<f32>,
    resized: Vec<f32>,
    nchw: Vec<f32>,
}

impl std::fmt::Debug for LivenessModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LivenessModels")
            .field("antispoof", &self.antispoof.model.path())
            .field("liveness", &self.liveness.model.path())
            .field("mesh", &self.mesh.as_ref().map(|m| m.model.path()))
            .finish()
    }
}

impl LivenessModels {
    /// Loads what `config`'s mode needs; `None` when it is off. A file missing or not
    /// meeting its contract is an error naming it: the daemon then does not start.
    pub fn load_on(config: &LivenessConfig, runtime: &Runtime) -> Result<Option<Self>, ModelError> {
        let mode = config.settings.mode;
        if mode == LivenessMode::Off {
            return Ok(None);
        }
        let path = |p: &Option<std::path::PathBuf>, key: &str| {
            p.clone().ok_or_else(|| ModelError::Prepare {
                path: key.into(),
                reason: format!("`[liveness] mode = \"{}\"` needs `{key}`", mode.name()),
            })
        };
        let antispoof = Graph::load(
            &path(&config.antispoof, "liveness.antispoof")?,
            "the anti-spoof model",
            ANTISPOOF_SIZE,
            &REAL,
            runtime,
        )?;
        let liveness = Graph::load(
            &path(&config.liveness, "liveness.liveness")?,
            "the liveness model",
            LIVENESS_SIZE,
            &LIVE,
            runtime,
        )?;
        let mesh = match mode.motion() {
            true => Some(Graph::load(
                &path(&config.facemesh, "liveness.facemesh")?,
                "the face mesh",
                MESH_SIZE,
                &MESH,
                runtime,
            )?),
            false => None,
        };
        Ok(Some(Self {
            antispoof,
            liveness,
            mesh,
            buffers: Default::default(),
        }))
    }

    /// The evidence of `face` in `photo`.
    pub fn evidence(&self, photo: &RgbImage, face: &Face) -> Result<FrameEvidence, ModelError> {
        let mut guard = self.buffers.borrow_mut();
        let b = &mut *guard;
        let square = face_square(&face.bbox);
        square_crop(photo, square, MESH_SIZE, &mut b.crop);
        let mut classify = |graph: &Graph, expect: &[(&str, usize)]| {
            resize_bilinear(&b.crop, MESH_SIZE, graph.size, &mut b.resized);
            b.nchw.resize(3 * graph.size * graph.size, 0.0);
            to_nchw(&b.resized, graph.size, &mut b.nchw);
            graph.run(&b.nchw, expect)
        };
        let real = classify(&self.antispoof, &REAL)?[0][0];
        let live = classify(&self.liveness, &LIVE)?[0][0];
        let (ear, landmarks) = match mesh_run(self.mesh.as_ref(), b)? {
            None => (None, None),
            Some(points) => {
                let landmarks = MESH_TRACKED.map(|i| {
                    let uv = [points[3 * i], points[3 * i + 1]];
                    crop_to_photo(square, photo.width(), photo.height(), MESH_SIZE, uv)
                });
                (eye_aspect_ratio(&points), Some(landmarks))
            }
        };
        Ok(FrameEvidence {
            keypoints: face.keypoints,
            real: Some(real.clamp(0.0, 1.0)),
            live: Some(live.clamp(0.0, 1.0)),
            ear,
            landmarks,
            tracked: None,
        })
    }
}

impl LivenessModels {
    /// The face mesh's [`MESH_TRACKED`] landmarks of `face` in 3-D: x, y in photo pixels,
    /// z the mesh's depth in the same scale; `None` without the mesh or when it finds no
    /// face. For the evaluation's head template.
    pub fn mesh_points(
        &self,
        photo: &RgbImage,
        face: &Face,
    ) -> Result<Option<[[f32; 3]; MESH_TRACKED.len()]>, ModelError> {
        let mut guard = self.buffers.borrow_mut();
        let b = &mut *guard;
        let square = face_square(&face.bbox);
        square_crop(photo, square, MESH_SIZE, &mut b.crop);
        let Some(points) = mesh_run(self.mesh.as_ref(), b)? else {
            return Ok(None);
        };
        // Crop pixels to photo pixels: the same scale for z as for x.
        let per_px = (square[2] - square[0]) / (MESH_SIZE - 1) as f32;
        Ok(Some(MESH_TRACKED.map(|i| {
            let p = &points[3 * i..3 * i + 3];
            let [x, y] = crop_to_photo(
                square,
                photo.width(),
                photo.height(),
                MESH_SIZE,
                [p[0], p[1]],
            );
            [x, y, p[2] * per_px]
        })))
    }
}

/// The mesh on the crop in `b.crop`: its landmarks (`[468 x (x, y, z)]`,
/// crop pixels), `None` without the mesh or when it finds no face there.
fn mesh_run(mesh: Option<&Graph>, b: &mut Buffers) -> Result<Option<Vec<f32>>, ModelError> {
    let Some(mesh) = mesh else {
        return Ok(None);
    };
    b.nchw.resize(3 * MESH_SIZE * MESH_SIZE, 0.0);
    to_nchw(&b.crop, MESH_SIZE, &mut b.nchw);
    let mut out = mesh.run(&b.nchw, &MESH)?;
    Ok((out[1][0] >= MESH_MIN_SCORE).then(|| std::mem::take(&mut out[0])))
}

/// Both eyes' mean six-point eye aspect ratio of a mesh (`[468 x (x, y, z)]`).
pub(crate) fn eye_aspect_ratio(mesh: &[f32]) -> Option<f32> {
    let point = |i: usize| [mesh[3 * i], mesh[3 * i + 1]];
    let dist = |a: [f32; 2], b: [f32; 2]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let ear = |eye: [usize; 6]| {
        let p = eye.map(point);
        let width = dist(p[0], p[3]);
        (width > 1e-3).then(|| (dist(p[1], p[5]) + dist(p[2], p[4])) / (2.0 * width))
    };
    if mesh.len() < MESH_POINTS * 3 {
        return None;
    }
    let e = (ear(RIGHT_EYE)? + ear(LEFT_EYE)?) / 2.0;
    e.is_finite().then_some(e)
}

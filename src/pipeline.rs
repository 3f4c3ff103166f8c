//! One frame through every stage: detect -> align -> quality, estimate, liveness evidence.
//!
//! The pipeline finds facts ([`FrameFaces`]); it decides nothing. A photo's gate is
//! decided by the device's own [`Session`](crate::session::Session), fed the photo as a
//! window of one frame ([`StillWindow`]), so `agegate estimate`, `eval` and `calibrate`
//! measure the gate the daemon runs.

use image::RgbImage;

use crate::align::aligned_crop_into;
use crate::config::Board;
use crate::daemon::FaceEstimator;
use crate::decide::Policy;
use crate::detect::{main_face, BBox, Face, FaceDetector};
use crate::digest::ModelFile;
use crate::digest::Sha256;
use crate::domain::{Decision, ReferReason};
use crate::engine::{ModelError, Runtime};
use crate::estimate::{AgeEstimate, AgeModel};
use crate::liveness::{FrameEvidence, LivenessModels, PointTracker};
use crate::quality::Quality;
use crate::session::{FrameFaces, SessionSettings, StillWindow, MAX_OTHER_FACES};

#[derive(Debug, Clone, serde::Serialize)]
pub struct FaceResult {
    #[serde(flatten)]
    pub face: Face,
    #[serde(flatten)]
    pub estimate: AgeEstimate,
    pub quality: Quality,
    /// The passive liveness scores, when the board's `[liveness]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<f32>,
    pub decision: Decision,
    /// Why a REFER is a REFER (absent for ALLOW and DENY).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<ReferReason>,
    /// True for the face the gate decides on (largest and most central).
    pub main: bool,
}

pub struct Pipeline {
    pub detector: FaceDetector,
    pub age_model: AgeModel,
    pub policy: Policy,
    /// The board's decision window: its quality gate (`[quality]`), other-face rule and
    /// liveness thresholds (`[liveness]`), which a photo's window follows too.
    pub session: SessionSettings,
    /// Photos above this many pixels are refused before decoding (`[capture] max_pixels`).
    pub max_pixels: u64,
    /// The liveness models, when `[liveness]` is on.
    pub liveness: Option<LivenessModels>,
    crop: std::cell::RefCell<RgbImage>,
    /// The main face's image points, followed from frame to frame (`liveness::track`).
    tracker: std::cell::RefCell<PointTracker>,
}

impl Pipeline {
    pub fn new(detector: FaceDetector, age_model: AgeModel, policy: Policy) -> Self {
        let size = age_model.crop_size();
        Self {
            detector,
            age_model,
            policy,
            session: SessionSettings::default(),
            max_pixels: crate::jpeg::DEFAULT_MAX_PIXELS,
            liveness: None,
            crop: std::cell::RefCell::new(RgbImage::new(size, size)),
            tracker: std::cell::RefCell::default(),
        }
    }

    /// Loads both models named by a validated board, on the engine and threads of its
    /// `[runtime]`.
    pub fn from_board(board: &Board) -> Result<Self, ModelError> {
        Self::from_board_on(board, &Runtime::start(board.runtime)?)
    }

    /// Loads both models named by a board on `runtime` instead of the board's own.
    /// A file that does not hash to the board's pin is refused before it is parsed.
    pub fn from_board_on(board: &Board, runtime: &Runtime) -> Result<Self, ModelError> {
        for file in board.model_files() {
            verify_pin(&file)?;
        }
        let settings = runtime.settings();
        tracing::info!(
            engine = settings.engine.name(),
            threads = settings.threads,
            "inference runtime"
        );
        let detector =
            FaceDetector::load_on(&board.detector_model, board.detector.clone(), runtime)?;
        let age_model = AgeModel::load_on(&board.age_model, runtime)?;
        if board.policy.needs_p_over() && !age_model.has_p_over() {
            // A p_over rule on a model without the output could never ALLOW: refuse the
            // pair at start, naming both.
            return Err(ModelError::Contract {
                path: board.age_model.clone(),
                reason: format!(
                    "board {} has `[policy] rule = \"p_over\"` and this model has no `p_over` output",
                    board.path.display()
                ),
            });
        }
        let mut pipeline = Self::new(detector, age_model, board.policy);
        pipeline.max_pixels = board.max_pixels();
        pipeline.session = board.daemon.session;
        pipeline.liveness = LivenessModels::load_on(&board.liveness, runtime)?;
        Ok(pipeline)
    }

    /// Every face in the photo, the main face first, each decided as the device would
    /// decide a window of this one frame with that face followed and the others beside it.
    pub fn process(&self, photo: &RgbImage) -> Result<Vec<FaceResult>, ModelError> {
        let mut faces = self.detector.detect(photo)?;
        if let Some(main) = main_face(&faces, photo.width(), photo.height()) {
            faces.swap(0, main);
        }
        let mut results = Vec::with_capacity(faces.len());
        for (i, face) in faces.iter().enumerate() {
            let (estimate, quality) = self.estimate_face(photo, face)?;
            let evidence = self.evidence(photo, face)?;
            let others = others_than(&faces, i);
            let frame = FrameFaces {
                main: Some((face.bbox, estimate.clone())),
                others,
                quality: Some(quality),
                liveness: evidence,
            };
            let (decision, reason) = self.decide_still(&frame);
            results.push(FaceResult {
                face: face.clone(),
                estimate,
                quality,
                real: evidence.and_then(|e| e.real),
                live: evidence.and_then(|e| e.live),
                decision,
                reason,
                main: i == 0,
            });
        }
        Ok(results)
    }

    /// One frame's faces decided as a window of that frame alone.
    fn decide_still(&self, frame: &FrameFaces) -> (Decision, Option<ReferReason>) {
        match StillWindow::new(self.session, self.policy, 1) {
            Ok(mut window) => {
                let verdict = window.observe(frame).unwrap_or_else(|| window.finish());
                (verdict.decision, verdict.reason)
            }
            // The board validated these settings; should they still be refused, nothing
            // is decided on them.
            Err(e) => {
                tracing::error!("session settings: {e}");
                (Decision::Refer, Some(ReferReason::Fault))
            }
        }
    }

    /// The main face of a frame and what the gate needs of it, without following its
    /// points from an earlier frame (a photo, or a view of one); also the number of faces
    /// found.
    pub fn still_faces(&self, frame: &RgbImage) -> Result<(FrameFaces, usize), ModelError> {
        let faces = self.detector.detect(frame)?;
        let Some(i) = main_face(&faces, frame.width(), frame.height()) else {
            return Ok((FrameFaces::default(), faces.len()));
        };
        let others = others_than(&faces, i);
        let (estimate, quality) = self.estimate_face(frame, &faces[i])?;
        let liveness = self.evidence(frame, &faces[i])?;
        let found = FrameFaces {
            main: Some((faces[i].bbox, estimate)),
            others,
            quality: Some(quality),
            liveness,
        };
        Ok((found, faces.len()))
    }

    /// The liveness evidence of one face, when `[liveness]` is on.
    pub fn evidence(
        &self,
        photo: &RgbImage,
        face: &Face,
    ) -> Result<Option<FrameEvidence>, ModelError> {
        self.liveness
            .as_ref()
            .map(|models| models.evidence(photo, face))
            .transpose()
    }

    /// The estimate of one face, and its quality.
    pub fn estimate_face(
        &self,
        photo: &RgbImage,
        face: &Face,
    ) -> Result<(AgeEstimate, Quality), ModelError> {
        let mut crop = self.crop.borrow_mut();
        aligned_crop_into(photo, face, &mut crop);
        let quality = Quality::measure(face, &crop);
        Ok((self.age_model.estimate(&crop)?, quality))
    }
}

impl FaceEstimator for Pipeline {
    /// [`Pipeline::still_faces`], with the main face's points followed from the last
    /// frame (the liveness motion cues need them).
    fn faces(&self, frame: &RgbImage) -> Result<FrameFaces, ModelError> {
        let (mut found, _) = self.still_faces(frame)?;
        match found.liveness.as_mut() {
            Some(e) => e.follow(&mut self.tracker.borrow_mut(), frame),
            // Nobody in view: the next face is followed afresh.
            None if found.main.is_none() => self.tracker.borrow_mut().reset(),
            None => {}
        }
        Ok(found)
    }
}

/// The boxes of every face but the `i`th (at most [`MAX_OTHER_FACES`]).
fn others_than(faces: &[Face], i: usize) -> heapless::Vec<BBox, MAX_OTHER_FACES> {
    faces
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, f)| f.bbox)
        .take(MAX_OTHER_FACES)
        .collect()
}

/// Whether `file` hashes to the SHA-256 its board pins (no pin: nothing to check).
pub fn verify_pin(file: &ModelFile) -> Result<(), ModelError> {
    let Some(expected) = file.pinned else {
        return Ok(());
    };
    let found = Sha256::of_file(&file.path).map_err(|cause| ModelError::Read {
        path: file.path.clone(),
        cause,
    })?;
    if found == expected {
        Ok(())
    } else {
        Err(ModelError::Pinned {
            path: file.path.clone(),
            key: file.key,
            expected,
            found,
        })
    }
}

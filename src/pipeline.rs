//! One photo through every stage: detect -> align -> quality, estimate -> decide.

use image::RgbImage;

use crate::align::aligned_crop_into;
use crate::config::Board;
use crate::daemon::{FaceEstimator, FrameFaces, MAX_OTHER_FACES};
use crate::decide::Policy;
use crate::detect::{main_face, Face, FaceDetector};
use crate::digest::ModelFile;
use crate::digest::Sha256;
use crate::domain::{Decision, ReferReason};
use crate::engine::{ModelError, Runtime};
use crate::estimate::{AgeEstimate, AgeModel};
use crate::liveness::{
    FrameEvidence, LivenessModels, LivenessSettings, Measures, PointTracker, Verdict,
};
use crate::quality::{Quality, QualitySettings};

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
    /// A face below this gate is decided REFER, reason `low_quality` (`[quality]`).
    pub quality: QualitySettings,
    /// Photos above this many pixels are refused before decoding (`[capture] max_pixels`).
    pub max_pixels: u64,
    /// The liveness models, when `[liveness]` is on.
    pub liveness: Option<LivenessModels>,
    /// `[liveness]`'s thresholds (a photo is judged on the passive scores only).
    pub liveness_settings: LivenessSettings,
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
            quality: QualitySettings::default(),
            max_pixels: crate::jpeg::DEFAULT_MAX_PIXELS,
            liveness: None,
            liveness_settings: LivenessSettings::default(),
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
        pipeline.quality = board.daemon.session.quality;
        pipeline.liveness = LivenessModels::load_on(&board.liveness, runtime)?;
        pipeline.liveness_settings = board.liveness.settings;
        Ok(pipeline)
    }

    /// Every face in the photo, the main face first.
    pub fn process(&self, photo: &RgbImage) -> Result<Vec<FaceResult>, ModelError> {
        let mut faces = self.detector.detect(photo)?;
        if let Some(main) = main_face(&faces, photo.width(), photo.height()) {
            faces.swap(0, main);
        }
        let mut results = Vec::with_capacity(faces.len());
        for (i, face) in faces.into_iter().enumerate() {
            let (estimate, quality) = self.estimate_face(photo, &face)?;
            let evidence = self.evidence(photo, &face)?;
            let (decision, reason) = match self.quality.failure(&quality) {
                Some(_) => (Decision::Refer, Some(ReferReason::LowQuality)),
                None if evidence.is_some_and(|e| self.passive_spoof(&e)) => {
                    (Decision::Refer, Some(ReferReason::Liveness))
                }
                None => self
                    .policy
                    .decide_why(estimate.age, estimate.sigma, estimate.p_over),
            };
            results.push(FaceResult {
                face,
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

    /// Whether one photo's passive scores make it a spoof (a photo has no motion to judge).
    fn passive_spoof(&self, evidence: &FrameEvidence) -> bool {
        let settings = LivenessSettings {
            mode: crate::liveness::LivenessMode::Passive,
            ..self.liveness_settings
        };
        matches!(
            settings.judge(&Measures::of_frame(evidence)),
            Verdict::Spoof(_)
        )
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
    fn faces(&self, frame: &RgbImage) -> Result<FrameFaces, ModelError> {
        let faces = self.detector.detect(frame)?;
        let Some(i) = main_face(&faces, frame.width(), frame.height()) else {
            // Nobody in view: the next face is followed afresh.
            self.tracker.borrow_mut().reset();
            return Ok(FrameFaces::default());
        };
        let others = faces
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, f)| f.bbox)
            .take(MAX_OTHER_FACES)
            .collect();
        let (estimate, quality) = self.estimate_face(frame, &faces[i])?;
        let mut liveness = self.evidence(frame, &faces[i])?;
        if let Some(e) = liveness.as_mut() {
            e.follow(&mut self.tracker.borrow_mut(), frame);
        }
        Ok(FrameFaces {
            main: Some((faces[i].bbox, estimate)),
            others,
            quality: Some(quality),
            liveness,
        })
    }
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

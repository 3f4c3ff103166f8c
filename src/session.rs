//! The decision window: one REQUEST from the host, many camera frames, one decision.
//!
//! A single frame's estimate is noisy (blur, a turned head, a blink), so the session
//! collects estimates of one person over several frames and decides on their aggregate.
//! Time is always passed in as a millisecond timestamp from a monotonic clock — the
//! session never reads a clock — so tests are deterministic and the daemon decides what
//! "now" means. Timestamps only need a common origin; a clock that steps backwards makes
//! elapsed times read as zero (saturating), which can only delay a decision.
//!
//! **Following one person.** The caller passes the main face of each frame
//! ([`crate::detect::main_face`]). A face whose box overlaps the followed box by less
//! than `iou_threshold`, or that appears after no face for more than `lost_face_ms`, is
//! taken to be someone else and restarts the window: a decision must rest on one
//! person's frames only, or an adult stepping in front of the camera for two frames could
//! lift a minor's estimate. The overall `timeout_ms` is *not* restarted, so people taking
//! turns in front of the camera cannot hold a REQUEST open forever.
//!
//! **Aggregation.** The window's age is the *median* of its estimates: one bad frame
//! (motion blur, a half-turned face) moves a median little and a mean a lot. Its sigma
//! is `sqrt(median(sigma_i)^2 + (1.4826 * MAD(age_i))^2)`: the model's typical
//! per-frame uncertainty, widened by how much the estimates disagree (1.4826 * MAD is a
//! robust standard deviation). It is deliberately *not* divided by `sqrt(n)`: frames of
//! one face a few milliseconds apart are strongly correlated, so averaging them does not
//! remove the model's error for that face, and claiming it does would make the gate
//! overconfident exactly at the borderline. A jittery face therefore gets a wider sigma
//! and tends to REFER, which is the safe direction.
//!
//! **Other faces.** Only the main face is estimated, so a child standing beside an adult
//! could pass on the adult's face. With `other_faces = "refer"` a window in which any
//! other face at least `other_face_min_px` wide (in source pixels: nearer than a passer-by)
//! was seen decides REFER with reason `other_faces`, at once.
//!
//! **Faults.** A non-finite or negative estimate (which `estimate` already refuses, so
//! seeing one here means a bug upstream) poisons the session: it decides REFER, never
//! anything else. The gate never opens on something it cannot read.

use heapless::Deque;

use serde::Deserialize;

use crate::decide::Policy;
use crate::detect::BBox;
use crate::domain::{Decision, ReferReason};
use crate::estimate::AgeEstimate;
use crate::liveness::{Cue, FrameEvidence, LivenessSettings, LivenessWindow, Verdict};
use crate::quality::{Quality, QualitySettings};
use crate::settings::KeyError;

/// Largest window the fixed-size sample buffer holds.
pub(crate) const MAX_WINDOW: usize = 64;

/// How a decision window behaves. Validate with [`SessionSettings::validate`] (done by
/// [`Session::new`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionSettings {
    /// What starts a decision window.
    pub trigger: Trigger,
    /// Estimates of one person needed before deciding.
    pub min_frames: usize,
    /// Estimates kept; older ones are dropped (at most 64).
    pub max_frames: usize,
    /// From the start of the session to a REFER if no decision was reached.
    pub timeout_ms: u64,
    /// IoU with the followed face below which a face is someone else, in (0, 1].
    pub iou_threshold: f32,
    /// No face for longer than this and the next face is someone else.
    pub lost_face_ms: u64,
    /// What another face in view does to the window.
    pub other_faces: OtherFaces,
    /// Other faces narrower than this (box width, source pixels) do not count.
    pub other_face_min_px: f32,
    /// A frame whose main face fails this gate does not count (`[quality]`).
    pub quality: QualitySettings,
    /// Presentation-attack checks over the window (`[liveness]`; off by default).
    pub liveness: LivenessSettings,
}

/// `[session] trigger`: what starts a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A REQUEST from the host (kiosk, vending machine).
    Request,
    /// A face in view (a door without a host); DECISIONs go out unsolicited.
    Face,
}

/// `[session]` as written (defaults in `SessionSettings::default`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSession {
    pub trigger: Option<Trigger>,
    pub min_frames: Option<usize>,
    pub max_frames: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub iou_threshold: Option<f32>,
    pub lost_face_ms: Option<u64>,
    /// "refer" (default) or "ignore": another face in view.
    pub other_faces: Option<OtherFaces>,
    pub other_face_min_px: Option<f32>,
}

/// `[session] other_faces`: whether another face in view stops the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtherFaces {
    /// Only the main face counts (a door that lets one person through at a time anyway).
    Ignore,
    /// Another face decides REFER: a minor beside an adult is not let through on the
    /// adult's face (vending, kiosks).
    Refer,
}

impl Default for SessionSettings {
    fn default() -> Self {
        // At ~15 fps: a third of a second of frames, a 4 s answer at the latest, and a
        // half-second gap is long enough for someone to step out and another in.
        Self {
            trigger: Trigger::Request,
            min_frames: 5,
            max_frames: 15,
            timeout_ms: 4_000,
            iou_threshold: 0.3,
            lost_face_ms: 500,
            other_faces: OtherFaces::Refer,
            other_face_min_px: 48.0,
            quality: QualitySettings::default(),
            liveness: LivenessSettings::default(),
        }
    }
}

/// `session.timeout_ms`: a tenth of a second sees at least a frame at 15 fps; an hour is
/// the longest a host could want to wait on one person (a waiting session holds nothing
/// open: the gate stays closed), and keeps the time arithmetic far from overflow.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=3_600_000;
/// `session.lost_face_ms`: a face gone for a minute is someone else's when it comes back.
const LOST_FACE_MS: std::ops::RangeInclusive<u64> = 1..=60_000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionSettingsError {
    #[error("session.min_frames ({0}) must be at least 1")]
    MinFrames(usize),
    #[error(
        "session.max_frames ({max}) must be at least min_frames ({min}) and at most {MAX_WINDOW}"
    )]
    MaxFrames { min: usize, max: usize },
    #[error("session.timeout_ms ({0}) must be from {lo} to {hi}", lo = TIMEOUT_MS.start(), hi = TIMEOUT_MS.end())]
    TimeoutMs(u64),
    #[error("session.iou_threshold ({0}) must be a number in (0, 1]")]
    IouThreshold(f32),
    #[error("session.lost_face_ms ({0}) must be from {lo} to {hi}", lo = LOST_FACE_MS.start(), hi = LOST_FACE_MS.end())]
    LostFaceMs(u64),
    #[error("session.other_face_min_px ({0}) must be a number from 1 to 10000")]
    OtherFaceMinPx(f32),
}

impl SessionSettings {
    pub fn from_raw(raw: RawSession) -> Result<Self, KeyError> {
        let d = Self::default();
        let settings = Self {
            trigger: raw.trigger.unwrap_or(d.trigger),
            min_frames: raw.min_frames.unwrap_or(d.min_frames),
            max_frames: raw.max_frames.unwrap_or(d.max_frames),
            timeout_ms: raw.timeout_ms.unwrap_or(d.timeout_ms),
            iou_threshold: raw.iou_threshold.unwrap_or(d.iou_threshold),
            lost_face_ms: raw.lost_face_ms.unwrap_or(d.lost_face_ms),
            other_faces: raw.other_faces.unwrap_or(d.other_faces),
            other_face_min_px: raw.other_face_min_px.unwrap_or(d.other_face_min_px),
            quality: d.quality,
            liveness: d.liveness,
        };
        settings
            .validate()
            .map_err(|e| KeyError::new(Self::key(&e), e.to_string()))?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SessionSettingsError> {
        if self.min_frames == 0 {
            return Err(SessionSettingsError::MinFrames(self.min_frames));
        }
        if self.max_frames < self.min_frames || self.max_frames > MAX_WINDOW {
            return Err(SessionSettingsError::MaxFrames {
                min: self.min_frames,
                max: self.max_frames,
            });
        }
        if !TIMEOUT_MS.contains(&self.timeout_ms) {
            return Err(SessionSettingsError::TimeoutMs(self.timeout_ms));
        }
        if !(self.iou_threshold > 0.0 && self.iou_threshold <= 1.0) {
            return Err(SessionSettingsError::IouThreshold(self.iou_threshold));
        }
        if !LOST_FACE_MS.contains(&self.lost_face_ms) {
            return Err(SessionSettingsError::LostFaceMs(self.lost_face_ms));
        }
        if !(1.0..=10_000.0).contains(&self.other_face_min_px) {
            return Err(SessionSettingsError::OtherFaceMinPx(self.other_face_min_px));
        }
        Ok(())
    }

    /// The key this error names, as the board file spells it.
    pub fn key(error: &SessionSettingsError) -> &'static str {
        match error {
            SessionSettingsError::MinFrames(_) => "session.min_frames",
            SessionSettingsError::MaxFrames { .. } => "session.max_frames",
            SessionSettingsError::TimeoutMs(_) => "session.timeout_ms",
            SessionSettingsError::IouThreshold(_) => "session.iou_threshold",
            SessionSettingsError::LostFaceMs(_) => "session.lost_face_ms",
            SessionSettingsError::OtherFaceMinPx(_) => "session.other_face_min_px",
        }
    }
}

/// The aggregate of the current window (see the module docs for how it is formed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aggregate {
    /// Median age, years.
    pub age: f32,
    /// Combined sigma, years.
    pub sigma: f32,
    /// Estimates it rests on.
    pub frames: usize,
    /// Per threshold, the median of P(age >= T) (when every estimate has it).
    pub p_over: Option<[f32; 5]>,
}

impl Aggregate {
    /// The aggregate of a window's estimates (see the module docs); `None` when empty.
    pub fn of(estimates: &[AgeEstimate]) -> Option<Self> {
        let samples: Vec<Sample> = estimates.iter().map(Sample::of).collect();
        aggregate(samples.iter())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    age: f32,
    sigma: f32,
    p_over: Option<[f32; 5]>,
}

impl Sample {
    fn of(e: &AgeEstimate) -> Self {
        Self {
            age: e.age,
            sigma: e.sigma,
            p_over: e.p_over,
        }
    }
}

/// Median age, robust sigma and median p_over of some samples (module docs).
fn aggregate<'a>(samples: impl ExactSizeIterator<Item = &'a Sample>) -> Option<Aggregate> {
    let n = samples.len().min(MAX_WINDOW);
    if n == 0 {
        return None;
    }
    let mut ages = [0.0f32; MAX_WINDOW];
    let mut sigmas = [0.0f32; MAX_WINDOW];
    let mut p_over = [[0.0f32; MAX_WINDOW]; 5];
    let mut all_p_over = true;
    for (i, s) in samples.take(n).enumerate() {
        ages[i] = s.age;
        sigmas[i] = s.sigma;
        match s.p_over {
            Some(p) => (0..5).for_each(|t| p_over[t][i] = p[t]),
            None => all_p_over = false,
        }
    }
    let age = median(&mut ages[..n]);
    let sigma_model = median(&mut sigmas[..n]);
    for a in &mut ages[..n] {
        *a = (*a - age).abs();
    }
    let spread = 1.4826 * median(&mut ages[..n]);
    let sigma = (sigma_model * sigma_model + spread * spread).sqrt();
    let p_over = all_p_over.then(|| {
        let mut out = [0.0f32; 5];
        for (t, values) in p_over.iter_mut().enumerate() {
            out[t] = median(&mut values[..n]);
        }
        out
    });
    Some(Aggregate {
        age,
        sigma,
        frames: n,
        p_over,
    })
}

/// One decision window. Make one per REQUEST; feed it every frame with
/// [`observe`](Self::observe) and ask [`poll`](Self::poll) after each.
#[derive(Debug, Clone)]
pub struct Session {
    settings: SessionSettings,
    policy: Policy,
    started_ms: u64,
    samples: Deque<Sample, MAX_WINDOW>,
    /// Box of the followed face and when it was last seen.
    track: Option<(BBox, u64)>,
    poisoned: bool,
    /// Another face that counts was seen (see the module docs).
    other_face_seen: bool,
    /// Any face was seen in this window (for the reason of a timeout).
    face_seen: bool,
    /// A face was left out for its quality (for the reason of a timeout).
    low_quality_seen: bool,
    decided: Option<(Decision, Option<ReferReason>)>,
    /// Times the window restarted for a new person.
    resets: u32,
    /// The followed person's liveness evidence (empty when `[liveness]` is off).
    liveness: LivenessWindow,
    /// The cue that made the decision a liveness REFER.
    liveness_cue: Option<Cue>,
}

impl Session {
    /// Starts a window at `now_ms` (the timeout runs from here).
    pub fn new(
        settings: SessionSettings,
        policy: Policy,
        now_ms: u64,
    ) -> Result<Self, SessionSettingsError> {
        settings.validate()?;
        Ok(Self {
            settings,
            policy,
            started_ms: now_ms,
            samples: Deque::new(),
            track: None,
            poisoned: false,
            other_face_seen: false,
            face_seen: false,
            low_quality_seen: false,
            decided: None,
            resets: 0,
            liveness: LivenessWindow::new(),
            liveness_cue: None,
        })
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The box of the face the window follows, as last seen.
    pub fn followed_box(&self) -> Option<BBox> {
        self.track.map(|(bbox, _)| bbox)
    }

    /// Times the window restarted because a different person appeared.
    pub fn resets(&self) -> u32 {
        self.resets
    }

    /// Estimates in the current window.
    pub fn frames(&self) -> usize {
        self.samples.len()
    }

    /// One camera frame: the main face's box and its estimate, or `None` when no face
    /// was found (or the estimate failed). Ignored once the session has decided.
    pub fn observe(&mut self, now_ms: u64, face: Option<(BBox, AgeEstimate)>) {
        self.observe_frame(now_ms, face, &[], None, None);
    }

    /// [`Session::observe`] with the boxes of the frame's other faces, the main face's
    /// quality and its liveness evidence (kept with its estimate, for the same person).
    pub fn observe_frame(
        &mut self,
        now_ms: u64,
        face: Option<(BBox, AgeEstimate)>,
        others: &[BBox],
        quality: Option<&Quality>,
        evidence: Option<&FrameEvidence>,
    ) {
        if self.decided.is_some() {
            return;
        }
        if self.settings.other_faces == OtherFaces::Refer
            && others
                .iter()
                // A NaN width counts as a face: only a width known to be small is ignored.
                .any(|b| {
                    (b.x1 - b.x0).partial_cmp(&self.settings.other_face_min_px)
                        != Some(std::cmp::Ordering::Less)
                })
        {
            tracing::debug!(
                others = others.len(),
                "session: another face in view, will REFER"
            );
            self.other_face_seen = true;
        }
        self.expire(now_ms);
        let Some((bbox, estimate)) = face else {
            return;
        };
        self.face_seen = true;
        if let Some(why) = quality.and_then(|q| self.settings.quality.failure(q)) {
            // Not this frame: the face is there, its estimate is not to be trusted.
            tracing::debug!(why, "session: frame left out for its quality");
            self.low_quality_seen = true;
            return;
        }
        if !(estimate.age.is_finite() && estimate.sigma.is_finite() && estimate.sigma >= 0.0) {
            tracing::warn!(
                age = estimate.age,
                sigma = estimate.sigma,
                "session: unreadable estimate, will REFER"
            );
            self.poisoned = true;
            return;
        }
        let box_ok = [bbox.x0, bbox.y0, bbox.x1, bbox.y1]
            .iter()
            .all(|v| v.is_finite())
            && bbox.area() > 0.0;
        if !box_ok {
            // Without a usable box there is no telling whose face this is, so the
            // estimate cannot join anyone's window.
            tracing::debug!(?bbox, "session: face without a usable box, frame skipped");
            return;
        }
        if let Some((followed, _)) = self.track {
            let iou = followed.iou(&bbox);
            // Written so that a NaN IoU would also count as someone else.
            let same_person = iou >= self.settings.iou_threshold;
            if !same_person {
                tracing::debug!(iou, "session: a different face, restarting the window");
                self.restart_window();
            }
        }
        if self.samples.len() >= self.settings.max_frames {
            self.samples.pop_front();
        }
        // Cannot fail: max_frames <= MAX_WINDOW and the oldest sample was just dropped.
        let _ = self.samples.push_back(Sample::of(&estimate));
        if let Some(evidence) = evidence {
            self.liveness.observe(now_ms, *evidence);
        }
        self.track = Some((bbox, now_ms));
    }

    /// The decision, once there is one: the policy's verdict on the aggregate once
    /// `min_frames` estimates of one person are in, REFER on a poisoned session, REFER at
    /// `timeout_ms`, otherwise `None` (keep feeding frames). Once decided, every later
    /// poll returns the same decision.
    pub fn poll(&mut self, now_ms: u64) -> Option<Decision> {
        if let Some((decision, _)) = self.decided {
            return Some(decision);
        }
        self.expire(now_ms);
        let ready = self
            .aggregate()
            .filter(|a| a.frames >= self.settings.min_frames);
        let liveness = match ready {
            Some(_) => {
                let settings = &self.settings.liveness;
                settings.judge(&self.liveness.measures(settings.blink_ratio))
            }
            None => Verdict::NotYet,
        };
        let verdict = if self.poisoned {
            (Decision::Refer, Some(ReferReason::Unreadable))
        } else if self.other_face_seen {
            (Decision::Refer, Some(ReferReason::OtherFaces))
        } else if let (Some(_), Verdict::Spoof(cue)) = (ready, liveness) {
            // Presented, not present: REFER whatever the age says, never DENY.
            tracing::debug!(cue = cue.name(), "session: liveness failed, REFER");
            self.liveness_cue = Some(cue);
            (Decision::Refer, Some(ReferReason::Liveness))
        } else if let (Some(agg), Verdict::Unchecked | Verdict::BonaFide) = (ready, liveness) {
            // No age in the log, not even at debug: the audit log keeps bands only.
            self.policy.decide_why(agg.age, agg.sigma, agg.p_over)
        } else if now_ms.saturating_sub(self.started_ms) >= self.settings.timeout_ms {
            tracing::debug!(frames = self.samples.len(), "session: timed out, REFER");
            let reason = if !self.face_seen {
                ReferReason::NoFace
            } else if self.low_quality_seen && self.samples.is_empty() {
                ReferReason::LowQuality
            } else {
                ReferReason::Timeout
            };
            (Decision::Refer, Some(reason))
        } else {
            return None;
        };
        self.decided = Some(verdict);
        Some(verdict.0)
    }

    /// The liveness cue behind a REFER with reason `liveness`.
    pub fn liveness_cue(&self) -> Option<Cue> {
        self.liveness_cue
    }

    /// Why the session decided REFER; `None` before a decision and for ALLOW and DENY.
    pub fn refer_reason(&self) -> Option<ReferReason> {
        self.decided.and_then(|(_, reason)| reason)
    }

    /// The current window's aggregate, `None` while it is empty.
    pub fn aggregate(&self) -> Option<Aggregate> {
        aggregate(self.samples.iter())
    }

    /// Forgets the followed person if they have been gone longer than `lost_face_ms`.
    fn expire(&mut self, now_ms: u64) {
        if let Some((_, seen)) = self.track {
            if now_ms.saturating_sub(seen) > self.settings.lost_face_ms {
                tracing::debug!("session: face lost, restarting the window");
                self.restart_window();
            }
        }
    }

    fn restart_window(&mut self) {
        self.samples.clear();
        self.liveness.clear();
        self.track = None;
        self.resets = self.resets.saturating_add(1);
    }
}

/// Median of finite values (the session only stores finite ones); 0 for an empty slice.
fn median(values: &mut [f32]) -> f32 {
    crate::numeric::median(values).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::new(18.0, 25.0, 2.0).unwrap()
    }

    fn session(now: u64) -> Session {
        Session::new(SessionSettings::default(), policy(), now).unwrap()
    }

    fn bbox(x: f32) -> BBox {
        BBox {
            x0: x,
            y0: 100.0,
            x1: x + 100.0,
            y1: 220.0,
        }
    }

    fn est(age: f32, sigma: f32) -> AgeEstimate {
        AgeEstimate {
            age,
            sigma,
            steps: vec![age],
            p_over: None,
        }
    }

    /// Feeds `(age, sigma)` at 66 ms intervals from `t0`, the face drifting slowly.
    fn feed(s: &mut Session, t0: u64, x0: f32, frames: &[(f32, f32)]) -> (u64, Option<Decision>) {
        let mut t = t0;
        for (i, &(age, sigma)) in frames.iter().enumerate() {
            s.observe(t, Some((bbox(x0 + i as f32 * 2.0), est(age, sigma))));
            if let Some(d) = s.poll(t) {
                return (t, Some(d));
            }
            t += 66;
        }
        (t, None)
    }

    #[test]
    fn adult_over_five_frames_is_allowed() {
        let mut s = session(1_000);
        let (_, d) = feed(
            &mut s,
            1_000,
            0.0,
            &[
                (38.0, 3.0),
                (41.0, 3.5),
                (36.5, 2.8),
                (39.0, 3.1),
                (40.0, 3.0),
            ],
        );
        assert_eq!(d, Some(Decision::Allow));
        assert_eq!(s.frames(), 5);
        let agg = s.aggregate().unwrap();
        assert_eq!(agg.age, 39.0);
        assert!(agg.sigma >= 3.0 && agg.sigma < 5.0, "{agg:?}");
        // Decided is final.
        s.observe(2_000, Some((bbox(0.0), est(10.0, 1.0))));
        assert_eq!(s.poll(2_000), Some(Decision::Allow));
    }

    #[test]
    fn four_frames_are_not_enough() {
        let mut s = session(0);
        let (_, d) = feed(&mut s, 0, 0.0, &[(40.0, 2.0); 4]);
        assert_eq!(d, None);
    }

    #[test]
    fn minor_is_denied() {
        let mut s = session(0);
        let (_, d) = feed(
            &mut s,
            0,
            0.0,
            &[
                (12.0, 1.5),
                (11.0, 1.8),
                (13.0, 1.6),
                (12.5, 1.5),
                (11.5, 1.7),
            ],
        );
        assert_eq!(d, Some(Decision::Deny));
    }

    #[test]
    fn noisy_borderline_face_is_referred() {
        let mut s = session(0);
        // Median 27 would clear 25 on its own; the disagreement between frames widens
        // sigma and the margin takes it below the challenge age.
        let (_, d) = feed(
            &mut s,
            0,
            0.0,
            &[
                (27.0, 1.0),
                (21.0, 1.0),
                (34.0, 1.0),
                (27.5, 1.0),
                (19.0, 1.2),
            ],
        );
        assert_eq!(d, Some(Decision::Refer));
        assert!(s.aggregate().unwrap().sigma > 5.0);
    }

    #[test]
    fn one_outlier_does_not_move_the_median() {
        let mut s = session(0);
        let (_, d) = feed(
            &mut s,
            0,
            0.0,
            &[
                (40.0, 2.0),
                (40.5, 2.0),
                (8.0, 2.0),
                (39.5, 2.0),
                (40.0, 2.0),
            ],
        );
        assert_eq!(d, Some(Decision::Allow));
    }

    #[test]
    fn timeout_is_refer() {
        let mut s = session(10_000);
        s.observe(10_000, Some((bbox(0.0), est(40.0, 2.0))));
        assert_eq!(s.poll(10_100), None);
        for t in (10_100..13_999).step_by(100) {
            s.observe(t, None);
            assert_eq!(s.poll(t), None, "at {t}");
        }
        assert_eq!(s.poll(14_000), Some(Decision::Refer));
    }

    #[test]
    fn a_second_person_resets_the_window() {
        let mut s = session(0);
        // Four frames of an adult, then a child steps in somewhere else in the frame.
        let (t, d) = feed(&mut s, 0, 0.0, &[(45.0, 2.0); 4]);
        assert_eq!(d, None);
        let (_, d) = feed(
            &mut s,
            t,
            400.0,
            &[
                (11.0, 1.5),
                (12.0, 1.5),
                (11.5, 1.5),
                (12.0, 1.5),
                (11.0, 1.5),
            ],
        );
        assert_eq!(d, Some(Decision::Deny));
        assert_eq!(s.resets(), 1);
        assert_eq!(s.frames(), 5);
    }

    #[test]
    fn a_lost_face_resets_the_window() {
        let mut s = session(0);
        let (t, _) = feed(&mut s, 0, 0.0, &[(12.0, 1.0); 4]);
        // Gone for longer than lost_face_ms, then an adult at the same spot.
        s.observe(t + 100, None);
        let (_, d) = feed(&mut s, t + 700, 0.0, &[(45.0, 2.0); 5]);
        assert_eq!(d, Some(Decision::Allow));
        assert_eq!(s.resets(), 1);
        // A short gap does not reset.
        let mut s = session(0);
        let (t, _) = feed(&mut s, 0, 0.0, &[(45.0, 2.0); 4]);
        s.observe(t, None);
        let (_, d) = feed(&mut s, t + 300, 0.0, &[(45.0, 2.0)]);
        assert_eq!(d, Some(Decision::Allow));
        assert_eq!(s.resets(), 0);
    }

    #[test]
    fn the_timeout_survives_resets() {
        let mut s = session(0);
        let mut t = 0;
        let mut x = 0.0;
        // People swapping every 4 frames never fill a window; the session still ends.
        while s.poll(t).is_none() {
            for _ in 0..4 {
                s.observe(t, Some((bbox(x), est(40.0, 1.0))));
                assert!(s.poll(t).is_none() || t >= 4_000);
                t += 66;
            }
            x = if x == 0.0 { 400.0 } else { 0.0 };
        }
        assert_eq!(s.poll(t), Some(Decision::Refer));
        assert!((4_000..4_400).contains(&t), "{t}");
    }

    #[test]
    fn a_nan_estimate_never_allows() {
        for bad in [
            (f32::NAN, 2.0),
            (40.0, f32::NAN),
            (f32::INFINITY, 1.0),
            (40.0, -1.0),
        ] {
            let mut s = session(0);
            let mut frames = vec![(40.0, 2.0); 6];
            frames[2] = bad;
            let (_, d) = feed(&mut s, 0, 0.0, &frames);
            assert_eq!(d, Some(Decision::Refer), "{bad:?}");
            let mut s = session(0);
            let (_, d) = feed(&mut s, 0, 0.0, &[bad; 6]);
            assert_eq!(d, Some(Decision::Refer), "{bad:?}");
        }
        // A NaN box is skipped, never followed.
        let mut s = session(0);
        s.observe(
            0,
            Some((
                BBox {
                    x0: f32::NAN,
                    y0: 0.0,
                    x1: 1.0,
                    y1: 1.0,
                },
                est(40.0, 1.0),
            )),
        );
        assert_eq!(s.frames(), 0);
    }

    #[test]
    fn window_keeps_the_latest_max_frames() {
        let settings = SessionSettings {
            min_frames: 64,
            max_frames: 3,
            ..Default::default()
        };
        assert!(Session::new(settings, policy(), 0).is_err());
        let settings = SessionSettings {
            min_frames: 3,
            max_frames: 3,
            ..Default::default()
        };
        let mut s = Session::new(settings, policy(), 0).unwrap();
        for (i, age) in [10.0, 40.0, 41.0, 42.0].into_iter().enumerate() {
            s.observe(i as u64 * 10, Some((bbox(0.0), est(age, 1.0))));
        }
        assert_eq!(s.aggregate().unwrap().age, 41.0);
        assert_eq!(s.poll(40), Some(Decision::Allow));
    }

    #[test]
    fn settings_errors_name_the_field() {
        let base = SessionSettings::default();
        assert_eq!(base.validate(), Ok(()));
        let cases = [
            (
                SessionSettings {
                    min_frames: 0,
                    ..base
                },
                "min_frames",
            ),
            (
                SessionSettings {
                    max_frames: 2,
                    ..base
                },
                "max_frames",
            ),
            (
                SessionSettings {
                    max_frames: 65,
                    ..base
                },
                "max_frames",
            ),
            (
                SessionSettings {
                    timeout_ms: 0,
                    ..base
                },
                "timeout_ms",
            ),
            (
                SessionSettings {
                    timeout_ms: 1_000_000_000_000_000,
                    ..base
                },
                "timeout_ms",
            ),
            (
                SessionSettings {
                    iou_threshold: 0.0,
                    ..base
                },
                "iou_threshold",
            ),
            (
                SessionSettings {
                    iou_threshold: f32::NAN,
                    ..base
                },
                "iou_threshold",
            ),
            (
                SessionSettings {
                    iou_threshold: 1.5,
                    ..base
                },
                "iou_threshold",
            ),
            (
                SessionSettings {
                    lost_face_ms: 0,
                    ..base
                },
                "lost_face_ms",
            ),
            (
                SessionSettings {
                    lost_face_ms: u64::MAX,
                    ..base
                },
                "lost_face_ms",
            ),
            (
                SessionSettings {
                    other_face_min_px: 0.0,
                    ..base
                },
                "other_face_min_px",
            ),
            (
                SessionSettings {
                    other_face_min_px: f32::NAN,
                    ..base
                },
                "other_face_min_px",
            ),
        ];
        for (settings, field) in cases {
            let err = settings.validate().unwrap_err();
            assert!(err.to_string().contains(field), "{err}");
            assert_eq!(SessionSettings::key(&err), format!("session.{field}"));
        }
    }

    #[test]
    fn another_face_in_view_refers_unless_ignored() {
        let near = bbox(300.0);
        let far = BBox {
            x0: 10.0,
            y0: 10.0,
            x1: 40.0,
            y1: 45.0,
        };
        let adult = |s: &mut Session, others: &[BBox]| {
            for i in 0..5u64 {
                s.observe_frame(
                    i * 66,
                    Some((bbox(i as f32), est(40.0, 2.0))),
                    others,
                    None,
                    None,
                );
            }
            s.poll(5 * 66)
        };
        // A child beside the adult for one frame: REFER, and why.
        let mut s = session(0);
        s.observe_frame(0, Some((bbox(0.0), est(40.0, 2.0))), &[near], None, None);
        assert_eq!(adult(&mut s, &[]), Some(Decision::Refer));
        assert_eq!(s.refer_reason(), Some(ReferReason::OtherFaces));
        // A passer-by far behind (30 px wide, under 48) does not count.
        let mut s = session(0);
        assert_eq!(adult(&mut s, &[far]), Some(Decision::Allow));
        assert_eq!(s.refer_reason(), None);
        // A board that ignores other faces decides on the main face alone.
        let ignore = SessionSettings {
            other_faces: OtherFaces::Ignore,
            ..SessionSettings::default()
        };
        let mut s = Session::new(ignore, policy(), 0).unwrap();
        assert_eq!(adult(&mut s, &[near]), Some(Decision::Allow));
    }

    #[test]
    fn a_timeout_says_whether_any_face_was_seen() {
        let mut s = session(0);
        assert_eq!(s.poll(4_000), Some(Decision::Refer));
        assert_eq!(s.refer_reason(), Some(ReferReason::NoFace));
        let mut s = session(0);
        s.observe(100, Some((bbox(0.0), est(30.0, 2.0))));
        assert_eq!(s.poll(4_000), Some(Decision::Refer));
        assert_eq!(s.refer_reason(), Some(ReferReason::Timeout));
    }
}

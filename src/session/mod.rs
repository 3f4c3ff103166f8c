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

mod settings;
mod window;

use heapless::Deque;

use crate::decide::Policy;
use crate::detect::BBox;
use crate::domain::{Decision, ReferReason};
use crate::estimate::AgeEstimate;
use crate::liveness::{Cue, FrameEvidence, LivenessWindow, Verdict};
use crate::quality::Quality;

pub(crate) use settings::MAX_WINDOW;
pub use settings::{OtherFaces, RawSession, SessionSettings, SessionSettingsError, Trigger};
pub use window::{decide_window, still_settings, FrameWindow, StillWindow, WindowVerdict};

/// Most other faces a frame reports (the rest are not needed to know there are others).
pub const MAX_OTHER_FACES: usize = 8;

/// What one frame holds for the gate: the main face and its estimate (if any), the boxes
/// of the other faces (not estimated), the main face's quality and its liveness evidence.
/// What the pipeline finds and every decision path, the device's and the tools', feeds
/// a [`Session`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FrameFaces {
    pub main: Option<(BBox, AgeEstimate)>,
    pub others: heapless::Vec<BBox, MAX_OTHER_FACES>,
    /// The main face's quality, when the estimator measures it.
    pub quality: Option<Quality>,
    /// The main face's liveness evidence, when `[liveness]` is on.
    pub liveness: Option<FrameEvidence>,
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
    /// The decision is the policy's verdict on the window's aggregate (not a REFER for
    /// a reason no policy can change: another face, liveness, a timeout, ...).
    by_policy: bool,
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
            by_policy: false,
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
        self.observe_frame(now_ms, face.as_ref().map(|(b, e)| (*b, e)), &[], None, None);
    }

    /// One frame's faces, as the pipeline found them.
    pub fn observe_faces(&mut self, now_ms: u64, faces: &FrameFaces) {
        self.observe_frame(
            now_ms,
            faces.main.as_ref().map(|(b, e)| (*b, e)),
            &faces.others,
            faces.quality.as_ref(),
            faces.liveness.as_ref(),
        );
    }

    /// [`Session::observe`] with the boxes of the frame's other faces, the main face's
    /// quality and its liveness evidence (kept with its estimate, for the same person).
    pub fn observe_frame(
        &mut self,
        now_ms: u64,
        face: Option<(BBox, &AgeEstimate)>,
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
        let _ = self.samples.push_back(Sample::of(estimate));
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
            self.by_policy = true;
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

    /// Whether the decision is the policy's verdict on the aggregate, so that another
    /// policy would decide the same window by its own rule (`agegate calibrate`).
    pub fn decided_by_policy(&self) -> bool {
        self.by_policy
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
mod tests;

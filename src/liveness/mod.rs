//! Presentation-attack detection: is the face in front of the camera present, or presented
//! (a printed photo, a phone or a screen held up)?
//!
//! Evidence comes per frame ([`FrameEvidence`]: the detector's six keypoints, the passive
//! models' scores, the eye aspect ratio) and is judged over the decision window
//! ([`LivenessWindow`]); time is passed in and nothing here does I/O, so every rule is
//! tested with made-up tracks. The cues, and why each:
//!
//! - **passive** (`antispoof`, `liveness` models, per frame; the window's median): quick
//!   texture checks. Their own package calls them quick checks to combine with other cues,
//!   so they are measured (`agegate eval --liveness`), never trusted alone.
//! - **planarity**: a photo or a screen is a plane, so however it is tilted or moved, its
//!   six keypoints in any frame are the first frame's under one homography. A real head
//!   that turns is not a plane (the nose tip stands out of the eye-mouth plane, the ear
//!   tragions lie behind it): its parallax leaves a residual no homography removes.
//!   Two point sets are judged, and either flags the window: the face mesh's landmarks
//!   (a regressor with a face's 3-D prior: it reads a photo tilting in the hand as a head
//!   turning, so alone it lets some moving photos through), and image points seeded at
//!   them and then followed in the image alone ([`track`], pyramidal Lucas-Kanade), which
//!   move as the photo's plane does. A moving window whose image points could not be
//!   followed at all (no track of [`MIN_TRACKED_FRAMES`] frames) is flagged as planar
//!   too: what the tracker cannot hold is no evidence of life, and a screen's moire is
//!   what makes it lose its points.
//! - **stillness**: keypoints that do not move at all for the whole window. Nobody holds a
//!   head as still as a stand holds a tablet; but a person who stands very still also
//!   shows nothing to judge, and is referred (`agegate eval --liveness` states the cost).
//! - **blink**: the eye aspect ratio dipping and coming back. A photo never blinks; a blink
//!   is taken as evidence of life that outweighs planarity and stillness (not the passive
//!   scores).
//!
//! The window's verdict in `passive+motion`: spoof when a passive score is below its
//! threshold, or when no blink was seen and the keypoints were still or moved as a plane
//! (or the image points could not be followed).
//! In `passive`: the passive scores only. A spoof verdict is REFER, reason `liveness`,
//! never DENY: a real adult wrongly flagged must be able to try again or ask staff.

#[cfg(feature = "inference")]
pub(crate) mod crop;
#[cfg(feature = "inference")]
mod model;
mod planar;
mod settings;
pub mod track;

#[cfg(feature = "inference")]
pub use model::{LivenessModels, MESH_SIZE};
pub use planar::{homography_residual, trimmed_homography_residual, Homography};
pub use settings::{LivenessConfig, LivenessMode, LivenessSettings, RawLiveness};
pub use track::{PointTracker, TrackedPoints};

use heapless::Deque;

/// The face-mesh landmarks the motion cues follow when the mesh runs: points the mesh
/// pins to features a camera sees (eye corners, nose tip and wings, mouth corners, chin,
/// the face's outline at the ears, forehead, nose bridge), spread in depth, so a turning
/// head shows parallax among them and a photo does not. MediaPipe indices; the first four
/// are the eye corners (right eye outer, inner; left eye inner, outer).
pub const MESH_TRACKED: [usize; 14] = [
    33, 133, 362, 263, 1, 98, 327, 61, 291, 152, 234, 454, 10, 168,
];

/// Most frames of evidence a window keeps (two seconds at 30 fps).
pub const MAX_EVIDENCE: usize = 64;

/// Fewest frames of one track for the followed points' cues: over three frames a photo's
/// smoothed points barely move and any residual is the tracker's own jitter.
pub const MIN_TRACKED_FRAMES: usize = 4;

/// What one frame tells about the main face.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FrameEvidence {
    /// The detector's keypoints, photo pixels (`detect::Face::keypoints` order).
    pub keypoints: [[f32; 2]; 6],
    /// The anti-spoof model's score that the face is real, 0..1.
    pub real: Option<f32>,
    /// The liveness model's live score, 0..1.
    pub live: Option<f32>,
    /// The eye aspect ratio, both eyes' mean (face mesh).
    pub ear: Option<f32>,
    /// The [`MESH_TRACKED`] landmarks, photo pixels (face mesh).
    pub landmarks: Option<[[f32; 2]; MESH_TRACKED.len()]>,
    /// Image points followed from the track's seed at the mesh landmarks ([`track`]).
    pub tracked: Option<TrackedPoints>,
}

impl FrameEvidence {
    /// Follows the face's image points into `frame` with `tracker`, seeding it at this
    /// frame's mesh landmarks when it has no track ([`track`]).
    pub fn follow(&mut self, tracker: &mut PointTracker, frame: &image::RgbImage) {
        let seed = self
            .landmarks
            .and_then(|l| mesh_inter_ocular(&l).map(|scale| (l, scale)));
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        self.tracked =
            track::Gray::from_rgb(w, h, frame.as_raw()).and_then(|g| tracker.observe(g, seed));
    }
}

/// The cue that made a window a spoof.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cue {
    /// The anti-spoof model's median score is below `min_real`.
    Antispoof,
    /// The liveness model's median score is below `min_live`.
    LiveModel,
    /// The keypoints did not move (and no blink).
    Still,
    /// The keypoints, or the image points followed, moved as a plane (and no blink).
    Planar,
}

impl Cue {
    pub const ALL: [Cue; 4] = [Cue::Antispoof, Cue::LiveModel, Cue::Still, Cue::Planar];

    pub fn name(self) -> &'static str {
        match self {
            Self::Antispoof => "antispoof",
            Self::LiveModel => "live_model",
            Self::Still => "still",
            Self::Planar => "planar",
        }
    }
}

/// What a window's evidence measures, before any threshold.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Measures {
    pub frames: usize,
    pub span_ms: u64,
    pub real: Option<f32>,
    pub live: Option<f32>,
    /// Largest displacement from the first frame (RMS over the points, IOD) of the mesh
    /// landmarks when every frame has them, else of the six keypoints.
    pub motion: Option<f32>,
    /// Planarity residual (IOD, see [`homography_residual`]) of the same points.
    pub planar_residual: Option<f32>,
    /// Whether `motion` and `planar_residual` are of the mesh landmarks.
    pub mesh: bool,
    /// The six keypoints' planarity residual, whatever the points above (reported).
    pub planar_residual_keypoints: Option<f32>,
    /// Motion and planarity residual of the image points followed ([`track`]) over the
    /// window's longest track, the points alive in all its frames.
    pub motion_tracked: Option<f32>,
    pub planar_residual_tracked: Option<f32>,
    pub blink: Option<bool>,
}

impl Measures {
    /// A window with motion measures whose image points were never followed long enough
    /// for their cue (the planar cue flags it: see the module docs).
    pub(crate) fn untracked(&self) -> bool {
        self.motion.is_some() && self.planar_residual_tracked.is_none()
    }

    /// What one frame alone measures: its passive scores (a photo has no motion).
    pub fn of_frame(evidence: &FrameEvidence) -> Self {
        Self {
            frames: 1,
            real: evidence.real,
            live: evidence.live,
            ..Self::default()
        }
    }
}

/// Each cue's own verdict on a window, and the combined one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CueFlags {
    pub antispoof: bool,
    pub live_model: bool,
    pub still: bool,
    pub planar: bool,
    pub blink: bool,
}

impl CueFlags {
    pub fn flagged(&self, cue: Cue) -> bool {
        match cue {
            Cue::Antispoof => self.antispoof,
            Cue::LiveModel => self.live_model,
            Cue::Still => self.still,
            Cue::Planar => self.planar,
        }
    }
}

/// A window's liveness verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The mode is off.
    Unchecked,
    /// Not enough evidence yet (the window is too short for the motion cues).
    NotYet,
    BonaFide,
    /// A presentation attack, and the first cue that says so.
    Spoof(Cue),
}

impl LivenessSettings {
    /// Each cue's verdict on `m` by these thresholds (an absent measure flags nothing).
    pub fn flags(&self, m: &Measures) -> CueFlags {
        // A NaN measure is below every threshold: what cannot be read is not evidence of
        // life.
        let below = |v: Option<f32>, t: f32| v.is_some_and(|v| v.is_nan() || v < t);
        CueFlags {
            antispoof: below(m.real, self.min_real),
            live_model: below(m.live, self.min_live),
            still: below(m.motion, self.min_motion),
            planar: below(m.planar_residual, self.max_planar_residual)
                || below(m.planar_residual_tracked, self.max_tracked_residual)
                || m.untracked(),
            blink: m.blink == Some(true),
        }
    }

    /// The verdict on measures `m` in this mode.
    pub fn judge(&self, m: &Measures) -> Verdict {
        if self.mode == LivenessMode::Off {
            return Verdict::Unchecked;
        }
        if m.frames == 0 || (self.mode.motion() && m.span_ms < self.min_window_ms) {
            return Verdict::NotYet;
        }
        let f = self.flags(m);
        let passive = [
            (f.antispoof, Cue::Antispoof),
            (f.live_model, Cue::LiveModel),
        ];
        let motion = [(f.still, Cue::Still), (f.planar, Cue::Planar)];
        let mut cues = passive.iter();
        let spoof = if self.mode.motion() && !f.blink {
            cues.chain(motion.iter()).find(|(flag, _)| *flag)
        } else {
            cues.find(|(flag, _)| *flag)
        };
        match spoof {
            Some((_, cue)) => Verdict::Spoof(*cue),
            None => Verdict::BonaFide,
        }
    }
}

/// The evidence of one person over a decision window.
#[derive(Debug, Clone, Default)]
pub struct LivenessWindow {
    frames: Deque<(u64, FrameEvidence), MAX_EVIDENCE>,
}

impl LivenessWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a frame's evidence at `t_ms` (the oldest goes when the window is full).
    pub fn observe(&mut self, t_ms: u64, evidence: FrameEvidence) {
        if self.frames.is_full() {
            self.frames.pop_front();
        }
        // Cannot fail: a slot was just freed.
        let _ = self.frames.push_back((t_ms, evidence));
    }

    /// Forgets everything (another person).
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// What the window's evidence measures.
    pub fn measures(&self, blink_ratio: f32) -> Measures {
        let n = self.frames.len();
        let (Some((first_t, _)), Some((last_t, _))) = (self.frames.front(), self.frames.back())
        else {
            return Measures::default();
        };
        let mut scratch = [0.0f32; MAX_EVIDENCE];
        let mut median_of = |get: &dyn Fn(&FrameEvidence) -> Option<f32>| {
            let mut k = 0;
            for (_, e) in &self.frames {
                match get(e) {
                    // A score that cannot be read flags its cue (NaN is below every
                    // threshold): it must not vanish into "not measured".
                    Some(v) if !v.is_finite() => return Some(f32::NAN),
                    Some(v) => {
                        scratch[k] = v;
                        k += 1;
                    }
                    None => {}
                }
            }
            // Every frame must have it: a score missing on some frames is not a median.
            (k == n).then(|| crate::numeric::median(&mut scratch[..k]).unwrap_or(0.0))
        };
        let real = median_of(&|e| e.real);
        let live = median_of(&|e| e.live);
        let mesh = self.frames.iter().all(|(_, e)| e.landmarks.is_some());
        let keypoints = motion_cues(self.frames.iter().map(|(_, e)| e.keypoints), inter_ocular);
        let (motion, planar_residual) = if mesh {
            motion_cues(
                self.frames.iter().filter_map(|(_, e)| e.landmarks),
                mesh_inter_ocular,
            )
        } else {
            keypoints
        };
        let planar_residual_keypoints = keypoints.1;
        let (motion_tracked, planar_residual_tracked) = self.tracked_cues();
        Measures {
            frames: n,
            span_ms: last_t.saturating_sub(*first_t),
            real,
            live,
            motion,
            planar_residual,
            mesh,
            planar_residual_keypoints,
            motion_tracked,
            planar_residual_tracked,
            blink: self.blink(blink_ratio),
        }
    }

    /// Motion and planarity of the followed points: the frames of the window's longest
    /// track (at least [`MIN_TRACKED_FRAMES`]), the points alive in all of them (at least
    /// [`track::MIN_ALIVE`]), in the seed's inter-ocular distances.
    fn tracked_cues(&self) -> (Option<f32>, Option<f32>) {
        // The longest run of frames of one track (the latest of equal runs): a re-seed
        // late in the window leaves a last track too short to show a plane, while the
        // track before it followed the same face for most of the window.
        let (mut best, mut best_len) = (0usize, 0usize);
        let (mut start, mut len) = (0usize, 0usize);
        let mut current: Option<u32> = None;
        for (i, (_, e)) in self.frames.iter().enumerate() {
            match e.tracked {
                Some(t) if current == Some(t.track) => len += 1,
                Some(t) => {
                    current = Some(t.track);
                    (start, len) = (i, 1);
                }
                None => {
                    current = None;
                    len = 0;
                }
            }
            if len > 0 && len >= best_len {
                (best, best_len) = (start, len);
            }
        }
        if best_len < MIN_TRACKED_FRAMES {
            return (None, None);
        }
        let mut raw = [[[0.0f32; 2]; track::TRACKED]; MAX_EVIDENCE];
        let mut scale = 0.0;
        for (dst, (_, e)) in raw
            .iter_mut()
            .zip(self.frames.iter().skip(best).take(best_len))
        {
            if let Some(t) = e.tracked {
                *dst = t.points;
                scale = t.scale;
            }
        }
        let n = best_len;
        let mut alive = [false; track::TRACKED];
        for (j, a) in alive.iter_mut().enumerate() {
            *a = raw[..n]
                .iter()
                .all(|p| p[j][0].is_finite() && p[j][1].is_finite());
        }
        let used = alive.iter().filter(|a| **a).count();
        if used < track::MIN_ALIVE {
            return (None, None);
        }
        // The alive points first, in a fixed-size set per frame.
        let mut frames = [[[0.0f32; 2]; track::TRACKED]; MAX_EVIDENCE];
        for (dst, src) in frames.iter_mut().zip(&raw[..n]) {
            let mut k = 0;
            for (p, a) in src.iter().zip(&alive) {
                if *a {
                    dst[k] = *p;
                    k += 1;
                }
            }
        }
        point_cues(&frames[..n], used, scale)
    }

    /// A blink: a frame whose eye aspect ratio is below `ratio` x the window's open-eye
    /// ratio (its 90th percentile), with an open frame on each side (so a window that
    /// starts or ends with the eyes shut, or a photo of shut eyes, is no blink). Frames
    /// without a ratio (the mesh did not find the face) are left out; `None` when fewer
    /// than three have one.
    fn blink(&self, ratio: f32) -> Option<bool> {
        let mut ears = [0.0f32; MAX_EVIDENCE];
        let mut n = 0;
        for (_, e) in &self.frames {
            if let Some(ear) = e.ear.filter(|v| v.is_finite() && *v >= 0.0) {
                ears[n] = ear;
                n += 1;
            }
        }
        if n < 3 {
            return None;
        }
        let mut sorted = ears;
        let open = quantile(&mut sorted[..n], 0.9);
        if open.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return Some(false);
        }
        let shut = ratio * open;
        let reopened = (1.0 + ratio) / 2.0 * open;
        let mut seen_open = false;
        let mut dipped = false;
        for &ear in &ears[..n] {
            if ear >= reopened {
                if dipped {
                    return Some(true);
                }
                seen_open = true;
            } else if ear < shut && seen_open {
                dipped = true;
            }
        }
        Some(false)
    }
}

/// Motion and planarity of a window's point sets: the largest RMS displacement from the
/// first frame, and the upper quantile of the per-frame homography residuals, both in
/// inter-ocular distances (`iod`); `None` with fewer than two frames or an unreadable one.
fn motion_cues<const N: usize>(
    frames: impl Iterator<Item = [[f32; 2]; N]>,
    iod: impl Fn(&[[f32; 2]; N]) -> Option<f32>,
) -> (Option<f32>, Option<f32>) {
    let mut raw = [[[0.0f32; 2]; N]; MAX_EVIDENCE];
    let mut n = 0;
    for points in frames.take(MAX_EVIDENCE) {
        raw[n] = points;
        n += 1;
    }
    let smoothed = |i: usize| smoothed(&raw[..n], i);
    if n < 2 {
        return (None, None);
    }
    let first = smoothed(0);
    let Some(first_scale) = iod(&first) else {
        return (None, None);
    };
    let mut motion = 0.0f32;
    let mut residuals = [0.0f32; MAX_EVIDENCE];
    for (k, slot) in residuals.iter_mut().enumerate().take(n).skip(1) {
        let points = smoothed(k);
        let sum: f32 = first
            .iter()
            .zip(&points)
            .map(|(a, b)| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2))
            .sum();
        let d = (sum / N as f32).sqrt() / first_scale;
        let residual = iod(&points).and_then(|scale| homography_residual(&first, &points, scale));
        let Some(r) = residual.filter(|_| d.is_finite()) else {
            return (None, None);
        };
        motion = motion.max(d);
        *slot = r;
    }
    (Some(motion), Some(upper_quantile(&mut residuals[1..n])))
}

/// Frame `i`'s points averaged with its neighbours': a head's parallax changes smoothly
/// over frames, the detector's jitter does not, so this lowers the jitter (a screen's
/// moire makes the mesh jumpy) more than the parallax. `raw` is not empty.
fn smoothed<const N: usize>(raw: &[[[f32; 2]; N]], i: usize) -> [[f32; 2]; N] {
    let n = raw.len();
    let (lo, hi) = (i.saturating_sub(1), (i + 1).min(n - 1));
    let count = (hi - lo + 1) as f32;
    std::array::from_fn(|j| {
        let sum = (lo..=hi).fold([0.0f32; 2], |acc, k| {
            [acc[0] + raw[k][j][0], acc[1] + raw[k][j][1]]
        });
        [sum[0] / count, sum[1] / count]
    })
}

/// [`motion_cues`] of the first `used` points of each frame, with a fixed scale, and each
/// frame's residual without its worst points (`planar::TRIMMED_POINTS`): a followed
/// point can slip onto a moire fringe or a glare edge of a photo, and what the plane
/// leaves for the others is the cue.
fn point_cues<const N: usize>(
    raw: &[[[f32; 2]; N]],
    used: usize,
    scale: f32,
) -> (Option<f32>, Option<f32>) {
    let n = raw.len();
    if n < 2 || used > N || !(scale.is_finite() && scale > 0.0) {
        return (None, None);
    }
    let smoothed = |i: usize| smoothed(raw, i);
    let first = smoothed(0);
    let mut motion = 0.0f32;
    let mut residuals = [0.0f32; MAX_EVIDENCE];
    for (k, slot) in residuals.iter_mut().enumerate().take(n).skip(1) {
        let points = smoothed(k);
        let sum: f32 = first[..used]
            .iter()
            .zip(&points[..used])
            .map(|(a, b)| (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2))
            .sum();
        let d = (sum / used as f32).sqrt() / scale;
        let Some(r) = trimmed_homography_residual(&first[..used], &points[..used], scale)
            .filter(|_| d.is_finite())
        else {
            return (None, None);
        };
        motion = motion.max(d);
        *slot = r;
    }
    (Some(motion), Some(upper_quantile(&mut residuals[1..n])))
}

/// The distance between the eyes' centres (mid-points of their corners) of
/// [`MESH_TRACKED`] landmarks.
pub(crate) fn mesh_inter_ocular(l: &[[f32; 2]; MESH_TRACKED.len()]) -> Option<f32> {
    let mid = |a: [f32; 2], b: [f32; 2]| [(a[0] + b[0]) / 2.0, (a[1] + b[1]) / 2.0];
    let (r, l) = (mid(l[0], l[1]), mid(l[2], l[3]));
    let d = ((r[0] - l[0]).powi(2) + (r[1] - l[1]).powi(2)).sqrt();
    (d.is_finite() && d > 1e-3).then_some(d)
}

pub(crate) fn inter_ocular(k: &[[f32; 2]; 6]) -> Option<f32> {
    use crate::detect::{LEFT_EYE, RIGHT_EYE};
    let (a, b) = (k[RIGHT_EYE], k[LEFT_EYE]);
    let d = ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    (d.is_finite() && d > 1e-3).then_some(d)
}

/// The window's planarity figure: the 90th percentile of the per-frame residuals, so one
/// glitched detection does not make a photo look like a head.
fn upper_quantile(values: &mut [f32]) -> f32 {
    quantile(values, 0.9)
}

fn quantile(values: &mut [f32], q: f32) -> f32 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f32::total_cmp);
    let i = ((values.len() - 1) as f32 * q).round() as usize;
    values[i.min(values.len() - 1)]
}

#[cfg(test)]
mod tests;

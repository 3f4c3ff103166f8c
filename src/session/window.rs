//! Deciding frames the caller already holds, through the device's [`Session`]: a
//! recording's frames at their own times, or a photo's views at a synthetic frame rate.
//!
//! This is how the tools ask the gate (`agegate estimate`, `eval`, `calibrate`): the same
//! window, quality gate, other-face rule, liveness verdict and policy as the daemon, fed
//! frame by frame and polled after each, stopping at the first decision as the device
//! does. What a photo cannot give is stated in [`still_settings`], and only there.

use super::{Aggregate, FrameFaces, Session, SessionSettings, SessionSettingsError, MAX_WINDOW};
use crate::decide::Policy;
use crate::domain::{Decision, ReferReason};
use crate::liveness::LivenessMode;

/// The interval a photo's views are fed at: 15 fps, the rate the boards' windows are
/// set for (shortened when the views would not fit in the window's timeout).
pub const STILL_FRAME_MS: u64 = 66;

/// What a window decided, and what it rested on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowVerdict {
    pub decision: Decision,
    /// Why a REFER is a REFER (`None` for ALLOW and DENY).
    pub reason: Option<ReferReason>,
    /// The window's aggregate when it decided (for a timeout, what it held at its last
    /// frame); `None` when no estimate counted.
    pub aggregate: Option<Aggregate>,
    /// The decision is the policy's verdict on `aggregate` (see
    /// [`Session::decided_by_policy`]).
    pub by_policy: bool,
    /// When it decided, on the frames' clock.
    pub decided_ms: u64,
}

/// A photo's window: what the device's settings become when all there is to see is
/// `views` copies of one still image.
///
/// - The views are every frame the window will get: `min_frames` is at most `views`
///   (the device would wait for more frames; a photo has no more to give).
/// - A still has no motion: `[liveness]` judges the passive scores only (a
///   `passive+motion` board's motion cues would flag every photo as still).
///
/// Everything else (quality gate, other faces, the policy) is the board's own.
pub fn still_settings(settings: SessionSettings, views: usize) -> SessionSettings {
    let mut s = settings;
    s.min_frames = s.min_frames.clamp(1, views.clamp(1, MAX_WINDOW));
    s.max_frames = s.max_frames.max(s.min_frames);
    if s.liveness.mode != LivenessMode::Off {
        s.liveness.mode = LivenessMode::Passive;
    }
    s
}

/// Feeds `frames` (frame time, faces) to a window opened at `start_ms`, polling after
/// each frame, and stops at the first decision. Frames that run out undecided are judged
/// at the window's timeout: what the device decides when no more usable frames come.
pub fn decide_window<'a>(
    settings: SessionSettings,
    policy: Policy,
    start_ms: u64,
    frames: impl IntoIterator<Item = (u64, &'a FrameFaces)>,
) -> Result<WindowVerdict, SessionSettingsError> {
    let mut window = FrameWindow::new(settings, policy, start_ms)?;
    for (t_ms, faces) in frames {
        if let Some(verdict) = window.observe(t_ms, faces) {
            return Ok(verdict);
        }
    }
    Ok(window.finish())
}

/// A window fed one frame at a time, polled after each as the device polls it.
#[derive(Debug, Clone)]
pub struct FrameWindow {
    session: Session,
    last_ms: u64,
}

impl FrameWindow {
    pub fn new(
        settings: SessionSettings,
        policy: Policy,
        start_ms: u64,
    ) -> Result<Self, SessionSettingsError> {
        Ok(Self {
            session: Session::new(settings, policy, start_ms)?,
            last_ms: start_ms,
        })
    }

    /// One frame. `Some` once the window has decided: the device sees no later frame.
    pub fn observe(&mut self, t_ms: u64, faces: &FrameFaces) -> Option<WindowVerdict> {
        self.last_ms = t_ms;
        self.session.observe_faces(t_ms, faces);
        verdict_at(&mut self.session, t_ms)
    }

    /// The decision once the frames are all in: the window's own, or its timeout's.
    pub fn finish(mut self) -> WindowVerdict {
        verdict_at(&mut self.session, self.last_ms).unwrap_or_else(|| timed_out(&mut self.session))
    }
}

/// A photo's views fed one at a time to a [`FrameWindow`] of [`still_settings`], at
/// `STILL_FRAME_MS` (66 ms) apart from time 0.
#[derive(Debug, Clone)]
pub struct StillWindow {
    window: FrameWindow,
    step_ms: u64,
    next_ms: u64,
}

impl StillWindow {
    /// A window for `views` views of one photo under the board's `settings` and `policy`.
    pub fn new(
        settings: SessionSettings,
        policy: Policy,
        views: usize,
    ) -> Result<Self, SessionSettingsError> {
        let settings = still_settings(settings, views);
        let views = u64::try_from(views.max(1)).unwrap_or(u64::MAX);
        // Every view must come before the timeout, or the last ones would find the
        // window already timed out.
        let step_ms = STILL_FRAME_MS
            .min(settings.timeout_ms.saturating_sub(1) / views)
            .max(1);
        Ok(Self {
            window: FrameWindow::new(settings, policy, 0)?,
            step_ms,
            next_ms: 0,
        })
    }

    /// One view. `Some` once the window has decided: the device would see no later
    /// view, so the caller need not make them.
    pub fn observe(&mut self, faces: &FrameFaces) -> Option<WindowVerdict> {
        let now = self.next_ms;
        self.next_ms = self.next_ms.saturating_add(self.step_ms);
        self.window.observe(now, faces)
    }

    /// The decision once the views are all in: the window's own, or its timeout's.
    pub fn finish(self) -> WindowVerdict {
        self.window.finish()
    }
}

fn verdict_at(session: &mut Session, now_ms: u64) -> Option<WindowVerdict> {
    let decision = session.poll(now_ms)?;
    Some(WindowVerdict {
        decision,
        reason: session.refer_reason(),
        aggregate: session.aggregate(),
        by_policy: session.decided_by_policy(),
        decided_ms: now_ms,
    })
}

/// Polls an undecided window at its timeout, which always decides. The aggregate is what
/// the window held at its last frame (the timeout may have forgotten a face long gone):
/// the tools' error figures count it, the decision stays the timeout's REFER.
fn timed_out(session: &mut Session) -> WindowVerdict {
    let held = session.aggregate();
    let at = session
        .started_ms
        .saturating_add(session.settings.timeout_ms);
    let verdict = verdict_at(session, at).map(|v| WindowVerdict {
        aggregate: v.aggregate.or(held),
        ..v
    });
    verdict.unwrap_or(WindowVerdict {
        // Unreachable (a poll at the timeout decides), and still the closed answer.
        decision: Decision::Refer,
        reason: Some(ReferReason::Timeout),
        aggregate: None,
        by_policy: false,
        decided_ms: at,
    })
}

use std::path::Path;

use super::*;

/// A face template like `models/face_template_3d.json`: IOD 1, nose out, tragions behind.
const HEAD: [[f64; 3]; 6] = [
    [-0.5, 0.0, 0.0],
    [0.5, 0.0, 0.0],
    [0.0, 0.65, -0.55],
    [0.0, 1.04, -0.16],
    [-1.06, 0.23, 0.95],
    [1.09, 0.23, 0.93],
];

/// `points` turned by `yaw` (radians) and moved by `shift` px, seen by a pinhole camera
/// with the face's IOD about 60 px.
fn project(points: &[[f64; 3]; 6], yaw: f64, pitch: f64, shift: f64) -> [[f32; 2]; 6] {
    let (cy, sy) = (yaw.cos(), yaw.sin());
    let (cp, sp) = (pitch.cos(), pitch.sin());
    points.map(|p| {
        let p = p.map(|v| v * 65.0);
        // Pitch about x, then yaw about y, then 600 px in front of a 550 px camera.
        let (y1, z1) = (cp * p[1] - sp * p[2], sp * p[1] + cp * p[2]);
        let (x2, z2) = (cy * p[0] + sy * z1, -sy * p[0] + cy * z1);
        let z = z2 + 600.0;
        [
            (550.0 * (x2 + shift) / z + 320.0) as f32,
            (550.0 * y1 / z + 240.0) as f32,
        ]
    })
}

fn flat() -> [[f64; 3]; 6] {
    HEAD.map(|p| [p[0], p[1], 0.0])
}

fn on(mode: LivenessMode) -> LivenessSettings {
    LivenessSettings {
        mode,
        ..LivenessSettings::default()
    }
}

/// A window of 12 frames at 10 fps, frame `k`'s evidence from `f`.
fn window(f: impl Fn(usize) -> FrameEvidence) -> LivenessWindow {
    let mut w = LivenessWindow::new();
    for k in 0..12 {
        w.observe(1_000 + 100 * k as u64, f(k));
    }
    w
}

fn evidence(keypoints: [[f32; 2]; 6], ear: f32) -> FrameEvidence {
    FrameEvidence {
        keypoints,
        real: Some(0.9),
        live: Some(0.9),
        ear: Some(ear),
        landmarks: None,
        tracked: None,
    }
}

/// The residual of `to` against `from`, in the IOD of `to`.
fn residual(from: &[[f32; 2]; 6], to: &[[f32; 2]; 6]) -> Option<f32> {
    homography_residual(from, to, inter_ocular(to).unwrap_or(f32::NAN))
}

fn verdict(settings: &LivenessSettings, w: &LivenessWindow) -> Verdict {
    settings.judge(&w.measures(settings.blink_ratio))
}

/// A head turning by up to 8 degrees of yaw and 4 of pitch over the window.
fn turning(points: &[[f64; 3]; 6], k: usize) -> [[f32; 2]; 6] {
    let t = k as f64 / 11.0;
    project(
        points,
        (8.0 * t).to_radians(),
        (4.0 * t).to_radians(),
        10.0 * t,
    )
}

#[test]
fn a_homography_maps_points_of_a_plane_exactly() {
    let from = project(&flat(), 0.0, 0.0, 0.0);
    let to = project(&flat(), 0.3, 0.2, 25.0);
    let r = residual(&from, &to).expect("fits");
    assert!(r < 1e-4, "residual {r}");
    let h = Homography::fit(&from, &to).expect("fits");
    let m = h
        .apply([f64::from(from[2][0]), f64::from(from[2][1])])
        .unwrap();
    assert!((m[0] - f64::from(to[2][0])).abs() < 0.01);
}

#[test]
fn a_turning_head_leaves_a_residual_a_turning_photo_does_not() {
    let head = residual(&turning(&HEAD, 0), &turning(&HEAD, 11)).unwrap();
    let photo = residual(&turning(&flat(), 0), &turning(&flat(), 11)).unwrap();
    assert!(head > 0.02, "head residual {head}");
    assert!(photo < 1e-3, "photo residual {photo}");
}

#[test]
fn degenerate_points_fit_no_homography() {
    let same = [[10.0f32, 10.0]; 6];
    assert_eq!(residual(&same, &same), None);
    let mut nan = project(&flat(), 0.0, 0.0, 0.0);
    nan[3][0] = f32::NAN;
    assert_eq!(residual(&nan, &nan), None);
}

#[test]
fn a_moving_head_is_bona_fide_once_its_image_points_are_followed() {
    let s = on(LivenessMode::PassiveMotion);
    let followed = window(|k| FrameEvidence {
        tracked: Some(tracked_turning(&head14(), k, 1)),
        ..evidence(turning(&HEAD, k), 0.3)
    });
    assert_eq!(verdict(&s, &followed), Verdict::BonaFide);
    // The same head with no followed points (the tracker lost them at every seed, as a
    // screen's moire makes it): not evidence of life, unless it blinks.
    let unfollowed = window(|k| evidence(turning(&HEAD, k), 0.3));
    let m = unfollowed.measures(s.blink_ratio);
    assert!(m.untracked() && !s.flags(&m).still, "{m:?}");
    assert_eq!(verdict(&s, &unfollowed), Verdict::Spoof(Cue::Planar));
    let ear = |k: usize| if k == 5 || k == 6 { 0.08 } else { 0.3 };
    let blinking = window(|k| evidence(turning(&HEAD, k), ear(k)));
    assert_eq!(verdict(&s, &blinking), Verdict::BonaFide);
    // A track too short for the cue is no track either.
    let short = window(|k| FrameEvidence {
        tracked: (k < MIN_TRACKED_FRAMES - 1).then(|| tracked_turning(&head14(), k, 1)),
        ..evidence(turning(&HEAD, k), 0.3)
    });
    assert_eq!(verdict(&s, &short), Verdict::Spoof(Cue::Planar));
}

#[test]
fn a_moving_photo_is_a_planar_spoof_and_a_still_one_a_still_spoof() {
    let s = on(LivenessMode::PassiveMotion);
    let moving = window(|k| evidence(turning(&flat(), k), 0.3));
    assert_eq!(verdict(&s, &moving), Verdict::Spoof(Cue::Planar));
    let still = window(|_| evidence(project(&flat(), 0.1, 0.0, 0.0), 0.3));
    assert_eq!(verdict(&s, &still), Verdict::Spoof(Cue::Still));
    // A still head shows nothing either: the cost of standing very still.
    let still_head = window(|_| evidence(project(&HEAD, 0.1, 0.0, 0.0), 0.3));
    assert_eq!(verdict(&s, &still_head), Verdict::Spoof(Cue::Still));
}

#[test]
fn a_blink_outweighs_the_motion_cues_but_not_the_passive_ones() {
    let s = on(LivenessMode::PassiveMotion);
    let ear = |k: usize| if k == 5 || k == 6 { 0.08 } else { 0.3 };
    let blinking = window(|k| evidence(project(&HEAD, 0.1, 0.0, 0.0), ear(k)));
    assert_eq!(verdict(&s, &blinking), Verdict::BonaFide);
    let printed = window(|k| FrameEvidence {
        real: Some(0.01),
        ..evidence(project(&HEAD, 0.1, 0.0, 0.0), ear(k))
    });
    assert_eq!(verdict(&s, &printed), Verdict::Spoof(Cue::Antispoof));
}

#[test]
fn eyes_shut_at_an_edge_of_the_window_or_throughout_are_no_blink() {
    let s = on(LivenessMode::PassiveMotion);
    let still = project(&HEAD, 0.1, 0.0, 0.0);
    let closing = window(|k| evidence(still, if k >= 9 { 0.08 } else { 0.3 }));
    assert_eq!(closing.measures(s.blink_ratio).blink, Some(false));
    let shut = window(|_| evidence(still, 0.08));
    assert_eq!(shut.measures(s.blink_ratio).blink, Some(false));
    let opening = window(|k| evidence(still, if k <= 2 { 0.08 } else { 0.3 }));
    assert_eq!(opening.measures(s.blink_ratio).blink, Some(false));
}

#[test]
fn passive_mode_judges_the_scores_only_and_at_once() {
    let s = on(LivenessMode::Passive);
    let mut w = LivenessWindow::new();
    w.observe(0, evidence(project(&flat(), 0.0, 0.0, 0.0), 0.3));
    assert_eq!(verdict(&s, &w), Verdict::BonaFide);
    let mut low = LivenessWindow::new();
    low.observe(
        0,
        FrameEvidence {
            live: Some(0.0),
            ..evidence(project(&flat(), 0.0, 0.0, 0.0), 0.3)
        },
    );
    assert_eq!(verdict(&s, &low), Verdict::Spoof(Cue::LiveModel));
}

#[test]
fn the_motion_cues_wait_for_the_window_and_off_checks_nothing() {
    let s = on(LivenessMode::PassiveMotion);
    let mut w = LivenessWindow::new();
    for k in 0..5 {
        // 0.4 s of a moving head: not yet the 1 s the cues need.
        w.observe(100 * k, evidence(turning(&HEAD, k as usize * 2), 0.3));
    }
    assert_eq!(verdict(&s, &w), Verdict::NotYet);
    assert_eq!(verdict(&on(LivenessMode::Off), &w), Verdict::Unchecked);
    assert_eq!(verdict(&s, &LivenessWindow::new()), Verdict::NotYet);
}

#[test]
fn a_score_that_is_not_a_number_flags_its_cue_or_counts_as_missing() {
    let s = on(LivenessMode::Passive);
    let m = Measures {
        frames: 1,
        real: Some(f32::NAN),
        live: Some(0.9),
        ..Measures::default()
    };
    assert_eq!(s.judge(&m), Verdict::Spoof(Cue::Antispoof));
    // A frame without its score: no median, and the other frames cannot stand for it.
    let mut w = LivenessWindow::new();
    w.observe(0, evidence(project(&flat(), 0.0, 0.0, 0.0), 0.3));
    w.observe(
        100,
        FrameEvidence {
            real: None,
            ..evidence(project(&flat(), 0.0, 0.0, 0.0), 0.3)
        },
    );
    assert_eq!(w.measures(s.blink_ratio).real, None);
}

#[test]
fn the_window_keeps_the_latest_frames_and_forgets_on_clear() {
    let mut w = LivenessWindow::new();
    for k in 0..(MAX_EVIDENCE as u64 + 10) {
        w.observe(k * 10, evidence(project(&HEAD, 0.0, 0.0, 0.0), 0.3));
    }
    assert_eq!(w.len(), MAX_EVIDENCE);
    assert_eq!(w.measures(0.6).span_ms, (MAX_EVIDENCE as u64 - 1) * 10);
    w.clear();
    assert!(w.is_empty());
}

/// Fourteen points spread in depth like the mesh landmarks (IOD 1, eye centres at
/// x = -0.5 and 0.5: the first four are the eye corners).
fn head14() -> [[f64; 3]; track::TRACKED] {
    let mut p = [[0.0f64; 3]; track::TRACKED];
    p[..4].copy_from_slice(&[
        [-0.75, 0.0, 0.05],
        [-0.25, 0.0, 0.0],
        [0.25, 0.0, 0.0],
        [0.75, 0.0, 0.05],
    ]);
    for (j, q) in p.iter_mut().enumerate().skip(4) {
        let a = j as f64 * 0.9;
        *q = [0.9 * a.cos(), 0.5 + 0.6 * a.sin(), -0.5 + 0.12 * j as f64];
    }
    p
}

/// Tracked points of `points` turned over the window (the six-point projection, per point).
fn tracked_turning(points: &[[f64; 3]; track::TRACKED], k: usize, id: u32) -> TrackedPoints {
    let mut out = [[0.0f32; 2]; track::TRACKED];
    for (j, p) in points.iter().enumerate() {
        let six = [*p; 6];
        out[j] = turning(&six, k)[0];
    }
    TrackedPoints {
        track: id,
        scale: 65.0,
        points: out,
    }
}

fn with_tracked(t: TrackedPoints) -> FrameEvidence {
    FrameEvidence {
        tracked: Some(t),
        ..evidence(turning(&HEAD, 0), 0.3)
    }
}

#[test]
fn followed_points_of_a_head_leave_a_residual_those_of_a_photo_do_not() {
    let head = window(|k| with_tracked(tracked_turning(&head14(), k, 1))).measures(0.6);
    let plane = head14().map(|p| [p[0], p[1], 0.0]);
    let photo = window(|k| with_tracked(tracked_turning(&plane, k, 1))).measures(0.6);
    let (h, p) = (
        head.planar_residual_tracked.expect("head"),
        photo.planar_residual_tracked.expect("photo"),
    );
    assert!(h > 0.01 && p < 1e-3, "head {h}, photo {p}");
    assert!(photo.motion_tracked.expect("motion") > 0.05);
    // The photo's followed points flag it even where its mesh landmarks (here: none,
    // the six keypoints of a head) would not.
    let s = on(LivenessMode::PassiveMotion);
    let w = window(|k| FrameEvidence {
        tracked: Some(tracked_turning(&plane, k, 1)),
        ..evidence(turning(&HEAD, k), 0.3)
    });
    assert_eq!(verdict(&s, &w), Verdict::Spoof(Cue::Planar));
    let w = window(|k| FrameEvidence {
        tracked: Some(tracked_turning(&head14(), k, 1)),
        ..evidence(turning(&HEAD, k), 0.3)
    });
    assert_eq!(verdict(&s, &w), Verdict::BonaFide);
}

#[test]
fn the_tracked_cue_uses_the_longest_track_and_the_points_alive_throughout() {
    let plane = head14().map(|p| [p[0], p[1], 0.0]);
    // A photo's track for 8 frames, then a late re-seed on a head's for 4: the longer
    // track counts, wherever it is in the window.
    let w = window(|k| {
        if k < 8 {
            with_tracked(tracked_turning(&plane, k, 1))
        } else {
            with_tracked(tracked_turning(&head14(), k, 2))
        }
    });
    let r = w
        .measures(0.6)
        .planar_residual_tracked
        .expect("longest track");
    assert!(r < 1e-3, "{r}");
    // Of equal runs, the latest: here the head's.
    let w = window(|k| {
        if k < 6 {
            with_tracked(tracked_turning(&plane, k, 1))
        } else {
            with_tracked(tracked_turning(&head14(), k, 2))
        }
    });
    let r = w
        .measures(0.6)
        .planar_residual_tracked
        .expect("latest of equal tracks");
    // Half a window of the head's turn: less parallax than a whole one, far from the
    // photo's none.
    assert!(r > 3e-3, "{r}");
    // Points lost on some frame are left out; with too few left there is no measure.
    let lose = |lost: usize| {
        window(move |k| {
            let mut t = tracked_turning(&plane, k, 1);
            if k == 7 {
                for p in t.points.iter_mut().take(lost) {
                    *p = [f32::NAN; 2];
                }
            }
            with_tracked(t)
        })
        .measures(0.6)
        .planar_residual_tracked
    };
    assert!(lose(3).is_some_and(|r| r < 1e-3));
    assert_eq!(lose(track::TRACKED - track::MIN_ALIVE + 1), None);
    // Tracks shorter than MIN_TRACKED_FRAMES are not a window.
    let short = window(|k| with_tracked(tracked_turning(&plane, k, (k / 3) as u32)));
    assert_eq!(short.measures(0.6).planar_residual_tracked, None);
    let long = window(|k| with_tracked(tracked_turning(&plane, k, (k / 4) as u32)));
    assert!(long.measures(0.6).planar_residual_tracked.is_some());
}

#[test]
fn the_trimmed_residual_leaves_out_two_points_off_the_plane() {
    let reference: Vec<[f32; 2]> = (0..10)
        .map(|i| {
            [
                (i % 4) as f32 * 20.0,
                (i / 4) as f32 * 25.0 + (i % 3) as f32,
            ]
        })
        .collect();
    // A tilt and a shift: a homography the points follow exactly.
    let moved: Vec<[f32; 2]> = reference
        .iter()
        .map(|p| {
            let w = 1.0 + 0.002 * p[0];
            [
                (p[0] * 1.05 + 3.0) / w,
                (p[1] * 0.97 - 2.0 + 0.03 * p[0]) / w,
            ]
        })
        .collect();
    let mut slipped = moved.clone();
    slipped[4][0] += 6.0;
    let scale = 40.0;
    let plain = homography_residual(&reference, &slipped, scale).expect("fits");
    let trimmed = trimmed_homography_residual(&reference, &slipped, scale).expect("fits");
    assert!(plain > 0.02, "{plain}");
    assert!(trimmed < 1e-3, "{trimmed}");
    // Two points off the plane: both go.
    let mut two = slipped.clone();
    two[8][1] -= 6.0;
    let r = trimmed_homography_residual(&reference, &two, scale).expect("fits");
    assert!(r < 1e-3, "{r}");
    // Three: one is still there after the trim.
    let mut three = two.clone();
    three[1][0] -= 6.0;
    let r = trimmed_homography_residual(&reference, &three, scale).expect("fits");
    assert!(r > 0.01, "{r}");
    // Points spread off any plane (a head) keep a residual however two are left out.
    let spread: Vec<[f32; 2]> = moved
        .iter()
        .enumerate()
        .map(|(i, p)| {
            [
                p[0] + [3.0, -2.0, 2.5][i % 3],
                p[1] + [-2.0, 3.0, 1.0][i % 3],
            ]
        })
        .collect();
    let r = trimmed_homography_residual(&reference, &spread, scale).expect("fits");
    assert!(r > 0.01, "{r}");
    // Too few points to trim (five must be left), and mismatched sets.
    assert_eq!(
        trimmed_homography_residual(&reference[..6], &moved[..6], scale),
        None
    );
    assert!(trimmed_homography_residual(&reference[..7], &moved[..7], scale).is_some());
    assert_eq!(
        trimmed_homography_residual(&reference, &moved[..9], scale),
        None
    );
}

#[test]
fn the_tracker_follows_a_moving_image_and_seeds_again_when_it_loses_the_points() {
    // A texture moved 2 px right per frame: the seeded points follow it.
    let frame = |shift: f32| {
        let (w, h) = (160usize, 120usize);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let (u, v) = (x as f32 - shift, y as f32);
                let g = 128.0
                    + 50.0 * (u * 0.23).sin() * (v * 0.19).cos()
                    + 30.0 * (u * 0.07 + v * 0.05).sin();
                rgb.extend([g as u8; 3]);
            }
        }
        track::Gray::from_rgb(w, h, &rgb).expect("gray")
    };
    let seed: [[f32; 2]; track::TRACKED] =
        std::array::from_fn(|j| [40.0 + 6.0 * j as f32, 40.0 + 3.0 * (j % 5) as f32]);
    let mut tracker = PointTracker::default();
    let first = tracker
        .observe(frame(0.0), Some((seed, 30.0)))
        .expect("seeded");
    assert_eq!(first.points, seed);
    let mut last = first;
    for k in 1..5 {
        // The mesh finds the face where it moved to, to within a few pixels.
        let landmarks = seed.map(|p| [p[0] + 2.0 * k as f32 + 1.5, p[1] - 1.0]);
        last = tracker
            .observe(frame(2.0 * k as f32), Some((landmarks, 30.0)))
            .expect("followed");
        assert_eq!(last.track, first.track, "frame {k}");
    }
    for (p, s) in last.points.iter().zip(&seed) {
        assert!(
            (p[0] - s[0] - 8.0).abs() < 0.1 && (p[1] - s[1]).abs() < 0.1,
            "{p:?}"
        );
    }
    // Landmarks far from the followed points (another face): seeded again.
    let elsewhere = seed.map(|p| [p[0] + 20.0, p[1]]);
    let moved = tracker
        .observe(frame(10.0), Some((elsewhere, 30.0)))
        .expect("seeded elsewhere");
    assert_ne!(moved.track, first.track);
    assert_eq!(moved.points, elsewhere);
    // A blank frame loses every point: the tracker seeds again, a new track.
    let blank = track::Gray::from_rgb(160, 120, &vec![90u8; 160 * 120 * 3]).expect("gray");
    let again = tracker
        .observe(blank, Some((seed, 30.0)))
        .expect("seeded again");
    assert_ne!(again.track, first.track);
    // No track and no seed: nothing.
    tracker.reset();
    assert_eq!(tracker.observe(frame(0.0), None), None);
}

fn raw(mode: &str) -> RawLiveness {
    toml::from_str(&format!("mode = \"{mode}\"")).expect("raw")
}

#[test]
fn a_mode_that_needs_a_model_file_names_the_missing_key() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
    let e = LivenessConfig::from_raw(raw("passive"), &base).unwrap_err();
    assert_eq!(e.key, "liveness.antispoof");
    let raw_motion = RawLiveness {
        antispoof: Some("../models/antispoof.onnx".into()),
        liveness: Some("../models/liveness.onnx".into()),
        ..raw("passive+motion")
    };
    let e = LivenessConfig::from_raw(raw_motion, &base).unwrap_err();
    assert_eq!(e.key, "liveness.facemesh");
    let missing = RawLiveness {
        antispoof: Some("../models/no-such.onnx".into()),
        liveness: Some("../models/liveness.onnx".into()),
        ..raw("passive")
    };
    let e = LivenessConfig::from_raw(missing, &base).unwrap_err();
    assert_eq!(e.key, "liveness.antispoof");
    assert!(e.message.contains("no-such.onnx"), "{}", e.message);
    // Off needs nothing, and loads nothing it names.
    let off = LivenessConfig::from_raw(raw("off"), &base).expect("off");
    assert!(off.model_files().is_empty());
}

#[test]
fn thresholds_are_validated_by_key() {
    let base = Path::new(".");
    for (key, text) in [
        ("liveness.min_real", "min_real = 1.5"),
        ("liveness.min_live", "min_live = -0.1"),
        ("liveness.min_window_ms", "min_window_ms = 20"),
        ("liveness.max_planar_residual", "max_planar_residual = nan"),
        (
            "liveness.max_tracked_residual",
            "max_tracked_residual = 1.5",
        ),
        ("liveness.blink_ratio", "blink_ratio = 2"),
        ("liveness.antispoof_sha256", "antispoof_sha256 = \"abc\""),
    ] {
        let raw: RawLiveness = toml::from_str(text).expect(text);
        let e = LivenessConfig::from_raw(raw, base).unwrap_err();
        assert_eq!(e.key, key, "{text}");
    }
    assert!(toml::from_str::<RawLiveness>("mode = \"motion\"").is_err());
    assert!(toml::from_str::<RawLiveness>("treshold = 1").is_err());
}

/// All thresholds at 0 once made a liveness that could flag nothing (the attack recording
/// was let through): each has a floor, and the blink, which outweighs the motion cues, a
/// ceiling.
#[test]
fn thresholds_have_floors_at_which_their_cue_still_flags() {
    let base = Path::new(".");
    let all_zero = "min_real = 0.0\nmin_live = 0.0\nmax_planar_residual = 0.0\n\
                    max_tracked_residual = 0.0\nmin_motion = 0.0\nblink_ratio = 0.0";
    let raw: RawLiveness = toml::from_str(all_zero).expect("toml");
    let e = LivenessConfig::from_raw(raw, base).unwrap_err();
    assert_eq!(e.to_string(), "key `liveness.min_real`: 0: give 0.05 to 1");
    for (key, text) in [
        ("liveness.min_real", "min_real = 0.01"),
        ("liveness.min_live", "min_live = 0.0"),
        (
            "liveness.max_planar_residual",
            "max_planar_residual = 0.001",
        ),
        (
            "liveness.max_tracked_residual",
            "max_tracked_residual = 0.0",
        ),
        ("liveness.min_motion", "min_motion = 0.0"),
        ("liveness.blink_ratio", "blink_ratio = 0.0"),
        ("liveness.blink_ratio", "blink_ratio = 1.0"),
    ] {
        let raw: RawLiveness = toml::from_str(text).expect(text);
        let e = LivenessConfig::from_raw(raw, base).unwrap_err();
        assert_eq!(e.key, key, "{text}");
    }
    let floors = "min_real = 0.05\nmin_live = 0.05\nmax_planar_residual = 0.008\n\
                  max_tracked_residual = 0.002\nmin_motion = 0.005\nblink_ratio = 0.8";
    let raw: RawLiveness = toml::from_str(floors).expect("toml");
    assert!(LivenessConfig::from_raw(raw, base).is_ok());
}

#[cfg(feature = "inference")]
#[test]
fn resize_bilinear_samples_as_tensorflow_does() {
    // A 4 x 4 ramp (value = x) halved: TF without half-pixel centres reads x = 0 and 2.
    let input: Vec<f32> = (0..4)
        .flat_map(|_| (0..4).flat_map(|x| [x as f32; 3]))
        .collect();
    let mut out = Vec::new();
    crop::resize_bilinear(&input, 4, 2, &mut out);
    let row: Vec<f32> = out.chunks(3).take(2).map(|p| p[0]).collect();
    assert_eq!(row, vec![0.0, 2.0]);
    // Upscaled 4 -> 8: x = j / 2, clamped at the last pixel.
    crop::resize_bilinear(&input, 4, 8, &mut out);
    let row: Vec<f32> = out.chunks(3).take(8).map(|p| p[0]).collect();
    assert_eq!(row, vec![0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.0]);
}

#[cfg(feature = "inference")]
#[test]
fn the_square_crop_is_the_enlarged_box_and_reads_black_outside() {
    let photo = image::RgbImage::from_fn(100, 100, |x, _| image::Rgb([x as u8, 0, 0]));
    let bbox = crate::detect::BBox {
        x0: 40.0,
        y0: 40.0,
        x1: 60.0,
        y1: 70.0,
    };
    let sq = crop::face_square(&bbox);
    assert_eq!(sq, [29.0, 34.0, 71.0, 76.0]);
    let odd = crop::face_square(&crate::detect::BBox { x0: 40.2, ..bbox });
    assert_eq!(odd, [29.0, 34.0, 71.0, 76.0]);
    let mut out = Vec::new();
    crop::square_crop(&photo, sq, 5, &mut out);
    // cropAndResize: x = x0 / W * (W - 1) + j * (x1 - x0) / W * (W - 1) / (size - 1).
    let first = 29.0 / 100.0 * 99.0;
    assert!((out[0] - first).abs() < 1e-3, "{}", out[0]);
    let mut outside = Vec::new();
    crop::square_crop(&photo, [-50.0, -50.0, -10.0, -10.0], 3, &mut outside);
    assert!(outside.iter().all(|v| *v == 0.0));
}

/// The crop matches the Python reimplementation of the package's crop (the parity
/// fixtures' inputs, `models/scripts/convert_liveness.py`), to rounding.
#[cfg(feature = "inference")]
#[test]
fn the_crop_matches_the_fixture_the_models_were_checked_on() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let photo = image::open(root.join("tests/fixtures/astronaut_320x240.png"))
        .expect("astronaut")
        .to_rgb8();
    let about: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            root.join("tests/fixtures/liveness_parity/facemesh_expected.json"),
        )
        .expect("fixture"),
    )
    .expect("json");
    // The box is written in the fixture's description, as the detector found it.
    let text = about["about"].as_str().expect("about");
    let inside = &text[text.find('[').expect("[") + 1..text.find(']').expect("]")];
    let b: Vec<f32> = inside
        .split(',')
        .map(|v| v.trim().parse().expect("number"))
        .collect();
    let bbox = crate::detect::BBox {
        x0: b[0],
        y0: b[1],
        x1: b[2],
        y1: b[3],
    };
    let mut crop = Vec::new();
    crop::square_crop(&photo, crop::face_square(&bbox), MESH_SIZE, &mut crop);
    let check = |name: &str, got: &[f32], side: u32| {
        let want = image::open(root.join("tests/fixtures/liveness_parity").join(name))
            .expect(name)
            .to_rgb8();
        assert_eq!(want.dimensions(), (side, side), "{name}");
        let worst = want
            .as_raw()
            .iter()
            .zip(got)
            .map(|(w, g)| (f32::from(*w) - g).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1.0, "{name}: worst difference {worst} levels");
    };
    check("facemesh_input.png", &crop, 192);
    let mut small = Vec::new();
    crop::resize_bilinear(&crop, 192, 128, &mut small);
    check("antispoof_input.png", &small, 128);
    crop::resize_bilinear(&crop, 192, 32, &mut small);
    check("liveness_input.png", &small, 32);
}

#[test]
fn an_unreadable_passive_score_on_one_frame_flags_the_window() {
    // NaN on one frame of twelve: before, the frame was dropped from the median, the
    // score became "missing" and the cue read as passed.
    let w = window(|k| FrameEvidence {
        real: Some(if k == 5 { f32::NAN } else { 0.9 }),
        ..evidence(turning(&HEAD, k), 0.3)
    });
    let settings = on(LivenessMode::Passive);
    assert_eq!(verdict(&settings, &w), Verdict::Spoof(Cue::Antispoof));
    // A score absent on some frames (the model not run there) is still not a median.
    let w = window(|k| FrameEvidence {
        real: (k != 5).then_some(0.1),
        ..evidence(turning(&HEAD, k), 0.3)
    });
    assert_eq!(w.measures(settings.blink_ratio).real, None);
}

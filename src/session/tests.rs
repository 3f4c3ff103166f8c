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
                Some((bbox(i as f32), &est(40.0, 2.0))),
                others,
                None,
                None,
            );
        }
        s.poll(5 * 66)
    };
    // A child beside the adult for one frame: REFER, and why.
    let mut s = session(0);
    s.observe_frame(0, Some((bbox(0.0), &est(40.0, 2.0))), &[near], None, None);
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

mod still_and_recorded_windows {
    use super::*;
    use crate::liveness::{Cue as LivenessCue, LivenessMode};
    use crate::session::{decide_window, StillWindow};

    fn frame(age: f32, others: &[BBox], real: Option<f32>) -> FrameFaces {
        FrameFaces {
            main: Some((bbox(0.0), est(age, 2.0))),
            others: others.iter().copied().collect(),
            quality: None,
            liveness: real.map(|r| FrameEvidence {
                // A face held still: eyes, nose, mouth, ears.
                keypoints: [
                    [40.0, 50.0],
                    [60.0, 50.0],
                    [50.0, 60.0],
                    [50.0, 70.0],
                    [30.0, 55.0],
                    [70.0, 55.0],
                ],
                real: Some(r),
                live: Some(r),
                ..FrameEvidence::default()
            }),
        }
    }

    fn board(mode: LivenessMode) -> SessionSettings {
        let mut s = SessionSettings::default();
        s.liveness.mode = mode;
        s
    }

    #[test]
    fn one_photo_is_a_window_of_one_frame_decided_by_the_policy() {
        let mut w = StillWindow::new(SessionSettings::default(), policy(), 1).unwrap();
        let v = w.observe(&frame(40.0, &[], None)).expect("decided at once");
        assert_eq!(
            (v.decision, v.reason, v.by_policy),
            (Decision::Allow, None, true)
        );
        assert_eq!(v.aggregate.map(|a| (a.age, a.frames)), Some((40.0, 1)));
    }

    #[test]
    fn another_face_in_the_photo_refers_as_it_would_at_the_device() {
        let near = BBox {
            x0: 300.0,
            y0: 100.0,
            x1: 400.0,
            y1: 220.0,
        };
        let mut w = StillWindow::new(SessionSettings::default(), policy(), 1).unwrap();
        let v = w.observe(&frame(40.0, &[near], None)).unwrap();
        assert_eq!(
            (v.decision, v.reason, v.by_policy),
            (Decision::Refer, Some(ReferReason::OtherFaces), false)
        );
    }

    #[test]
    fn a_photo_is_judged_on_the_passive_liveness_scores_only() {
        // A `passive+motion` board: a still photo would fail the motion cues, so a photo
        // is judged passive; a low anti-spoof score still refers it.
        let settings = board(LivenessMode::PassiveMotion);
        let mut w = StillWindow::new(settings, policy(), 1).unwrap();
        let v = w.observe(&frame(40.0, &[], Some(0.95))).unwrap();
        assert_eq!(v.decision, Decision::Allow);
        let mut w = StillWindow::new(settings, policy(), 1).unwrap();
        let v = w.observe(&frame(40.0, &[], Some(0.01))).unwrap();
        assert_eq!(
            (v.decision, v.reason, v.by_policy),
            (Decision::Refer, Some(ReferReason::Liveness), false)
        );
        // The recorded window of the device, at its own times, follows the board as is:
        // twelve still frames fail the motion cue there.
        let frames: Vec<(u64, FrameFaces)> = (0..12u64)
            .map(|k| (k * 100, frame(40.0, &[], Some(0.95))))
            .collect();
        let v = decide_window(settings, policy(), 0, frames.iter().map(|(t, f)| (*t, f))).unwrap();
        let mut session = Session::new(settings, policy(), 0).unwrap();
        let mut by_hand = None;
        for (t, f) in &frames {
            session.observe_faces(*t, f);
            by_hand = session.poll(*t);
            if by_hand.is_some() {
                break;
            }
        }
        let by_hand = by_hand.or_else(|| session.poll(settings.timeout_ms));
        assert_eq!(
            (Some(v.decision), v.reason),
            (by_hand, session.refer_reason())
        );
        assert_eq!(v.reason, Some(ReferReason::Liveness));
        assert_eq!(session.liveness_cue(), Some(LivenessCue::Still));
    }

    #[test]
    fn views_beyond_min_frames_are_not_seen_and_too_few_time_out() {
        let mut w = StillWindow::new(SessionSettings::default(), policy(), 8).unwrap();
        let decided: Vec<bool> = (0..5)
            .map(|_| w.observe(&frame(40.0, &[], None)).is_some())
            .collect();
        assert_eq!(decided, [false, false, false, false, true]);
        // Three views of five with a face: the device would wait for more; a photo has no
        // more, so the window times out, keeping the aggregate it held.
        let mut w = StillWindow::new(SessionSettings::default(), policy(), 5).unwrap();
        for age in [Some(40.0), None, Some(41.0), None, Some(42.0)] {
            let faces = age.map_or_else(FrameFaces::default, |a| frame(a, &[], None));
            assert!(w.observe(&faces).is_none());
        }
        let v = w.finish();
        assert_eq!(
            (v.decision, v.reason),
            (Decision::Refer, Some(ReferReason::Timeout))
        );
        assert_eq!(v.aggregate.map(|a| (a.age, a.frames)), Some((41.0, 3)));
        assert!(!v.by_policy);
    }

    #[test]
    fn a_photo_without_a_usable_face_refers_with_the_devices_reasons() {
        let w = StillWindow::new(SessionSettings::default(), policy(), 1).unwrap();
        let mut none = w.clone();
        assert!(none.observe(&FrameFaces::default()).is_none());
        assert_eq!(none.finish().reason, Some(ReferReason::NoFace));
        let mut settings = SessionSettings::default();
        settings.quality.min_iod_px = Some(1000.0);
        let mut small = StillWindow::new(settings, policy(), 1).unwrap();
        let faces = FrameFaces {
            quality: Some(crate::quality::Quality {
                iod_px: 20.0,
                yaw_deg: 0.0,
                roll_deg: 0.0,
                sharpness: 100.0,
                brightness: 120.0,
                clipped: 0.0,
            }),
            ..frame(40.0, &[], None)
        };
        assert!(small.observe(&faces).is_none());
        let v = small.finish();
        assert_eq!(
            (v.reason, v.aggregate),
            (Some(ReferReason::LowQuality), None)
        );
    }
}

use super::*;
use crate::tools::eval::Estimated;
use crate::tools::manifest::Entry;

fn prediction(truth: f32, estimate: Option<f32>) -> Prediction {
    let entry = Entry {
        rel_path: format!("{truth}.jpg"),
        path: format!("/x/{truth}.jpg").into(),
        age: truth,
        gender: None,
        race: None,
        subject: None,
    };
    let outcome = match estimate {
        None => Outcome::NoFace,
        Some(age) => Outcome::Estimated(Estimated::made_up(age, 4.0)),
    };
    Prediction { entry, outcome }
}

/// 400 minors estimated 8 to 22.75 (one at 26.0, the oldest-looking), 100 adults of
/// 30 estimated 20 to 39.9.
fn set() -> Vec<Prediction> {
    let mut p: Vec<Prediction> = (0..400)
        .map(|i| prediction(12.0, Some(8.0 + (i % 60) as f32 * 0.25)))
        .collect();
    p[0] = prediction(16.0, Some(26.0));
    p.extend((0..100).map(|i| prediction(30.0, Some(20.0 + i as f32 * 0.2))));
    p
}

fn clean(predictions: &[Prediction]) -> LabelledSet<'_> {
    LabelledSet {
        name: "clean",
        predictions,
    }
}

fn request(rule: RuleKind, max_minor_allow: f64) -> Request {
    Request {
        rule,
        max_minor_allow,
        max_sigma: SigmaCap::None,
    }
}

fn board() -> Policy {
    Policy::new(18.0, 25.0, 1.0).unwrap()
}

#[test]
fn the_threshold_is_the_lowest_that_bounds_the_minors() {
    let c = calibrate(
        &[clean(&set())],
        &board(),
        request(RuleKind::Threshold, 0.01),
        Path::new("set.csv"),
        b"x",
        "2026-12-01".into(),
    )
    .unwrap();
    // With the 26-year-old-looking minor let through, 1 of 400 has an upper bound of
    // 0.0118 > 0.01; with none (allow_at above 26) 1 - 0.05^(1/400) = 0.0075.
    let Rule::Threshold { allow_at, .. } = c.policy.rule() else {
        panic!("{:?}", c.policy.rule())
    };
    assert!((allow_at - 26.1).abs() < 1e-3, "{allow_at}");
    assert_eq!(c.chosen.minors_allowed, 0);
    assert!((c.chosen.minor_allow_upper - (1.0 - 0.05f64.powf(1.0 / 400.0))).abs() < 1e-9);
    // Adults estimated under 26.1: 20.0 .. 26.0 are 31 of 100.
    assert!(
        (c.chosen.adult_referral - 0.31).abs() < 1e-9,
        "{}",
        c.chosen.adult_referral
    );
    assert_eq!((c.calibration.n, c.calibration.minors), (500, 400));
    assert_eq!(
        c.calibration.manifest_sha256,
        "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
    );
    // The section reads back as a valid policy, the same rule.
    let toml = policy_toml(&c);
    let raw: crate::decide::RawPolicy = toml::from_str::<toml::Table>(&toml).unwrap()["policy"]
        .clone()
        .try_into()
        .unwrap();
    assert_eq!(Policy::from_raw(raw).unwrap(), c.policy);
}

#[test]
fn sets_that_cannot_show_the_bound_are_refused() {
    let tiny: Vec<Prediction> = (0..50).map(|_| prediction(12.0, Some(10.0))).collect();
    let e = calibrate(
        &[clean(&tiny)],
        &board(),
        request(RuleKind::Threshold, 0.01),
        Path::new("t.csv"),
        b"",
        "d".into(),
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            CalibrateError::TooFewMinors {
                minors: 50,
                needed: 299,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("299"));
    let adults: Vec<Prediction> = (0..50).map(|_| prediction(40.0, Some(40.0))).collect();
    let e = calibrate(
        &[clean(&adults)],
        &board(),
        request(RuleKind::Threshold, 0.001),
        Path::new("a.csv"),
        b"",
        "d".into(),
    )
    .unwrap_err();
    assert!(
        matches!(e, CalibrateError::NoMinors { needed: 2995, .. }),
        "{e}"
    );
    for eps in [0.0, -0.1, 1.5, f64::NAN] {
        let e = calibrate(
            &[clean(&set())],
            &board(),
            request(RuleKind::Threshold, eps),
            Path::new("s.csv"),
            b"",
            "d".into(),
        );
        assert!(matches!(e, Err(CalibrateError::Target(_))), "{eps}");
    }
    let e = calibrate(
        &[clean(&set())],
        &board(),
        request(RuleKind::POver, 0.01),
        Path::new("s.csv"),
        b"",
        "d".into(),
    );
    assert_eq!(e.unwrap_err(), CalibrateError::NoPOver);
}

#[test]
fn the_margin_rule_gets_a_k() {
    let c = calibrate(
        &[clean(&set())],
        &board(),
        request(RuleKind::Margin, 0.01),
        Path::new("s.csv"),
        b"",
        "d".into(),
    )
    .unwrap();
    // sigma 4: 26 - 4k < 25 needs k > 0.25.
    assert_eq!(c.policy.rule(), Rule::Margin { k_sigma: 0.3 });
}

#[test]
fn dates_are_civil() {
    let d = today();
    assert_eq!(d.len(), 10);
    assert!(d.starts_with("20"));
}

#[test]
fn the_bound_holds_on_every_degraded_copy_and_on_all_together() {
    let clean_set = set();
    // Blurred, one more minor looks 28: the threshold must clear it too.
    let mut blurred = set();
    blurred[1] = prediction(15.0, Some(28.0));
    let sets = [
        clean(&clean_set),
        LabelledSet {
            name: "blur",
            predictions: &blurred,
        },
    ];
    let c = calibrate(
        &sets,
        &board(),
        request(RuleKind::Threshold, 0.01),
        Path::new("set.csv"),
        b"x",
        "d".into(),
    )
    .unwrap();
    let Rule::Threshold { allow_at, .. } = c.policy.rule() else {
        panic!("{:?}", c.policy.rule())
    };
    assert!((allow_at - 28.1).abs() < 1e-3, "{allow_at}");
    assert_eq!(c.calibration.degraded, ["blur"]);
    // One step looser lets the blurred 28-year-old-looking minor through: that set is
    // where the bound fails.
    let looser = c
        .table
        .iter()
        .find(|t| (t.value - 28.0).abs() < 1e-3)
        .expect("28.0 in the table");
    assert_eq!((looser.minors_allowed, looser.minors_allowed_all), (0, 1));
    assert_eq!(looser.worst_set, "blur");
    assert!(policy_toml(&c).contains("degraded = [\"blur\"]"));
}

#[test]
fn a_sigma_cap_is_chosen_when_it_costs_fewer_adults() {
    // A minor estimated 30 with a sigma of 15 (a face the model is unsure of): without a
    // cap the threshold must go above 30; a cap under 15 refers that face instead.
    let mut doubtful = set();
    doubtful[1] = prediction(15.0, Some(30.0));
    if let Outcome::Estimated(e) = &mut doubtful[1].outcome {
        e.estimate.sigma = 15.0;
    }
    let run = |max_sigma| {
        calibrate(
            &[clean(&doubtful)],
            &board(),
            Request {
                max_sigma,
                ..request(RuleKind::Threshold, 0.01)
            },
            Path::new("s.csv"),
            b"",
            "d".into(),
        )
        .unwrap()
    };
    let none = run(SigmaCap::None);
    let auto = run(SigmaCap::Auto);
    assert_eq!(none.policy.max_sigma(), None);
    assert!(none.chosen.adult_referral > 0.5, "{:?}", none.chosen);
    // 14 is the loosest cap under 15; tighter ones cost no fewer adults (sigma 4).
    assert_eq!(auto.policy.max_sigma(), Some(14.0));
    assert!(
        (auto.chosen.adult_referral - 0.31).abs() < 1e-9,
        "{:?}",
        auto.chosen
    );
    assert_eq!(run(SigmaCap::Fixed(14.0)).policy, auto.policy);
    assert!(policy_toml(&auto).contains("max_sigma = 14.0"));
}

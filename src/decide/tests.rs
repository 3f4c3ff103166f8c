use super::*;

fn raw(text: &str) -> RawPolicy {
    toml::from_str(text).expect("policy toml")
}

#[test]
fn challenge_25_with_margin() {
    let p = Policy::new(18.0, 25.0, 1.0).unwrap();
    let d = |age, sigma| p.decide(age, sigma, None);
    assert_eq!(d(30.0, 5.0), Decision::Allow);
    assert_eq!(d(30.0, 5.1), Decision::Refer);
    assert_eq!(d(12.0, 5.9), Decision::Deny);
    assert_eq!(d(12.0, 6.0), Decision::Refer);
    assert_eq!(d(21.0, 0.0), Decision::Refer);
    assert_eq!(d(f32::NAN, 1.0), Decision::Refer);
    assert_eq!(d(40.0, f32::INFINITY), Decision::Refer);
    assert_eq!(d(40.0, -1.0), Decision::Refer);
}

#[test]
fn bad_policies_are_refused() {
    assert!(Policy::new(25.0, 18.0, 1.0).is_err());
    assert!(Policy::new(18.0, 25.0, -0.5).is_err());
    assert!(Policy::new(f32::NAN, 25.0, 1.0).is_err());
    assert!(Policy::new(18.0, 25.0, 0.0).is_ok());
    // What a hostile tester got accepted: a gate that opens for anyone.
    assert_eq!(Policy::new(1.0, 1.0, 0.0), Err(PolicyError::LegalAge(1.0)));
    assert!(matches!(
        Policy::new(18.0, 1e30, 1.0),
        Err(PolicyError::ChallengeAge { .. })
    ));
    assert!(Policy::new(18.0, 33.0, 1.0).is_ok());
    assert!(Policy::new(18.0, 33.5, 1.0).is_err());
    assert!(Policy::new(18.0, 25.0, 5.0).is_ok());
    assert_eq!(Policy::new(18.0, 25.0, 5.5), Err(PolicyError::Margin(5.5)));
    assert!(Policy::new(30.0, 30.0, 1.0).is_ok());
    assert!(Policy::new(31.0, 31.0, 1.0).is_err());
    assert!(Policy::new(18.0, 25.0, f32::INFINITY).is_err());
    // A threshold below the legal age, a probability that is not one.
    let t = |allow_at, deny_below| {
        Policy::with_rule(
            18.0,
            25.0,
            Rule::Threshold {
                allow_at,
                deny_below,
            },
        )
    };
    assert!(t(27.0, 15.0).is_ok());
    assert!(t(17.0, 15.0).is_err());
    assert!(t(27.0, 19.0).is_err());
    let p = |age, allow_p| {
        Policy::with_rule(
            18.0,
            25.0,
            Rule::POver {
                age,
                allow_p,
                deny_p: 0.05,
            },
        )
    };
    assert!(p(25, 0.95).is_ok());
    assert_eq!(p(17, 0.95), Err(PolicyError::POverAge(17)));
    assert_eq!(
        p(16, 0.95),
        Err(PolicyError::POverAge(16)),
        "below the legal age"
    );
    assert!(p(25, 1.0).is_err() && p(25, 0.3).is_err());
}

#[test]
fn the_policy_section_names_its_keys() {
    let ok = raw("legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 28.5\ndeny_below = 14");
    let p = Policy::from_raw(ok).unwrap();
    assert_eq!(
        p.rule(),
        Rule::Threshold {
            allow_at: 28.5,
            deny_below: 14.0
        }
    );
    let cases = [
        ("legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 28.5", "policy.rule"),
        ("legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 50\ndeny_below = 14", "policy.allow_at"),
        ("legal_age = 18\nchallenge_age = 25\nk_sigma = 1\nallow_at = 28", "policy.allow_at"),
        ("legal_age = 18\nchallenge_age = 25\nrule = \"p_over\"\np_over_age = 20\nallow_p = 0.9", "policy.p_over_age"),
        ("legal_age = 18\nchallenge_age = 25\n", "policy.rule"),
    ];
    for (text, key) in cases {
        let e = Policy::from_raw(raw(text)).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
    }
    assert!(toml::from_str::<RawPolicy>(
        "legal_age = 18\nchallenge_age = 25\nk_sigma = 1\nfoo = 2"
    )
    .is_err());
    assert!(
        toml::from_str::<RawPolicy>("legal_age = 18\nchallenge_age = 25\nrule = \"vibes\"")
            .is_err()
    );
}

#[test]
fn a_host_asks_for_its_own_legal_age_with_the_board_margin() {
    let board = Policy::new(18.0, 25.0, 1.0).unwrap();
    let p = board.with_legal_age(21.0).unwrap();
    assert_eq!((p.legal_age(), p.challenge_age()), (21.0, 28.0));
    assert_eq!(p.rule(), Rule::Margin { k_sigma: 1.0 });
    assert!(board.with_legal_age(1.0).is_err());
    assert!(board.with_legal_age(255.0).is_err());
    let t = Policy::with_rule(
        18.0,
        25.0,
        Rule::Threshold {
            allow_at: 27.0,
            deny_below: 15.0,
        },
    )
    .unwrap();
    assert_eq!(
        t.with_legal_age(21.0).unwrap().rule(),
        Rule::Threshold {
            allow_at: 30.0,
            deny_below: 18.0
        }
    );
    let p = Policy::with_rule(
        18.0,
        25.0,
        Rule::POver {
            age: 18,
            allow_p: 0.9,
            deny_p: 0.05,
        },
    )
    .unwrap();
    assert!(matches!(
        p.with_legal_age(21.0).unwrap().rule(),
        Rule::POver { age: 21, .. }
    ));
    assert!(
        p.with_legal_age(19.0).is_err(),
        "the model has no P(age >= 19)"
    );
}

#[test]
fn every_rule_refers_with_a_reason() {
    let m = Policy::new(18.0, 25.0, 1.0).unwrap();
    assert_eq!(m.decide_why(40.0, 2.0, None), (Decision::Allow, None));
    assert_eq!(
        m.decide_why(24.0, 2.0, None),
        (Decision::Refer, Some(ReferReason::Uncertain))
    );
    assert_eq!(
        m.decide_why(f32::NAN, 2.0, None),
        (Decision::Refer, Some(ReferReason::Unreadable))
    );
    let t = Policy::with_rule(
        18.0,
        25.0,
        Rule::Threshold {
            allow_at: 27.0,
            deny_below: 15.0,
        },
    )
    .unwrap();
    assert_eq!(t.decide(27.0, 9.0, None), Decision::Allow);
    assert_eq!(t.decide(26.9, 0.1, None), Decision::Refer);
    assert_eq!(t.decide(14.9, 9.0, None), Decision::Deny);
    let p = Policy::with_rule(
        18.0,
        25.0,
        Rule::POver {
            age: 25,
            allow_p: 0.9,
            deny_p: 0.05,
        },
    )
    .unwrap();
    let probs = |p18, p25| Some([1.0, 1.0, p18, (p18 + p25) / 2.0, p25]);
    assert_eq!(p.decide(30.0, 5.0, probs(0.99, 0.95)), Decision::Allow);
    assert_eq!(p.decide(30.0, 5.0, probs(0.99, 0.5)), Decision::Refer);
    assert_eq!(p.decide(12.0, 5.0, probs(0.01, 0.0)), Decision::Deny);
    assert_eq!(
        p.decide_why(30.0, 5.0, None),
        (Decision::Refer, Some(ReferReason::Unreadable))
    );
    assert_eq!(p.decide(30.0, 5.0, Some([f32::NAN; 5])), Decision::Refer);
    assert_eq!(
        p.confidence(Decision::Allow, 30.0, 5.0, probs(0.99, 0.95)),
        95
    );
}

#[test]
fn a_policy_may_tighten_the_board_s_never_loosen_it() {
    let policy = |text: &str| Policy::from_raw(raw(text)).expect("valid policy");
    let board = policy(
        "legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 29.8\n\
         deny_below = 14",
    );
    let refused = |text: &str| policy(text).no_looser_than(&board).unwrap_err();
    // What the hostile tester had acked: a gate for ten-year-olds.
    let e = refused(
        "legal_age = 10\nchallenge_age = 10\nrule = \"threshold\"\nallow_at = 10\n\
         deny_below = 0",
    );
    assert!(e.contains("legal_age 10 is below the board's 18"), "{e}");
    let e = refused(
        "legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 29\n\
         deny_below = 14",
    );
    assert!(
        e.contains("allow_at - legal_age 11 is below the board's 11.8"),
        "{e}"
    );
    let e = refused(
        "legal_age = 21\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 31\n\
         deny_below = 14\nmin_request_age = 16",
    );
    assert!(e.contains("min_request_age 16"), "{e}");
    let e = refused("legal_age = 18\nchallenge_age = 25\nk_sigma = 2");
    assert!(
        e.contains("rule `margin` is not the board's `threshold`"),
        "{e}"
    );
    // Tighter: a higher line, a higher legal age with its line moved up, DENY moved.
    for tighter in [
        "legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 40\n\
         deny_below = 17",
        "legal_age = 21\nchallenge_age = 28\nrule = \"threshold\"\nallow_at = 32.8\n\
         deny_below = 5",
    ] {
        assert_eq!(policy(tighter).no_looser_than(&board), Ok(()), "{tighter}");
    }
    let margin = policy("legal_age = 18\nchallenge_age = 25\nk_sigma = 1");
    let looser_margin = policy("legal_age = 18\nchallenge_age = 25\nk_sigma = 0.5");
    assert!(looser_margin
        .no_looser_than(&margin)
        .unwrap_err()
        .contains("k_sigma"));
    let nearer = policy("legal_age = 18\nchallenge_age = 24\nk_sigma = 1");
    assert!(nearer.no_looser_than(&margin).is_err());
    assert_eq!(margin.no_looser_than(&margin), Ok(()));
}

#[test]
fn a_policy_text_is_one_policy_table_checked_by_key() {
    let ok = Policy::from_toml("[policy]\nlegal_age = 18\nchallenge_age = 25\nk_sigma = 1\n");
    assert_eq!(ok.ok(), Policy::new(18.0, 25.0, 1.0).ok());
    let err = |text: &str| Policy::from_toml(text).unwrap_err().to_string();
    assert!(
        err("legal_age = 18").contains("policy"),
        "{}",
        err("legal_age = 18")
    );
    assert!(
        err("[policy]\nlegal_age = 18\nchallenge_age = 25\nk_sigma = 1\nfoo = 1\n").contains("foo")
    );
    assert!(
        err("[policy]\nlegal_age = 18\nchallenge_age = 12\nk_sigma = 1\n")
            .contains("policy.challenge_age")
    );
    assert!(matches!(
        Policy::from_toml("not toml ["),
        Err(PolicyTextError::Toml(_))
    ));
}

#[test]
fn a_sigma_over_the_cap_refers_under_every_rule() {
    let policy = |rule: &str| {
        Policy::from_raw(raw(&format!(
            "legal_age = 18\nchallenge_age = 25\n{rule}\nmax_sigma = 8"
        )))
        .expect("valid policy")
    };
    let uncertain = (Decision::Refer, Some(ReferReason::Uncertain));
    // The blurred object of the UTKFace test split: 32 years, sigma 17.8.
    let t = policy("rule = \"threshold\"\nallow_at = 29.8\ndeny_below = 17.3");
    assert_eq!(t.decide_why(32.0, 17.8, None), uncertain);
    assert_eq!(t.decide_why(32.0, 8.0, None), (Decision::Allow, None));
    // A DENY is referred too: over the cap the estimate says nothing either way.
    assert_eq!(t.decide_why(8.0, 8.5, None), uncertain);
    let m = policy("rule = \"margin\"\nk_sigma = 0.1");
    assert_eq!(m.decide_why(60.0, 9.0, None), uncertain);
    let p = policy("rule = \"p_over\"\np_over_age = 25\nallow_p = 0.9");
    assert_eq!(p.decide_why(40.0, 9.0, Some([1.0; 5])), uncertain);
    // A REQUEST keeps the cap.
    assert_eq!(t.with_legal_age(21.0).unwrap().max_sigma(), Some(8.0));
    let e = Policy::from_raw(raw(
        "legal_age = 18\nchallenge_age = 25\nk_sigma = 1\nmax_sigma = 0.1",
    ))
    .unwrap_err();
    assert_eq!(e.key, "policy.max_sigma");
}

#[test]
fn a_remote_policy_keeps_the_boards_sigma_cap_or_a_tighter_one() {
    let policy = |cap: &str| {
        Policy::from_raw(raw(&format!(
            "legal_age = 18\nchallenge_age = 25\nrule = \"threshold\"\nallow_at = 29.8\n\
             deny_below = 14\n{cap}"
        )))
        .expect("valid policy")
    };
    let board = policy("max_sigma = 8");
    assert!(policy("max_sigma = 6").no_looser_than(&board).is_ok());
    let e = policy("max_sigma = 9").no_looser_than(&board).unwrap_err();
    assert!(e.contains("max_sigma 9 is above the board's 8"), "{e}");
    let e = policy("").no_looser_than(&board).unwrap_err();
    assert!(e.contains("max_sigma none"), "{e}");
    // A board without a cap takes one.
    assert!(board.no_looser_than(&policy("")).is_ok());
}

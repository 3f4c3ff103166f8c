"""scripts/compare_rules.py: the gate's rules scored on an eval's per-image rows."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import compare_rules as C  # noqa: E402

HEADER = (
    "path,true_age,status,age,sigma,decision,reason,faces,steps,p_over,"
    "iod_px,yaw_deg,sharpness,error\n"
)


def _csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(r + "\n" for r in rows))
    return path


def test_each_rule_allows_only_what_it_should(tmp_path):
    clean = _csv(
        tmp_path / "v.csv",
        [
            # a minor the estimate allows and p_over(25) does not
            '"a.jpg",16,ok,31.000,5.000,ALLOW,,1,31.0,0.99;0.9;0.8;0.5;0.40,60.0,1.0,9.0,',
            # an adult p_over allows and the estimate does not
            '"b.jpg",30,ok,28.000,5.000,REFER,uncertain,1,28.0,1;1;1;0.9;0.70,60.0,1.0,9.0,',
            # an adult both allow
            '"c.jpg",40,ok,41.000,5.000,ALLOW,,1,41.0,1;1;1;1;0.99,60.0,1.0,9.0,',
            # no face and a failure: never allowed, still counted
            '"d.jpg",50,no_face,,,REFER,no_face,0,,,,,,',
            '"e.jpg",10,failed,,,,,,,,,,,"unreadable"',
        ],
    )
    grey = _csv(
        tmp_path / "v.grey.csv", ['"a.jpg",16,ok,20.0,5.0,REFER,uncertain,1,20,1;1;1;1;0.9,1,1,1,']
    )
    report = tmp_path / "v.json"
    report.write_text(
        json.dumps(
            {"per_image_csv": str(clean), "robustness": {"grey": {"per_image_csv": str(grey)}}}
        )
    )
    sets = C.sets(json.loads(report.read_text()))
    assert [n for n, _ in sets] == ["clean", "grey"]
    rows = C.read_rows(clean)
    by_estimate = C.rates(rows, C.threshold_rule(29.8))
    assert by_estimate == C.Rates(minors=2, minors_allowed=1, adults=3, adults_not_allowed=2)
    by_p = C.rates(rows, C.p_over_rule(25, 0.61))
    assert by_p == C.Rates(minors=2, minors_allowed=0, adults=3, adults_not_allowed=1)
    # sigma 5: 31 - 5 >= 25 allows the minor, 41 - 5 the adult, 28 - 5 not
    assert C.rates(rows, C.margin_rule(1.0, 25)) == by_estimate
    assert C.rates(rows, C.margin_rule(1.5, 25)).minors_allowed == 0
    assert C.rates(C.read_rows(grey), C.p_over_rule(25, 0.61)).minors_allowed == 1


def test_settings_are_parsed_and_a_bad_one_is_named():
    rules = C.parse_rules("29.8", "1", "21:0.95")
    assert list(rules) == [
        "threshold, allow_at 29.8",
        "margin, k_sigma 1",
        "p_over(21), allow_p 0.95",
    ]
    try:
        C.parse_rules("", "", "20:0.9")
    except SystemExit as e:
        assert "20:0.9" in str(e)
    else:
        raise AssertionError("p_over(20) was taken")


def test_a_report_without_the_degraded_rows_is_refused(tmp_path):
    report = {"per_image_csv": "v.csv", "robustness": {"scan": {"mae": 5.0}}}
    try:
        C.sets(report)
    except SystemExit as e:
        assert "robustness.scan" in str(e)
    else:
        raise AssertionError("a report without per_image_csv was taken")


def test_its_p_over_ages_are_the_student_s():
    from agegate_models.student import THRESHOLDS

    assert C.P_OVER_AGES == THRESHOLDS


def test_a_sigma_cap_and_the_devices_own_refers_keep_rows_from_every_rule(tmp_path):
    header = HEADER.replace("sharpness,error", "sharpness,by_policy,error")
    path = tmp_path / "v.csv"
    path.write_text(
        header
        # a blurred non-face "minor" estimated 32 with sigma 17.8: the cap refers it
        + '"a.jpg",16,ok,32.000,17.800,ALLOW,,1,32.0,,60.0,1.0,9.0,true,\n'
        # an adult beside another face: the window referred it, no rule may allow it
        + '"b.jpg",40,ok,41.000,3.000,REFER,other_faces,2,41.0,,60.0,1.0,9.0,false,\n'
    )
    rows = C.read_rows(path)
    rules = C.parse_rules("29.8", "", "", max_sigma="8")
    assert list(rules) == ["threshold, allow_at 29.8", "threshold, allow_at 29.8, max_sigma 8"]
    plain, cap = (C.rates(rows, r) for r in rules.values())
    assert plain == C.Rates(minors=1, minors_allowed=1, adults=1, adults_not_allowed=1)
    assert cap == C.Rates(minors=1, minors_allowed=0, adults=1, adults_not_allowed=1)

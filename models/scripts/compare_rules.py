"""The gate's rules side by side on every set of one `agegate eval` run: the threshold on
the estimate (ALLOW at `--allow-at`), the margin (ALLOW when age - k sigma reaches the
challenge age, `--k-sigma`) and the threshold on the model's P(age >= A) (ALLOW at
`--allow-p AGE:P`), each at any number of settings, from the per-image rows the eval
wrote for the clean set and for each `--degrade` kind (README "Operating point").

Only ALLOW matters for the two figures: under-18s ALLOWed and adults 25+ not ALLOWed.
A photo without a face, or that failed, is not ALLOWed by any rule (the gate REFERs), nor
is one the device's window referred for a reason no rule changes (another face, liveness,
low quality: `by_policy` false in the rows). `--max-sigma 8,10` adds the threshold rules
again with each cap on sigma (over it: REFER).

    agegate eval --manifest ../shared/data/utkface/val.csv --json out/val.json --degrade all
    python models/scripts/compare_rules.py --json out/val.json --allow-at 29.8 \\
        --k-sigma 1 --allow-p 25:0.61,21:0.95
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path

# The ages of the `p_over` output (student.THRESHOLDS, the runtime's P_OVER_AGES), written
# out so that this runs without torch.
P_OVER_AGES = (13, 16, 18, 21, 25)


@dataclass(frozen=True)
class Row:
    age: int
    estimate: float | None  # None: no face, or failed
    sigma: float | None
    p_over: tuple[float, ...] | None


@dataclass(frozen=True)
class Rates:
    minors: int
    minors_allowed: int
    adults: int
    adults_not_allowed: int

    @property
    def adult_share(self) -> float:
        return self.adults_not_allowed / self.adults if self.adults else float("nan")


def read_rows(path: Path) -> list[Row]:
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            # Rows of evals before the column: every face was the policy's to decide.
            ok = r["status"] == "ok" and r.get("by_policy", "true") != "false"
            p = r["p_over"] if ok else ""
            rows.append(
                Row(
                    age=int(float(r["true_age"])),
                    estimate=float(r["age"]) if ok else None,
                    sigma=float(r["sigma"]) if ok else None,
                    p_over=tuple(float(v) for v in p.split(";")) if p else None,
                )
            )
    return rows


def rates(rows: list[Row], allowed) -> Rates:
    minors = [r for r in rows if r.age < 18]
    adults = [r for r in rows if r.age >= 25]
    return Rates(
        minors=len(minors),
        minors_allowed=sum(allowed(r) for r in minors),
        adults=len(adults),
        adults_not_allowed=sum(not allowed(r) for r in adults),
    )


def threshold_rule(allow_at: float):
    return lambda r: r.estimate is not None and r.estimate >= allow_at


def capped(rule, max_sigma: float):
    return lambda r: r.sigma is not None and r.sigma <= max_sigma and rule(r)


def margin_rule(k_sigma: float, challenge_age: float):
    return lambda r: r.estimate is not None and r.estimate - k_sigma * r.sigma >= challenge_age


def p_over_rule(at: int, allow_p: float):
    i = P_OVER_AGES.index(at)
    return lambda r: r.p_over is not None and r.p_over[i] >= allow_p


def sets(report: dict) -> list[tuple[str, Path]]:
    """The clean set and every degradation, with where their rows are."""
    out = [("clean", Path(report["per_image_csv"]))]
    for kind, summary in report.get("robustness", {}).items():
        if "per_image_csv" not in summary:
            raise SystemExit(f"robustness.{kind} has no per_image_csv: rerun the eval")
        out.append((kind, Path(summary["per_image_csv"])))
    return out


def parse_rules(
    allow_at: str, k_sigma: str, allow_p: str, challenge_age: float = 25, max_sigma: str = ""
) -> dict:
    """`--allow-at 29.8,31`, `--k-sigma 1` and `--allow-p 25:0.61,21:0.95` -> {name: rule};
    `--max-sigma 8` adds each threshold with that cap."""
    rules = {}
    for t in filter(None, allow_at.split(",")):
        rules[f"threshold, allow_at {float(t):g}"] = threshold_rule(float(t))
        for cap in filter(None, max_sigma.split(",")):
            name = f"threshold, allow_at {float(t):g}, max_sigma {float(cap):g}"
            rules[name] = capped(threshold_rule(float(t)), float(cap))
    for k in filter(None, k_sigma.split(",")):
        rules[f"margin, k_sigma {float(k):g}"] = margin_rule(float(k), challenge_age)
    for item in filter(None, allow_p.split(",")):
        at, _, p = item.partition(":")
        if int(at) not in P_OVER_AGES or not p:
            raise SystemExit(f"--allow-p {item!r}: give AGE:P with AGE one of {P_OVER_AGES}")
        rules[f"p_over({int(at)}), allow_p {float(p):g}"] = p_over_rule(int(at), float(p))
    return rules


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, required=True, help="agegate eval's report")
    ap.add_argument("--allow-at", default="", help="threshold rule settings, comma list")
    ap.add_argument("--k-sigma", default="", help="margin rule settings, comma list")
    ap.add_argument("--challenge-age", type=float, default=25, help="the margin rule's")
    ap.add_argument("--allow-p", default="", help="p_over rule settings, comma list of AGE:P")
    ap.add_argument("--max-sigma", default="", help="caps on sigma for the thresholds, comma list")
    a = ap.parse_args(argv)
    report = json.loads(a.json.read_text())
    rules = parse_rules(a.allow_at, a.k_sigma, a.allow_p, a.challenge_age, a.max_sigma)
    if not rules:
        raise SystemExit("give at least one setting: --allow-at, --k-sigma or --allow-p")
    data = [(name, read_rows(path)) for name, path in sets(report)]
    kinds = [name for name, _ in data[1:]]
    print(
        "| rule | under-18s ALLOWed, clean | adults 25+ not ALLOWed, clean | "
        + " | ".join(kinds)
        + " | all kinds: under-18s ALLOWed | adults 25+ not ALLOWed (mean) |"
    )
    print("|---" * (5 + len(kinds)) + "|")
    for name, allowed in rules.items():
        (clean, *degraded) = [rates(rows, allowed) for _, rows in data]
        mean = sum(r.adult_share for r in degraded) / len(degraded) if degraded else float("nan")
        print(
            f"| {name} | {clean.minors_allowed} / {clean.minors} | "
            f"{100 * clean.adult_share:.1f} % | "
            + " | ".join(str(r.minors_allowed) for r in degraded)
            + f" | {sum(r.minors_allowed for r in degraded)} | {100 * mean:.1f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

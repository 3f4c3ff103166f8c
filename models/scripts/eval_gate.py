"""Run ``agegate eval`` (the full Rust pipeline: detector, alignment, tract) on UTKFace val,
clean and under every degradation kind, and tabulate the gate's figures.

    python scripts/eval_gate.py --age-model models/age_student_int8.onnx --out DIR \
        [--agegate ~/.cache/agegate/bin/agegate] [--kinds clean,grey,...] [--limit N]

Run from ``models/``; it runs the binary from the repo root (the board file's paths).
Degraded sets: ``agegate eval --degrade KIND`` when the binary has it, else the images
``python -m agegate_models.degrade`` wrote to ``.cache/degraded/val/<kind>/`` (the same
definitions, agegate_models/degrade.py). Writes ``DIR/<kind>.json`` / ``.csv`` (agegate's
report and per-image CSV), ``DIR/summary.json`` and ``DIR/summary.md``: MAE, CS(5), bias
(estimate minus truth) per age band, minors (< 18) ALLOWed, adults 25+ not ALLOWed, MAE
per step.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np

MODELS = Path(__file__).resolve().parents[1]
REPO = MODELS.parent
sys.path.insert(0, str(MODELS))

from agegate_models.degrade import KINDS  # noqa: E402 (after the sys.path line)
from agegate_models.metrics import BANDS  # noqa: E402 (after the sys.path line)


def has_degrade(agegate: str) -> bool:
    r = subprocess.run([agegate, "eval", "--help"], capture_output=True, text=True, check=False)
    return "--degrade" in r.stdout


def subset(manifest: Path, limit: int, out: Path) -> Path:
    """A seeded sample of ``limit`` rows (absolute paths), or the manifest itself."""
    if not limit:
        return manifest
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    pick = sorted(random.Random(0).sample(range(len(rows)), min(limit, len(rows))))
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        for i in pick:
            r = dict(rows[i])
            r["path"] = str((manifest.parent / r["path"]).resolve())
            w.writerow(r)
    return out


def summarise(report: dict, per_image: Path) -> dict:
    with open(per_image, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "ok"]
    y = np.array([float(r["true_age"]) for r in rows])
    a = np.array([float(r["age"]) for r in rows])
    d = np.array([r["decision"] for r in rows])
    err = a - y
    bias = {}
    for name, lo, hi in BANDS:
        sel = (y >= lo) & (y < hi)
        if sel.any():
            bias[name] = round(float(err[sel].mean()), 2)
    minors, adults = y < 18, y >= 25
    return {
        "n": report["n"],
        "no_face": report["no_face"],
        "mae": round(report["mae"], 3),
        "cs5": round(100 * report["cs5"], 1),
        "bias": bias,
        "minors_allowed": int((d[minors] == "ALLOW").sum()),
        "n_minors": int(minors.sum()),
        "adult_not_allowed": round(100 * float((d[adults] != "ALLOW").mean()), 1),
        "step_mae": [round(v, 3) for v in report.get("step_mae") or []],
        "ms_per_image": round(report.get("ms_per_image", 0.0), 1),
    }


def table(res: dict) -> str:
    bands = [b[0] for b in BANDS]
    head = ["set", "MAE", "CS5 %", *(f"bias {b}" for b in bands), "minors ALLOW", "25+ not ALLOW %"]
    lines = ["| " + " | ".join(head + ["MAE per step"]) + " |", "|" + "---|" * (len(head) + 1)]
    for k, m in res.items():
        row = [k, f"{m['mae']:.2f}", f"{m['cs5']:.1f}"]
        row += [f"{m['bias'].get(b, float('nan')):+.1f}" for b in bands]
        row += [f"{m['minors_allowed']}/{m['n_minors']}", f"{m['adult_not_allowed']:.1f}"]
        row += [" → ".join(f"{v:.3f}" for v in m["step_mae"])]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--age-model", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--agegate", default=str(Path.home() / ".cache/agegate/bin/agegate"))
    ap.add_argument("--val", type=Path, default=REPO.parent / "shared/data/utkface/val.csv")
    ap.add_argument("--degraded", type=Path, default=MODELS / ".cache/degraded/val")
    ap.add_argument("--kinds", default="clean," + ",".join(KINDS))
    ap.add_argument("--limit", type=int, default=0, help="seeded sample of N val images")
    ap.add_argument("--use-degrade-flag", choices=["auto", "yes", "no"], default="no")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    flag = has_degrade(a.agegate) if a.use_degrade_flag == "auto" else a.use_degrade_flag == "yes"
    res = {}
    for kind in a.kinds.split(","):
        extra = []
        if kind == "clean" or flag:
            man = subset(a.val.resolve(), a.limit, a.out / "manifests" / "val.csv")
            if kind != "clean":
                extra = ["--degrade", kind]
        else:
            src = a.degraded / kind / "manifest.csv"
            man = subset(src.resolve(), a.limit, a.out / "manifests" / f"{kind}.csv")
        js = (a.out / f"{kind}.json").resolve()
        cmd = [a.agegate, "eval", "--manifest", str(man), "--json", str(js)]
        cmd += ["--age-model", str(a.age_model.resolve()), *extra]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            print(r.stdout[-2000:], r.stderr[-2000:], file=sys.stderr)
            return r.returncode
        rep = json.loads(js.read_text())
        res[kind] = summarise(rep, Path(rep["per_image_csv"]))
        print(kind, json.dumps(res[kind]), flush=True)
    (a.out / "summary.json").write_text(json.dumps(res, indent=1))
    (a.out / "summary.md").write_text(table(res))
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

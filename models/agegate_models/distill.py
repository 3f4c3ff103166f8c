"""Distil the 224-px teacher into the edge student (same faceres tower at a small input,
same CILF head), on labels + the teacher's soft targets.

    python -m agegate_models.distill --teacher .cache/runs/teacher224/best.pt \
        --image-size 104 --out .cache/runs/student104

The teacher's age distribution (101 bins) and final age are computed once on the cached
224-px features of every training image (and of its mirrored copy when cached); the student
sees its own features of the same image (same copy) and is trained with
``total_loss(..., teacher=...)``: soft InfoNCE + t2i + per-step L1 on the labels, plus
``kd * KL(teacher || student)`` and ``kd_age * |age_s - age_t|``. Every other option is
train.py's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .data import FEATURE_DIR, FeatureSet, feature_paths
from .train import (
    TrainConfig,
    add_dataclass_args,
    config_from_args,
    dist_setup,
    features_for,
    load_checkpoint,
    manifests,
    predict,
    run,
)


def teacher_targets(teacher_ckpt: str | Path, tc: TrainConfig, log=print) -> dict:
    """Teacher outputs on its own (cached) features of the training manifest:
    ``{"probs": [copies,N,101], "age": [copies,N]}``."""
    teacher = load_checkpoint(teacher_ckpt)
    tcfg = teacher.cfg.backbone
    ttc = TrainConfig(**{**tc.__dict__, "image_size": tcfg.image_size, "backbone": tcfg.kind})
    rank, _ = dist_setup()
    tr_m, _ = manifests(ttc)
    d = features_for(ttc, tr_m, False, rank)
    cache = Path(tc.feature_cache) if tc.feature_cache else FEATURE_DIR
    d_fl = feature_paths(tr_m, tcfg.kind, tcfg.image_size, True, cache)
    fs = FeatureSet(d, d_fl)
    outs = [predict(teacher, fs, copy=c) for c in range(len(fs.tokens))]
    mae = (outs[0]["age"] - fs.ages).abs().mean()
    log(f"teacher {teacher_ckpt}: train MAE {float(mae):.3f} on {len(fs)} ({len(outs)} copies)")
    return {
        "probs": torch.stack([o["probs"] for o in outs]),
        "age": torch.stack([o["age"] for o in outs]),
    }


def make_teacher_fn(t: dict):
    copies = t["probs"].shape[0]

    def fn(idx: torch.Tensor, flip: torch.Tensor) -> dict:
        w = flip.clamp(max=copies - 1)
        return {"probs": t["probs"][w, idx], "age": t["age"][w, idx]}

    return fn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.distill", description=__doc__)
    add_dataclass_args(ap, TrainConfig)
    ap.add_argument("--teacher", required=True, type=Path, help="teacher checkpoint (best.pt)")
    a = ap.parse_args(argv)
    teacher = a.teacher
    del a.teacher
    tc = config_from_args(a, TrainConfig(image_size=104, out=".cache/runs/student"))
    t = teacher_targets(teacher, tc)
    run(tc, teacher_fn=make_teacher_fn(t))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Teacher targets for the student: each teacher's age distribution over the 101 bins
(ages 0..100) for every image of a manifest, stored as ``.npz`` (``stems``, ``probs``
``[N,101]``, ``age`` ``[N]`` the teacher's own estimate, ``labels``), and their ensemble.

Teachers (models/MODEL_CARD.md has their origins and licences):

- ``faceres`` / ``faceres-deep``: the HSE towers' own age heads (100 classes, class i =
  age i+1, HSE rule for ``age``), at 224 px, from the cached pooled features
  (``data.extract_features``), no training;
- ``agev1``: dlib/Cydral age-v1 (81 classes at ages 0.25, 1, ..., 80) on its own chip,
  run in its own venv by ``scripts/agev1_teacher.py``; this reads its output folder;
- ``cilf``: a CILF-CIAE head trained on a frozen tower's 224-px features
  (``python -m agegate_models.train``), its final age and softmax.

    python -m agegate_models.teachers own-head --tower faceres-deep --manifest M --out F.npz
    python -m agegate_models.teachers agev1 --dir .cache/teachers/agev1_train --out F.npz
    python -m agegate_models.teachers cilf --ckpt .cache/runs/teacher/best.pt --manifest M \
        --out F.npz
    python -m agegate_models.teachers eval F.npz [G.npz ...]   # MAE, CS5, bias per band
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .data import read_manifest
from .finetune import _stem
from .metrics import age_metrics, fmt

N_BINS = 101


def save(path: Path, stems, probs, age, labels) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    probs = np.asarray(probs, np.float32)
    probs = probs / probs.sum(1, keepdims=True)
    np.savez(
        path,
        stems=np.array(stems),
        probs=probs,
        age=np.asarray(age, np.float32),
        labels=np.asarray(labels, np.float32),
    )
    return path


def load(path: str | Path) -> dict:
    z = np.load(path)
    return {k: z[k] for k in z.files}


def hse_to_bins(p100: np.ndarray) -> np.ndarray:
    """faceres' 100 classes (class i = age i+1) onto bins 0..100."""
    out = np.zeros((len(p100), N_BINS), np.float32)
    out[:, 1:] = p100
    return out


def agev1_to_bins(p81: np.ndarray) -> np.ndarray:
    """age-v1's classes at 0.25, 1, ..., 80 onto bins 0..100 (0.25 -> bin 0)."""
    out = np.zeros((len(p81), N_BINS), np.float32)
    out[:, : p81.shape[1]] = p81
    return out


@torch.no_grad()
def own_head(tower: str, manifest: Path, size: int = 224) -> dict:
    from .data import extract_features
    from .faceres import hse_age
    from .mobilenet import FaceMobileNet

    kind = "faceres-nn" if tower == "faceres" else tower
    d = extract_features(manifest, size, backbone_kind=kind)
    pooled = torch.from_numpy(np.load(d / "pooled.npy")).float()
    net = FaceMobileNet(tower, heads=True).eval()
    f = torch.relu(net.feats(pooled))
    p = net.age_pred(f).softmax(-1)
    samples = read_manifest(manifest)
    return {
        "stems": [_stem(s.rel) for s in samples],
        "probs": hse_to_bins(p.numpy()),
        "age": hse_age(p).numpy(),
        "labels": [s.age for s in samples],
    }


def agev1(folder: Path) -> dict:
    p = np.load(folder / "probs.npy")
    rels = (folder / "paths.txt").read_text().split()
    return {
        "stems": [_stem(r) for r in rels],
        "probs": agev1_to_bins(p),
        "age": np.load(folder / "age.npy"),
        "labels": np.load(folder / "ages.npy"),
    }


@torch.no_grad()
def cilf(ckpt: Path, manifest: Path) -> dict:
    from .data import FeatureSet, extract_features
    from .train import load_checkpoint

    model = load_checkpoint(ckpt)
    bb = model.cfg.backbone
    fs = FeatureSet(extract_features(manifest, bb.image_size, backbone_kind=bb.kind))
    prompts = model.prompt_embeddings()
    probs, ages = [], []
    for i in range(0, len(fs), 512):
        idx = torch.arange(i, min(len(fs), i + 512))
        t, p, _ = fs.batch(idx)
        o = model.head(t, p, prompts)
        probs.append(o["probs"])
        ages.append(o["age"])
    samples = read_manifest(manifest)
    return {
        "stems": [_stem(s.rel) for s in samples],
        "probs": torch.cat(probs).numpy(),
        "age": torch.cat(ages).numpy(),
        "labels": [s.age for s in samples],
    }


def ensemble(files: list[str | Path], weights: list[float] | None, stems: list[str]) -> dict:
    """Weighted mean of the teachers' distributions, re-indexed to ``stems`` (every stem
    must be in every teacher); ``age`` = the mean of their own estimates, same weights."""
    weights = weights or [1.0] * len(files)
    tot = sum(weights)
    probs = np.zeros((len(stems), N_BINS), np.float32)
    age = np.zeros(len(stems), np.float32)
    for f, w in zip(files, weights, strict=True):
        t = load(f)
        pos = {s: i for i, s in enumerate(t["stems"].tolist())}
        missing = [s for s in stems if s not in pos]
        if missing:
            raise KeyError(f"{f}: {len(missing)} samples without targets, e.g. {missing[0]}")
        idx = np.array([pos[s] for s in stems])
        probs += (w / tot) * t["probs"][idx]
        age += (w / tot) * t["age"][idx]
    return {"probs": probs, "age": age}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.teachers", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a1 = sub.add_parser("own-head")
    a1.add_argument("--tower", choices=["faceres", "faceres-deep"], required=True)
    a1.add_argument("--manifest", type=Path, required=True)
    a1.add_argument("--size", type=int, default=224)
    a1.add_argument("--out", type=Path, required=True)
    a2 = sub.add_parser("agev1")
    a2.add_argument("--dir", type=Path, required=True)
    a2.add_argument("--out", type=Path, required=True)
    a3 = sub.add_parser("cilf")
    a3.add_argument("--ckpt", type=Path, required=True)
    a3.add_argument("--manifest", type=Path, required=True)
    a3.add_argument("--out", type=Path, required=True)
    a4 = sub.add_parser("eval")
    a4.add_argument("files", type=Path, nargs="+")
    a4.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "eval":
        res = {}
        for f in a.files:
            t = load(f)
            m = age_metrics(t["age"], t["labels"])
            res[str(f)] = m
            print(f"{f}: {fmt(m)}")
        if a.json:
            a.json.write_text(json.dumps(res, indent=1))
        return 0
    if a.cmd == "own-head":
        t = own_head(a.tower, a.manifest, a.size)
    elif a.cmd == "agev1":
        t = agev1(a.dir)
    else:
        t = cilf(a.ckpt, a.manifest)
    save(a.out, t["stems"], t["probs"], t["age"], t["labels"])
    print(f"{a.out}: {fmt(age_metrics(t['age'], t['labels']))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

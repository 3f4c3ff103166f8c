"""Training views: photos made the way the device meets faces, before the runtime crops them.

Every view is a folder of images with a ``manifest.csv`` (same columns and labels as the
source manifest, one image per source photo, seeded); ``agegate crops`` then detects and
aligns them exactly as the device does, and the student trains on those crops
(``student.py``):

- ``scene``: the photo (a UTKFace crop) resized so that its longer side is 56..180 px
  (log-uniform) and pasted at a random place into a 600 x 600 face-free scene (a flat
  colour, a two-colour gradient, smooth noise, flat rectangles on a gradient), then with
  probability 0.5 one or two randomised photometric degradations of the whole scene
  (``degrade.random_degrade``), saved as JPEG (quality 40..95).
- ``degraded``: one or two randomised degradations of the photo itself (every kind of
  ``degrade.TRAIN_KINDS``), PNG.

    python -m agegate_models.views scene --manifest .../train.csv --out DIR --seed 1
    python -m agegate_models.views degraded --manifest .../train.csv --out DIR --seed 2
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
from PIL import Image

from . import degrade as D


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A face-free scene: flat, a two-colour gradient, smooth noise, or a gradient with
    random flat rectangles (furniture, frames, walls)."""
    kind = int(rng.integers(0, 4))
    if kind == 0:
        return np.broadcast_to(rng.integers(20, 236, 3).astype(np.uint8), (size, size, 3)).copy()
    a, b = rng.integers(10, 246, (2, 3)).astype(np.float32)
    t = np.linspace(0, 1, size, dtype=np.float32)
    ramp = t[:, None] if rng.random() < 0.5 else t[None, :]
    g = a + (b - a) * np.broadcast_to(ramp, (size, size))[..., None]
    if kind == 2:
        n = rng.normal(0, 1, (size // 8, size // 8)).astype(np.float32)
        n = D.gaussian_blur_f(n, 2.0)
        n = (n - n.mean()) / (n.std() + 1e-6)
        n = np.asarray(Image.fromarray(n).resize((size, size), Image.BILINEAR))
        g = g + 30 * n[..., None] * rng.uniform(0.7, 1.3, 3).astype(np.float32)
    elif kind == 3:
        for _ in range(int(rng.integers(2, 7))):
            x0, y0 = rng.integers(0, size, 2)
            w, h = rng.integers(size // 10, size // 2, 2)
            g[y0 : y0 + h, x0 : x0 + w] = rng.integers(10, 246, 3).astype(np.float32)
    return D._u8(g)


def _paste_side(rng: np.random.Generator) -> int:
    """The pasted photo's longer side in pixels, log-uniform over 56..180."""
    return round(float(np.exp(rng.uniform(np.log(56), np.log(180)))))


def scene_paste_side(seed: int, index: int, size: int = 600) -> int:
    """The side ``make_views(..., "scene", seed=seed)`` pasted photo ``index`` at (the draws
    are seeded per photo, so it is recomputed rather than stored)."""
    rng = np.random.default_rng([seed, index])
    _background(rng, size)
    return _paste_side(rng)


def make_scene(img: np.ndarray, rng: np.random.Generator, size: int = 600) -> np.ndarray:
    scene = _background(rng, size)
    face = _paste_side(rng)
    h, w = img.shape[:2]
    f = face / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    x0, y0 = int(rng.integers(0, size - nw + 1)), int(rng.integers(0, size - nh + 1))
    scene[y0 : y0 + nh, x0 : x0 + nw] = D._resize(img, nw, nh)
    scene, _ = D.random_degrade(scene, rng, p=0.5)
    return scene


def make_views(manifest: Path, kind: str, out: Path, seed: int = 0, log=print) -> Path:
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    out.mkdir(parents=True, exist_ok=True)
    paths = [manifest.parent / r["path"] for r in rows]
    done = []
    for i, (row, src) in enumerate(zip(rows, paths, strict=True)):
        rng = np.random.default_rng([seed, i])
        stem = Path(row["path"]).name.split(".jpg")[0]
        name = stem + (".jpg" if kind == "scene" else ".png")
        if (out / name).exists():  # resumable: every image has its own seeded draw
            done.append({**row, "path": name})
            continue
        with Image.open(src) as im:
            img = np.asarray(im.convert("RGB"))
        if kind == "scene":
            part = out / (name + ".part")
            Image.fromarray(make_scene(img, rng)).save(
                part, "JPEG", quality=int(rng.integers(40, 96))
            )
            part.replace(out / name)
        elif kind == "degraded":
            part = out / (name + ".part")
            Image.fromarray(D.random_degrade(img, rng, p=1.0)[0]).save(part, "PNG")
            part.replace(out / name)
        else:
            raise ValueError(f"unknown view {kind!r}")
        done.append({**row, "path": name})
        if (i + 1) % 1000 == 0:
            log(f"[views {kind}] {i + 1}/{len(rows)}", flush=True)
    with open(out / "manifest.csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        wr.writeheader()
        wr.writerows(done)
    return out / "manifest.csv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.views", description=__doc__)
    ap.add_argument("kind", choices=["scene", "degraded"])
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    print(f"done: {make_views(a.manifest, a.kind, a.out, a.seed)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

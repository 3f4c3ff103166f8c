"""Image degradations: training augmentation and the degraded validation sets.

The fixed kinds are the definitions ``agegate eval --degrade KIND[,KIND]`` implements on
the Rust side; keep both in step. Every kind maps an RGB uint8 image ``[H, W, 3]`` to an
RGB uint8 image (computed in float32, rounded half away from zero and clipped to 0..255
once at the end of each kind). Kinds in a list are applied left to right, each to the
output of the previous one. Sizes are defined at the 200 px scale of a UTKFace crop and
scale with the image a kind is applied to: ``s = min(H, W) / 200``.

- ``grey``: luma ``y = 0.299 R + 0.587 G + 0.114 B`` copied to the three channels.
- ``lowres``: resized to ``max(1, round(W * 48 / 200)) x max(1, round(H * 48 / 200))`` and
  back to ``W x H``, bilinear (triangle filter, anti-aliased when shrinking: PIL
  ``BILINEAR`` = image crate ``Triangle``).
- ``blur``: Gaussian blur, sigma ``2 s`` px: separable kernel ``exp(-x^2 / 2 sigma^2)``,
  ``x = -r..r``, ``r = ceil(3 sigma)``, normalised to sum 1, borders clamped to the edge
  pixel.
- ``jpeg``: encoded as baseline JPEG at quality 12 (libjpeg quality scale, 4:2:0 chroma),
  decoded.
- ``scan``: ``grey``; contrast x0.6 around the image's mean luma ``m``:
  ``y' = m + 0.6 (y - m)``; Gaussian noise sigma 8 added per pixel (one value per pixel,
  all channels); sepia tint ``(R, G, B) = (0.94 y + 20, 0.82 y + 12, 0.64 y + 4)``;
  ``blur`` with sigma ``1 s`` (on the float values, rounding once at the end).
- ``small``: the image resized (bilinear, anti-aliased) so that its longer side is 120 px
  (aspect kept, sides rounded), pasted at the centre (offset ``floor((600 - w) / 2)``, same
  for y) of a 600 x 600 flat scene of RGB ``(120, 130, 110)`` (grey-green).
- ``dark``: ``255 * 0.5 * (x / 255) ^ 2.2`` per channel.
- ``colorcast``: channel gains R x1.2, G x1.0, B x0.8.

``random_degrade`` draws randomised versions of the same kinds (and their combinations)
for training; the validation sets use only the fixed definitions (``apply``).

    python -m agegate_models.degrade --manifest M --kinds scan --out DIR [--limit N]

writes ``DIR/<kind>/`` images and a ``manifest.csv`` beside them (same columns).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

KINDS = ("grey", "lowres", "blur", "jpeg", "scan", "small", "dark", "colorcast")
SCENE_COLOUR = (120, 130, 110)
SEPIA_GAIN = (0.94, 0.82, 0.64)
SEPIA_OFFSET = (20.0, 12.0, 4.0)


def _u8(x: np.ndarray) -> np.ndarray:
    """float -> uint8: round half away from zero, clip to 0..255."""
    x = np.asarray(x, np.float32)
    r = np.sign(x) * np.floor(np.abs(x) + 0.5)
    return np.clip(r, 0, 255).astype(np.uint8)


def _scale(img: np.ndarray) -> float:
    return min(img.shape[0], img.shape[1]) / 200.0


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))


def luma(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def gaussian_kernel(sigma: float) -> np.ndarray:
    r = max(1, math.ceil(3 * sigma))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-(x * x) / (2 * sigma * sigma))
    return (k / k.sum()).astype(np.float32)


def gaussian_blur_f(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian on a float ``[H, W]`` or ``[H, W, C]`` array, edges clamped
    (replicate padding; the two 1-D passes as torch convolutions)."""
    import torch
    import torch.nn.functional as F

    x = np.asarray(x, np.float32)
    if sigma <= 0:
        return x.copy()
    k = torch.from_numpy(gaussian_kernel(sigma))
    r = len(k) // 2
    t = torch.from_numpy(x.reshape(x.shape[0], x.shape[1], -1)).permute(2, 0, 1).unsqueeze(1)
    with torch.no_grad():
        t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        t = F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    return t.squeeze(1).permute(1, 2, 0).reshape(x.shape).numpy()


def grey(img: np.ndarray) -> np.ndarray:
    return np.repeat(_u8(luma(img))[..., None], 3, axis=2)


def lowres(img: np.ndarray, target: float = 48.0) -> np.ndarray:
    h, w = img.shape[:2]
    sw, sh = max(1, round(w * target / 200)), max(1, round(h * target / 200))
    return _resize(_resize(img, sw, sh), w, h)


def blur(img: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    return _u8(gaussian_blur_f(img, sigma * _scale(img)))


def jpeg(img: np.ndarray, quality: int = 12) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=int(quality), subsampling=2)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def scan(
    img: np.ndarray,
    rng: np.random.Generator | None = None,
    contrast: float = 0.6,
    noise: float = 8.0,
    sigma: float = 1.0,
    gain: tuple = SEPIA_GAIN,
    offset: tuple = SEPIA_OFFSET,
) -> np.ndarray:
    rng = rng or np.random.default_rng(0)
    y = luma(img)
    m = float(y.mean())
    y = m + contrast * (y - m)
    y = y + rng.normal(0.0, noise, size=y.shape).astype(np.float32)
    rgb = np.stack([g * y + o for g, o in zip(gain, offset, strict=True)], axis=2)
    return _u8(gaussian_blur_f(rgb, sigma * _scale(img)))


def small(
    img: np.ndarray, face: int = 120, scene: int = 600, colour: tuple = SCENE_COLOUR, pos=None
) -> np.ndarray:
    h, w = img.shape[:2]
    f = face / max(h, w)
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    out = np.empty((scene, scene, 3), np.uint8)
    out[:] = np.asarray(colour, np.uint8)
    x0, y0 = pos if pos is not None else ((scene - nw) // 2, (scene - nh) // 2)
    out[y0 : y0 + nh, x0 : x0 + nw] = _resize(img, nw, nh)
    return out


def dark(img: np.ndarray, gamma: float = 2.2, gain: float = 0.5) -> np.ndarray:
    return _u8(255.0 * gain * (img.astype(np.float32) / 255.0) ** gamma)


def colorcast(img: np.ndarray, gains: tuple = (1.2, 1.0, 0.8)) -> np.ndarray:
    return _u8(img.astype(np.float32) * np.asarray(gains, np.float32))


FIXED: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "grey": grey,
    "lowres": lowres,
    "blur": blur,
    "jpeg": jpeg,
    "scan": scan,
    "small": small,
    "dark": dark,
    "colorcast": colorcast,
}


def parse_kinds(spec: str) -> list[str]:
    kinds = [k.strip() for k in spec.split(",") if k.strip()]
    bad = [k for k in kinds if k not in FIXED]
    if bad or not kinds:
        raise ValueError(f"unknown degradation {bad or spec!r}; known: {', '.join(KINDS)}")
    return kinds


def apply(img: np.ndarray, spec: str | list[str], seed: int = 0) -> np.ndarray:
    """The fixed kinds of ``spec`` ("scan" or "small,jpeg" or a list), left to right.
    ``seed``: the noise of ``scan``."""
    kinds = parse_kinds(spec) if isinstance(spec, str) else list(spec)
    for k in kinds:
        img = scan(img, np.random.default_rng(seed)) if k == "scan" else FIXED[k](img)
    return img


# --------------------------------------------------------------------------- training


def random_kind(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """One randomised version of ``kind`` (parameters around the fixed definition)."""
    u = rng.uniform
    if kind == "grey":
        return grey(img)
    if kind == "lowres":
        return lowres(img, u(24, 96))
    if kind == "blur":
        return blur(img, u(0.6, 2.6))
    if kind == "jpeg":
        return jpeg(img, int(rng.integers(8, 50)))
    if kind == "scan":
        tint = rng.random() < 0.7
        gain = tuple(g * u(0.95, 1.05) for g in SEPIA_GAIN) if tint else (1.0, 1.0, 1.0)
        off = tuple(o * u(0.5, 1.5) for o in SEPIA_OFFSET) if tint else (0.0, 0.0, 0.0)
        return scan(img, rng, u(0.45, 0.9), u(2, 12), u(0.3, 1.5), gain, off)
    if kind == "small":
        face = int(rng.integers(56, 160))
        colour = tuple(int(c) for c in rng.integers(30, 225, 3))
        h, w = img.shape[:2]
        f = face / max(h, w)
        nw, nh = max(1, round(w * f)), max(1, round(h * f))
        pos = (int(rng.integers(0, 600 - nw + 1)), int(rng.integers(0, 600 - nh + 1)))
        return small(img, face, 600, colour, pos)
    if kind == "dark":
        return dark(img, u(1.3, 2.6), u(0.35, 0.9))
    if kind == "colorcast":
        return colorcast(img, tuple(u(0.75, 1.25, 3)))
    raise ValueError(kind)


# photometric kinds drawn for training (``small`` changes the geometry: scenes are made
# separately and go through the runtime's detector, see models/README.md)
TRAIN_KINDS = ("grey", "lowres", "blur", "jpeg", "scan", "dark", "colorcast")


def random_degrade(
    img: np.ndarray, rng: np.random.Generator, p: float = 0.6, kinds=TRAIN_KINDS, max_n: int = 2
) -> tuple[np.ndarray, list[str]]:
    """With probability ``p``, 1..``max_n`` randomised kinds (distinct, random order)."""
    if rng.random() >= p:
        return img, []
    n = int(rng.integers(1, max_n + 1))
    picked = [str(k) for k in rng.choice(kinds, size=n, replace=False)]
    for k in picked:
        img = random_kind(img, k, rng)
    return img, picked


# --------------------------------------------------------------------------- CLI


def degrade_manifest(
    manifest: Path, spec: str, out: Path, limit: int = 0, seed: int = 0, log=print
) -> Path:
    """Writes the fixed degradation ``spec`` of every image of ``manifest`` to ``out``
    (PNG, lossless: the degradation is the only loss) with ``out/manifest.csv``."""
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    if limit:
        rows = rows[:limit]
    out.mkdir(parents=True, exist_ok=True)
    fields = list(rows[0].keys())
    done = []
    for i, row in enumerate(rows):
        src = manifest.parent / row["path"]
        with Image.open(src) as im:
            img = np.asarray(im.convert("RGB"))
        name = Path(row["path"]).name.split(".jpg")[0] + ".png"
        Image.fromarray(apply(img, spec, seed + i)).save(out / name)
        done.append({**row, "path": name})
        if (i + 1) % 500 == 0:
            log(f"[degrade {spec}] {i + 1}/{len(rows)}")
    with open(out / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(done)
    return out / "manifest.csv"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.degrade", description=__doc__)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma list; each kind alone")
    ap.add_argument("--chain", action="store_true", help="apply the kinds as one chain")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    specs = [a.kinds] if a.chain else parse_kinds(a.kinds)
    for spec in specs:
        m = degrade_manifest(a.manifest, spec, a.out / spec.replace(",", "+"), a.limit, a.seed)
        print(f"done: {m}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

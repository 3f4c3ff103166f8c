"""Manifests and images: where the data lives, a manifest's rows, an image as the towers
read it. Below everything that trains, quantizes or exports (numpy and PIL only), so each
of those can read the data without importing the others.

A manifest is a CSV with a header and at least the columns ``path,age`` (others ignored);
``path`` is relative to the manifest's folder unless ``root`` is given.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

MODELS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = MODELS_DIR.parent
CACHE_DIR = MODELS_DIR / ".cache"


def default_data_dir() -> Path:
    """``<repo root>/../shared/data`` (override with ``AGEGATE_DATA``)."""
    env = os.environ.get("AGEGATE_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data").resolve()


@dataclass
class Sample:
    path: Path
    age: float
    rel: str


def read_manifest(manifest: str | Path, root: str | Path | None = None) -> list[Sample]:
    manifest = Path(manifest)
    base = Path(root) if root else manifest.parent
    out: list[Sample] = []
    with open(manifest, newline="") as f:
        rd = csv.DictReader(f)
        if rd.fieldnames is None or "path" not in rd.fieldnames or "age" not in rd.fieldnames:
            raise ValueError(f"{manifest}: needs a header with columns path,age")
        for row in rd:
            if not row["path"] or row["age"] in (None, ""):
                continue
            out.append(Sample(base / row["path"], float(row["age"]), row["path"]))
    if not out:
        raise ValueError(f"{manifest}: no samples")
    return out


def load_image(path: str | Path, size: int, flip: bool = False) -> np.ndarray:
    """RGB uint8 ``[3,size,size]``: greyscale is replicated, any size is resized (bilinear,
    antialiased) to ``size x size``."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        if flip:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1).copy()

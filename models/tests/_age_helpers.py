"""Shared tiny fixtures for the age-model tests (no data set, no downloads but the BPE)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
import torch

from agegate_models.config import tiny_model_config
from agegate_models.model import build_model

# the test machines are small and shared: one intra-op thread avoids spin-wait contention
torch.set_num_threads(1)

MODELS = Path(__file__).resolve().parents[1]
CACHE = MODELS / ".cache"
DATA = MODELS.parent.parent / "shared" / "data"


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def require(ok: bool, what: str) -> None:
    """Skip the test when a prerequisite (fetched weights, the data set, ...) is missing,
    with ``what`` as the reason; under ``CI=true`` a missing prerequisite is a failure
    naming it instead (a CI run must not pass by skipping)."""
    if ok:
        return
    if under_ci():
        pytest.fail(f"prerequisite missing under CI=true: {what}", pytrace=False)
    pytest.skip(what)


def require_file(path: Path, how: str) -> Path:
    require(Path(path).is_file(), f"{path} absent: {how}")
    return Path(path)


def require_fetched(name: str, file: str) -> Path:
    return require_file(
        CACHE / name / file, f"run `python -m agegate_models.fetch {name}` in models/"
    )


@functools.lru_cache
def _tokenizer():
    from agegate_models.text import SimpleTokenizer

    return SimpleTokenizer()


def tokenizer():
    from agegate_models.fetch import FetchError

    try:
        return _tokenizer()
    except (FetchError, OSError) as e:  # pragma: no cover - offline machine without cache
        require(False, f"CLIP BPE vocabulary unavailable: {e}")


def tiny_model(seed: int = 0, size: int = 32, **head):
    torch.manual_seed(seed)
    cfg = tiny_model_config(size)
    for k, v in head.items():
        setattr(cfg.head, k, v)
    return build_model(cfg, tokenizer=tokenizer())


def noise_manifest(d: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """``n`` noise images of ``size`` px in ``d`` and their ``manifest.csv`` (ages 10 + 7 i)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    rows = ["path,age"]
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(d / f"{i}.png")
        rows.append(f"{i}.png,{10 + 7 * i}")
    (d / "manifest.csv").write_text("\n".join(rows) + "\n")
    return d / "manifest.csv"

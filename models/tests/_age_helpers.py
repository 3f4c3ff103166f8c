"""Shared tiny fixtures for the age-model tests (no data set, no downloads but the BPE)."""

from __future__ import annotations

import functools

import pytest
import torch

from agegate_models.config import tiny_model_config
from agegate_models.model import build_model

# the test machines are small and shared: one intra-op thread avoids spin-wait contention
torch.set_num_threads(1)


@functools.lru_cache
def tokenizer():
    from agegate_models.fetch import FetchError
    from agegate_models.text import SimpleTokenizer

    try:
        return SimpleTokenizer()
    except (FetchError, OSError) as e:  # pragma: no cover - offline machine without cache
        pytest.skip(f"CLIP BPE vocabulary unavailable: {e}")


def tiny_model(seed: int = 0, size: int = 32, **head):
    torch.manual_seed(seed)
    cfg = tiny_model_config(size)
    for k, v in head.items():
        setattr(cfg.head, k, v)
    return build_model(cfg, tokenizer=tokenizer())

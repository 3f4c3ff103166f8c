"""finetune.py: the tower split into a cached prefix and a trainable tail, on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _age_helpers import noise_manifest, require_fetched, tokenizer

from agegate_models.data import FeatureSet
from agegate_models.finetune import (
    TowerPrefix,
    TowerTail,
    align_teacher,
    extract_prefix,
    grey_mask,
    to_grey,
)
from agegate_models.train import TrainConfig, load_checkpoint, run


@pytest.fixture(scope="module")
def faceres():
    require_fetched("faceres", "faceres.json")
    from agegate_models.faceres import FaceRes

    torch.manual_seed(0)
    return FaceRes(heads=False).eval()


def test_to_grey_and_mask():
    img = np.zeros((3, 2, 2), np.uint8)
    img[0] = 255
    g = to_grey(img)
    assert g.shape == (3, 2, 2) and (g == 76).all()
    m = grey_mask(1000, 0.3, 0)
    assert 0.25 < m.mean() < 0.35 and (m == grey_mask(1000, 0.3, 0)).all()


def test_align_teacher_by_stem():
    t = {"probs": torch.arange(6.0).reshape(1, 3, 2), "age": torch.tensor([[1.0, 2.0, 3.0]])}
    out = align_teacher(
        t, ["train/a.jpg.chip.jpg", "train/b.jpg", "train/c.jpg"], ["c.png", "a.png"]
    )
    assert out["age"].tolist() == [[3.0, 1.0]] and out["probs"][0, 1].tolist() == [0.0, 1.0]
    with pytest.raises(KeyError):
        align_teacher(t, ["a.jpg"], ["zzz.png"])


@pytest.mark.parametrize("cut", [11, 12])
def test_prefix_then_tail_is_the_tower(faceres, cut):
    x = torch.rand(2, 3, 48, 48) * 255
    with torch.no_grad():
        ref = faceres(x)
        pre = TowerPrefix(cut)(x)["tokens"]
        tok, poo = TowerTail(faceres, cut)(pre)
    torch.testing.assert_close(tok, ref["tokens"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(poo, ref["pooled"], rtol=1e-4, atol=1e-4)


def test_tail_backbone_state_roundtrip(faceres):
    from agegate_models.faceres import FaceRes

    tail = TowerTail(faceres, 12)
    with torch.no_grad():
        for p in tail.parameters():
            p.add_(0.01)
    bb = FaceRes(heads=False).eval()
    bb.load_state_dict(tail.backbone_state())
    x = torch.rand(1, 3, 40, 40) * 255
    with torch.no_grad():
        tok, _ = tail(TowerPrefix(12)(x)["tokens"])
        torch.testing.assert_close(bb(x)["tokens"], tok, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(faceres(x)["tokens"], tok)


def test_extract_and_train_tail(tmp_path, faceres):
    m = noise_manifest(tmp_path / "data", 12)
    cache = tmp_path / "feat"
    d = extract_prefix(m, 64, 12, cache=cache, prefix=TowerPrefix(12), log=lambda s: None)
    dg = extract_prefix(m, 64, 12, True, 0.5, 0, cache=cache, log=lambda s: None)
    assert d != dg and extract_prefix(m, 64, 12, cache=cache) == d
    fs = FeatureSet([d, dg])
    assert fs.tokens[0].shape == (12, 1024, 2, 2) and fs.is_flip == [False, True]
    tc = TrainConfig(
        image_size=64,
        epochs=1,
        batch_size=8,
        dim=16,
        depth=1,
        embed_dim=16,
        text_width=16,
        text_layers=1,
        n_steps=1,
        tail_cut=12,
        out=str(tmp_path / "run"),
        log_every=1000,
    )
    tail = TowerTail(faceres, 12)
    before = tail.convs[-1].weight.detach().clone()
    best = run(tc, None, fs, FeatureSet(d), tail=tail, tokenizer=tokenizer(), log=lambda s: None)
    assert np.isfinite(best["mae"])
    assert not torch.equal(before, tail.convs[-1].weight)
    model = load_checkpoint(tmp_path / "run" / "best.pt", with_backbone=True, tokenizer=tokenizer())
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        out = model(x)
        tok, poo = tail(TowerPrefix(12)(x)["tokens"])
        ref = model.forward_features(tok, poo)
    torch.testing.assert_close(out["age"], ref["age"], rtol=1e-4, atol=1e-3)


def test_shipped_stages_fit_the_budget():
    from agegate_models.export import FINETUNE_STAGES

    # the last stage is what ships: 104 px keeps the 4 x 4 grid at <= 300 MFLOPs
    # (112 px would be 153 M MACs = 306 MFLOPs)
    assert FINETUNE_STAGES[-1]["image_size"] == 104
    assert all(s["tail_cut"] == FINETUNE_STAGES[0]["tail_cut"] for s in FINETUNE_STAGES)

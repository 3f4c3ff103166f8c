"""student.py (whole-tower v2 student), the LDS / p_over losses, the median estimator and
the p_over output: tiny tower, synthetic crops, a few steps (never a training run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _age_helpers import tiny_model, tokenizer
from PIL import Image

from agegate_models import student as S
from agegate_models.export import check_contract, export_onnx, ort_session, run_onnx
from agegate_models.losses import band_bias, class_balance, lds_weights, p_over_bce
from agegate_models.metrics import age_metrics, decide, gate_score
from agegate_models.model import ExportModule


def test_lds_weights_flatten_the_prior():
    ages = torch.tensor([30.0] * 90 + [15.0] * 10)
    w = lds_weights(ages, sigma=2.0, alpha=1.0)
    assert abs(float(w.mean()) - 1) < 1e-5
    assert float(w[-1]) > 5 * float(w[0])  # the rare age weighs more
    # alpha 1: both ages weigh about the same in total
    assert abs(float(w[:90].sum()) - float(w[90:].sum())) / float(w.sum()) < 0.05
    w0 = lds_weights(ages, alpha=0.0)
    assert torch.allclose(w0, torch.ones(100))


def test_p_over_balance_and_bce():
    y = torch.tensor([5.0, 14.0, 17.0, 18.0, 30.0, 40.0, 60.0, 70.0])
    thr = torch.tensor([13.0, 16.0, 18.0, 21.0, 25.0])
    pos_w, neg_w = class_balance(y, thr)
    # each class carries half the weight of its threshold
    t = (y.unsqueeze(1) >= thr).float()
    assert torch.allclose((t * pos_w).sum(0), ((1 - t) * neg_w).sum(0))
    good = (t * 2 - 1) * 8.0
    assert p_over_bce(good, y, thr, pos_w, neg_w) < 0.01 < p_over_bce(-good, y, thr, pos_w, neg_w)


def test_median_estimator_and_monotone_p_over():
    m = tiny_model(estimator="median", p_over=(13, 16, 18, 21, 25)).eval()
    probs = torch.zeros(2, 101)
    probs[0, 20] = 1.0  # all mass in bin 20 -> median 20
    probs[1, 10], probs[1, 30] = 0.3, 0.7  # CDF crosses 0.5 inside bin 30
    med = m.head.first_estimate(probs)
    assert abs(float(med[0]) - 20.0) < 1e-5
    assert 29.5 < float(med[1]) < 30.5
    mean = tiny_model().head.first_estimate(probs)
    assert abs(float(mean[1]) - 24.0) < 1e-4  # the expectation is pulled to the other mode
    p = torch.tensor([[0.9, 0.95, 0.5, 0.6, 0.1]])
    torch.testing.assert_close(m.head.monotone(p), torch.tensor([[0.9, 0.9, 0.5, 0.5, 0.1]]))


def test_export_with_p_over(tmp_path):
    m = tiny_model(seed=1, p_over=(13, 16, 18, 21, 25), estimator="median").eval()
    path = export_onnx(m, tmp_path / "p.onnx")
    info = check_contract(path)
    assert info["p_over"] == 5
    outs = {o.name: o for o in onnx.load(str(path)).graph.output}
    assert list(outs) == ["age", "sigma", "steps", "p_over"]
    x = (np.random.default_rng(0).random((3, 3, 32, 32)) * 255).astype(np.float32)
    o = run_onnx(ort_session(path), x)
    with torch.no_grad():
        ref = ExportModule(m)(torch.from_numpy(x))
    np.testing.assert_allclose(o["p_over"], ref[3].numpy(), atol=1e-5)
    assert o["p_over"].shape == (3, 5) and (o["p_over"] >= 0).all() and (o["p_over"] <= 1).all()
    assert (np.diff(o["p_over"], axis=1) <= 1e-7).all()
    np.testing.assert_allclose(o["steps"][:, -1], o["age"], atol=1e-5)
    # a model without the heads keeps the three-output contract
    p3 = export_onnx(tiny_model(seed=1).eval(), tmp_path / "o.onnx")
    assert check_contract(p3)["p_over"] == 0


def test_metrics_and_policy():
    y = np.array([10, 16, 20, 30, 40, 60], np.float32)
    pred = y + np.array([1, 12, 0, 0, -2, -5], np.float32)
    sigma = np.full(6, 2.0)
    d = decide(pred, sigma)
    assert d.tolist() == ["DENY", "ALLOW", "REFER", "ALLOW", "ALLOW", "ALLOW"]
    m = age_metrics(pred, y, sigma, np.stack([pred, pred], 1))
    assert m["minors_allowed"] == 1 and m["n_minors"] == 2
    assert m["adult_not_allowed"] == 0.0 and m["bias"]["13-17"] == 12.0
    assert gate_score([m]) == pytest.approx(m["mae"] + 6.0)


def _crops(d: Path, n: int, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True)
    rows = ["path,age,gender,race,subject"]
    for i in range(n):
        img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(d / f"{i}_0_0_x.jpg.chip.png")
        rows.append(f"{i}_0_0_x.jpg.chip.png,{5 + 9 * (i % 10)},0,0,")
    (d / "manifest.csv").write_text("\n".join(rows) + "\n")
    return d / "manifest.csv"


@pytest.fixture
def data(tmp_path, monkeypatch):
    import agegate_models.data as data_mod

    monkeypatch.setattr(S, "VIEW_DIR", tmp_path / "views")
    monkeypatch.setattr(data_mod, "FEATURE_DIR", tmp_path / "features")  # not the real cache
    clean = _crops(tmp_path / "clean", 12, 32, 0)
    other = _crops(tmp_path / "other", 10, 32, 1)  # two photos without a crop here
    val = _crops(tmp_path / "val", 6, 32, 2)
    _crops(tmp_path / "deg" / "scan", 6, 32, 3)
    return clean, other, val, tmp_path / "deg"


def _cfg(tmp_path, clean, other, val, deg, **kw) -> S.StudentConfig:
    sc = S.StudentConfig(
        views=f"{clean},{other}",
        view_probs="1,1",
        val=str(val),
        val_degraded=str(deg),
        tower="tiny",
        image_size=32,
        epochs=1,
        batch_size=4,
        steps_per_epoch=2,
        dim=16,
        depth=1,
        embed_dim=16,
        text_width=16,
        text_layers=1,
        n_steps=2,
        threads=1,
        warmup_steps=1,
        out=str(tmp_path / "run"),
        log_every=1000,
    )
    for k, v in kw.items():
        setattr(sc, k, v)
    return sc


def test_student_trains_checkpoints_and_resumes(tmp_path, data):
    sc = _cfg(tmp_path, *data, estimator="median")
    S.train(sc, log=lambda s: None, tokenizer=tokenizer())
    run = Path(sc.out)
    ck = torch.load(run / "last.pt", weights_only=False)
    assert {"state_dict", "optimizer", "model_config", "train_config", "epoch"} <= set(ck)
    hist = json.loads((run / "history.json").read_text())
    assert set(hist[0]["val"]) == {"clean", "scan"}
    assert len(hist[0]["val"]["clean"]["step_mae"]) == 3
    sc.epochs = 2
    S.train(sc, resume=run / "last.pt", log=lambda s: None, tokenizer=tokenizer())
    ck2 = torch.load(run / "last.pt", weights_only=False)
    assert ck2["epoch"] == 1 and len(ck2["history"]) == 2
    mf = torch.load(run / "model_fp16.pt", weights_only=False)  # the model alone, fp16
    assert "optimizer" not in mf and "text.token_embedding.weight:rows" in mf["state_dict"]
    sc.epochs = 3
    S.train(sc, resume=run / "model_fp16.pt", log=lambda s: None, tokenizer=tokenizer())
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 2
    sc.lr = 1.0  # another config: refused
    with pytest.raises(ValueError, match="'lr'"):
        S.train(sc, resume=run / "last.pt", log=lambda s: None, tokenizer=tokenizer())
    from agegate_models.train import load_checkpoint

    model = load_checkpoint(run / "best.pt", tokenizer=tokenizer())
    assert model.backbone is not None and model.cfg.head.p_over == S.THRESHOLDS
    path = export_onnx(model, tmp_path / "student.onnx")
    assert check_contract(path)["p_over"] == 5


@pytest.mark.parametrize("balance", ["weight", "none"])
def test_student_frozen_and_balancing(tmp_path, data, balance):
    sc = _cfg(tmp_path, *data, frozen=True, balance=balance, p_over=False)
    res = S.train(sc, log=lambda s: None, tokenizer=tokenizer())
    assert res["epochs"] == 1


def test_augment_and_jitter():
    sc = S.StudentConfig(aug_p=1.0, grey_p=1.0, flip_p=1.0)
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    out = S.augment(img, np.random.default_rng(0), sc)
    assert out.shape == img.shape and (out[..., 0] == out[..., 1]).all()
    x = torch.rand(3, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(S.jitter_batch(x, g, 0.0), x)
    assert S.jitter_batch(x, g, 1.0).shape == x.shape


def test_band_bias():
    y = torch.tensor([10.0, 12.0, 20.0, 22.0, 40.0])
    assert float(band_bias(y + torch.tensor([2.0, -2.0, 0.0, 0.0, 0.0]), y)) == 0.0
    b = band_bias(y + torch.tensor([3.0, 3.0, 0.0, 0.0, -3.0]), y)
    assert abs(float(b) - (9 + 0 + 9) / 3) < 1e-5

"""resume.py: the shipped student read back from models/age_student_int8.onnx into a torch
module (int8 weights dequantized, strict mapping), checked against onnxruntime on the same
inputs, and its fp16 model file. Needs neither the data set nor fetched weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _age_helpers import MODELS, noise_manifest, require_file, tokenizer
from onnx import numpy_helper

from agegate_models import resume as R
from agegate_models import student as S
from agegate_models.export import export_onnx, run_onnx

# The rebuilt module computes the graph's float function (the int8 weights dequantized, as
# onnxruntime without graph optimisations and tract do): only float32 summation order
# differs. Measured on these inputs: age / steps 7.6e-6 years, sigma 3.8e-6, p_over 3.6e-7.
TOL_GRAPH = {"age": 1e-3, "sigma": 1e-3, "steps": 1e-3, "p_over": 1e-4}
# onnxruntime's default graph optimisations rewrite the int8-weight convolutions (they no
# longer compute with the exact dequantized weights): 0.023 years, p_over 1.2e-3 measured.
TOL_ORT = {"age": 0.1, "sigma": 0.1, "steps": 0.1, "p_over": 5e-3}


@pytest.fixture(scope="module")
def shipped():
    path = require_file(MODELS / "age_student_int8.onnx", "the shipped model is committed")
    return path, onnx.load(str(path))


def _inputs(size: int) -> np.ndarray:
    """Two noise images and two smooth ones (colour ramps), RGB 0..255."""
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (2, 3, size, size)).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    smooth = [
        np.stack([(xx + yy) * 0.8 + 20 * i, 128 + 60 * np.sin(xx / 9 + i), 255 - yy * 1.5])
        for i in range(2)
    ]
    return np.concatenate([noise, np.stack(smooth).clip(0, 255)]).astype(np.float32)


def _session(path, optimise: bool) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    if not optimise:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _max_diff(a: dict, b: dict) -> dict:
    assert set(a) == set(b)
    return {k: float(np.abs(np.asarray(a[k]) - np.asarray(b[k])).max()) for k in a}


def test_shipped_weights_parity_with_onnx(shipped):
    path, m = shipped
    model = R.load_shipped(m)
    assert model.cfg.backbone.image_size == 144 and len(model.head.corr) == 1
    x = _inputs(144)
    with torch.no_grad():
        o = model(torch.from_numpy(x))
    mine = {k: o[k].numpy() for k in ("age", "sigma", "steps", "p_over")}
    exact = _max_diff(mine, run_onnx(_session(path, False), x))
    assert all(exact[k] <= TOL_GRAPH[k] for k in exact), exact
    default = _max_diff(mine, run_onnx(_session(path, True), x))
    assert all(default[k] <= TOL_ORT[k] for k in default), default
    assert np.ptp(mine["age"]) > 1.0  # the inputs tell the outputs apart


def test_shipped_mapping_is_strict(shipped):
    _, m = shipped
    # a module tensor the graph lacks, named
    drop = onnx.ModelProto()
    drop.CopyFrom(m)
    t = next(t for t in drop.graph.initializer if t.name == "head.age_bias")
    drop.graph.initializer.remove(t)
    with pytest.raises(KeyError, match=r"head\.age_bias"):
        R.load_shipped(drop)
    # a graph weight nothing takes, named
    extra = onnx.ModelProto()
    extra.CopyFrom(m)
    extra.graph.initializer.append(numpy_helper.from_array(np.ones((7, 3), np.float32), "stray"))
    with pytest.raises(KeyError, match="stray"):
        R.load_shipped(extra)
    # a config the graph does not fit (three correction steps): the missing steps, named
    cfg = R.shipped_config(m)
    cfg.head.n_steps = 3
    with pytest.raises(KeyError, match=r"head\.corr\.2\.0\.weight"):
        R.load_shipped(m, cfg)


def test_dequantize_per_tensor_and_per_axis():
    q = np.array([[-128, 0, 127], [2, 4, 6]], np.int8)
    np.testing.assert_array_equal(
        R.dequantize(q, np.float32(0.5), np.int8(2), 1), (q.astype(np.float32) - 2) * 0.5
    )
    s, z = np.array([1.0, 0.25], np.float32), np.array([0, 2], np.int8)
    np.testing.assert_array_equal(R.dequantize(q, s, z, 0), [[-128.0, 0.0, 127.0], [0.0, 0.5, 1.0]])
    s3, z3 = np.array([1.0, 2.0, 3.0], np.float32), np.array([1, 0, 0], np.int8)
    np.testing.assert_array_equal(R.dequantize(q, s3, z3, -1), [[-129, 0, 381], [1, 8, 18]])


def test_fp16_model_file(shipped, tmp_path):
    _, m = shipped
    model = R.load_shipped(m)
    size = R.save_model_fp16(tmp_path / "m.pt", model, {"epoch": 3})
    assert size <= R.MAX_MODEL_MB * 2**20
    back = R.load_model_checkpoint(tmp_path / "m.pt")
    x = torch.from_numpy(_inputs(144)[2:])
    with torch.no_grad():
        a, b = model(x), back(x)
    # fp16 rounding of the weights (measured 0.058 years at most on these inputs)
    assert float((a["age"] - b["age"]).abs().max()) < 0.15
    assert torch.load(tmp_path / "m.pt", weights_only=False)["epoch"] == 3


def test_train_from_shipped_checkpoints_and_resumes(shipped, tmp_path, monkeypatch):
    """Two steps of batch 2 at 144 px from the shipped weights (a smoke run, not training):
    the fp16 model file, resuming from it and from last.pt, the strict config check, the
    log of threads and wall time, and the export of the result reading back."""
    path, _ = shipped
    monkeypatch.setattr(S, "VIEW_DIR", tmp_path / "views")
    sc = S.StudentConfig(
        views=str(noise_manifest(tmp_path / "train", 4, 144, 0)),
        val=str(noise_manifest(tmp_path / "val", 2, 144, 1)),
        init_from_shipped=str(path),
        n_steps=2,  # the graph unrolls 1: one fresh step
        epochs=1,
        batch_size=2,
        steps_per_epoch=2,
        threads=1,
        warmup_steps=1,
        out=str(tmp_path / "run"),
    )
    logs: list[str] = []
    S.train(sc, log=logs.append)
    assert any("threads 1 (one: a build runs beside it" in s for s in logs)
    assert any(s.startswith("epoch 0 wall ") for s in logs)
    assert any("1 from the graph, 1 fresh" in s for s in logs)
    run = Path(sc.out)
    assert (run / "model_fp16.pt").stat().st_size <= R.MAX_MODEL_MB * 2**20
    ck = torch.load(run / "last.pt", weights_only=False)
    assert ck["model_kind"] == "shipped" and "optimizer" in ck and ck["step"] == 2
    assert ck["state_dict"]["head.tok_proj.weight"].dtype == torch.float16
    hist = json.loads((run / "history.json").read_text())
    assert hist[0]["threads"] == 1 and hist[0]["wall_s"] > 0
    # continue from the model file alone (what a commit holds), then from last.pt
    sc.epochs, logs[:] = 2, []
    S.train(sc, resume=run / "model_fp16.pt", log=logs.append)
    assert any("model alone, a fresh optimizer) at epoch 1" in s for s in logs)
    assert torch.load(run / "last.pt", weights_only=False)["epoch"] == 1
    sc.epochs, sc.threads = 3, 2  # threads and epochs may change on another machine
    S.train(sc, resume=run / "last.pt", log=logs.append)
    assert any("model + optimizer) at epoch 2" in s for s in logs)
    sc.tower_lr = 1e-3
    with pytest.raises(ValueError, match="'tower_lr'"):
        S.train(sc, resume=run / "last.pt", log=logs.append)
    # the result exports to a graph that reads back (strictly) into the same module
    from agegate_models.train import load_checkpoint

    model = load_checkpoint(run / "best.pt")
    assert isinstance(model, R.ShippedStudent) and len(model.head.corr) == 2
    back = R.load_shipped(export_onnx(model, tmp_path / "s.onnx"))
    x = torch.from_numpy(_inputs(144)[:1])
    with torch.no_grad():
        a, b = model(x), back(x)
    torch.testing.assert_close(a["steps"], b["steps"], atol=1e-4, rtol=0)


def test_init_from_shipped_refuses_another_config(shipped):
    path, _ = shipped
    sc = S.StudentConfig(init_from_shipped=str(path), image_size=112)
    with pytest.raises(ValueError, match="image_size"):
        S.build(sc)
    sc = S.StudentConfig(init_from_shipped=str(path), n_steps=0)
    with pytest.raises(ValueError, match="n_steps"):
        S.build(sc)
    with pytest.raises(ValueError, match="--init-from-shipped"):
        S.build(S.StudentConfig(init_from_shipped=str(path), frozen=True))


def test_v2_recipe_model_file_fits(tmp_path):
    """The recipe's own student (stage 2 from stage 1: text tower included) fits the fp16
    model file too: of the token embedding only the prompts' rows are kept."""
    torch.manual_seed(0)
    model = S.build(S.StudentConfig(), tokenizer=tokenizer(), weights=False).eval()
    size = R.save_model_fp16(tmp_path / "m.pt", model)
    assert size <= R.MAX_MODEL_MB * 2**20
    ck = torch.load(tmp_path / "m.pt", weights_only=False)
    torch.manual_seed(1)  # another init: every tensor the outputs read comes from the file
    back = S.build(S.StudentConfig(), tokenizer=tokenizer(), weights=False).eval()
    back.load_state_dict(R.full_state(ck["state_dict"], back), strict=True)
    torch.testing.assert_close(
        back.prompt_embeddings(), model.prompt_embeddings(), atol=2e-3, rtol=0
    )

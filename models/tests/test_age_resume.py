"""resume.py: the shipped student read back from models/age_student_int8.onnx into a torch
module (int8 weights dequantized, strict mapping), checked against onnxruntime on the same
inputs, and its fp16 model file. Needs neither the data set nor fetched weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _age_helpers import MODELS, require_file
from onnx import numpy_helper

from agegate_models import resume as R
from agegate_models.export import run_onnx

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

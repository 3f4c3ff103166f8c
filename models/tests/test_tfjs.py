"""agegate_models.tfjs against numpy references on synthetic TF.js graph models, plus faceres."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _age_helpers import require_fetched, require_file

from agegate_models.tfjs import UnsupportedOpError, load_graph_model, read_weights, same_padding

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"


# --------------------------------------------------------------------------------------------
# a tiny writer of TF.js graph models


def _s(v: str) -> dict:
    return {"s": base64.b64encode(v.encode()).decode()}


def _ints(v) -> dict:
    return {"list": {"i": [str(i) for i in v]}}


class Graph:
    def __init__(self):
        self.nodes: list[dict] = []
        self.weights: list[tuple[str, np.ndarray, dict | None]] = []

    def placeholder(self, name: str, shape) -> str:
        dims = [{"size": str(s)} for s in shape]
        self.nodes.append(
            {
                "name": name,
                "op": "Placeholder",
                "attr": {"dtype": {"type": "DT_FLOAT"}, "shape": {"shape": {"dim": dims}}},
            }
        )
        return name

    def const(self, name: str, value: np.ndarray, quant: str | None = None) -> str:
        dt = "DT_INT32" if value.dtype.kind == "i" else "DT_FLOAT"
        self.nodes.append({"name": name, "op": "Const", "attr": {"dtype": {"type": dt}}})
        self.weights.append((name, value, quant))
        return name

    def op(self, name: str, op: str, inputs: list[str], **attr) -> str:
        self.nodes.append({"name": name, "op": op, "input": inputs, "attr": attr})
        return name

    def save(self, d: Path, outputs: list[str]) -> Path:
        buf, manifest = b"", []
        for name, v, quant in self.weights:
            is_int = v.dtype.kind == "i"
            entry = {
                "name": name,
                "shape": list(v.shape),
                "dtype": "int32" if is_int else "float32",
            }
            if is_int:
                buf += v.astype("<i4").tobytes()
            elif quant is None:
                buf += v.astype("<f4").tobytes()
            else:
                q = entry["quantization"] = _quant_entry(v, quant)
                if quant == "float16":
                    buf += v.astype("<f2").tobytes()
                else:  # affine uint8 / uint16
                    dt = "u1" if quant == "uint8" else "<u2"
                    buf += np.round((v - q["min"]) / q["scale"]).astype(dt).tobytes()
            manifest.append(entry)
        # two shards, split mid-weight, as the converter does
        half = len(buf) // 2 + 1
        (d / "w1.bin").write_bytes(buf[:half])
        (d / "w2.bin").write_bytes(buf[half:])
        model = {
            "format": "graph-model",
            "signature": {"outputs": {o: {"name": o} for o in outputs}},
            "modelTopology": {"node": self.nodes, "library": {}, "versions": {}},
            "weightsManifest": [{"paths": ["w1.bin", "w2.bin"], "weights": manifest}],
        }
        p = d / "model.json"
        p.write_text(json.dumps(model))
        return p


def _quant_entry(v: np.ndarray, quant: str) -> dict:
    if quant == "float16":
        return {"dtype": "float16", "original_dtype": "float32"}
    levels = 255 if quant == "uint8" else 65535
    lo, hi = float(v.min()), float(v.max())
    return {"dtype": quant, "scale": (hi - lo) / levels or 1.0, "min": lo}


def _dequant(v: np.ndarray, quant: str | None) -> np.ndarray:
    if quant is None or v.dtype.kind == "i":
        return v
    if quant == "float16":
        return v.astype(np.float16).astype(np.float32)
    q = _quant_entry(v, quant)
    scale, lo = np.float32(q["scale"]), np.float32(q["min"])
    return np.round((v - lo) / scale).astype(np.float32) * scale + lo


# --------------------------------------------------------------------------------------------
# numpy references (NHWC, TF semantics)


def _tf_pads(size: int, k: int, s: int, padding: str) -> tuple[int, int]:
    if padding == "VALID":
        return 0, 0
    out = (size + s - 1) // s
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2  # TF puts the odd pixel at the bottom / right


def np_conv(x, k, stride, padding, depthwise=False):
    kh, kw = k.shape[:2]
    pt, pb = _tf_pads(x.shape[1], kh, stride, padding)
    pl, pr = _tf_pads(x.shape[2], kw, stride, padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    oh = (xp.shape[1] - kh) // stride + 1
    ow = (xp.shape[2] - kw) // stride + 1
    cout = k.shape[2] * k.shape[3] if depthwise else k.shape[3]
    y = np.zeros((x.shape[0], oh, ow, cout), np.float64)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kw, :]
            if depthwise:  # out channel c*M+m = sum_hw x[.., c] * k[h, w, c, m]
                y[:, i, j, :] = np.einsum("bhwc,hwcm->bcm", patch, k).reshape(x.shape[0], -1)
            else:
                y[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, k)
    return y


def np_pool(x, k, s, padding, kind):
    pt, pb = _tf_pads(x.shape[1], k, s, padding)
    pl, pr = _tf_pads(x.shape[2], k, s, padding)
    fill = -np.inf if kind == "max" else np.nan
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    oh, ow = (xp.shape[1] - k) // s + 1, (xp.shape[2] - k) // s + 1
    y = np.zeros((x.shape[0], oh, ow, x.shape[3]))
    for i in range(oh):
        for j in range(ow):
            p = xp[:, i * s : i * s + k, j * s : j * s + k, :]
            y[:, i, j] = p.max(axis=(1, 2)) if kind == "max" else np.nanmean(p, axis=(1, 2))
    return y


def relu6(x):
    return np.clip(x, 0, 6)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def nchw(t: torch.Tensor) -> np.ndarray:
    """Torch NCHW output -> NHWC numpy, to compare with the references."""
    a = t.detach().double().numpy()
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


# --------------------------------------------------------------------------------------------
# the synthetic MobileNet-ish graph


def build_mobilenetish(d: Path, quant: str | None = None, seed: int = 0):
    rng = np.random.default_rng(seed)
    f32 = np.float32
    p = {
        "k1": (rng.normal(size=(3, 3, 3, 4)) * 0.5).astype(f32),
        "b1": rng.normal(size=4).astype(f32),
        "kd": (rng.normal(size=(3, 3, 4, 2)) * 0.5).astype(f32),  # depth multiplier 2
        "s2": rng.uniform(0.5, 1.5, size=8).astype(f32),
        "t2": rng.normal(size=8).astype(f32),
        "six": np.array(6.0, f32),
        "zero": np.array(0.0, f32),
        "k3": (rng.normal(size=(3, 3, 8, 6)) * 0.3).astype(f32),
        "b3": rng.normal(size=6).astype(f32),
        "kd4": (rng.normal(size=(3, 3, 6, 1)) * 0.5).astype(f32),
        "b4": rng.normal(size=6).astype(f32),
        "axes": np.array([1, 2], np.int32),
        "w5": rng.normal(size=(6, 5)).astype(f32),
        "b5": rng.normal(size=5).astype(f32),
        "w6": rng.normal(size=(5, 3)).astype(f32),
    }
    g = Graph()
    g.placeholder("x", [-1, -1, -1, 3])
    for name, v in p.items():
        g.const(name, v, None if name in ("axes", "six", "zero") else quant)
    same, valid = _s("SAME"), _s("VALID")
    g.op("c1", "Conv2D", ["x", "k1"], strides=_ints([1, 2, 2, 1]), padding=same,
         dilations=_ints([1, 1, 1, 1]), data_format=_s("NHWC"))  # fmt: skip
    g.op("a1", "BiasAdd", ["c1", "b1"])
    g.op("r1", "Relu6", ["a1"])
    g.op("dw", "DepthwiseConv2dNative", ["r1", "kd"], strides=_ints([1, 1, 1, 1]), padding=same)
    g.op("m2", "Mul", ["dw", "s2"])
    g.op("a2", "Add", ["m2", "t2"])
    g.op("relu2", "Relu", ["a2"])
    g.op("min2", "Minimum", ["relu2", "six"])
    g.op("max2", "Maximum", ["min2", "zero"])
    relu = {"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}}
    relu6 = {"list": {"s": [_s("BiasAdd")["s"], _s("Relu6")["s"]]}}
    g.op("c3", "_FusedConv2D", ["max2", "k3", "b3"], strides=_ints([1, 2, 2, 1]), padding=valid,
         fused_ops=relu, num_args={"i": "1"})  # fmt: skip
    g.op("d4", "FusedDepthwiseConv2dNative", ["c3", "kd4", "b4"], strides=_ints([1, 2, 2, 1]),
         padding=same, fused_ops=relu6)  # fmt: skip
    g.op("mean", "Mean", ["d4", "axes"], keep_dims={"b": False})
    g.op("fc", "_FusedMatMul", ["mean", "w5", "b5"],
         fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Relu")["s"]]}})  # fmt: skip
    g.op("mm", "MatMul", ["fc", "w6"], transpose_a={"b": False}, transpose_b={"b": False})
    g.op("sm", "Softmax", ["mm"])
    path = g.save(d, ["sm", "max2", "mean"])
    pq = {k: _dequant(v, None if k in ("axes", "six", "zero") else quant) for k, v in p.items()}
    return path, pq


def ref_mobilenetish(x: np.ndarray, p: dict) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)
    h = relu6(np_conv(x, p["k1"], 2, "SAME") + p["b1"])
    h = np_conv(h, p["kd"], 1, "SAME", depthwise=True)
    max2 = relu6(h * p["s2"] + p["t2"])
    h = np.maximum(np_conv(max2, p["k3"], 2, "VALID") + p["b3"], 0)
    h = relu6(np_conv(h, p["kd4"], 2, "SAME", depthwise=True) + p["b4"])
    mean = h.mean(axis=(1, 2))
    fc = np.maximum(mean @ p["w5"] + p["b5"], 0)
    return {"sm": softmax(fc @ p["w6"]), "max2": max2, "mean": mean}


# --------------------------------------------------------------------------------------------
# tests


def test_same_padding_is_tf():
    assert same_padding(8, 3, 2) == (0, 1)  # the odd pixel goes to the bottom/right
    assert same_padding(9, 3, 2) == (1, 1)
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(7, 3, 1) == (1, 1)
    assert same_padding(5, 1, 1) == (0, 0)
    assert same_padding(6, 4, 1) == (1, 2)


@pytest.mark.parametrize("size", [8, 9, 13, 16])
@pytest.mark.parametrize("fold", [True, False])
def test_graph_matches_numpy(tmp_path, size, fold):
    path, p = build_mobilenetish(tmp_path)
    g = load_graph_model(path, fold=fold).eval()
    x = np.random.default_rng(size).normal(size=(2, size, size, 3)).astype(np.float32) * 2
    with torch.no_grad():
        out = g(torch.from_numpy(x).permute(0, 3, 1, 2))
    ref = ref_mobilenetish(x, p)
    assert set(out) == {"sm", "max2", "mean"}
    assert out["max2"].shape[1] == 8  # returned NCHW
    for k in ref:
        np.testing.assert_allclose(nchw(out[k]), ref[k], rtol=1e-4, atol=1e-4, err_msg=k)


def test_fold_removes_elementwise_nodes(tmp_path):
    path, _ = build_mobilenetish(tmp_path)
    folded = load_graph_model(path, fold=True)
    plain = load_graph_model(path, fold=False)
    assert len(folded._steps) < len(plain._steps)
    assert "max2" in [s[0] for s in folded._steps]
    kinds = {s[1] for s in folded._steps}
    assert "binary" not in kinds  # Mul / Add / Minimum / Maximum all went into the conv


def test_nhwc_layouts_and_parameters(tmp_path):
    path, p = build_mobilenetish(tmp_path)
    g = load_graph_model(path, input_layout="nhwc", output_layout="nhwc")
    x = np.random.default_rng(1).normal(size=(1, 10, 10, 3)).astype(np.float32)
    out = g(torch.from_numpy(x))
    np.testing.assert_allclose(
        out["max2"].detach().double().numpy(), ref_mobilenetish(x, p)["max2"], atol=1e-4
    )
    # weights are trainable parameters and gradients flow to them
    params = dict(g.named_parameters())
    assert any("c1" in k for k in params) and all(v.requires_grad for v in params.values())
    out["sm"][:, 0].sum().backward()
    assert g.ops["c1"].weight.grad is not None and g.ops["c1"].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("quant", ["uint8", "uint16", "float16"])
def test_quantized_weights(tmp_path, quant):
    path, p = build_mobilenetish(tmp_path, quant=quant, seed=3)
    w = read_weights(json.loads(path.read_text()), path.parent)
    for k, v in p.items():
        assert w[k].dtype == (np.int32 if k == "axes" else np.float32)
        np.testing.assert_allclose(w[k], v, rtol=1e-6, atol=1e-6, err_msg=k)
    g = load_graph_model(path)
    x = np.random.default_rng(2).normal(size=(2, 11, 11, 3)).astype(np.float32)
    with torch.no_grad():
        out = g(torch.from_numpy(x).permute(0, 3, 1, 2))
    ref = ref_mobilenetish(x, p)
    for k in ref:
        np.testing.assert_allclose(nchw(out[k]), ref[k], rtol=1e-4, atol=1e-4, err_msg=k)


def test_shape_ops(tmp_path):
    rng = np.random.default_rng(5)
    g = Graph()
    g.placeholder("x", [-1, 7, 7, 4])
    g.const("pads", np.array([[0, 0], [1, 2], [0, 1], [0, 0]], np.int32))
    g.const("axis", np.array(3, np.int32))
    g.const("shape", np.array([-1, 5 * 4 * 10], np.int32))
    g.const("k", rng.normal(size=(1, 1, 4, 2)).astype(np.float32))
    g.op("pad", "Pad", ["x", "pads"])  # -> [B, 10, 8, 4]
    g.op("mp", "MaxPool", ["pad"], ksize=_ints([1, 3, 3, 1]), strides=_ints([1, 2, 2, 1]),
         padding=_s("SAME"))  # fmt: skip
    g.op("ap", "AvgPool", ["pad"], ksize=_ints([1, 3, 3, 1]), strides=_ints([1, 2, 2, 1]),
         padding=_s("SAME"))  # fmt: skip
    g.op("pw", "Conv2D", ["ap", "k"], strides=_ints([1, 1, 1, 1]), padding=_s("VALID"))
    g.op("cat", "ConcatV2", ["mp", "ap", "pw", "axis"], N={"i": "3"})  # [B, 5, 4, 10]
    g.op("flat", "Reshape", ["cat", "shape"])
    g.op("sq", "Squeeze", ["pw"], squeeze_dims=_ints([]))
    path = g.save(tmp_path, ["flat", "cat"])
    m = load_graph_model(path)
    x = rng.normal(size=(2, 7, 7, 4)).astype(np.float32)
    out = m(torch.from_numpy(x).permute(0, 3, 1, 2))
    xp = np.pad(x, ((0, 0), (1, 2), (0, 1), (0, 0))).astype(np.float64)
    mp, ap = np_pool(xp, 3, 2, "SAME", "max"), np_pool(xp, 3, 2, "SAME", "avg")
    cat = np.concatenate([mp, ap, np.einsum("bhwc,co->bhwo", ap, g.weights[3][1][0, 0])], -1)
    np.testing.assert_allclose(nchw(out["cat"]), cat, atol=1e-5)
    np.testing.assert_allclose(out["flat"].detach().numpy(), cat.reshape(2, -1), atol=1e-5)


def test_unknown_op_is_named(tmp_path):
    g = Graph()
    g.placeholder("x", [-1, 4])
    g.op("weird", "FancyNewOp", ["x"])
    g.op("y", "Relu", ["weird"])
    path = g.save(tmp_path, ["y"])
    with pytest.raises(UnsupportedOpError, match="FancyNewOp") as e:
        load_graph_model(path)
    assert "weird" in str(e.value)


def test_unknown_fused_op_is_named(tmp_path):
    g = Graph()
    g.placeholder("x", [-1, 4, 4, 1])
    g.const("k", np.ones((1, 1, 1, 1), np.float32))
    g.const("b", np.ones(1, np.float32))
    g.op("c", "_FusedConv2D", ["x", "k", "b"], strides=_ints([1, 1, 1, 1]), padding=_s("SAME"),
         fused_ops={"list": {"s": [_s("BiasAdd")["s"], _s("Gelu")["s"]]}})  # fmt: skip
    path = g.save(tmp_path, ["c"])
    with pytest.raises(UnsupportedOpError, match="Gelu"):
        load_graph_model(path)


# --------------------------------------------------------------------------------------------
# the real faceres (needs `python -m agegate_models.fetch faceres`)


@pytest.fixture(scope="module")
def faceres():
    require_fetched("faceres", "faceres.json")
    from agegate_models.faceres import FaceRes

    return FaceRes().eval()


def test_faceres_shapes(faceres):
    from agegate_models.faceres import count_macs

    with torch.no_grad():
        o = faceres(torch.rand(1, 3, 224, 224) * 255)
        o112 = faceres(torch.rand(2, 3, 112, 112) * 255)
    assert o["tokens"].shape == (1, 1024, 7, 7)
    assert o["pooled"].shape == (1, 1024)
    assert o["age_probs"].shape == (1, 100) and o["age"].shape == (1,)
    assert o["gender"].shape == (1,)
    assert o112["tokens"].shape == (2, 1024, 4, 4) and o112["age"].shape == (2,)
    for r in (o, o112):
        torch.testing.assert_close(r["pooled"], r["tokens"].mean(dim=(2, 3)))
        torch.testing.assert_close(r["age_probs"].sum(-1), torch.ones(len(r["age"])))
        assert (r["age"] >= 1).all() and (r["age"] <= 100).all()
    assert 145e6 < count_macs(faceres, 112) < 150e6  # 568 M at 224


def test_faceres_age_on_val(faceres):
    from agegate_models.eval_faceres import evaluate

    val = require_file(DATA / "utkface" / "val.csv", "the UTKFace manifests (shared/data)")
    r = evaluate(faceres, val, size=224, limit=50, batch=25)
    assert r["n"] == 50
    assert r["mae"] < 9.0, r  # ~6 with the HSE preprocessing; ~8+ when it is wrong


def test_misc_ops(tmp_path):
    """FusedBatchNorm-fused conv, LeakyRelu, AddN, Sub folding, ExpandDims, PadV2, Sum."""
    rng = np.random.default_rng(7)
    f32 = np.float32
    k = rng.normal(size=(3, 3, 2, 3)).astype(f32)
    scale, offset = rng.uniform(0.5, 2, 3).astype(f32), rng.normal(size=3).astype(f32)
    mean, var = rng.normal(size=3).astype(f32), rng.uniform(0.5, 2, 3).astype(f32)
    sub = rng.normal(size=3).astype(f32)
    g = Graph()
    g.placeholder("x", [-1, 6, 6, 2])
    for name, v in [("k", k), ("sc", scale), ("of", offset), ("mu", mean), ("var", var)]:
        g.const(name, v)
    g.const("sub", sub)
    g.const("k2", k.copy())  # a kernel may feed one op only (shared weights are refused)
    g.const("pads", np.array([[0, 0], [1, 0], [0, 2], [0, 1]], np.int32))
    g.const("pv", np.array(1.5, f32))
    g.const("ax", np.array([1, 2], np.int32))
    g.const("e", np.array(-1, np.int32))
    g.op("c", "_FusedConv2D", ["x", "k", "sc", "of", "mu", "var"], strides=_ints([1, 1, 1, 1]),
         padding=_s("SAME"), epsilon={"f": 0.001},
         fused_ops={"list": {"s": [_s("FusedBatchNorm")["s"], _s("Relu")["s"]]}})  # fmt: skip
    g.op("c2", "Conv2D", ["x", "k2"], strides=_ints([1, 2, 2, 1]), padding=_s("VALID"))
    g.op("s2", "Sub", ["c2", "sub"])
    g.op("l2", "LeakyRelu", ["s2"], alpha={"f": 0.1})
    g.op("p", "PadV2", ["c", "pads", "pv"])
    g.op("sum", "Sum", ["p", "ax"], keep_dims={"b": True})
    g.op("sq", "Squeeze", ["sum"], squeeze_dims=_ints([1, 2]))
    g.op("ex", "ExpandDims", ["sq", "e"])
    g.op("an", "AddN", ["l2", "l2", "l2"])
    path = g.save(tmp_path, ["ex", "an", "p"])
    x = rng.normal(size=(2, 6, 6, 2)).astype(f32)
    for fold in (True, False):
        out = load_graph_model(path, fold=fold)(torch.from_numpy(x).permute(0, 3, 1, 2))
        c = np.maximum((np_conv(x, k, 1, "SAME") - mean) * scale / np.sqrt(var + 1e-3) + offset, 0)
        p = np.pad(c, ((0, 0), (1, 0), (0, 2), (0, 1)), constant_values=1.5)
        s2 = np_conv(x, k, 2, "VALID") - sub
        an = 3 * np.where(s2 >= 0, s2, 0.1 * s2)
        np.testing.assert_allclose(nchw(out["p"]), p, atol=1e-4)
        np.testing.assert_allclose(out["ex"].detach().numpy(), p.sum((1, 2))[..., None], atol=1e-3)
        np.testing.assert_allclose(nchw(out["an"]), an, atol=1e-4)

import json

import numpy as np
import onnx
import pytest
import torch
from _age_helpers import tiny_model

from agegate_models.export import (
    FORBIDDEN_INT8_OPS,
    check_contract,
    count_macs,
    export_onnx,
    fold_input_channel_flip,
    op_histogram,
    ort_session,
    run_onnx,
    update_sha256sums,
    write_fixture,
)
from agegate_models.model import ExportModule


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("exp")
    m = tiny_model(seed=3).eval()
    with torch.no_grad():  # non-trivial correction and modulation weights
        for mod in m.head.corr:
            mod[-1].weight.normal_(0, 0.1)
    path = export_onnx(m, d / "tiny.onnx")
    return m, path, d


def test_export_contract_and_onnxruntime_parity(exported):
    m, path, _ = exported
    info = check_contract(path)
    # no recorded intermediate shapes (tract cannot unify their symbolic batch with 1)
    assert not onnx.load(str(path)).graph.value_info
    assert info["size"] == 32 and info["T"] == 1 + m.cfg.head.n_steps
    ops = op_histogram(path)
    assert not {"DFT", "STFT"} & set(ops)
    assert (
        max(op.version for op in onnx.load(str(path)).opset_import if op.domain in ("", "ai.onnx"))
        <= 17
    )
    x = (np.random.default_rng(0).random((2, 3, 32, 32)) * 255).astype(np.float32)
    o = run_onnx(ort_session(path), x)
    with torch.no_grad():
        ref = ExportModule(m)(torch.from_numpy(x))
    for a, k in zip(ref, ["age", "sigma", "steps"], strict=True):
        np.testing.assert_allclose(o[k], a.numpy(), rtol=1e-4, atol=1e-4)
    assert o["age"].shape == (2,) and o["steps"].shape == (2, info["T"])
    np.testing.assert_allclose(o["steps"][:, -1], o["age"], rtol=0, atol=1e-5)
    macs = count_macs(path)
    assert macs["conv"] > 0 and macs["matmul"] > 0


def test_int8_has_no_ops_tract_rejects(exported, tmp_path):
    from agegate_models.quantize import float_matmuls, quantize_model

    _, path, _ = exported
    rng = np.random.default_rng(0)
    imgs = []
    for i in range(4):
        from PIL import Image

        p = tmp_path / f"c{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
        imgs.append(p)
    out = quantize_model(path, tmp_path / "tiny_int8.onnx", record=False, calib_paths=imgs)
    ops = op_histogram(out)
    assert not onnx.load(str(out)).graph.value_info
    assert "QLinearConv" in ops and "QLinearMatMul" in ops
    assert not FORBIDDEN_INT8_OPS & set(ops)
    # the shipped form: int8-stored weights, float arithmetic, no calibration
    mixed = quantize_model(path, tmp_path / "tiny_weights.onnx", form="weights")
    mixed_ops = op_histogram(mixed)
    assert "QLinearConv" not in mixed_ops and "QLinearMatMul" not in mixed_ops
    assert mixed_ops["DequantizeLinear"] >= mixed_ops["Conv"] + 2  # + learned MatMuls
    int8_inits = [
        t for t in onnx.load(str(mixed)).graph.initializer if t.data_type == onnx.TensorProto.INT8
    ]
    assert len(int8_inits) == 2 * mixed_ops["DequantizeLinear"]  # weights and zero points
    assert not FORBIDDEN_INT8_OPS & set(mixed_ops)
    x8 = (rng.random((1, 3, 32, 32)) * 255).astype(np.float32)
    a = run_onnx(ort_session(path), x8)["age"]
    b = run_onnx(ort_session(mixed), x8)["age"]
    assert np.abs(a - b).max() < 2.0
    assert all(op.domain in ("", "ai.onnx") for op in onnx.load(str(out)).opset_import)
    # the DFT matmuls and the prompt-similarity matmul stay float
    assert len(float_matmuls(onnx.load(str(path)))) >= 4 * 1 + 1
    x = (rng.random((1, 3, 32, 32)) * 255).astype(np.float32)
    o = run_onnx(ort_session(out), x)
    assert np.isfinite(o["age"]).all() and (o["sigma"] > 0).all()


def test_int8_weights_round_trip():
    from agegate_models.quantize import int8_weights

    rng = np.random.default_rng(1)
    w = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4, 6, 6])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
        "g",
        [x],
        [y],
        [onnx.numpy_helper.from_array(w, "w")],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime and tract read
    q = int8_weights(onnx.ModelProto.FromString(model.SerializeToString()))
    onnx.checker.check_model(q)
    assert [n.op_type for n in q.graph.node] == ["DequantizeLinear", "Conv"]
    xs = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": xs})[0]
    got = ort.InferenceSession(q.SerializeToString()).run(None, {"x": xs})[0]
    # per-channel int8: error below half a step of the largest weight, times the inputs
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()


def test_sha256sums_keeps_other_lines(tmp_path):
    sums = tmp_path / "SHA256SUMS"
    sums.write_text("aaaa  blazeface.onnx\nbbbb  age_student_f32.onnx\n")
    f = tmp_path / "age_student_f32.onnx"
    f.write_bytes(b"x")
    update_sha256sums([f], sums)
    lines = sums.read_text().splitlines()
    assert lines[0] == "aaaa  blazeface.onnx" and len(lines) == 2
    assert lines[1].endswith("  age_student_f32.onnx") and not lines[1].startswith("bbbb")


def test_parity_fixture(tmp_path):
    info = write_fixture(tmp_path)
    assert (tmp_path / "model.onnx").stat().st_size < 1 << 20
    inp = json.loads((tmp_path / "input.json").read_text())
    exp = json.loads((tmp_path / "expected.json").read_text())
    x = np.array(inp["data"], np.float32).reshape(inp["shape"])
    o = run_onnx(ort_session(tmp_path / "model.onnx"), x)
    for k, v in exp["outputs"].items():
        np.testing.assert_allclose(o[k].ravel(), v["data"], rtol=1e-5, atol=1e-5)
    assert set(exp["outputs"]) == {"age", "sigma", "steps", "p_over"} and info["size"] < 1 << 20
    p = np.array(exp["outputs"]["p_over"]["data"])
    assert exp["outputs"]["p_over"]["shape"] == [1, 5] and ((p >= 0) & (p <= 1)).all()
    # the head options of the shipped student are in the fixture (median a_0, p_over)
    old = write_fixture(tmp_path / "plain", head={})
    assert "p_over" not in old["outputs"]


class _BgrStem(torch.nn.Module):
    """The face backbone's input: RGB -> BGR, minus a mean, TF 'SAME' pad, first conv."""

    def __init__(self, then_scale: bool = False):
        super().__init__()
        torch.manual_seed(5)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2)
        self.register_buffer("mean", torch.tensor([100.0, 120.0, 140.0]).reshape(1, 3, 1, 1))
        self.then_scale = then_scale

    def forward(self, rgb):
        x = rgb.flip(1) - self.mean
        if self.then_scale:  # a second reader of the flipped image: not foldable
            return self.conv(torch.nn.functional.pad(x, (0, 1, 0, 1))), x * 2.0
        return self.conv(torch.nn.functional.pad(x, (0, 1, 0, 1)))


def _export_stem(path, then_scale=False):
    torch.onnx.export(
        _BgrStem(then_scale).eval(),
        (torch.zeros(1, 3, 9, 9),),
        str(path),
        dynamo=False,
        opset_version=17,
        input_names=["image"],
    )
    return onnx.load(str(path))


@pytest.mark.parametrize("int8", [False, True])
def test_fold_input_channel_flip_removes_the_slice_and_keeps_the_function(tmp_path, int8):
    import onnxruntime as ort

    from agegate_models.quantize import int8_weights

    model = _export_stem(tmp_path / "stem.onnx")
    if int8:
        model = int8_weights(model)

    def flips(m):  # (the pad's own pads computation has Slices too)
        return [n for n in m.graph.node if n.op_type == "Slice" and n.input[0] == "image"]

    assert len(flips(model)) == 1
    before = model.SerializeToString()
    folded = fold_input_channel_flip(onnx.ModelProto.FromString(before))
    onnx.checker.check_model(folded)
    assert not flips(folded)
    x = np.random.default_rng(2).uniform(0, 255, size=(1, 3, 9, 9)).astype(np.float32)
    ref = ort.InferenceSession(before).run(None, {"image": x})[0]
    got = ort.InferenceSession(folded.SerializeToString()).run(None, {"image": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-3)


def test_fold_input_channel_flip_leaves_other_readers_alone(tmp_path):
    model = _export_stem(tmp_path / "stem.onnx", then_scale=True)
    before = model.SerializeToString()
    folded = fold_input_channel_flip(onnx.ModelProto.FromString(before))
    assert folded.SerializeToString() == before

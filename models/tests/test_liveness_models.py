"""The liveness ONNX files (antispoof, liveness, facemesh) against the TF.js graphs they come
from (scripts/convert_liveness.py): same outputs as the interpreter, the contract, the
shipped files equal to a fresh conversion, the Rust fixture, the crop helpers."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from _age_helpers import MODELS, require, require_fetched

sys.path.insert(0, str(MODELS / "scripts"))
import convert_liveness as cl  # noqa: E402 (after the sys.path line)

NAMES = sorted(cl.SPECS)
# ops tract runs; the converter must not produce anything else
TRACT_OPS = {
    "Conv",
    "MaxPool",
    "Gemm",
    "MatMul",
    "Relu",
    "Sigmoid",
    "Softmax",
    "Reshape",
    "Add",
    "Mul",
    "PRelu",
    "Pad",
    "Concat",
}
SHAPES = {
    "real": [1, 1],
    "live": [1, 2],
    "landmarks": [1, 468, 3],
    "face_score": [1, 1],
}


@pytest.fixture(scope="module")
def built():
    ort = pytest.importorskip("onnxruntime")
    del ort
    out = {}
    for name in NAMES:
        require_fetched(name, f"{name}.json")
        spec = cl.SPECS[name]
        out[name] = (spec, cl.build(spec))
    return out


def _shipped(spec):
    require(spec.onnx_path.is_file(), f"{spec.onnx_path} absent: run convert_liveness.py")
    return spec.onnx_path


def _inputs(spec, n_random=2):
    rng = np.random.default_rng(1)
    xs = [rng.uniform(0, 255, (1, 3, spec.size, spec.size)).astype(np.float32)]
    xs += [rng.integers(0, 256, (1, 3, spec.size, spec.size)).astype(np.float32)]
    return xs[:n_random] + [cl.fixture_input(spec).astype(np.float32)]


@pytest.mark.parametrize("name", NAMES)
def test_onnx_matches_tfjs(built, name):
    spec, model = built[name]
    sess = cl.ort_session(_shipped(spec))
    for x in _inputs(spec):
        d = cl.max_diff(cl.reference(model.graph, spec, x), cl.run_onnx(sess, spec, x))
        for k, v in d.items():
            assert v <= cl.TOLERANCE[k], f"{name} {k}: max abs {v:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_contract(name):
    import onnx

    spec = cl.SPECS[name]
    m = onnx.load(str(_shipped(spec)))
    (inp,) = m.graph.input
    dims = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert inp.name == "image" and dims == [1, 3, spec.size, spec.size]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    outs = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in m.graph.output}
    assert outs == {k: SHAPES[k] for k in spec.outputs}
    assert m.opset_import[0].version == cl.OPSET
    assert set(cl.op_types(spec.onnx_path)) <= TRACT_OPS
    # float32 weights (no float16 / int8), int64 only for Reshape shapes and Pad pads
    kinds = {t.data_type for t in m.graph.initializer}
    assert kinds <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}


@pytest.mark.parametrize("name", NAMES)
def test_shipped_is_what_the_converter_writes(built, name, tmp_path):
    spec, model = built[name]
    fresh = cl.export(spec, tmp_path / f"{name}.onnx", model=model)
    assert cl.op_types(fresh) == cl.op_types(_shipped(spec))
    a, b = cl.ort_session(spec.onnx_path), cl.ort_session(fresh)
    for x in _inputs(spec, n_random=1):
        d = cl.max_diff(cl.run_onnx(a, spec, x), cl.run_onnx(b, spec, x))
        assert max(d.values()) <= 1e-6, d


@pytest.mark.parametrize("name", NAMES)
def test_rust_fixture(built, name):
    from PIL import Image

    spec, model = built[name]
    png = cl.FIXTURE_DIR / f"{name}_input.png"
    doc = json.loads((cl.FIXTURE_DIR / f"{name}_expected.json").read_text())
    with Image.open(png) as im:
        x = np.asarray(im.convert("RGB")).transpose(2, 0, 1)[None]
    assert np.array_equal(x, cl.fixture_input(spec))  # the PNG is what the script cuts
    assert doc["input_shape"] == list(x.shape) and doc["model"] == spec.onnx_path.name
    ref = cl.reference(model.graph, spec, x)
    assert set(doc["outputs"]) == set(spec.outputs)
    for k, v in doc["outputs"].items():
        assert v["shape"] == list(ref[k].shape)
        # Landmarks are crop pixels (up to 192): float32 kernels that differ by CPU (AVX-512
        # or AMX paths in torch) move them by a few ulps, about 5e-5 px at 100 (seen on a
        # fresh CI machine), so the bound is relative as well; a wrong conversion is off by
        # whole pixels. The rounding is of the layer's scale, not of each value: a depth near 0
        # moved by 1.1e-5 px on an AVX2-only CPU, so the absolute part grows with the output's
        # largest value.
        atol = max(1e-5, 2e-6 * float(np.abs(ref[k]).max()))
        np.testing.assert_allclose(np.array(v["data"]), ref[k].reshape(-1), rtol=2e-6, atol=atol)


def test_fixture_scores_are_a_face():
    """The astronaut is a real face: the mesh says so; liveness calls it live."""
    doc = json.loads((cl.FIXTURE_DIR / "facemesh_expected.json").read_text())
    assert doc["outputs"]["face_score"]["data"][0] > 0.9
    mesh = np.array(doc["outputs"]["landmarks"]["data"]).reshape(468, 3)
    assert mesh[33, 0] < mesh[263, 0]  # subject's right eye on the image's left
    assert mesh[1, 2] < mesh[234, 2]  # nose tip nearer the camera than the face's edge
    live = json.loads((cl.FIXTURE_DIR / "liveness_expected.json").read_text())
    assert live["outputs"]["live"]["data"][0] > 0.5


def test_template():
    t = json.loads(cl.TEMPLATE_PATH.read_text())
    kp = {k: np.array(v["xyz"]) for k, v in t["keypoints"].items()}
    assert list(kp) == list(cl.KEYPOINT_NAMES)
    assert t["faces_used"] >= 100
    assert abs(np.linalg.norm(kp["left_eye"] - kp["right_eye"]) - 1.0) < 0.02
    assert kp["right_eye"][0] < 0 < kp["left_eye"][0]
    assert 0 < kp["nose_tip"][1] < kp["mouth_center"][1]
    assert kp["nose_tip"][2] < 0 < kp["right_ear_tragion"][2]
    assert t["ear"]["right_eye"] == list(cl.EAR_RIGHT)
    assert 0.1 < t["ear"]["both"]["median"] < 0.5


def test_crop_helpers():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (20, 20, 3)).astype(np.float32)
    # the whole image at its own size is the image itself (TF's corner-aligned sampling)
    np.testing.assert_allclose(cl.crop_and_resize(img, (0, 0, 20, 20), 20), img, atol=1e-4)
    # a box twice as tall: every other row, then the extrapolation value 0 below the image
    tall = cl.crop_and_resize(img, (0, 0, 20, 40), 20)
    np.testing.assert_allclose(tall[:10], img[::2], atol=1e-4)
    assert np.all(tall[10:] == 0)
    np.testing.assert_allclose(cl.resize_bilinear(img, 20), img, atol=1e-4)
    # half size without half-pixel centres samples every other pixel
    np.testing.assert_allclose(cl.resize_bilinear(img, 10), img[::2, ::2], atol=1e-4)
    assert cl.human_box((10, 10, 20, 30)) == (1.0, 6.0, 29.0, 34.0)

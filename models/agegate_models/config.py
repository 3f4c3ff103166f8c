"""Dataclass configurations of the CILF-CIAE age model and its training runs.

Every checkpoint written by ``train.py`` / ``distill.py`` carries ``asdict(ModelConfig)`` so
that ``ModelConfig.from_dict`` rebuilds exactly the network that produced it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

N_AGES = 101  # ages 0..100, one prompt and one softmax bin each
PROMPT_TEMPLATE = "a photo of a {k}-year-old person"


@dataclass
class BackboneConfig:
    """Image tower. ``kind``: "faceres" (shipped), "tiny" (stand-in CNN for tests/fixtures),
    "clip_vit" (CLIP ViT image tower, loadable from a CLIP checkpoint)."""

    kind: str = "faceres"
    image_size: int = 224
    # "faceres-nn" / "faceres-deep" (mobilenet.py): read the TF.js weights when built (a
    # checkpoint's backbone_state then replaces them)
    pretrained: bool = True
    # tiny CNN only
    tiny_width: int = 16
    tiny_channels: int = 32
    # clip_vit only
    vit_width: int = 768
    vit_layers: int = 12
    vit_heads: int = 12
    vit_patch: int = 32
    vit_embed_dim: int = 512
    quick_gelu: bool = True


@dataclass
class TextConfig:
    """CLIP text-transformer shape (token + positional embedding, pre-LN causal transformer,
    EOT pooling, projection)."""

    vocab_size: int = 49408
    context_length: int = 16
    width: int = 128
    layers: int = 2
    heads: int = 2
    embed_dim: int = 128  # shared image-text space
    quick_gelu: bool = True


@dataclass
class HeadConfig:
    """FourierFormer fusion head + contrastive matching + reversible correction."""

    in_channels: int = 1024  # channels of the backbone's token grid
    pooled_dim: int = 1024  # size of the backbone's pooled vector
    grid: int = 7  # token grid is grid x grid (fixed by the input size)
    dim: int = 128  # token width inside the FourierFormer
    depth: int = 2
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    feat_dropout: float = 0.2  # dropout on the (frozen) backbone features
    n_ages: int = N_AGES
    n_steps: int = 3  # correction steps (0 = no reversible correction)
    corr_hidden: int = 128
    interp_width: float = 1.0  # years, Gaussian width of the age -> text-space interpolation
    # what the correction MLP reads: "profile" = cosine similarities of the image embedding
    # to the text-space points at a_t + offsets (the discrepancy measured along the age
    # axis; low-dimensional, generalises), "vector" = the full difference vector z - t(a_t)
    corr_input: str = "vector"
    in_norm: bool = True  # LayerNorm on the tower's token and pooled vectors
    glob_mlp: bool = True  # pooled -> global token through a 2-layer MLP (else linear)
    corr_offsets: tuple = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
    text_fusion: bool = True  # text enters the FourierFormer blocks
    contrastive: bool = True  # age logits are image-prompt similarities (else linear head)
    # first estimate a_0 from the age softmax: "mean" (expectation) or "median" (the 0.5
    # crossing of its CDF, interpolated within the bin: less pulled to the mode's side)
    estimator: str = "mean"
    # P(age >= T) heads (graph output p_over), one small MLP per threshold T (years)
    p_over: tuple = ()
    p_over_hidden: int = 64


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    text: TextConfig = field(default_factory=TextConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        def build(tp, sub):
            names = {f.name for f in fields(tp)}
            return tp(**{k: v for k, v in (sub or {}).items() if k in names})

        head = dict(d.get("head") or {})
        head.setdefault("corr_input", "vector")  # checkpoints from before these options
        head.setdefault("in_norm", False)
        head.setdefault("glob_mlp", False)
        for k in ("corr_offsets", "p_over"):
            if k in head:
                head[k] = tuple(head[k])
        return cls(
            backbone=build(BackboneConfig, d.get("backbone")),
            text=build(TextConfig, d.get("text")),
            head=build(HeadConfig, head),
        )


def tiny_model_config(image_size: int = 32) -> ModelConfig:
    """Small dims, real architecture: tests and the Rust parity fixture."""
    bb = BackboneConfig(kind="tiny", image_size=image_size, tiny_width=8, tiny_channels=16)
    grid = -(-image_size // 8)
    return ModelConfig(
        backbone=bb,
        text=TextConfig(context_length=16, width=32, layers=1, heads=2, embed_dim=32),
        head=HeadConfig(
            in_channels=16,
            pooled_dim=16,
            grid=grid,
            dim=32,
            depth=1,
            n_steps=2,
            corr_hidden=16,
            dropout=0.0,
            feat_dropout=0.0,
        ),
    )

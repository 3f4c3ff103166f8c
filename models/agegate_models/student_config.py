"""The v2 student's settings (``StudentConfig``, its command line) and the model config
they make: what the trainer (``student.py``) and the shipped graph's reader
(``resume.py``) share, below both."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import BackboneConfig, HeadConfig, ModelConfig, TextConfig
from .losses import LossWeights

RUNS_DIR = Path.home() / ".cache" / "agegate" / "runs"
THRESHOLDS = (13, 16, 18, 21, 25)


@dataclass
class StudentConfig:
    # data
    views: str = ""  # comma list of crop manifests; the first is the clean view
    view_probs: str = ""  # comma list, one per view (default uniform)
    val: str = ""  # clean val crops manifest
    val_degraded: str = ""  # folder with <kind>/manifest.csv crops of the degraded val sets
    val_deg_limit: int = 600  # images per degraded kind evaluated each epoch (seeded pick)
    tower: str = "faceres-deep"
    image_size: int = 144
    frozen: bool = False
    init: str = ""  # checkpoint to start from (model weights only)
    # the shipped ONNX file to start from (resume.py: its int8 weights dequantized, the text
    # side fixed as the graph holds it; excludes ``init`` and ``frozen``)
    init_from_shipped: str = ""
    teachers: str = ""
    teacher_weights: str = ""
    # balancing
    balance: str = "sample"  # sample | weight | none
    balance_alpha: float = 1.0
    lds_sigma: float = 2.0
    lds_clip: float = 10.0
    # augmentation (image mode)
    aug_p: float = 0.4
    aug_max: int = 2
    grey_p: float = 0.15
    flip_p: float = 0.5
    jitter: float = 0.5
    # optimisation
    epochs: int = 6
    batch_size: int = 64
    lr: float = 5e-4  # head
    text_lr: float = 1e-4
    # tower learning rate, relative to each weight tensor's RMS (BN-folded weights differ in
    # scale by orders of magnitude, and Adam's step does not): lr = tower_lr * rms(w)
    tower_lr: float = 5e-4
    weight_decay: float = 0.05
    tower_weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_frac: float = 0.02
    grad_clip: float = 1.0
    bf16: bool = False
    channels_last: bool = True
    threads: int = 2  # intra-op threads: 2 when nothing else runs, 1 beside a build
    seed: int = 0
    steps_per_epoch: int = 0  # 0: len(train) / batch
    # model
    dim: int = 128
    depth: int = 2
    embed_dim: int = 128
    text_width: int = 128
    text_layers: int = 2
    n_steps: int = 3
    dropout: float = 0.1
    feat_dropout: float = 0.1
    estimator: str = "mean"
    p_over: bool = True
    loss: LossWeights = field(default_factory=LossWeights)
    out: str = str(RUNS_DIR / "student")
    log_every: int = 50


def model_config(sc: StudentConfig) -> ModelConfig:
    """``tower`` "faceres-deep" / "faceres-nn" (mobilenet.py), or "tiny" (tests)."""
    from .mobilenet import grid_size

    if sc.tower == "tiny":
        channels, grid = BackboneConfig().tiny_channels, -(-sc.image_size // 8)
    else:
        channels, grid = 1024, grid_size(sc.image_size)
    return ModelConfig(
        BackboneConfig(kind=sc.tower, image_size=sc.image_size),
        TextConfig(
            width=sc.text_width,
            layers=sc.text_layers,
            heads=max(1, sc.text_width // 64),
            embed_dim=sc.embed_dim,
        ),
        HeadConfig(
            in_channels=channels,
            pooled_dim=channels,
            grid=grid,
            dim=sc.dim,
            depth=sc.depth,
            dropout=sc.dropout,
            feat_dropout=sc.feat_dropout,
            n_steps=sc.n_steps,
            estimator=sc.estimator,
            p_over=THRESHOLDS if sc.p_over else (),
        ),
    )

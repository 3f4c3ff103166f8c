"""Train the CILF-CIAE head (FourierFormer + contrastive + reversible correction) and the
text tower on frozen image-tower features.

Full retrain of the shipped teacher (faceres @ 224), from ``models/``:

    python -m agegate_models.train --image-size 224 --out .cache/runs/teacher224

The same entry point runs under ``torchrun --nproc_per_node N`` (DistributedDataParallel,
gloo, when ``WORLD_SIZE > 1``; each rank takes a shard of every epoch). Features are cached
by rank 0 first (``agegate_models.data``). Every run is seeded; the checkpoint (``best.pt``,
``last.pt``) carries the model config, the train config and the val metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .config import BackboneConfig, HeadConfig, ModelConfig, TextConfig
from .data import FEATURE_DIR, FeatureSet, default_data_dir, extract_features
from .losses import LossWeights, total_loss
from .model import CILFCIAE


@dataclass
class TrainConfig:
    # data
    train_manifest: str = ""  # default: <data>/utkface/train.csv
    val_manifest: str = ""  # default: <data>/utkface/val.csv
    root: str = ""  # image root (default: the manifest's folder)
    backbone: str = "faceres"
    image_size: int = 224
    flip_aug: bool = True  # use the mirrored feature copy when it is cached
    # more feature copies of the same images, e.g. "faceres-int8" (the int8 tower's
    # features, `python -m agegate_models.data features --int8`): the head learns on both,
    # and the model is selected on the last one's val MAE (what ships)
    extra_features: str = ""
    feature_cache: str = ""  # default models/.cache/features
    # fine-tuning the tower's last blocks (finetune.py): the cached features are the
    # activations after block ``tail_cut`` and the blocks after it train (lr ``tail_lr``)
    tail_cut: int = 0
    tail_lr: float = 2e-4
    # optimisation
    epochs: int = 20
    batch_size: int = 256
    lr: float = 2e-3
    text_lr: float = 3e-4
    weight_decay: float = 0.05
    warmup_epochs: int = 2
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1  # more threads spin-wait on a loaded 2-core machine
    # model (see config.py)
    dim: int = 128
    depth: int = 2
    embed_dim: int = 128
    text_width: int = 128
    text_layers: int = 2
    n_steps: int = 3
    text_fusion: bool = True
    contrastive: bool = True
    dropout: float = 0.1
    feat_dropout: float = 0.2
    corr_input: str = "vector"  # "vector" (z - t(a), z*t(a)) or "profile" (see config.py)
    in_norm: bool = True
    glob_mlp: bool = True
    clip_checkpoint: str = ""  # OpenAI/OpenCLIP checkpoint for the text tower
    freeze_text: bool = False
    # age balancing: every loss term weighted by the LDS weight of the label
    # (losses.lds_weights, smoothed^-alpha); 0 = off
    balance_alpha: float = 0.0
    # loss
    loss: LossWeights = field(default_factory=LossWeights)
    # output
    out: str = ".cache/runs/run"
    log_every: int = 50


# --------------------------------------------------------------------------- helpers


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def manifests(tc: TrainConfig) -> tuple[Path, Path]:
    d = default_data_dir() / "utkface"
    return Path(tc.train_manifest or d / "train.csv"), Path(tc.val_manifest or d / "val.csv")


def model_config(tc: TrainConfig, in_channels: int, pooled_dim: int, grid: int) -> ModelConfig:
    text = TextConfig(
        width=tc.text_width,
        layers=tc.text_layers,
        heads=max(1, tc.text_width // 64),
        embed_dim=tc.embed_dim,
    )
    if tc.clip_checkpoint:
        from .clip_loader import load_state_dict, text_config_from_state_dict

        text = text_config_from_state_dict(load_state_dict(tc.clip_checkpoint))
        text.context_length = min(text.context_length, 16)
    head = HeadConfig(
        in_channels=in_channels,
        pooled_dim=pooled_dim,
        grid=grid,
        dim=tc.dim,
        depth=tc.depth,
        dropout=tc.dropout,
        feat_dropout=tc.feat_dropout,
        n_steps=tc.n_steps,
        text_fusion=tc.text_fusion,
        contrastive=tc.contrastive,
        corr_input=tc.corr_input,
        in_norm=tc.in_norm,
        glob_mlp=tc.glob_mlp,
    )
    return ModelConfig(BackboneConfig(kind=tc.backbone, image_size=tc.image_size), text, head)


class FeatureModel(nn.Module):
    """What DDP wraps: text tower + head, fed with cached image-tower features (through
    the trainable tower tail first, when there is one: finetune.py)."""

    def __init__(self, model: CILFCIAE, tail: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.tail = tail

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor):
        if self.tail is not None:
            tokens, pooled = self.tail(tokens)
        return self.model.forward_features(tokens, pooled)


def dist_setup() -> tuple[int, int]:
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    if ws > 1 or os.environ.get("AGEGATE_FORCE_DDP") == "1":
        if not dist.is_initialized():
            dist.init_process_group("gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_ddp() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def evaluate(model: CILFCIAE, fs: FeatureSet, batch: int = 512, tail=None) -> dict:
    model.eval()
    steps, sig, ys, probs = [], [], [], []
    prompts = model.prompt_embeddings()
    for i in range(0, len(fs), batch):
        idx = torch.arange(i, min(len(fs), i + batch))
        t, p, y = fs.batch(idx)
        if tail is not None:
            t, p = tail(t)
        o = model.head(t, p, prompts)
        steps.append(o["steps"])
        sig.append(o["sigma"])
        ys.append(y)
        probs.append(o["probs"])
    model.train()
    s, y = torch.cat(steps), torch.cat(ys)
    err = (s - y.unsqueeze(1)).abs()
    final = err[:, -1]
    return {
        "mae": float(final.mean()),
        "cs5": float((final <= 5).float().mean()),
        "step_mae": [round(float(v), 4) for v in err.mean(0)],
        "sigma_mean": float(torch.cat(sig).mean()),
        "n": len(y),
    }


@torch.no_grad()
def predict(model: CILFCIAE, fs: FeatureSet, batch: int = 512, copy: int = 0) -> dict:
    model.eval()
    prompts = model.prompt_embeddings()
    out = {"probs": [], "age": []}
    for i in range(0, len(fs), batch):
        idx = torch.arange(i, min(len(fs), i + batch))
        t, p = fs.tokens[copy][idx].float(), fs.pooled[copy][idx].float()
        o = model.head(t, p, prompts)
        out["probs"].append(o["probs"])
        out["age"].append(o["age"])
    return {k: torch.cat(v) for k, v in out.items()}


def load_features(tc: TrainConfig, rank: int = 0) -> tuple[FeatureSet, FeatureSet]:
    """Train copies: every variant (``backbone`` + ``extra_features``), each with its mirrored
    copy when cached and ``flip_aug``; val: the last variant (what ships)."""
    from .data import feature_paths

    tr_m, va_m = manifests(tc)
    cache = Path(tc.feature_cache) if tc.feature_cache else FEATURE_DIR
    variants = [tc.backbone] + [v for v in tc.extra_features.split(",") if v]
    dirs = []
    for v in variants:
        vtc = dataclasses.replace(tc, backbone=v)
        dirs.append(features_for(vtc, tr_m, False, rank))
        fl = feature_paths(tr_m, v, tc.image_size, True, cache)
        if tc.flip_aug and (fl / "meta.json").exists():
            dirs.append(fl)
    va = features_for(dataclasses.replace(tc, backbone=variants[-1]), va_m, False, rank)
    return FeatureSet(dirs), FeatureSet(va)


def features_for(tc: TrainConfig, manifest: Path, flip: bool, rank: int) -> Path:
    cache = Path(tc.feature_cache) if tc.feature_cache else FEATURE_DIR
    root = tc.root or None
    kind, int8 = tc.backbone.removesuffix("-int8"), tc.backbone.endswith("-int8")
    if rank == 0:
        d = extract_features(manifest, tc.image_size, flip, kind, root, cache, int8=int8)
    if is_ddp():
        dist.barrier()
    if rank != 0:
        d = extract_features(manifest, tc.image_size, flip, kind, root, cache, int8=int8)
    return d


# --------------------------------------------------------------------------- main loop


def run(
    tc: TrainConfig,
    teacher_fn=None,
    train_fs: FeatureSet | None = None,
    val_fs: FeatureSet | None = None,
    backbone_state: dict | None = None,
    tokenizer=None,
    log=print,
    tail: nn.Module | None = None,
    init_state: dict | None = None,
) -> dict:
    """Train; returns the best val metrics. ``teacher_fn(idx, which_copy) -> {"probs","age"}``
    turns on distillation (see distill.py). ``tail`` (finetune.TowerTail): trainable tower
    blocks between the cached features and the head; the checkpoints' ``backbone_state``
    is then its ``backbone_state()``. ``init_state``: start from this model state dict."""
    rank, world = dist_setup()
    seed_all(tc.seed)
    torch.set_num_threads(tc.threads)
    if train_fs is None or val_fs is None:
        train_fs, val_fs = load_features(tc, rank)
    c, g, pd = train_fs.tokens[0].shape[1], train_fs.grid, train_fs.pooled[0].shape[1]
    if tail is not None:
        with torch.no_grad():
            t0, p0 = tail(train_fs.tokens[0][:1].float())
        c, g, pd = t0.shape[1], t0.shape[-1], p0.shape[1]
    cfg = model_config(tc, c, pd, g)
    model = CILFCIAE(cfg, None, tokenizer)
    if init_state is not None:
        model.load_state_dict(init_state)
    if tc.clip_checkpoint:
        from .clip_loader import load_state_dict, load_text_tower

        load_text_tower(model.text, load_state_dict(tc.clip_checkpoint))
    if tc.freeze_text:
        model.text.requires_grad_(False)
    net: nn.Module = FeatureModel(model, tail)
    if is_ddp():
        net = nn.parallel.DistributedDataParallel(net)
    text_params = [p for p in model.text.parameters() if p.requires_grad]
    head_decay = [p for n, p in model.head.named_parameters() if p.ndim >= 2]
    head_other = [p for n, p in model.head.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": head_decay, "weight_decay": tc.weight_decay, "lr": tc.lr},
            {"params": head_other, "weight_decay": 0.0, "lr": tc.lr},
            {"params": text_params, "weight_decay": 0.0, "lr": tc.text_lr},
        ]
    )
    if tail is not None:
        opt.add_param_group(
            {"params": list(tail.parameters()), "weight_decay": 0.0, "lr": tc.tail_lr}
        )
    base_lrs = [gr["lr"] for gr in opt.param_groups]
    n = len(train_fs)
    per_rank = n // world
    steps_per_epoch = max(1, per_rank // tc.batch_size)
    total = steps_per_epoch * tc.epochs
    warm = steps_per_epoch * tc.warmup_epochs
    gen = torch.Generator().manual_seed(tc.seed)
    flip_of = torch.tensor(train_fs.is_flip, dtype=torch.long)
    sample_w = None
    if tc.balance_alpha > 0:
        from .losses import lds_weights

        sample_w = lds_weights(train_fs.ages, alpha=tc.balance_alpha)
    out = Path(tc.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(tc), indent=1))
    best = {"mae": math.inf}
    history = []
    step = 0
    tic = time.time()
    for epoch in range(tc.epochs):
        perm = torch.randperm(n, generator=gen)[rank * per_rank : (rank + 1) * per_rank]
        for b in range(steps_per_epoch):
            idx = perm[b * tc.batch_size : (b + 1) * tc.batch_size]
            which = torch.randint(0, len(train_fs.tokens), (len(idx),), generator=gen)
            tok, poo, y = train_fs.batch(idx, which)
            frac = step / max(1, total)
            scale = (step + 1) / warm if step < warm else 0.5 * (1 + math.cos(math.pi * frac))
            for gr, lr in zip(opt.param_groups, base_lrs, strict=True):
                gr["lr"] = lr * scale
            o = net(tok, poo)
            teacher = None
            if teacher_fn is not None:  # the teacher's copy: mirrored or not, like the student's
                teacher = teacher_fn(idx, flip_of[which])
            loss, terms = total_loss(
                o,
                y,
                tc.loss,
                model.head.logit_scale.clamp(max=math.log(100.0)).exp(),
                cfg.head.contrastive,
                teacher,
                sample_w=sample_w[idx] if sample_w is not None else None,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
            opt.step()
            step += 1
            if rank == 0 and step % tc.log_every == 0:
                tt = " ".join(f"{k}={v:.3f}" for k, v in terms.items())
                log(f"ep {epoch} step {step}/{total} loss {float(loss):.3f} {tt}")
        if rank == 0:
            if tail is not None:
                tail.eval()
            m = evaluate(model, val_fs, tail=tail)
            if tail is not None:
                tail.train()
            m["epoch"] = epoch
            m["time_s"] = round(time.time() - tic, 1)
            history.append(m)
            log(f"[val] epoch {epoch}: {json.dumps(m)}")
            ck = {
                "model_config": cfg.to_dict(),
                "train_config": asdict(tc),
                "state_dict": model.state_dict(),
                "backbone_state": tail.backbone_state() if tail is not None else backbone_state,
                "metrics": m,
                "history": history,
            }
            torch.save(ck, out / "last.pt")
            # selection: lowest final val MAE; whether every correction step lowered the
            # error is recorded (export.py --student-steps can unroll fewer steps)
            m["monotone"] = all(b <= a for a, b in itertools.pairwise(m["step_mae"]))
            if m["mae"] < best["mae"]:
                best = m
                torch.save(ck, out / "best.pt")
    if rank == 0:
        summary = {"best": best, "last": history[-1], "wall_s": round(time.time() - tic, 1)}
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        log(f"done: {json.dumps(summary)}")
    if is_ddp():
        dist.barrier()
    return best


def load_checkpoint(path: str | Path, with_backbone: bool = False, tokenizer=None) -> CILFCIAE:
    """Rebuild a trained model from its checkpoint (config inside)."""
    from .model import build_backbone

    ck = torch.load(path, map_location="cpu", weights_only=False)
    if ck.get("model_kind") == "shipped":  # a run from the shipped graph's weights (resume.py)
        from .resume import load_model_checkpoint

        return load_model_checkpoint(path)
    cfg = ModelConfig.from_dict(ck["model_config"])
    if any(k.startswith("backbone.") for k in ck["state_dict"]):
        # student.py checkpoints carry the whole (fine-tuned) tower in the model state
        bb = build_backbone(dataclasses.replace(cfg.backbone, pretrained=False))
        model = CILFCIAE(cfg, bb, tokenizer)
        model.load_state_dict(ck["state_dict"], strict=True)
        model.backbone.eval()
        return model.eval()
    model = CILFCIAE(cfg, None, tokenizer)
    model.load_state_dict(ck["state_dict"], strict=True)
    if with_backbone:
        bb = build_backbone(cfg.backbone)
        if ck.get("backbone_state"):
            bb.load_state_dict(ck["backbone_state"])
        model.backbone = bb.eval()
    return model.eval()


# --------------------------------------------------------------------------- CLI


def add_dataclass_args(ap: argparse.ArgumentParser, dc, prefix: str = "") -> None:
    for f in dataclasses.fields(dc):
        if dataclasses.is_dataclass(f.type) or f.name == "loss":
            add_dataclass_args(ap, LossWeights, prefix="loss-")
            continue
        name = "--" + prefix + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            ap.add_argument(name, type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
        else:
            ap.add_argument(name, type=type(default), default=None)


def config_from_args(a: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    tc = base or TrainConfig()
    lw = dataclasses.replace(tc.loss)
    for k, v in vars(a).items():
        if v is None:
            continue
        if k.startswith("loss_"):
            setattr(lw, k[5:], v)
        elif hasattr(tc, k):
            setattr(tc, k, v)
    tc.loss = lw
    return tc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.train", description=__doc__)
    add_dataclass_args(ap, TrainConfig)
    a = ap.parse_args(argv)
    run(config_from_args(a))
    if is_ddp():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

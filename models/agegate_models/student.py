"""The v2 edge student: the whole face tower fine-tuned with the CILF-CIAE head, on the
runtime's crops of several views of every training photo, age-balanced, distilled from a
teacher ensemble, with P(age >= T) heads. models/README.md ("Training", v2) has the
recipe; this is one stage of it.

Data. ``--views A,B,...``: manifests of ``agegate crops --size S`` (the runtime's own
detection + alignment) of different *views* of the training photos (``views.py``: the
photo itself, the photo pasted small into a scene, the photo degraded); the first is the
clean one and defines the samples, the others are matched to it by file stem (a photo
without a crop in a view falls back to the first view). Each draw picks one view per photo
(``--view-probs``), then on the fly: a randomised photometric degradation
(``degrade.random_degrade``, ``--aug-p``), greyscale (``--grey-p``), mirror (``--flip-p``)
and a small random similarity transform (``--jitter``: the alignment's own noise on hard
photos). Crops are cached once per view as a ``uint8 [N,S,S,3]`` array
(``models/.cache/views/``).

Balancing (``--balance``): "sample" draws photos with probability ∝ the LDS weight of their
label (``losses.lds_weights``: histogram smoothed by a Gaussian of ``--lds-sigma`` years,
weight = smoothed^-alpha, ``--balance-alpha``), "weight" weighs every loss term by it
instead, "none" neither. The P(age >= T) heads' BCE weighs each class by 0.5 / its share
in the (balanced) training distribution.

Teachers: ``--teachers F1.npz,F2.npz`` (``teachers.py``) with ``--teacher-weights``: the
weighted mean of their 101-bin distributions is the KL target (``--kd``).

``--frozen``: the tower stays as initialised and its features of every view are cached
(``data.extract_features``), so a head trains in minutes (no on-the-fly augmentation):
stage 1 of the recipe and the ablations. Without it the whole tower trains (bf16 autocast
and channels_last where they help: ``--bf16``, ``--channels-last``).

Checkpoints (every epoch, ``OUT/last.pt``: model state in fp16, optimizer state, model
config, train config, epoch, step, history; ``OUT/model_fp16.pt``: the model alone, at most
10 MB, what a commit may replace; ``OUT/best.pt`` = lowest ``metrics.gate_score`` over the
clean and degraded val sets, float32); ``--resume PATH`` continues either from its next
epoch (strict load; the config must match but for ``RESUME_MAY_DIFFER``).
``--init-from-shipped models/age_student_int8.onnx`` starts from the shipped graph's
weights (``resume.py``). ``--threads``: 2 when nothing else runs, 1 beside a build (logged
with the reason, as is every epoch's wall time). models/README.md, "Continuing training on
a fresh machine".

    python -m agegate_models.student --views C/train_144/manifest.csv,... \\
        --val C/val_144/manifest.csv --val-degraded C/val_deg_144 --tower faceres-deep \\
        --image-size 144 --init RUN/best.pt --epochs 6 --out ~/.cache/agegate/runs/NAME
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import degrade as D
from .data import CACHE_DIR, FeatureSet, extract_features, read_manifest
from .finetune import _stem
from .losses import LossWeights, class_balance, lds_weights, total_loss
from .metrics import age_metrics, fmt, gate_score
from .model import CILFCIAE, build_backbone
from .student_config import RUNS_DIR as RUNS_DIR
from .student_config import THRESHOLDS as THRESHOLDS
from .student_config import StudentConfig, model_config

VIEW_DIR = CACHE_DIR / "views"
# --------------------------------------------------------------------------- data


def load_view(
    manifest: Path, size: int, stems: list[str], log=print
) -> tuple[np.ndarray, np.ndarray]:
    """Crops of ``manifest`` re-indexed to ``stems``: ``uint8 [N,S,S,3]`` (zeros where
    missing) and ``have [N]``. Cached in ``models/.cache/views/``."""
    h = hashlib.sha256(manifest.read_bytes() + "|".join(stems).encode()).hexdigest()[:12]
    f = VIEW_DIR / f"{manifest.parent.name}_{size}_{h}.npy"
    fh = f.with_suffix(".have.npy")
    if f.exists() and fh.exists():
        return np.load(f, mmap_mode="r"), np.load(fh)
    VIEW_DIR.mkdir(parents=True, exist_ok=True)
    pos = {s: i for i, s in enumerate(stems)}
    arr = np.zeros((len(stems), size, size, 3), np.uint8)
    have = np.zeros(len(stems), bool)
    samples = read_manifest(manifest)
    for j, s in enumerate(samples):
        i = pos.get(_stem(s.rel))
        if i is None:
            continue
        with Image.open(s.path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr[i] = np.asarray(im)
        have[i] = True
        if (j + 1) % 4000 == 0:
            log(f"[view {manifest.parent.name}] {j + 1}/{len(samples)}")
    tmp = f.with_suffix(".part.npy")
    np.save(tmp, arr)
    tmp.replace(f)
    np.save(fh, have)
    return arr, have


class Views:
    """The training photos (stems and labels of the first view) and their crops per view."""

    def __init__(self, manifests: list[Path], size: int, log=print, load_images: bool = True):
        base = read_manifest(manifests[0])
        self.stems = [_stem(s.rel) for s in base]
        self.ages = np.array([s.age for s in base], np.float32)
        self.manifests = manifests
        self.images, self.have = [], []
        for m in manifests:
            if load_images:
                a, h = load_view(m, size, self.stems, log)
            else:
                a = None
                names = {_stem(s.rel) for s in read_manifest(m)}
                h = np.array([s in names for s in self.stems])
            self.images.append(a)
            self.have.append(h)
        self.have = np.stack(self.have)  # [V,N]

    def __len__(self) -> int:
        return len(self.stems)


def jitter_batch(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Random similarity transform per image (scale 0.93..1.07, rotation +-5 degrees,
    shift +-3 % of the side) with probability ``p``; outside the crop is black, as in the
    runtime's warp."""
    b = x.shape[0]
    on = torch.rand(b, generator=gen) < p
    if not bool(on.any()):
        return x
    s = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.07
    r = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(5)
    t = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.06
    s, r, t = torch.where(on, s, 1.0), torch.where(on, r, 0.0), t * on.unsqueeze(1)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = s * torch.cos(r)
    theta[:, 0, 1] = -s * torch.sin(r)
    theta[:, 1, 0] = s * torch.sin(r)
    theta[:, 1, 1] = s * torch.cos(r)
    theta[:, :, 2] = t
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment(img: np.ndarray, rng: np.random.Generator, sc: StudentConfig) -> np.ndarray:
    img = np.asarray(img)
    if sc.aug_p > 0:
        img, _ = D.random_degrade(img, rng, p=sc.aug_p, max_n=sc.aug_max)
    if rng.random() < sc.grey_p:
        img = D.grey(img)
    if rng.random() < sc.flip_p:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


# --------------------------------------------------------------------------- model


def build(sc: StudentConfig, tokenizer=None, weights: bool = True, log=print) -> nn.Module:
    """The student with its tower (pretrained weights, then ``init`` when given), or with
    ``init_from_shipped`` the shipped graph's module and weights (``resume.ShippedStudent``).
    ``weights=False``: the architecture alone (a checkpoint's state replaces it)."""
    from .resume import ShippedStudent, init_from_graph

    cfg = model_config(sc)
    if sc.init_from_shipped:
        if sc.init or sc.frozen or sc.tower not in ("faceres-deep", "faceres-nn"):
            raise ValueError("--init-from-shipped: no --init, no --frozen, a faceres tower")
        model = ShippedStudent(cfg)
        if weights:
            init_from_graph(model, sc.init_from_shipped, log)
        return model
    cfg.backbone.pretrained = weights
    model = CILFCIAE(cfg, build_backbone(cfg.backbone), tokenizer)
    if sc.init and weights:
        ck = torch.load(sc.init, map_location="cpu", weights_only=False)
        missing, unexpected = model.load_state_dict(ck["state_dict"], strict=False)
        missing = [k for k in missing if not k.startswith("head.p_over")]
        bad = list(missing) + list(unexpected)
        if bad:
            raise KeyError(f"{sc.init}: state does not match the model: {bad[:5]}")
    return model


# --------------------------------------------------------------------------- eval


class ValSet:
    """One val set: crops as a ``uint8`` array (image mode) or cached features (frozen)."""

    def __init__(self, name: str, manifest: Path, sc: StudentConfig, limit: int = 0, log=print):
        self.name = name
        samples = read_manifest(manifest)
        if limit and len(samples) > limit:
            pick = sorted(random.Random(0).sample(range(len(samples)), limit))
            samples = [samples[i] for i in pick]
        self.ages = np.array([s.age for s in samples], np.float32)
        self.stems = [_stem(s.rel) for s in samples]
        if sc.frozen:
            sub = manifest
            if limit:
                sub = VIEW_DIR / f"val_{name}_{limit}" / "manifest.csv"
                sub.parent.mkdir(parents=True, exist_ok=True)
                lines = ["path,age"] + [f"{s.path.resolve()},{s.age:g}" for s in samples]
                sub.write_text("\n".join(lines) + "\n")
            self.feats = FeatureSet(
                extract_features(sub, sc.image_size, backbone_kind=sc.tower, log=log)
            )
            self.images = None
        else:
            self.images = np.stack([_load(s.path, sc.image_size) for s in samples])


def _load(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im)


def to_tensor(imgs: np.ndarray, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


@torch.no_grad()
def predict_set(model: CILFCIAE, vs: ValSet, sc: StudentConfig, batch: int = 128) -> dict:
    model.eval()
    prompts = model.prompt_embeddings()
    ctx = model.context() if hasattr(model, "context") else None  # ShippedStudent: fixed
    out = {"age": [], "sigma": [], "steps": [], "p_over": []}
    n = len(vs.ages)
    for i in range(0, n, batch):
        if vs.images is None:
            t, p, _ = vs.feats.batch(torch.arange(i, min(n, i + batch)))
        else:
            f = model.backbone(to_tensor(vs.images[i : i + batch], sc.channels_last))
            t, p = f["tokens"].float(), f["pooled"].float()
        o = model.head(t, p, prompts, ctx)
        for k, acc in out.items():
            if k in o:
                acc.append(o[k])
    model.train()
    return {k: torch.cat(v).numpy() for k, v in out.items() if v}


def evaluate_sets(model, sets: list[ValSet], sc: StudentConfig) -> dict:
    res = {}
    for vs in sets:
        o = predict_set(model, vs, sc)
        m = age_metrics(o["age"], vs.ages, o["sigma"], o["steps"])
        if "p_over" in o:
            t = (vs.ages[:, None] >= np.array(THRESHOLDS)[None]).astype(np.float32)
            hit = (o["p_over"] >= 0.5) == (t > 0.5)
            bal = []
            for j in range(len(THRESHOLDS)):
                pos, neg = t[:, j] > 0.5, t[:, j] < 0.5
                if pos.any() and neg.any():
                    bal.append(float(0.5 * (hit[pos, j].mean() + hit[neg, j].mean())))
            m["p_over_bal_acc"] = bal
            m["p_over_brier"] = float(((o["p_over"] - t) ** 2).mean())
        res[vs.name] = m
    return res


def val_sets(sc: StudentConfig, log=print) -> list[ValSet]:
    sets = [ValSet("clean", Path(sc.val), sc, log=log)]
    if sc.val_degraded:
        root = Path(sc.val_degraded)
        for k in D.KINDS:
            m = root / k / "manifest.csv"
            if m.is_file():
                sets.append(ValSet(k, m, sc, sc.val_deg_limit, log=log))
    return sets


# --------------------------------------------------------------------------- train


def _param_groups(model: nn.Module, sc: StudentConfig) -> list[dict]:
    head_decay = [p for p in model.head.parameters() if p.ndim >= 2]
    head_other = [p for p in model.head.parameters() if p.ndim < 2]
    groups = [
        {"params": head_decay, "weight_decay": sc.weight_decay, "lr": sc.lr},
        {"params": head_other, "weight_decay": 0.0, "lr": sc.lr},
    ]
    if getattr(model, "text", None) is not None:  # not in the shipped graph's module
        groups.append(
            {"params": list(model.text.parameters()), "weight_decay": 0.0, "lr": sc.text_lr}
        )
    if model.backbone is not None and not sc.frozen:
        for p in model.backbone.parameters():
            rms = float(p.detach().pow(2).mean().sqrt().clamp_min(1e-8))
            wd = sc.tower_weight_decay if p.ndim >= 2 else 0.0
            groups.append({"params": [p], "weight_decay": wd, "lr": sc.tower_lr * rms})
    return groups


# train-config keys a resumed run may change: where it writes, how long it runs, how it
# logs and how many threads this machine gives it; ``init`` is replaced by the checkpoint
RESUME_MAY_DIFFER = ("epochs", "out", "threads", "log_every", "init")


def check_resume_config(old: dict, new: dict, path: str | Path) -> None:
    """Refuse to resume a checkpoint made with another train config, naming the keys."""
    keys = (set(old) | set(new)) - set(RESUME_MAY_DIFFER)
    diff = {k: (old.get(k, "<absent>"), new.get(k, "<absent>")) for k in sorted(keys)}
    diff = {k: v for k, v in diff.items() if v[0] != v[1]}
    if diff:
        raise ValueError(f"--resume {path}: config differs (checkpoint, now): {diff}")


def thread_note(n: int) -> str:
    """Why ``n`` intra-op threads, for the log (models/README.md: two threads run the tower
    twice as fast on an idle 2-core box, and spin-wait beside a build)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    why = {1: "one: a build runs beside it", 2: "two: nothing else runs"}.get(n, "as asked")
    return f"threads {n} ({why}; --threads; load average {load:.2f} on {os.cpu_count()} cores)"


def train(sc: StudentConfig, resume: str | Path = "", log=print, tokenizer=None) -> dict:
    """One stage. ``resume``: a checkpoint of this run to continue from its next epoch,
    ``OUT/last.pt`` (model + optimizer) or a model file (``OUT/model_fp16.pt``: the model
    alone; a fresh optimizer, the schedule at the checkpoint's step)."""
    from .resume import fp16_state, full_state, save_model_fp16

    if sc.threads < 1:
        raise ValueError(f"threads {sc.threads}: at least 1")
    out = Path(sc.out)
    out.mkdir(parents=True, exist_ok=True)
    random.seed(sc.seed)
    np.random.seed(sc.seed)
    torch.manual_seed(sc.seed)
    torch.set_num_threads(sc.threads)
    log(thread_note(sc.threads))
    ck = None
    if resume:
        ck = torch.load(resume, map_location="cpu", weights_only=False)
        check_resume_config(ck["train_config"], json.loads(json.dumps(asdict(sc))), resume)
    views = Views([Path(v) for v in sc.views.split(",") if v], sc.image_size, log, not sc.frozen)
    n_views = len(views.manifests)
    vp = [float(p) for p in sc.view_probs.split(",")] if sc.view_probs else [1.0] * n_views
    if len(vp) != n_views:
        raise ValueError(f"{n_views} views but {len(vp)} view probabilities")
    vp = np.array(vp) / sum(vp)
    keep = views.have[0]
    ages_t = torch.from_numpy(views.ages)
    lds = lds_weights(ages_t, sc.lds_sigma, sc.balance_alpha, clip=sc.lds_clip)
    lds = lds * torch.from_numpy(keep).float()
    if sc.balance not in ("sample", "weight", "none"):
        raise ValueError(f"balance {sc.balance!r}")
    draw_p = lds if sc.balance == "sample" else torch.from_numpy(keep).float()
    loss_w = lds if sc.balance == "weight" else None
    thr = torch.tensor([float(t) for t in THRESHOLDS])
    pos_w, neg_w = class_balance(ages_t, thr, draw_p * (lds if loss_w is not None else 1.0))
    log(f"p_over class weights: pos {pos_w.tolist()} neg {neg_w.tolist()}")
    teacher = None
    if sc.teachers:
        from .teachers import ensemble

        tw = [float(w) for w in sc.teacher_weights.split(",")] if sc.teacher_weights else None
        teacher = ensemble(sc.teachers.split(","), tw, views.stems)
        teacher = {"probs": torch.from_numpy(teacher["probs"])}
    model = build(sc, tokenizer=tokenizer, weights=ck is None, log=log)
    if sc.frozen:
        feats = [
            FeatureSet(extract_features(m, sc.image_size, backbone_kind=sc.tower, log=log))
            for m in views.manifests
        ]
        # features follow each manifest's own order: map to the first view's stems
        fidx = []
        for m in views.manifests:
            pos = {_stem(s.rel): i for i, s in enumerate(read_manifest(m))}
            fidx.append(torch.tensor([pos.get(s, -1) for s in views.stems]))
    elif sc.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(_param_groups(model, sc))
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = sc.steps_per_epoch or int(keep.sum()) // sc.batch_size
    total = steps_per_epoch * sc.epochs
    start_epoch, history, best = 0, [], {"score": math.inf}
    if ck is not None:
        model.load_state_dict(full_state(ck["state_dict"], model), strict=True)
        if "optimizer" in ck:
            opt.load_state_dict(ck["optimizer"])
        start_epoch, history = ck["epoch"] + 1, ck["history"]
        best = ck.get("best", best)
        what = "model + optimizer" if "optimizer" in ck else "model alone, a fresh optimizer"
        log(f"resumed {resume} ({what}) at epoch {start_epoch}")
    sets = val_sets(sc, log)
    (out / "train_config.json").write_text(json.dumps(asdict(sc), indent=1))
    gen = torch.Generator().manual_seed(sc.seed * 1000 + start_epoch)
    rng = np.random.default_rng([sc.seed, start_epoch])
    net_train = model
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, sc.epochs):
        tic = time.time()
        log(f"epoch {epoch}: {thread_note(sc.threads)}")
        model.train()
        if sc.frozen and model.backbone is not None:
            model.backbone.eval()
        for b in range(steps_per_epoch):
            idx = torch.multinomial(draw_p, sc.batch_size, replacement=True, generator=gen)
            v = rng.choice(n_views, size=sc.batch_size, p=vp)
            v = np.where(views.have[v, idx.numpy()], v, 0)
            y = ages_t[idx]
            if sc.frozen:
                tok = torch.empty(sc.batch_size, *feats[0].tokens[0].shape[1:])
                poo = torch.empty(sc.batch_size, *feats[0].pooled[0].shape[1:])
                for c in range(n_views):
                    sel = torch.from_numpy(v == c)
                    if bool(sel.any()):
                        rows = fidx[c][idx[sel]]
                        tok[sel] = feats[c].tokens[0][rows].float()
                        poo[sel] = feats[c].pooled[0][rows].float()
                o = model.forward_features(tok, poo)
            else:
                imgs = np.stack(
                    [
                        augment(views.images[c][i], rng, sc)
                        for c, i in zip(v, idx.tolist(), strict=True)
                    ]
                )
                x = jitter_batch(to_tensor(imgs, False), gen, sc.jitter)
                if sc.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=sc.bf16):
                    f = model.backbone(x)
                o = model.forward_features(f["tokens"].float(), f["pooled"].float())
            lr_scale = (
                (step + 1) / sc.warmup_steps
                if step < sc.warmup_steps
                else sc.min_lr_frac
                + (1 - sc.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * step / max(1, total)))
            )
            for g, lr in zip(opt.param_groups, base_lrs, strict=True):
                g["lr"] = lr * lr_scale
            t = {"probs": teacher["probs"][idx]} if teacher is not None else None
            loss, terms = total_loss(
                o,
                y,
                sc.loss,
                model.head.logit_scale.clamp(max=math.log(100.0)).exp(),
                True,
                t,
                sample_w=loss_w[idx] if loss_w is not None else None,
                p_over={"thresholds": thr, "pos_w": pos_w, "neg_w": neg_w},
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net_train.parameters(), sc.grad_clip)
            opt.step()
            step += 1
            if step % sc.log_every == 0:
                rate = (b + 1) * sc.batch_size / (time.time() - tic)
                tt = " ".join(f"{k}={v:.3f}" for k, v in terms.items())
                log(
                    f"ep {epoch} step {step}/{total} loss {float(loss):.3f} {tt} ({rate:.1f} img/s)"
                )
        train_s = time.time() - tic
        res = evaluate_sets(model, sets, sc)
        score = gate_score(list(res.values()))
        rec = {"epoch": epoch, "score": score, "train_s": round(train_s, 1), "val": res}
        rec["eval_s"] = round(time.time() - tic - train_s, 1)
        rec["wall_s"] = round(time.time() - tic, 1)
        rec["threads"] = sc.threads
        history.append(rec)
        for name, m in res.items():
            log(f"[val] epoch {epoch} {name}: {fmt(m)}")
        log(f"[val] epoch {epoch} score {score:.3f} (train {train_s:.0f} s)")
        log(
            f"epoch {epoch} wall {rec['wall_s']:.1f} s (train {rec['train_s']:.1f}, "
            f"eval {rec['eval_s']:.1f}), {sc.threads} thread(s)"
        )
        if score < best["score"]:
            best = {"score": score, "epoch": epoch}
        meta = {
            "train_config": json.loads(json.dumps(asdict(sc))),
            "epoch": epoch,
            "step": step,
            "history": history,
            "best": best,
            "metrics": {"mae": res["clean"]["mae"], "step_mae": res["clean"]["step_mae"]},
        }
        # the model alone in fp16 (resume.py): what a commit may replace (<= MAX_MODEL_MB)
        try:
            save_model_fp16(out / "model_fp16.pt", model, meta)
        except ValueError as e:
            log(f"no model_fp16.pt: {e}")
        ck = {
            "model_kind": getattr(model, "kind", "cilf"),
            "model_config": model.cfg.to_dict(),
            "state_dict": fp16_state(model),
            "optimizer": opt.state_dict(),
            **meta,
        }
        torch.save(ck, out / "last.part")
        os.replace(out / "last.part", out / "last.pt")
        if best["epoch"] == epoch:  # float32: what export reads
            torch.save({**ck, "state_dict": model.state_dict()}, out / "best.part")
            os.replace(out / "best.part", out / "best.pt")
        (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = {"best": best, "epochs": len(history)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    log(f"done: {json.dumps(summary)}")
    return summary


# --------------------------------------------------------------------------- CLI


def _bool(s: str) -> bool:
    v = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
    if s.lower() not in v:
        raise argparse.ArgumentTypeError(f"{s!r}: true or false")
    return v[s.lower()]


def _add_args(ap: argparse.ArgumentParser, dc, prefix: str = "") -> None:
    for f in dataclasses.fields(dc):
        if f.name == "loss":
            _add_args(ap, LossWeights, "loss-")
            continue
        name = "--" + prefix + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, bool):
            ap.add_argument(name, type=_bool, default=None)
        else:
            ap.add_argument(name, type=type(default) if default is not None else str, default=None)


def config_from_args(a: argparse.Namespace) -> StudentConfig:
    sc = StudentConfig()
    for f in dataclasses.fields(StudentConfig):
        if f.name != "loss" and getattr(a, f.name, None) is not None:
            setattr(sc, f.name, getattr(a, f.name))
    for f in dataclasses.fields(LossWeights):
        v = getattr(a, "loss_" + f.name, None)
        if v is not None:
            setattr(sc.loss, f.name, v)
    return sc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m agegate_models.student", description=__doc__, allow_abbrev=False
    )
    _add_args(ap, StudentConfig)
    ap.add_argument(
        "--resume",
        type=Path,
        metavar="PATH",
        help="continue this run's checkpoint (OUT/last.pt, or OUT/model_fp16.pt / a committed "
        "copy of it: the model alone) from its next epoch; the config must match",
    )
    a = ap.parse_args(argv)
    sc = config_from_args(a)
    if not sc.views or not sc.val:
        ap.error("--views and --val are required")

    def log(s: str) -> None:
        print(time.strftime("%H:%M:%S ") + s, flush=True)

    if a.resume and not a.resume.is_file():
        ap.error(f"--resume {a.resume}: no such file")
    train(sc, resume=a.resume or "", log=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

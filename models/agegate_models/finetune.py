"""Fine-tune the last faceres blocks at the student's resolution, with the CILF head.

The shipped student used to keep the whole face tower frozen; at 112 px its last blocks
see a 7 x 7 (then 4 x 4) map they were never trained on. Here the tower is cut after
block ``cut`` (default 11: ``conv_pw_11``, 512 x 7 x 7 at 112 px), the prefix activations
of every image are computed once and cached (fp16, like the frozen features), and the tail
(depthwise / pointwise blocks ``cut+1 .. 13``: the tower's own BN-folded ``Conv2dOp``
modules, initialised from faceres) trains end to end with the head on labels + the 224-px
teacher's soft targets (distill.py). The checkpoint's ``backbone_state`` is the whole
faceres state with the tuned tail, so ``load_checkpoint(..., with_backbone=True)`` and
export.py / quantize.py work unchanged (same graph, other weights).

Training data: the runtime's own aligned crops (``agegate crops --size 112``), so the
network sees exactly what the device feeds it. Two cached copies per training image: the
crop, and its mirror image, greyscale for a seeded ``grey_frac`` of the images (the
acceptance set has greyscale photos). The teacher's targets come from its cached features
of the UTKFace training manifest, matched to the crops by file name.

    python -m agegate_models.finetune --teacher .cache/runs/teacher224/best.pt \
        --init .cache/runs/student104/best.pt \
        --train-manifest .cache/crops/train_112/manifest.csv \
        --val-manifest .cache/crops/val_112/manifest.csv \
        --image-size 112 --epochs 6 --lr 1e-3 --tail-lr 2e-4 --out .cache/runs/ft112

The shipped student is this stage followed by a second one at 104 px from its result
(``--image-size 104 --epochs 4 --lr 5e-4 --tail-lr 1e-4 --int8-copy``; 112 px is over
the 300 MFLOPs budget): ``export.FINETUNE_STAGES``, run by ``export --retrain``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .data import FEATURE_DIR, FeatureSet, load_image, onnx_tower, read_manifest

PW_NODE = "conv_pw_{}_relu/clip_by_value"


def _block(step_name: str) -> int:
    m = re.match(r"conv_(?:dw|pw)_(\d+)_", step_name)
    return int(m.group(1)) if m else 0


class TowerPrefix(nn.Module):
    """faceres up to (and including) block ``cut``; same input contract as ``FaceRes``.
    ``forward`` returns ``{"tokens": [B,C,h,w], "pooled": [B,C]}`` (pooled = spatial mean,
    only there so that the feature cache has its usual layout)."""

    def __init__(self, cut: int = 11, json_path: str | Path | None = None, graph=None):
        super().__init__()
        from .faceres import BGR_MEAN, default_json
        from .tfjs import load_graph_model

        self.node = PW_NODE.format(cut)
        if graph is None:
            graph = load_graph_model(Path(json_path or default_json()), outputs=[self.node])
        self.graph = graph
        self.register_buffer("mean", torch.tensor(BGR_MEAN).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, rgb: torch.Tensor) -> dict[str, torch.Tensor]:
        t = self.graph(rgb.flip(1) - self.mean)[self.node]
        return {"tokens": t, "pooled": t.mean(dim=(2, 3))}


class TowerTail(nn.Module):
    """The tower's conv ops after block ``cut`` (copies of the backbone's modules, so they
    start from its weights), then the global mean: ``forward(x) -> (tokens, pooled)``."""

    def __init__(self, backbone: nn.Module, cut: int = 11):
        super().__init__()
        graph = backbone.graph
        self.keys = [
            p["key"] for name, kind, _, p in graph._steps if kind == "conv" and _block(name) > cut
        ]
        if not self.keys:
            raise ValueError(f"no conv blocks after block {cut}")
        self.cut = cut
        self.convs = nn.ModuleList(copy.deepcopy(graph.ops[k]) for k in self.keys)
        self.base_state = {k: v.detach().clone() for k, v in backbone.state_dict().items()}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for c in self.convs:
            x = c(x)
        return x, x.mean(dim=(2, 3))

    def backbone_state(self) -> dict[str, torch.Tensor]:
        """The whole backbone's state dict with the tuned tail in it."""
        st = dict(self.base_state)
        for k, c in zip(self.keys, self.convs, strict=True):
            for n, p in c.named_parameters():
                st[f"graph.ops.{k}.{n}"] = p.detach().clone()
        return st


def to_grey(img: np.ndarray) -> np.ndarray:
    """``[3,H,W]`` uint8 RGB -> the same image in greyscale (ITU-R 601 luma), 3 channels."""
    y = 0.299 * img[0].astype(np.float32) + 0.587 * img[1] + 0.114 * img[2]
    y = np.clip(np.rint(y), 0, 255).astype(np.uint8)
    return np.repeat(y[None], 3, axis=0)


def grey_mask(n: int, frac: float, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < frac


def extract_prefix(
    manifest: str | Path,
    size: int,
    cut: int = 11,
    flip: bool = False,
    grey_frac: float = 0.0,
    seed: int = 0,
    cache: Path | None = None,
    prefix: nn.Module | None = None,
    batch: int = 32,
    log=print,
    int8: bool = False,
) -> Path:
    """Cache the prefix activations of a manifest (``tokens.npy`` fp16 ``[N,C,h,w]``,
    ``pooled.npy``, ``ages.npy``, ``meta.json``), optionally mirrored and with a seeded
    fraction of the images in greyscale. ``int8``: the prefix quantized with the student's
    recipe (quantize.py; same calibration images, so the same scales as inside the int8
    student). Returns the folder (reused when complete)."""
    import hashlib

    manifest = Path(manifest)
    h = hashlib.sha256(manifest.read_bytes()).hexdigest()[:10]
    # the mirrored copy's name ends in "_flip" (FeatureSet.is_flip)
    tag = (f"_grey{grey_frac:g}s{seed}" if grey_frac > 0 else "") + ("_flip" if flip else "")
    kind = f"faceres{'-int8' if int8 else ''}-cut{cut}"
    name = f"{kind}_{size}_{manifest.parent.name}_{manifest.stem}_{h}{tag}"
    d = (cache or FEATURE_DIR) / name
    if (d / "meta.json").exists():
        return d
    samples = read_manifest(manifest)
    d.mkdir(parents=True, exist_ok=True)
    tower = (cache or FEATURE_DIR) / f"tower_faceres-cut{cut}_{size}.onnx"
    if prefix is None and not tower.exists():
        prefix = TowerPrefix(cut)
    run = onnx_tower(prefix, size, tower)
    if int8:
        from .quantize import quantize_tower

        run = onnx_tower(
            None, size, quantize_tower(tower, tower.with_name(tower.stem + "_int8.onnx"))
        )
    grey = grey_mask(len(samples), grey_frac, seed)
    t0, p0 = run(np.zeros((1, 3, size, size), np.float32))
    n = len(samples)
    tok = np.lib.format.open_memmap(d / "tokens.npy", "w+", np.float16, (n, *t0.shape[1:]))
    poo = np.lib.format.open_memmap(d / "pooled.npy", "w+", np.float16, (n, *p0.shape[1:]))
    tic = time.time()
    for i in range(0, n, batch):
        j = min(n, i + batch)
        imgs = []
        for k in range(i, j):
            im = load_image(samples[k].path, size, flip)
            imgs.append(to_grey(im) if grey[k] else im)
        t, p = run(np.stack(imgs).astype(np.float32))
        tok[i:j] = t.astype(np.float16)
        poo[i:j] = p.astype(np.float16)
        if (i // batch) % 50 == 0 or j == n:
            log(f"[prefix {d.name}] {j}/{n} ({(j / max(time.time() - tic, 1e-6)):.1f} img/s)")
    tok.flush()
    poo.flush()
    del tok, poo
    np.save(d / "ages.npy", np.array([s.age for s in samples], np.float32))
    (d / "paths.txt").write_text("\n".join(s.rel for s in samples) + "\n")
    meta = {"manifest": str(manifest), "size": size, "cut": cut, "flip": flip, "int8": int8}
    meta.update(grey_frac=grey_frac, seed=seed, n=n)
    (d / "meta.json").write_text(json.dumps(meta, indent=1))
    return d


def _stem(rel: str) -> str:
    """File name without folder and image extension(s): ``train/x.jpg.chip.png`` -> ``x``
    matches ``train/x.jpg.chip.jpg``."""
    name = Path(rel).name
    return name.split(".jpg")[0].split(".png")[0]


def align_teacher(t: dict, teacher_rels: list[str], rels: list[str]) -> dict:
    """Re-index teacher targets (computed on ``teacher_rels``) to the samples ``rels``,
    matched by file stem. Raises when a sample has no teacher target."""
    pos = {_stem(r): i for i, r in enumerate(teacher_rels)}
    missing = [r for r in rels if _stem(r) not in pos]
    if missing:
        raise KeyError(f"{len(missing)} samples without teacher targets, e.g. {missing[0]}")
    idx = torch.tensor([pos[_stem(r)] for r in rels], dtype=torch.long)
    return {k: v[:, idx] for k, v in t.items()}


def main(argv: list[str] | None = None) -> int:
    from .train import TrainConfig, add_dataclass_args, config_from_args

    ap = argparse.ArgumentParser(prog="python -m agegate_models.finetune", description=__doc__)
    add_dataclass_args(ap, TrainConfig)
    ap.add_argument("--teacher", type=Path, help="teacher checkpoint (soft targets)")
    ap.add_argument("--init", type=Path, help="checkpoint to start the head + text tower from")
    ap.add_argument("--cut", type=int, default=11, help="tower blocks after this one train")
    ap.add_argument("--grey-frac", type=float, default=0.3)
    ap.add_argument("--int8-copy", action="store_true", help="also the int8 prefix's features")
    ap.add_argument("--extract-only", action="store_true")
    a = ap.parse_args(argv)
    teacher, init, cut, grey_frac, int8_copy, extract_only = (
        a.teacher,
        a.init,
        a.cut,
        a.grey_frac,
        a.int8_copy,
        a.extract_only,
    )
    for k in ("teacher", "init", "cut", "grey_frac", "int8_copy", "extract_only"):
        delattr(a, k)
    tc = config_from_args(a, TrainConfig(image_size=112, out=".cache/runs/student112ft"))
    tc.tail_cut = cut
    finetune(tc, teacher, init, grey_frac, extract_only, int8_copy=int8_copy)
    return 0


def finetune(
    tc,
    teacher: Path | None,
    init: Path | None,
    grey_frac: float = 0.3,
    extract_only: bool = False,
    log=print,
    int8_copy: bool = False,
) -> dict | None:
    """Extract (cached) prefix features of the train / val crops and train tail + head.
    ``int8_copy``: a third training copy from the int8 prefix, and the checkpoint is
    selected on the int8 prefix's val features (closer to what the int8 graph computes)."""
    from .distill import make_teacher_fn, teacher_targets
    from .faceres import FaceRes
    from .train import load_checkpoint, manifests, run, seed_all

    seed_all(tc.seed)
    torch.set_num_threads(tc.threads)
    cut = tc.tail_cut
    tr_m, va_m = manifests(tc)
    d_tr = extract_prefix(tr_m, tc.image_size, cut, log=log)
    d_fl = extract_prefix(tr_m, tc.image_size, cut, True, grey_frac, tc.seed, log=log)
    d_va = extract_prefix(va_m, tc.image_size, cut, log=log)
    dirs = [d_tr, d_fl]
    if int8_copy:
        dirs.append(extract_prefix(tr_m, tc.image_size, cut, log=log, int8=True))
        d_va = extract_prefix(va_m, tc.image_size, cut, log=log, int8=True)
    if extract_only:
        return None
    train_fs, val_fs = FeatureSet(dirs), FeatureSet(d_va)
    teacher_fn = None
    if teacher:
        ttc = dataclasses.replace(tc, train_manifest="", val_manifest="")
        t = teacher_targets(teacher, ttc, log=log)
        t_rels = [s.rel for s in read_manifest(manifests(ttc)[0])]
        t = align_teacher(t, t_rels, [s.rel for s in read_manifest(tr_m)])
        teacher_fn = make_teacher_fn(t)
    init_state = load_checkpoint(init).state_dict() if init else None
    tail = TowerTail(FaceRes(heads=False), cut)
    return run(tc, teacher_fn, train_fs, val_fs, tail=tail, init_state=init_state, log=log)


if __name__ == "__main__":
    raise SystemExit(main())

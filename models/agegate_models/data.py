"""The frozen-feature cache, over the manifests and images of ``samples.py`` (re-exported
here for the modules that read both).

UTKFace lives at
``<repo root>/../shared/data/utkface/{train,val}.csv``; crops written by the runtime
(``agegate crops --manifest X --size S --out DIR``) come as ``DIR/manifest.csv`` in the same
format, so any licensed data set can be used by pointing the trainer at its manifests.

Feature cache: the image tower is frozen while the head trains, so its outputs (token grid
and pooled vector) are computed once per (backbone, size, manifest, flip) and stored as fp16
``.npy`` files under ``models/.cache/features/``.

    python -m agegate_models.data features --manifest .../train.csv --size 224 [--flip]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .samples import CACHE_DIR as CACHE_DIR
from .samples import MODELS_DIR as MODELS_DIR
from .samples import REPO_ROOT as REPO_ROOT
from .samples import Sample as Sample
from .samples import default_data_dir as default_data_dir
from .samples import load_image, read_manifest

FEATURE_DIR = CACHE_DIR / "features"


class ImageDataset(torch.utils.data.Dataset):
    def __init__(self, samples: list[Sample], size: int, flip: bool = False):
        self.samples, self.size, self.flip = samples, size, flip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        s = self.samples[i]
        return torch.from_numpy(load_image(s.path, self.size, self.flip)).float(), s.age


# --------------------------------------------------------------------------- features


def _key(manifest: Path, backbone: str, size: int, flip: bool) -> str:
    h = hashlib.sha256(Path(manifest).read_bytes()).hexdigest()[:10]
    return f"{backbone}_{size}_{Path(manifest).parent.name}_{Path(manifest).stem}_{h}" + (
        "_flip" if flip else ""
    )


def feature_paths(manifest, backbone: str, size: int, flip: bool, cache: Path | None = None):
    d = (cache or FEATURE_DIR) / _key(Path(manifest), backbone, size, flip)
    return d


def onnx_tower(backbone: torch.nn.Module, size: int, path: Path):
    """Export the image tower (tokens, pooled) to ONNX and open it in onnxruntime: several
    times faster than eager torch for the MobileNet on CPU."""
    import onnxruntime as ort

    class _W(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            o = self.m(x)
            return o["tokens"], o["pooled"]

    if not path.exists():
        assert backbone is not None, f"{path} missing and no backbone to export"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        torch.onnx.export(
            _W(backbone.eval()),
            (torch.zeros(1, 3, size, size),),
            str(tmp),
            dynamo=False,
            opset_version=17,
            input_names=["image"],
            output_names=["tokens", "pooled"],
            dynamic_axes={"image": {0: "b"}, "tokens": {0: "b"}, "pooled": {0: "b"}},
        )
        tmp.replace(path)
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(os.environ.get("AGEGATE_THREADS", "2"))
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray):
        return sess.run(None, {"image": x.astype(np.float32)})

    return run


def extract_features(
    manifest: str | Path,
    size: int,
    flip: bool = False,
    backbone_kind: str = "faceres",
    root: str | Path | None = None,
    cache: Path | None = None,
    batch: int = 32,
    backbone: torch.nn.Module | None = None,
    log=print,
    int8: bool = False,
) -> Path:
    """Compute (or find) the cached features of a manifest. Returns the cache folder holding
    ``tokens.npy`` (fp16 ``[N,C,h,w]``), ``pooled.npy`` (fp16 ``[N,P]``), ``ages.npy``,
    ``meta.json``. Resumable: progress is kept in ``done.txt``."""
    d = feature_paths(manifest, backbone_kind + ("-int8" if int8 else ""), size, flip, cache)
    if (d / "meta.json").exists():
        return d
    samples = read_manifest(manifest, root)
    d.mkdir(parents=True, exist_ok=True)
    if (
        backbone is None
        and not (cache or FEATURE_DIR).joinpath(f"tower_{backbone_kind}_{size}.onnx").exists()
    ):
        from .config import BackboneConfig
        from .model import build_backbone

        backbone = build_backbone(BackboneConfig(kind=backbone_kind, image_size=size))
    tower = (cache or FEATURE_DIR) / f"tower_{backbone_kind}_{size}.onnx"
    run = onnx_tower(backbone, size, tower)
    if int8:  # features of the int8-quantized tower (the shipped student's), see quantize.py
        from .quantize import quantize_tower

        run = onnx_tower(
            None, size, quantize_tower(tower, tower.with_name(tower.stem + "_int8.onnx"))
        )
    t0, p0 = run(np.zeros((1, 3, size, size), np.float32))
    n = len(samples)
    mode = "r+" if (d / "done.txt").exists() else "w+"
    tok = np.lib.format.open_memmap(d / "tokens.npy", mode, np.float16, (n, *t0.shape[1:]))
    poo = np.lib.format.open_memmap(d / "pooled.npy", mode, np.float16, (n, *p0.shape[1:]))
    start = int((d / "done.txt").read_text()) if mode == "r+" else 0
    tic = time.time()
    for i in range(start, n, batch):
        j = min(n, i + batch)
        x = np.stack([load_image(s.path, size, flip) for s in samples[i:j]]).astype(np.float32)
        t, p = run(x)
        tok[i:j] = t.astype(np.float16)
        poo[i:j] = p.astype(np.float16)
        if (i // batch) % 20 == 0 or j == n:
            tok.flush()
            poo.flush()
            (d / "done.txt").write_text(str(j))
            rate = (j - start) / max(time.time() - tic, 1e-6)
            log(f"[features {d.name}] {j}/{n} ({rate:.1f} img/s)")
    tok.flush()
    poo.flush()
    np.save(d / "ages.npy", np.array([s.age for s in samples], np.float32))
    (d / "paths.txt").write_text("\n".join(s.rel for s in samples) + "\n")
    meta = {"manifest": str(manifest), "size": size, "flip": flip, "backbone": backbone_kind}
    meta["n"] = n
    (d / "meta.json").write_text(json.dumps(meta, indent=1))
    return d


class FeatureSet:
    """Cached features in memory (fp16), one or more *copies* of the same samples in the
    same order (original, mirrored, int8 tower, ...); training draws one copy per sample at
    random (augmentation). ``is_flip[c]`` tells whether copy c is the mirrored image."""

    def __init__(self, d: Path | list[Path], flip_dir: Path | None = None):
        dirs = list(d) if isinstance(d, (list, tuple)) else [d]
        if flip_dir is not None:
            dirs.append(flip_dir)
        dirs = [x for i, x in enumerate(dirs) if i == 0 or (x / "meta.json").exists()]
        self.dirs = dirs
        self.tokens = [torch.from_numpy(np.load(x / "tokens.npy")) for x in dirs]
        self.pooled = [torch.from_numpy(np.load(x / "pooled.npy")) for x in dirs]
        self.is_flip = [x.name.endswith("_flip") for x in dirs]
        self.ages = torch.from_numpy(np.load(dirs[0] / "ages.npy"))
        for t in self.tokens:
            assert len(t) == len(self.ages), "feature copies differ in length"

    def __len__(self) -> int:
        return len(self.ages)

    @property
    def grid(self) -> int:
        return self.tokens[0].shape[-1]

    def batch(self, idx: torch.Tensor, which: torch.Tensor | None = None):
        """Features of samples ``idx`` (copy ``which[i]`` for sample i; default copy 0)."""
        if which is None or len(self.tokens) == 1:
            return self.tokens[0][idx].float(), self.pooled[0][idx].float(), self.ages[idx]
        t = torch.empty((len(idx), *self.tokens[0].shape[1:]), dtype=torch.float32)
        p = torch.empty((len(idx), *self.pooled[0].shape[1:]), dtype=torch.float32)
        for c in range(len(self.tokens)):
            m = which == c
            if bool(m.any()):
                t[m] = self.tokens[c][idx[m]].float()
                p[m] = self.pooled[c][idx[m]].float()
        return t, p, self.ages[idx]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.data")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("features", help="compute the frozen image-tower features of a manifest")
    f.add_argument("--manifest", type=Path, action="append", required=True)
    f.add_argument("--root", type=Path, default=None)
    f.add_argument("--size", type=int, action="append", required=True)
    f.add_argument("--flip", action="store_true")
    f.add_argument("--backbone", default="faceres")
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--int8", action="store_true", help="features of the int8-quantized tower")
    a = ap.parse_args(argv)
    for size in a.size:
        for m in a.manifest:
            d = extract_features(m, size, a.flip, a.backbone, a.root, batch=a.batch, int8=a.int8)
            print(f"done: {d}", flush=True)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

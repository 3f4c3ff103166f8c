"""Evaluate faceres' own age head (HSE rule) on a UTKFace-style csv.

    python -m agegate_models.eval_faceres                       # UTKFace val, 224, 1 thread
    python -m agegate_models.eval_faceres --limit 200 --size 112

csv columns: path,age,gender,race (path relative to the csv's folder; UTKFace gender 0 = male).
Prints MAE, CS(5) (share with |error| <= 5 years), gender accuracy and ms/image.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .faceres import FaceRes

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "utkface" / "val.csv"


def read_csv(path: Path, limit: int | None = None) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if limit:
        # an even spread over the file (it is sorted by age)
        idx = np.linspace(0, len(rows) - 1, min(limit, len(rows))).round().astype(int)
        rows = [rows[i] for i in sorted(set(idx.tolist()))]
    return rows


def load_image(path: Path, size: int) -> torch.Tensor:
    """RGB 0..255 float32 [3, size, size], bilinear resize."""
    im = Image.open(path).convert("RGB")
    if im.size != (size, size):
        im = im.resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(im, dtype=np.float32)).permute(2, 0, 1)


@torch.no_grad()
def evaluate(
    model: FaceRes,
    csv_path: Path,
    size: int = 224,
    limit: int | None = None,
    batch: int = 32,
    raw_rgb: bool = False,
) -> dict[str, float]:
    """MAE / CS5 / gender accuracy / model time per image (wall and process CPU; no I/O)."""
    rows = read_csv(csv_path, limit)
    base = csv_path.parent
    errs, gender_ok, secs, cpu = [], [], 0.0, 0.0
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        x = torch.stack([load_image(base / r["path"], size) for r in chunk])
        t0, c0 = time.perf_counter(), time.process_time()
        if raw_rgb:  # the wrong preprocessing, for comparison: RGB 0..255 straight in
            o = model.graph(x)
            from .faceres import AGE_NODE, GENDER_NODE, hse_age

            age, gender = hse_age(o[AGE_NODE]), o[GENDER_NODE].reshape(-1)
        else:
            o = model(x)
            age, gender = o["age"], o["gender"]
        secs += time.perf_counter() - t0
        cpu += time.process_time() - c0
        true = torch.tensor([float(r["age"]) for r in chunk])
        errs.append((age - true).abs())
        male = torch.tensor([r["gender"] == "0" for r in chunk])
        gender_ok.append((gender >= 0.6) == male)
    e = torch.cat(errs)
    return {
        "n": float(len(e)),
        "mae": e.mean().item(),
        "cs5": (e <= 5).float().mean().item(),
        "gender_acc": torch.cat(gender_ok).float().mean().item(),
        "ms_per_image": 1000 * secs / len(e),
        "cpu_ms_per_image": 1000 * cpu / len(e),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    ap.add_argument("--json", type=Path, default=None, help="faceres.json (default: cache)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--limit", type=int, default=None, help="evaluate an even spread of N rows")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--raw-rgb", action="store_true", help="skip the HSE preprocessing")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = FaceRes(a.json).eval()
    r = evaluate(model, a.csv, a.size, a.limit, a.batch, a.raw_rgb)
    print(
        f"faceres @ {a.size}: n={int(r['n'])} MAE={r['mae']:.3f} CS5={r['cs5']:.3f} "
        f"gender_acc={r['gender_acc']:.3f} | {r['ms_per_image']:.1f} ms/image wall, "
        f"{r['cpu_ms_per_image']:.1f} ms/image CPU (batch {a.batch}, {a.threads} thread(s))"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

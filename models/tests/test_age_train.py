import json

import numpy as np
import torch
from _age_helpers import tokenizer

from agegate_models.data import FeatureSet, read_manifest
from agegate_models.train import TrainConfig, load_checkpoint, run


def _features(d, n, c=16, g=2, seed=0):
    rng = np.random.default_rng(seed)
    ages = rng.uniform(1, 90, n).astype(np.float32)
    tok = rng.normal(size=(n, c, g, g)).astype(np.float32)
    tok[:, 0] += ages[:, None, None] / 30  # learnable signal
    d.mkdir(parents=True)
    np.save(d / "tokens.npy", tok.astype(np.float16))
    np.save(d / "pooled.npy", tok.mean(axis=(2, 3)).astype(np.float16))
    np.save(d / "ages.npy", ages)
    (d / "meta.json").write_text("{}")
    return d


def _tc(tmp_path, **kw):
    return TrainConfig(
        backbone="tiny",
        image_size=16,
        epochs=2,
        batch_size=16,
        dim=16,
        depth=1,
        embed_dim=16,
        text_width=16,
        text_layers=1,
        n_steps=2,
        out=str(tmp_path / "run"),
        log_every=1000,
        **kw,
    )


def test_train_run_checkpoint_and_reload(tmp_path):
    tr = FeatureSet(_features(tmp_path / "tr", 64), _features(tmp_path / "trf", 64, seed=0))
    va = FeatureSet(_features(tmp_path / "va", 32, seed=1))
    best = run(_tc(tmp_path), train_fs=tr, val_fs=va, tokenizer=tokenizer(), log=lambda s: None)
    assert np.isfinite(best["mae"]) and len(best["step_mae"]) == 3
    ck = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    assert ck["model_config"]["head"]["grid"] == 2 and ck["train_config"]["seed"] == 0
    m = load_checkpoint(tmp_path / "run" / "best.pt", tokenizer=tokenizer())
    assert m.cfg.head.in_channels == 16
    # reproducible: same seed, same result
    best2 = run(_tc(tmp_path), train_fs=tr, val_fs=va, tokenizer=tokenizer(), log=lambda s: None)
    assert best2["mae"] == best["mae"]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best"]["n"] == 32


def test_ddp_path_initialises_with_world_size_one(tmp_path, monkeypatch):
    import torch.distributed as dist

    monkeypatch.setenv("AGEGATE_FORCE_DDP", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29531")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    tr = FeatureSet(_features(tmp_path / "tr", 32))
    va = FeatureSet(_features(tmp_path / "va", 16, seed=1))
    try:
        tc = _tc(
            tmp_path,
        )
        tc.epochs = 1
        best = run(tc, train_fs=tr, val_fs=va, tokenizer=tokenizer(), log=lambda s: None)
        assert dist.is_initialized() and dist.get_world_size() == 1
        assert np.isfinite(best["mae"])
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_manifest_any_root(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "m.csv").write_text("path,age,gender\nimgs/a.jpg,31,1\nimgs/b.jpg,,0\n")
    s = read_manifest(tmp_path / "m.csv")
    assert len(s) == 1 and s[0].age == 31.0 and s[0].path == tmp_path / "imgs" / "a.jpg"
    s = read_manifest(tmp_path / "m.csv", root="/data")
    assert str(s[0].path) == "/data/imgs/a.jpg"

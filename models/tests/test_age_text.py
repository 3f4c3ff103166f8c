import torch
from _age_helpers import tokenizer

from agegate_models.clip_loader import (
    load_state_dict,
    text_tower_from_checkpoint,
    vit_config_from_state_dict,
    vit_from_checkpoint,
)
from agegate_models.config import BackboneConfig, TextConfig
from agegate_models.model import ClipViT
from agegate_models.text import TextTower, age_prompts


def test_tokenizer_known_ids_and_round_trip():
    tok = tokenizer()
    assert tok.vocab_size == 49408
    # ids of OpenAI CLIP's tokenizer for this prompt
    assert tok.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    p = "a photo of a 37-year-old person"
    ids = tok(["a photo of a cat", p], context_length=16)
    assert ids[0, 0] == tok.sot and ids[0, 6] == tok.eot and ids[0, 7:].eq(0).all()
    assert tok.decode(tok.encode(p)).replace(" ", "") == p.replace(" ", "")
    assert len(age_prompts()) == 101 and age_prompts()[5] == "a photo of a 5-year-old person"


def _synthetic_clip(tmp_path):
    """A tiny checkpoint in OpenAI CLIP's key layout, built from reference modules."""
    torch.manual_seed(0)
    tcfg = TextConfig(
        vocab_size=49408, context_length=20, width=32, layers=2, heads=2, embed_dim=24
    )
    ref_text = TextTower(tcfg)
    vcfg = BackboneConfig(
        kind="clip_vit",
        image_size=32,
        vit_width=32,
        vit_layers=1,
        vit_heads=2,
        vit_patch=8,
        vit_embed_dim=24,
    )
    ref_vit = ClipViT(vcfg)
    sd = {k: v.clone() for k, v in ref_text.state_dict().items()}
    sd.update({f"visual.{k}": v.clone() for k, v in ref_vit.state_dict().items()})
    sd["logit_scale"] = torch.tensor(4.6)
    path = tmp_path / "clip_tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    return path, ref_text, ref_vit


def test_clip_loader_reproduces_text_and_image_features(tmp_path):
    path, ref_text, ref_vit = _synthetic_clip(tmp_path)
    sd = load_state_dict(path)
    tower = text_tower_from_checkpoint(sd, heads=2)
    assert tower.cfg.width == 32 and tower.cfg.layers == 2 and tower.cfg.embed_dim == 24
    ids = tokenizer()(age_prompts()[:4], context_length=20)
    with torch.no_grad():
        torch.testing.assert_close(tower(ids), ref_text(ids))
    assert vit_config_from_state_dict(sd).vit_patch == 8
    vit = vit_from_checkpoint(sd, heads=2)
    x = torch.rand(2, 3, 32, 32) * 255
    with torch.no_grad():
        a, b = vit(x), ref_vit(x)
    torch.testing.assert_close(a["pooled"], b["pooled"])
    assert a["tokens"].shape == (2, 32, 4, 4)


def test_clip_checkpoint_flag_trains_on_loaded_text_tower(tmp_path):
    from agegate_models.train import TrainConfig, model_config

    path, _, _ = _synthetic_clip(tmp_path)
    tc = TrainConfig(clip_checkpoint=str(path))
    cfg = model_config(tc, in_channels=16, pooled_dim=16, grid=2)
    assert cfg.text.width == 32 and cfg.text.embed_dim == 24 and cfg.text.context_length == 16

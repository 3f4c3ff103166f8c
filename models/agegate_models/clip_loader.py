"""Load an OpenAI CLIP / OpenCLIP checkpoint into the text tower (and the ViT image tower).

Accepted: a ``state_dict`` saved with ``torch.save`` (plain, or under ``"state_dict"`` /
``"model"``), optionally with a ``module.`` prefix, or a TorchScript archive as shipped by
OpenAI (``torch.jit.load(...).state_dict()``). Key layout (both projects use it):

    token_embedding.weight, positional_embedding, transformer.resblocks.N.{ln_1,attn,ln_2,
    mlp.c_fc,mlp.c_proj}.*, ln_final.*, text_projection, logit_scale,
    visual.{conv1.weight,class_embedding,positional_embedding,ln_pre,transformer,ln_post,proj}

The dims are read from the tensors (heads: ``width // 64`` as in CLIP unless given).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .config import BackboneConfig, TextConfig
from .model import ClipViT
from .text import TextTower


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError):  # TorchScript archive (OpenAI release format)
        obj = torch.jit.load(str(path), map_location="cpu").state_dict()
    if isinstance(obj, dict):
        for k in ("state_dict", "model"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
    sd = {k.removeprefix("module."): v for k, v in obj.items() if torch.is_tensor(v)}
    if "token_embedding.weight" not in sd:
        raise KeyError(f"{path}: no token_embedding.weight; not a CLIP checkpoint")
    return sd


def _n_layers(sd: dict, prefix: str) -> int:
    ids = {int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)}
    return max(ids) + 1 if ids else 0


def text_config_from_state_dict(sd: dict, heads: int | None = None, quick_gelu=True):
    width = sd["token_embedding.weight"].shape[1]
    return TextConfig(
        vocab_size=sd["token_embedding.weight"].shape[0],
        context_length=sd["positional_embedding"].shape[0],
        width=width,
        layers=_n_layers(sd, "transformer.resblocks."),
        heads=heads or max(1, width // 64),
        embed_dim=sd["text_projection"].shape[1],
        quick_gelu=quick_gelu,
    )


def vit_config_from_state_dict(sd: dict, heads: int | None = None, quick_gelu=True):
    w = sd["visual.conv1.weight"]
    grid = round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    return BackboneConfig(
        kind="clip_vit",
        image_size=grid * w.shape[-1],
        vit_width=w.shape[0],
        vit_layers=_n_layers(sd, "visual.transformer.resblocks."),
        vit_heads=heads or max(1, w.shape[0] // 64),
        vit_patch=w.shape[-1],
        vit_embed_dim=sd["visual.proj"].shape[1],
        quick_gelu=quick_gelu,
    )


_TEXT_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.")


def text_state(sd: dict) -> dict[str, torch.Tensor]:
    keep = {k: v for k, v in sd.items() if k.startswith(_TEXT_PREFIXES)}
    keep["text_projection"] = sd["text_projection"]
    return keep


def visual_state(sd: dict) -> dict[str, torch.Tensor]:
    return {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}


def load_text_tower(tower: TextTower, sd: dict) -> None:
    """Copy the CLIP text weights into ``tower`` (strict: every tower weight must be there).
    A checkpoint with a longer context is truncated to the tower's context length."""
    st = text_state(sd)
    n = tower.positional_embedding.shape[0]
    st["positional_embedding"] = st["positional_embedding"][:n]
    missing, unexpected = tower.load_state_dict(st, strict=False)
    if missing or unexpected:
        raise KeyError(f"CLIP text weights do not fit: missing {missing}, unexpected {unexpected}")


def load_vit(vit: ClipViT, sd: dict) -> None:
    missing, unexpected = vit.load_state_dict(visual_state(sd), strict=False)
    if missing or unexpected:
        raise KeyError(
            f"CLIP visual weights do not fit: missing {missing}, unexpected {unexpected}"
        )


def text_tower_from_checkpoint(path_or_sd, heads: int | None = None) -> TextTower:
    sd = path_or_sd if isinstance(path_or_sd, dict) else load_state_dict(path_or_sd)
    tower = TextTower(text_config_from_state_dict(sd, heads))
    load_text_tower(tower, sd)
    return tower


def vit_from_checkpoint(path_or_sd, heads: int | None = None) -> ClipViT:
    sd = path_or_sd if isinstance(path_or_sd, dict) else load_state_dict(path_or_sd)
    vit = ClipViT(vit_config_from_state_dict(sd, heads))
    load_vit(vit, sd)
    return vit

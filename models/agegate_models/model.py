"""CILF-CIAE age estimator: image tower + FourierFormer fusion + contrastive matching +
reversible (unrolled) age correction. See models/README.md, "Method".

Shapes (shipped teacher, faceres @ 224): tokens ``[B,1024,7,7]`` -> ``[B,49,d]``; pooled
``[B,1024]`` -> ``[B,d]``; 101 prompt embeddings ``[101,e]``; image embedding ``[B,e]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig, HeadConfig, ModelConfig
from .dft import dft2_matrices, tokens_dft2, tokens_idft2_real
from .text import SimpleTokenizer, TextTower, Transformer, age_prompts

# --------------------------------------------------------------------------- image towers


class TinyBackbone(nn.Module):
    """Stand-in CNN with the faceres interface: input RGB 0..255 ``[B,3,H,W]``, preprocessing
    inside, returns ``{"tokens": [B,C,H/8,W/8], "pooled": [B,C], "age": [B]}``."""

    def __init__(self, width: int = 16, channels: int = 32):
        super().__init__()

        def dw(cin: int, cout: int, stride: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.ReLU6(),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU6(),
            )

        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6()
        )
        self.body = nn.Sequential(dw(width, width * 2, 2), dw(width * 2, channels, 2))
        self.age = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x / 127.5 - 1.0
        t = self.body(self.stem(x))
        pooled = t.mean(dim=(2, 3))
        return {"tokens": t, "pooled": pooled, "age": self.age(pooled).squeeze(-1)}


class ClipViT(nn.Module):
    """CLIP's ``VisionTransformer`` (parameter names as in ``visual.*``). Input RGB 0..255;
    CLIP normalisation inside. Tokens = patch tokens after ``ln_post`` as a grid."""

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        w, p = cfg.vit_width, cfg.vit_patch
        self.grid = cfg.image_size // p
        self.conv1 = nn.Conv2d(3, w, p, p, bias=False)
        scale = w**-0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(w))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid**2 + 1, w))
        self.ln_pre = nn.LayerNorm(w)
        self.transformer = Transformer(w, cfg.vit_layers, cfg.vit_heads, cfg.quick_gelu)
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(scale * torch.randn(w, cfg.vit_embed_dim))
        mean = torch.tensor(self.MEAN).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(self.STD).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        x = self.conv1(x)
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.view(1, 1, c).expand(b, 1, c)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x))
        x = self.ln_post(x)
        tokens = x[:, 1:].transpose(1, 2).reshape(b, c, h, w)
        pooled = x[:, 0] @ self.proj
        return {"tokens": tokens, "pooled": pooled, "age": pooled[:, 0] * 0}


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    if cfg.kind == "tiny":
        return TinyBackbone(cfg.tiny_width, cfg.tiny_channels)
    if cfg.kind == "clip_vit":
        return ClipViT(cfg)
    if cfg.kind == "faceres":
        from .faceres import FaceRes  # owned by the faceres port

        return FaceRes(heads=False)
    if cfg.kind in ("faceres-nn", "faceres-deep"):
        # the same towers as plain torch layers (mobilenet.py); "faceres-nn" has faceres'
        # weights, "faceres-deep" the other weight set of the same graph
        from .mobilenet import FaceMobileNet

        return FaceMobileNet(cfg.kind.removesuffix("-nn"), heads=False, load=cfg.pretrained)
    raise ValueError(f"unknown backbone kind {cfg.kind!r}")


# --------------------------------------------------------------------------- FourierFormer


class TextAttentionPool(nn.Module):
    """Attention-pooled prompt summary: the image state queries the 101 prompt embeddings."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)

    def keys_values(self, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Depends on the prompts only: constants of the exported graph."""
        return self.k(text) * (1.0 / math.sqrt(text.shape[-1])), self.v(text)

    def forward(self, state: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]):
        k, v = kv
        att = self.q(self.norm(state)) @ k.t()  # [B,K]
        return self.o(att.softmax(dim=-1) @ v)


class FourierMixer(nn.Module):
    """GFNet global filter on the token grid, DFT as fixed matmuls, with a prompt-conditioned
    complex modulation of the learned filter: ``W' = W * (1 + m(s))``."""

    def __init__(self, grid: int, dim: int, text_fusion: bool):
        super().__init__()
        n = grid * grid
        kr, ki = dft2_matrices(grid, grid)
        self.register_buffer("dft_re", kr)
        self.register_buffer("dft_im", ki)
        self.w_re = nn.Parameter(torch.ones(n, dim) + 0.02 * torch.randn(n, dim))
        self.w_im = nn.Parameter(0.02 * torch.randn(n, dim))
        self.text_fusion = text_fusion
        if text_fusion:
            self.mod = nn.Linear(dim, 2 * dim)
            nn.init.zeros_(self.mod.weight)
            nn.init.zeros_(self.mod.bias)

    def forward(self, x: torch.Tensor, s: torch.Tensor | None) -> torch.Tensor:
        fr, fi = tokens_dft2(x, self.dft_re, self.dft_im)
        wr, wi = self.w_re, self.w_im
        if self.text_fusion and s is not None:
            mr, mi = self.mod(s).unsqueeze(1).chunk(2, dim=-1)  # [B,1,d]
            wr, wi = wr * (1 + mr) - wi * mi, wr * mi + wi * (1 + mr)
        gr = fr * wr - fi * wi
        gi = fr * wi + fi * wr
        return tokens_idft2_real(gr, gi, self.dft_re, self.dft_im)


class FourierFormerBlock(nn.Module):
    def __init__(self, cfg: HeadConfig):
        super().__init__()
        d = cfg.dim
        self.text_fusion = cfg.text_fusion
        self.norm1 = nn.LayerNorm(d)
        self.mixer = FourierMixer(cfg.grid, d, cfg.text_fusion)
        self.norm2 = nn.LayerNorm(d)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(d, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, d)
        )
        if cfg.text_fusion:
            self.pool = TextAttentionPool(d)
            self.film = nn.Linear(d, 2 * d)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, g: torch.Tensor, kv):
        s = None
        if self.text_fusion and kv is not None:
            s = self.pool(x.mean(dim=1) + g, kv)  # [B,d] prompt summary
        x = x + self.mixer(self.norm1(x), s)
        h = self.norm2(x)
        if s is not None:
            gamma, beta = self.film(s).unsqueeze(1).chunk(2, dim=-1)
            h = h * (1 + gamma) + beta
        return x + self.mlp(h)


class CILFHead(nn.Module):
    """Everything after the image tower; input = tower outputs + prompt embeddings."""

    def __init__(self, cfg: HeadConfig, embed_dim: int):
        super().__init__()
        self.cfg = cfg
        d, e, n = cfg.dim, embed_dim, cfg.grid * cfg.grid
        self.feat_drop = nn.Dropout(cfg.feat_dropout)
        self.tok_norm = nn.LayerNorm(cfg.in_channels) if cfg.in_norm else nn.Identity()
        self.glob_norm = nn.LayerNorm(cfg.pooled_dim) if cfg.in_norm else nn.Identity()
        self.tok_proj = nn.Linear(cfg.in_channels, d)
        self.pos = nn.Parameter(0.02 * torch.randn(n, d))
        if cfg.glob_mlp:
            self.glob_proj = nn.Sequential(
                nn.Linear(cfg.pooled_dim, 4 * d),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(4 * d, d),
            )
        else:
            self.glob_proj = nn.Linear(cfg.pooled_dim, d)
        self.text_in = nn.Linear(e, d)
        self.blocks = nn.ModuleList([FourierFormerBlock(cfg) for _ in range(cfg.depth)])
        self.norm = nn.LayerNorm(d)
        self.img_proj = nn.Linear(d, e)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.age_bias = nn.Parameter(torch.zeros(cfg.n_ages))
        if not cfg.contrastive:
            self.cls = nn.Linear(e, cfg.n_ages)
        self.corr = nn.ModuleList()
        offs = torch.tensor([float(o) for o in cfg.corr_offsets])
        self.register_buffer("corr_offsets", offs, persistent=False)
        self.corr_center = int((offs == 0).nonzero()[0]) if bool((offs == 0).any()) else 0
        n_in = 2 * len(offs) + 1 if cfg.corr_input == "profile" else 2 * e + 2
        for _ in range(cfg.n_steps):
            m = nn.Sequential(
                nn.Linear(n_in, cfg.corr_hidden),
                nn.GELU(),
                nn.Linear(cfg.corr_hidden, cfg.corr_hidden),
                nn.GELU(),
                nn.Linear(cfg.corr_hidden, 1),
            )
            nn.init.zeros_(m[-1].weight)
            nn.init.zeros_(m[-1].bias)
            self.corr.append(m)
        self.register_buffer("ages", torch.arange(cfg.n_ages, dtype=torch.float32))
        if cfg.estimator not in ("mean", "median"):
            raise ValueError(f"estimator {cfg.estimator!r}: 'mean' or 'median'")
        if cfg.estimator == "median":
            # CDF as a matmul with a constant triangle (no CumSum op in the graph)
            tri = torch.triu(torch.ones(cfg.n_ages, cfg.n_ages))
            self.register_buffer("cdf_tri", tri, persistent=False)
        self.p_over = nn.ModuleList()
        for _ in cfg.p_over:
            self.p_over.append(
                nn.Sequential(
                    nn.Linear(d, cfg.p_over_hidden), nn.GELU(), nn.Linear(cfg.p_over_hidden, 1)
                )
            )
        if cfg.p_over:
            self.register_buffer(
                "p_over_t", torch.tensor([float(t) for t in cfg.p_over]), persistent=False
            )

    def text_context(self, prompts: torch.Tensor) -> list:
        """Per-block attention keys/values of the prompts (constant once trained)."""
        if not self.cfg.text_fusion:
            return [None] * len(self.blocks)
        t = self.text_in(prompts)
        return [blk.pool.keys_values(t) for blk in self.blocks]

    def embed_image(self, tokens, pooled, prompts, ctx: list | None = None, with_u=False):
        """The normalised image embedding z ``[B,e]`` (and, ``with_u``, the fused image
        state u ``[B,d]`` it is projected from)."""
        x = self.feat_drop(self.tok_norm(tokens.flatten(2).transpose(1, 2)))  # [B,N,C]
        x = self.tok_proj(x) + self.pos
        g = self.glob_proj(self.feat_drop(self.glob_norm(pooled)))
        ctx = ctx if ctx is not None else self.text_context(prompts)
        for blk, kv in zip(self.blocks, ctx, strict=True):
            x = blk(x, g, kv)
        u = self.norm(x.mean(dim=1)) + g
        z = F.normalize(self.img_proj(u), dim=-1)
        return (z, u) if with_u else z

    def first_estimate(self, probs: torch.Tensor) -> torch.Tensor:
        """a_0 from the age softmax: its expectation, or its median (bin k covers
        [k - 0.5, k + 0.5); the 0.5 crossing of the CDF, linear within the bin)."""
        if self.cfg.estimator == "mean":
            return probs @ self.ages
        before = probs @ self.cdf_tri - probs  # CDF up to the previous bin
        frac = ((0.5 - before) / probs.clamp_min(1e-6)).clamp(0.0, 1.0)
        return frac.sum(dim=-1) - 0.5

    def p_over_logits(self, u: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(u) for h in self.p_over], dim=-1)

    @staticmethod
    def monotone(p: torch.Tensor) -> torch.Tensor:
        """Running minimum over the thresholds (ascending): P(age >= T) never rises with T."""
        cols = [p[:, :1]]
        for j in range(1, p.shape[1]):
            cols.append(torch.minimum(p[:, j : j + 1], cols[-1]))
        return torch.cat(cols, dim=1)

    def text_at(self, age: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
        """Inverse direction: the prompt embedding at a (real-valued) age, by Gaussian soft
        interpolation between the neighbouring age prompts. ``age [B]`` -> ``[B,e]``."""
        w2 = 2.0 * self.cfg.interp_width**2
        wts = (-((self.ages.unsqueeze(0) - age.unsqueeze(1)) ** 2) / w2).softmax(dim=-1)
        return F.normalize(wts @ prompts, dim=-1)

    def profile(self, z: torch.Tensor, age: torch.Tensor, prompts: torch.Tensor):
        """Cosine similarity of ``z`` to the text-space points ``t(age + offset)``: ``[B,J]``."""
        w2 = 2.0 * self.cfg.interp_width**2
        pts = age.unsqueeze(1) + self.corr_offsets  # [B,J]
        d = self.ages.view(1, 1, -1) - pts.unsqueeze(2)  # [B,J,K]
        t = F.normalize((-(d * d) / w2).softmax(dim=-1) @ prompts, dim=-1)  # [B,J,e]
        return (t @ z.unsqueeze(2)).squeeze(2)

    def correction_input(self, z, age, prompts) -> torch.Tensor:
        a = (age.unsqueeze(1) - 50.0) / 50.0
        if self.cfg.corr_input == "profile":
            s = self.profile(z, age, prompts)
            c = self.corr_center
            return torch.cat([s * 10.0, (s - s[:, c : c + 1]) * 10.0, a], dim=-1)
        t = self.text_at(age, prompts)
        return torch.cat([z - t, z * t, a, (z * t).sum(-1, keepdim=True)], dim=-1)

    def forward(self, tokens, pooled, prompts: torch.Tensor, ctx: list | None = None):
        """prompts: ``[K,e]`` L2-normalised prompt embeddings; ctx: ``text_context(prompts)``
        when precomputed (export)."""
        z, u = self.embed_image(tokens, pooled, prompts, ctx, with_u=True)
        sim = z @ prompts.t()  # [B,K] cosine similarities
        if self.cfg.contrastive:
            logits = sim * self.logit_scale.clamp(max=math.log(100.0)).exp() + self.age_bias
        else:
            logits = self.cls(z)
        probs = logits.softmax(dim=-1)
        age = self.first_estimate(probs)
        steps = [age]
        for m in self.corr:
            age = age + 5.0 * m(self.correction_input(z, age, prompts)).squeeze(-1)
            steps.append(age)
        dev = self.ages.unsqueeze(0) - age.unsqueeze(1)
        sigma = torch.sqrt((probs * dev * dev).sum(dim=-1) + 0.25)
        out = {
            "logits": logits,
            "sim": sim,
            "z": z,
            "probs": probs,
            "age": age,
            "sigma": sigma,
            "steps": torch.stack(steps, dim=1),
        }
        if len(self.p_over):
            po = self.p_over_logits(u)
            out["p_over_logits"] = po
            out["p_over"] = self.monotone(torch.sigmoid(po))
        return out


class CILFCIAE(nn.Module):
    """Image tower + CLIP-shaped text tower + CILF head."""

    def __init__(self, cfg: ModelConfig, backbone: nn.Module | None = None, tokenizer=None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.text = TextTower(cfg.text)
        self.head = CILFHead(cfg.head, cfg.text.embed_dim)
        tok = tokenizer or SimpleTokenizer()
        ids = tok(age_prompts(cfg.head.n_ages), cfg.text.context_length)
        self.register_buffer("prompt_ids", ids)
        # once frozen (export), the prompt embeddings are constants of the graph
        self.register_buffer("prompt_cache", torch.zeros(cfg.head.n_ages, cfg.text.embed_dim))
        self.frozen_prompts = False

    def prompt_embeddings(self) -> torch.Tensor:
        if self.frozen_prompts:
            return self.prompt_cache
        return F.normalize(self.text(self.prompt_ids), dim=-1)

    @torch.no_grad()
    def freeze_prompts(self) -> None:
        self.prompt_cache.copy_(F.normalize(self.text(self.prompt_ids), dim=-1))
        self.frozen_prompts = True

    def forward_features(self, tokens: torch.Tensor, pooled: torch.Tensor):
        return self.head(tokens, pooled, self.prompt_embeddings())

    def forward(self, image: torch.Tensor):
        f = self.backbone(image)
        return self.forward_features(f["tokens"], f["pooled"])


class ExportModule(nn.Module):
    """The on-device graph: ``image`` -> ``age [B]``, ``sigma [B]``, ``steps [B,T]`` (and
    ``p_over [B,len(thresholds)]`` when the head has P(age >= T) heads)."""

    def __init__(self, model: CILFCIAE):
        super().__init__()
        model.freeze_prompts()
        self.backbone = model.backbone
        self.head = model.head
        self.register_buffer("prompts", model.prompt_cache.clone())
        self.n_ctx = 0
        with torch.no_grad():
            for i, kv in enumerate(self.head.text_context(self.prompts)):
                if kv is not None:
                    self.register_buffer(f"text_k{i}", kv[0].clone())
                    self.register_buffer(f"text_v{i}", kv[1].clone())
                    self.n_ctx += 1

    def forward(self, image: torch.Tensor):
        f = self.backbone(image)
        ctx = [
            (getattr(self, f"text_k{i}"), getattr(self, f"text_v{i}")) for i in range(self.n_ctx)
        ]
        out = self.head(f["tokens"], f["pooled"], self.prompts, ctx or None)
        if "p_over" in out:
            return out["age"], out["sigma"], out["steps"], out["p_over"]
        return out["age"], out["sigma"], out["steps"]


def build_model(cfg: ModelConfig, with_backbone: bool = True, tokenizer=None) -> CILFCIAE:
    bb = build_backbone(cfg.backbone) if with_backbone else None
    return CILFCIAE(cfg, bb, tokenizer)

"""Loss terms of CILF-CIAE. Ages in years, bins 0..n-1."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class LossWeights:
    sigma: float = 2.0  # years, width of the soft (Gaussian) age targets
    i2t: float = 1.0  # image -> prompts soft InfoNCE (= soft-label CE over the 101 bins)
    t2i: float = 0.5  # prompts -> images soft InfoNCE within the batch
    step: float = 0.1  # L1 (years) at every step
    step_growth: float = 1.5  # later steps weigh more: w_t = step * growth**t
    kd: float = 1.0  # distillation: KL(teacher || student) over the bins
    kd_age: float = 0.05  # distillation: L1 to the teacher's final age
    kd_temp: float = 1.0


def gaussian_targets(y: torch.Tensor, n: int, sigma: float, normalize: bool = True):
    """``[B,n]`` Gaussian over the bins centred at the (real) ages ``y [B]``."""
    k = torch.arange(n, dtype=torch.float32, device=y.device)
    t = torch.exp(-((k.unsqueeze(0) - y.float().unsqueeze(1)) ** 2) / (2 * sigma * sigma))
    return t / t.sum(dim=1, keepdim=True) if normalize else t


def soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with a target distribution, averaged over rows."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def i2t_infonce(logits: torch.Tensor, y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Image -> text InfoNCE over the 101 age prompts with soft (Gaussian) positives."""
    return soft_ce(logits, gaussian_targets(y, logits.shape[1], sigma))


def t2i_infonce(sim: torch.Tensor, scale: torch.Tensor, y: torch.Tensor, sigma: float):
    """Text -> image InfoNCE: each age prompt ranks the images of the batch; the soft target
    of prompt k over images i is proportional to N(y_i; k, sigma); prompts with no image
    nearby get a proportionally small weight."""
    q = gaussian_targets(y, sim.shape[1], sigma, normalize=False).t()  # [K,B]
    mass = q.sum(dim=1)  # [K]
    keep = mass > 1e-3
    if not bool(keep.any()):
        return sim.sum() * 0
    q = q[keep] / mass[keep].unsqueeze(1)
    logits = sim.t()[keep] * scale
    per = -(q * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    w = mass[keep]
    return (per * w).sum() / w.sum()


def step_l1(steps: torch.Tensor, y: torch.Tensor, growth: float = 1.5) -> torch.Tensor:
    """Sum over steps of ``growth**t * mean|a_t - y|`` (normalised to sum of weights 1)."""
    t = steps.shape[1]
    w = torch.tensor([growth**i for i in range(t)], device=steps.device)
    w = w / w.sum()
    return ((steps - y.float().unsqueeze(1)).abs().mean(dim=0) * w).sum()


def kd_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temp: float = 1.0):
    """KL(teacher || student) over the age bins (teacher given as probabilities)."""
    logp = F.log_softmax(student_logits / temp, dim=-1)
    tp = teacher_probs.clamp_min(1e-8)
    return (tp * (tp.log() - logp)).sum(dim=-1).mean() * temp * temp


def total_loss(
    out: dict,
    y: torch.Tensor,
    w: LossWeights,
    logit_scale: torch.Tensor | None = None,
    contrastive: bool = True,
    teacher: dict | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    terms: dict[str, torch.Tensor] = {}
    terms["i2t"] = w.i2t * i2t_infonce(out["logits"], y, w.sigma)
    if contrastive and w.t2i > 0 and logit_scale is not None:
        terms["t2i"] = w.t2i * t2i_infonce(out["sim"], logit_scale, y, w.sigma)
    terms["step"] = w.step * step_l1(out["steps"], y, w.step_growth)
    if teacher is not None:
        terms["kd"] = w.kd * kd_kl(out["logits"], teacher["probs"], w.kd_temp)
        terms["kd_age"] = w.kd_age * (out["age"] - teacher["age"]).abs().mean()
    loss = sum(terms.values())
    return loss, {k: float(v.detach()) for k, v in terms.items()}

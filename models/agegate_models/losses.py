"""Loss terms of CILF-CIAE. Ages in years, bins 0..n-1."""

from __future__ import annotations

import itertools
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
    p_over: float = 0.5  # weighted BCE of the P(age >= T) heads (sum over thresholds)
    # band bias penalty: mean over the age bands present in the batch of the squared mean
    # error (years^2) of one estimate (band_bias): no band drifts to the mean. On the final
    # estimate it turns the correction steps into a bias calibrator that raises the MAE
    # (measured), so by default it shapes a_0, the age softmax's own estimate
    bias: float = 0.0
    bias_step: int = 0  # which estimate it applies to: 0 = a_0 (the softmax's), -1 = final


def gaussian_targets(y: torch.Tensor, n: int, sigma: float, normalize: bool = True):
    """``[B,n]`` Gaussian over the bins centred at the (real) ages ``y [B]``."""
    k = torch.arange(n, dtype=torch.float32, device=y.device)
    t = torch.exp(-((k.unsqueeze(0) - y.float().unsqueeze(1)) ** 2) / (2 * sigma * sigma))
    return t / t.sum(dim=1, keepdim=True) if normalize else t


def _wmean(v: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    """Mean of the per-row values ``v [B]``, weighted by ``w [B]`` when given."""
    return v.mean() if w is None else (v * w).sum() / w.sum().clamp_min(1e-12)


def soft_ce(logits: torch.Tensor, targets: torch.Tensor, w: torch.Tensor | None = None):
    """Cross-entropy with a target distribution, averaged over rows (weighted by ``w``)."""
    return _wmean(-(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1), w)


def i2t_infonce(logits: torch.Tensor, y: torch.Tensor, sigma: float, w=None) -> torch.Tensor:
    """Image -> text InfoNCE over the 101 age prompts with soft (Gaussian) positives."""
    return soft_ce(logits, gaussian_targets(y, logits.shape[1], sigma), w)


def t2i_infonce(sim: torch.Tensor, scale: torch.Tensor, y: torch.Tensor, sigma: float, w=None):
    """Text -> image InfoNCE: each age prompt ranks the images of the batch; the soft target
    of prompt k over images i is proportional to N(y_i; k, sigma) (times the sample weight
    ``w_i`` when given); prompts with no image nearby get a proportionally small weight."""
    q = gaussian_targets(y, sim.shape[1], sigma, normalize=False)  # [B,K]
    if w is not None:
        q = q * (w / w.mean().clamp_min(1e-12)).unsqueeze(1)
    q = q.t()  # [K,B]
    mass = q.sum(dim=1)  # [K]
    keep = mass > 1e-3
    if not bool(keep.any()):
        return sim.sum() * 0
    q = q[keep] / mass[keep].unsqueeze(1)
    logits = sim.t()[keep] * scale
    per = -(q * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    w = mass[keep]
    return (per * w).sum() / w.sum()


def step_l1(steps: torch.Tensor, y: torch.Tensor, growth: float = 1.5, w=None) -> torch.Tensor:
    """Sum over steps of ``growth**t * mean|a_t - y|`` (normalised to sum of weights 1;
    the mean over rows weighted by ``w`` when given)."""
    t = steps.shape[1]
    g = torch.tensor([growth**i for i in range(t)], device=steps.device)
    g = g / g.sum()
    err = (steps - y.float().unsqueeze(1)).abs()  # [B,T]
    per_step = err.mean(dim=0) if w is None else (err * w.unsqueeze(1)).sum(0) / w.sum()
    return (per_step * g).sum()


def kd_kl(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temp: float = 1.0, w=None):
    """KL(teacher || student) over the age bins (teacher given as probabilities)."""
    logp = F.log_softmax(student_logits / temp, dim=-1)
    tp = teacher_probs.clamp_min(1e-8)
    return _wmean((tp * (tp.log() - logp)).sum(dim=-1), w) * temp * temp


def p_over_targets(y: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``[B,J]``: 1 where the label ``y >= T_j``."""
    return (y.float().unsqueeze(1) >= thresholds.unsqueeze(0)).float()


def p_over_bce(logits: torch.Tensor, y: torch.Tensor, thresholds, pos_w, neg_w, w=None):
    """Weighted BCE of the P(age >= T) heads, summed over thresholds: positives of
    threshold j weigh ``pos_w[j]``, negatives ``neg_w[j]`` (chosen so that both classes
    weigh the same in the training distribution), rows by ``w``."""
    t = p_over_targets(y, thresholds)
    cw = t * pos_w.unsqueeze(0) + (1 - t) * neg_w.unsqueeze(0)
    per = F.binary_cross_entropy_with_logits(logits.float(), t, weight=cw, reduction="none")
    return _wmean(per.sum(dim=1), w)


def class_balance(y: torch.Tensor, thresholds: torch.Tensor, w=None):
    """``(pos_w, neg_w)`` per threshold: ``0.5 / share`` of each class in the (weighted)
    training labels, so each class contributes half of every threshold's loss."""
    t = p_over_targets(y, thresholds)
    w = torch.ones(len(y)) if w is None else w.float()
    pos = (t * w.unsqueeze(1)).sum(0) / w.sum()
    pos = pos.clamp(1e-3, 1 - 1e-3)
    return 0.5 / pos, 0.5 / (1 - pos)


def total_loss(
    out: dict,
    y: torch.Tensor,
    w: LossWeights,
    logit_scale: torch.Tensor | None = None,
    contrastive: bool = True,
    teacher: dict | None = None,
    sample_w: torch.Tensor | None = None,
    p_over: dict | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``sample_w [B]``: per-row weights of every term (age balancing, e.g. ``lds_weights``);
    ``p_over``: ``{"thresholds", "pos_w", "neg_w"}`` for the P(age >= T) heads' BCE.
    ``teacher``: ``{"probs"}`` and optionally ``{"age"}``."""
    sw = sample_w
    terms: dict[str, torch.Tensor] = {}
    terms["i2t"] = w.i2t * i2t_infonce(out["logits"], y, w.sigma, sw)
    if contrastive and w.t2i > 0 and logit_scale is not None:
        terms["t2i"] = w.t2i * t2i_infonce(out["sim"], logit_scale, y, w.sigma, sw)
    terms["step"] = w.step * step_l1(out["steps"], y, w.step_growth, sw)
    if teacher is not None:
        terms["kd"] = w.kd * kd_kl(out["logits"], teacher["probs"], w.kd_temp, sw)
        if "age" in teacher and w.kd_age > 0:
            terms["kd_age"] = w.kd_age * _wmean((out["age"] - teacher["age"]).abs(), sw)
    if w.bias > 0:
        terms["bias"] = w.bias * band_bias(out["steps"][:, w.bias_step], y)
    if p_over is not None and "p_over_logits" in out and w.p_over > 0:
        terms["p_over"] = w.p_over * p_over_bce(
            out["p_over_logits"], y, p_over["thresholds"], p_over["pos_w"], p_over["neg_w"], sw
        )
    loss = sum(terms.values())
    return loss, {k: float(v.detach()) for k, v in terms.items()}


def lds_weights(
    ages: torch.Tensor, sigma: float = 2.0, alpha: float = 1.0, n: int = 101, clip: float = 10.0
) -> torch.Tensor:
    """Label-distribution smoothing (Yang et al., ICML 2021): the label histogram over the
    ``n`` integer ages convolved with a Gaussian of ``sigma`` years; each sample weighs
    ``smoothed(y)^-alpha``, clipped to ``clip`` x the smallest weight, normalised to mean 1.
    ``alpha`` 1 = inverse frequency (a flat effective prior), 0.5 = inverse square root."""
    k = ages.round().clamp(0, n - 1).long()
    hist = torch.bincount(k, minlength=n).float()
    grid = torch.arange(n, dtype=torch.float32)
    ker = torch.exp(-((grid.unsqueeze(0) - grid.unsqueeze(1)) ** 2) / (2 * sigma * sigma))
    smooth = (ker @ hist).clamp_min(1e-6)
    per_age = smooth.pow(-alpha)
    per_age = per_age.clamp(max=per_age[hist > 0].min() * clip)
    wts = per_age[k]
    return wts / wts.mean()


BIAS_BANDS = (0.0, 13.0, 18.0, 25.0, 35.0, 50.0, 1e9)  # the gate's bands (metrics.BANDS)


def band_bias(age: torch.Tensor, y: torch.Tensor, edges=BIAS_BANDS) -> torch.Tensor:
    """Mean over the age bands present in the batch of (mean error in the band)^2: zero
    when no band is over- or underestimated on average, whatever the spread. Together with
    the L1 terms (which pull each estimate to the conditional median, i.e. tails towards
    the mean) it asks for estimates that are unbiased per band."""
    err = age - y.float()
    terms = []
    for lo, hi in itertools.pairwise(edges):
        m = (y >= lo) & (y < hi)
        if bool(m.any()):
            terms.append(err[m].mean() ** 2)
    return torch.stack(terms).mean()

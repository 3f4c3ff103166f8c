"""The figures ``agegate eval`` reports, computed in Python for the training loops: MAE,
CS(5), bias (estimate minus truth) and MAE per age band, and the gate's figures under
the board policy (Challenge 25, ``boards/dev.toml``: ALLOW when ``age - k sigma >= 25``,
DENY when ``age + k sigma < 18``, else REFER).
"""

from __future__ import annotations

import numpy as np

# (name, lowest age, first age above): src/eval.rs BANDS
BANDS = (
    ("0-12", 0.0, 13.0),
    ("13-17", 13.0, 18.0),
    ("18-24", 18.0, 25.0),
    ("25-34", 25.0, 35.0),
    ("35-49", 35.0, 50.0),
    ("50+", 50.0, np.inf),
)


def decide(age, sigma, legal=18.0, challenge=25.0, k=1.0) -> np.ndarray:
    """ "ALLOW" / "DENY" / "REFER" per row (``decide.rs``)."""
    age, sigma = np.asarray(age, np.float64), np.asarray(sigma, np.float64)
    out = np.full(age.shape, "REFER", dtype=object)
    out[age - k * sigma >= challenge] = "ALLOW"
    out[(age + k * sigma < legal) & (out != "ALLOW")] = "DENY"
    return out


def age_metrics(pred, y, sigma=None, steps=None) -> dict:
    """``pred [N]`` final estimates, ``y [N]`` labels, optional ``sigma [N]`` (gate
    figures) and ``steps [N,T]`` (per-step MAE)."""
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    err = pred - y
    m = {
        "n": len(y),
        "mae": float(np.abs(err).mean()),
        "cs5": float((np.abs(err) <= 5).mean()),
        "bias": {},
        "band_mae": {},
    }
    for name, lo, hi in BANDS:
        sel = (y >= lo) & (y < hi)
        if sel.any():
            m["bias"][name] = float(err[sel].mean())
            m["band_mae"][name] = float(np.abs(err[sel]).mean())
    if steps is not None:
        s = np.asarray(steps, np.float64)
        m["step_mae"] = [float(v) for v in np.abs(s - y[:, None]).mean(0)]
    if sigma is not None:
        d = decide(pred, sigma)
        minors, adults = y < 18, y >= 25
        m["minors_allowed"] = int((d[minors] == "ALLOW").sum())
        m["n_minors"] = int(minors.sum())
        m["adult_not_allowed"] = float((d[adults] != "ALLOW").mean()) if adults.any() else 0.0
        m["sigma_mean"] = float(np.mean(sigma))
    return m


def gate_score(ms: list[dict]) -> float:
    """Checkpoint selection over several val sets (clean and degraded): the mean over sets
    of MAE + 0.5 x the larger of |bias 13-17| and |bias 18-24|."""
    vals = []
    for m in ms:
        b = m["bias"]
        vals.append(m["mae"] + 0.5 * max(abs(b.get("13-17", 0.0)), abs(b.get("18-24", 0.0))))
    return float(np.mean(vals))


def fmt(m: dict) -> str:
    b = " ".join(f"{k}:{v:+.1f}" for k, v in m["bias"].items())
    s = f"MAE {m['mae']:.3f} CS5 {100 * m['cs5']:.1f}% bias[{b}]"
    if "minors_allowed" in m:
        s += f" minorsALLOW {m['minors_allowed']}/{m['n_minors']}"
        s += f" adult-not-allowed {100 * m['adult_not_allowed']:.1f}%"
    if "step_mae" in m:
        s += " steps " + ",".join(f"{v:.3f}" for v in m["step_mae"])
    return s

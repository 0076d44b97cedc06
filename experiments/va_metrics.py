"""Valence/arousal regression metrics: CCC, RMSE and Pearson's r, per dimension.

All moments are population moments (divide by N), as in Lin's concordance
correlation coefficient::

    CCC = 2 cov(p, t) / (var(p) + var(t) + (mean(p) - mean(t))^2)

A constant prediction has CCC 0 (no covariance) and an undefined Pearson r
(reported as NaN). Inputs are anything ``numpy.asarray`` accepts.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

DIMENSIONS = ("valence", "arousal")


def _pair(pred: Any, true: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"prediction and truth differ in length: {p.size} vs {t.size}")
    if p.size == 0:
        raise ValueError("no values to score")
    if not (np.isfinite(p).all() and np.isfinite(t).all()):
        raise ValueError("NaN or inf in the values to score")
    return p, t


def ccc(pred: Any, true: Any) -> float:
    """Lin's concordance correlation coefficient; NaN when both are the same constant."""
    p, t = _pair(pred, true)
    mp, mt = p.mean(), t.mean()
    cov = ((p - mp) * (t - mt)).mean()
    denom = p.var() + t.var() + (mp - mt) ** 2
    return float(2 * cov / denom) if denom > 0 else math.nan


def rmse(pred: Any, true: Any) -> float:
    p, t = _pair(pred, true)
    return float(np.sqrt(((p - t) ** 2).mean()))


def pearson(pred: Any, true: Any) -> float:
    """Pearson's r; NaN when either side is constant."""
    p, t = _pair(pred, true)
    sp, st = p.std(), t.std()
    if sp == 0 or st == 0:
        return math.nan
    return float(((p - p.mean()) * (t - t.mean())).mean() / (sp * st))


def va_metrics(pred: Any, true: Any) -> dict[str, Any]:
    """``{"valence": {ccc, rmse, pearson}, "arousal": {...}, "mean_ccc": ...}`` of [N, 2] arrays."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or p.shape != t.shape:
        raise ValueError(f"expected two [N, 2] arrays (valence, arousal), got {p.shape} and {t.shape}")
    out: dict[str, Any] = {}
    for k, name in enumerate(DIMENSIONS):
        out[name] = {"ccc": ccc(p[:, k], t[:, k]), "rmse": rmse(p[:, k], t[:, k]), "pearson": pearson(p[:, k], t[:, k])}
    out["mean_ccc"] = float(np.mean([out[d]["ccc"] for d in DIMENSIONS]))
    out["n"] = int(p.shape[0])
    return out

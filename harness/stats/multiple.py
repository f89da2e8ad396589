"""Multiple-testing corrections across features: adjusted p-values, compared with one alpha."""

from __future__ import annotations

import numpy as np


def _p_values(p_values: np.ndarray) -> np.ndarray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a 1-d array, got shape {p.shape}")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p_values must lie in [0, 1], got {p}")
    return p


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), same order as the input.

    ``adjusted[i] <= alpha`` rejects hypothesis i with the FDR held at ``alpha`` for independent or
    positively dependent tests; equals ``scipy.stats.false_discovery_control(p, method="bh")``.
    """
    p = _p_values(p_values)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * m / np.arange(1, m + 1)
    monotone = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(monotone, 1.0)
    return adjusted


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error rate), same order as the input."""
    p = _p_values(p_values)
    m = p.size
    if m == 0:
        return p
    order = np.argsort(p)
    scaled = p[order] * (m - np.arange(m))
    monotone = np.maximum.accumulate(scaled)
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(monotone, 1.0)
    return adjusted


CORRECTIONS = {"bh": benjamini_hochberg, "holm": holm}
"""Correction names accepted by configs."""

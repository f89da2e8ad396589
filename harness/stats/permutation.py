"""The permutation p-value shared by every permutation test, and how many permutations a corrected test needs."""

from __future__ import annotations

import math

import numpy as np


def permutation_p_value(statistic: float, null: np.ndarray) -> float:
    """``(k + 1) / (n + 1)``: k of n null statistics (from permuted pooled data) at least as large.

    The +1 counts the observed statistic as one draw of the null, so the test is exact (never
    anti-conservative) and the p-value is never zero.
    """
    null = np.asarray(null, dtype=np.float64)
    if null.ndim != 1 or null.size < 1:
        raise ValueError(f"null must be a non-empty 1-d array of permutation statistics, got shape {null.shape}")
    exceed = int(np.sum(null >= statistic - 1e-12 * max(1.0, abs(statistic))))
    return (exceed + 1) / (null.size + 1)


def permutations_for(tests: int, alpha: float, *, at_least: int = 1) -> int:
    """Permutations whose smallest p-value ``1 / (P + 1)``, times the number of ``tests`` (the factor Holm's and
    Benjamini-Hochberg's corrections apply to the smallest p-value at worst), is at most ``alpha / 2``: the
    resolution of a permutation p-value then never keeps a correction's result above ``alpha``."""
    if tests < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need tests >= 1 and 0 < alpha < 1, got tests={tests}, alpha={alpha}")
    return max(at_least, math.ceil(2 * tests / alpha) - 1)

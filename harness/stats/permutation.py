"""The permutation p-value shared by every permutation test."""

from __future__ import annotations

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

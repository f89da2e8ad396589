"""Two-sample tests for one continuous feature: Kolmogorov-Smirnov and Wasserstein."""

from __future__ import annotations

import numpy as np

from harness.stats.core import TestResult, as_sample
from harness.stats.permutation import permutation_p_value


def ks_test(reference: np.ndarray, current: np.ndarray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov test; the effect size is D itself (largest CDF gap, in [0, 1]).

    The p-value is scipy's (exact for small samples, asymptotic otherwise).
    """
    from scipy import stats

    x = as_sample(reference, "reference")
    y = as_sample(current, "current")
    result = stats.ks_2samp(x, y)
    statistic = float(result.statistic)
    return TestResult("ks", statistic, statistic, float(result.pvalue), len(x), len(y))


def wasserstein(reference: np.ndarray, current: np.ndarray, *, permutations: int = 200, seed: int = 0) -> TestResult:
    """First Wasserstein distance with a permutation p-value ``(k + 1) / (permutations + 1)``.

    The effect size is the distance divided by the pooled standard deviation (scale-free).
    """
    x = as_sample(reference, "reference")
    y = as_sample(current, "current")
    pooled = np.concatenate([x, y])
    statistic = wasserstein_distance(x, y)
    rng = np.random.default_rng(seed)
    null = np.empty(permutations)
    for i in range(permutations):
        shuffled = rng.permutation(pooled)
        null[i] = wasserstein_distance(shuffled[: len(x)], shuffled[len(x) :])
    scale = float(pooled.std()) or 1.0
    p_value = permutation_p_value(statistic, null)
    return TestResult(
        "wasserstein", statistic, statistic / scale, p_value, len(x), len(y), {"permutations": permutations}
    )


def wasserstein_distance(x: np.ndarray, y: np.ndarray) -> float:
    """W1 between the empirical distributions of ``x`` and ``y``: the area between their CDFs."""
    grid = np.sort(np.concatenate([x, y]))  # (N,)
    widths = np.diff(grid)  # (N-1,)
    cdf_x = np.searchsorted(np.sort(x), grid[:-1], side="right") / len(x)  # (N-1,)
    cdf_y = np.searchsorted(np.sort(y), grid[:-1], side="right") / len(y)  # (N-1,)
    return float(np.sum(np.abs(cdf_x - cdf_y) * widths))

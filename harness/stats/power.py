"""Power: the minimum detectable effect (MDE) of each test at a sample size, and simulated power.

Closed forms are used where one exists (normal, noncentral chi-square, noncentral F); they are
checked against simulation in tests and ``benchmarks/bench_drift.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from harness.stats.core import check_probability

KS_EFFICIENCY = 2.0 / math.pi  # Pitman efficiency of KS relative to the t-test for a normal location shift


def mde_mean_shift(n_reference: int, n_current: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean shift (in SD units) a two-sided two-sample z-test detects with ``power``."""
    from scipy import stats

    _check(n_reference, n_current, alpha, power)
    z = stats.norm.isf(alpha / 2) + stats.norm.ppf(power)
    return float(z * math.sqrt(1 / n_reference + 1 / n_current))


def mde_ks(n_reference: int, n_current: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE of the KS test for a normal location shift, in SD units (z-test MDE / sqrt(2/pi))."""
    return mde_mean_shift(n_reference, n_current, alpha=alpha, power=power) / math.sqrt(KS_EFFICIENCY)


def mde_paired_mean(sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest mean paired difference a one-sided test at ``alpha`` detects with ``power`` (units of sd)."""
    from scipy import stats

    _check(n, n, alpha, power)
    return float((stats.norm.isf(alpha) + stats.norm.ppf(power)) * sd / math.sqrt(n))


def mde_chi_square(n_reference: int, n_current: int, dof: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest Cohen's w the chi-square homogeneity test detects: noncentrality N w^2."""
    from scipy import optimize, stats

    _check(n_reference, n_current, alpha, power)
    dof = max(int(dof), 1)
    critical = stats.chi2.isf(alpha, dof)
    noncentrality = optimize.brentq(lambda lam: stats.ncx2.sf(critical, dof, lam) - power, 1e-9, 1e6)
    return float(math.sqrt(noncentrality / (n_reference + n_current)))


def mde_hotelling(n_reference: int, n_current: int, dim: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest Mahalanobis distance between means Hotelling's T^2 detects (noncentral F)."""
    from scipy import optimize, stats

    _check(n_reference, n_current, alpha, power)
    dof2 = n_reference + n_current - dim - 1
    if dof2 < 1:
        return math.inf
    critical = stats.f.isf(alpha, dim, dof2)
    noncentrality = optimize.brentq(lambda lam: stats.ncf.sf(critical, dim, dof2, lam) - power, 1e-9, 1e6)
    return float(math.sqrt(noncentrality * (n_reference + n_current) / (n_reference * n_current)))


def mde_mmd(null_sd: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest MMD (RBF, the square root of MMD^2_u) the permutation test detects, from its null's spread.

    The unbiased MMD^2 is centred at 0 under the null with the permutation null's standard deviation
    ``null_sd`` at the observed sample sizes; a population MMD^2 of ``delta`` moves it to about ``delta``. The
    test detects it with ``power`` once ``delta >= (z(1 - alpha) + z(power)) * null_sd``. Near the detection
    limit the spread under the alternative is close to the null's, so this is the MDE at these sizes; it
    shrinks like ``1 / sqrt(n)`` (``null_sd`` like ``1 / n``).
    """
    from scipy import stats

    check_probability(alpha, "alpha")
    check_probability(power, "power")
    if not null_sd >= 0:
        raise ValueError(f"null_sd must be >= 0, got null_sd={null_sd}")
    return float(math.sqrt((stats.norm.isf(alpha) + stats.norm.ppf(power)) * null_sd))


def sample_size_for(mde_at: Callable[[int], float], effect: float, *, start: int = 2, limit: int = 10**8) -> int | None:
    """The smallest n (per sample) with ``mde_at(n) <= effect``, for an MDE that falls with n; None past ``limit``."""
    if effect <= 0:
        raise ValueError(f"effect must be > 0, got effect={effect}")
    low, high = max(start, 2), max(start, 2)
    while mde_at(high) > effect:
        low, high = high, high * 2
        if high > limit:
            return None
    while low < high:  # invariant: mde_at(high) <= effect
        middle = (low + high) // 2
        low, high = (middle + 1, high) if mde_at(middle) > effect else (low, middle)
    return high


def hotelling_power(n_reference: int, n_current: int, dim: int, mahalanobis: float, *, alpha: float = 0.05) -> float:
    """Power of Hotelling's T^2 against a mean shift of the given Mahalanobis distance."""
    from scipy import stats

    dof2 = n_reference + n_current - dim - 1
    noncentrality = n_reference * n_current / (n_reference + n_current) * mahalanobis**2
    return float(stats.ncf.sf(stats.f.isf(alpha, dim, dof2), dim, dof2, noncentrality))


def simulated_power(
    test: Callable[[np.ndarray, np.ndarray], float],
    sample: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
    *,
    trials: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """``(rejection rate, its standard error)`` of ``test`` (returning a p-value) on simulated pairs."""
    check_probability(alpha, "alpha")
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got trials={trials}")
    rng = np.random.default_rng(seed)
    rejections = sum(test(*sample(rng)) <= alpha for _ in range(trials))
    rate = rejections / trials
    return rate, math.sqrt(max(rate * (1 - rate), 1e-12) / trials)


def _check(n_reference: int, n_current: int, alpha: float, power: float) -> None:
    if n_reference < 2 or n_current < 2:
        raise ValueError(f"sample sizes must be >= 2, got n_reference={n_reference}, n_current={n_current}")
    check_probability(alpha, "alpha")
    check_probability(power, "power")

"""Paired comparisons of a candidate with a baseline on the same examples."""

from __future__ import annotations

import numpy as np

from harness.stats.core import TestResult, as_sample, check_probability

CHUNK = 256  # bootstrap resamples drawn per vectorised block (bounds memory at CHUNK x n indices)


def paired_bootstrap(
    baseline: np.ndarray,
    candidate: np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> TestResult:
    """Bootstrap of the mean per-example difference ``candidate - baseline`` (e.g. of losses).

    Resamples examples (pairs stay together). ``details`` holds the one-sided percentile bounds
    ``lower`` and ``upper`` at ``confidence``; the p-value is two-sided, ``(k + 1) / (resamples + 1)``
    with k the resampled means on the far side of zero, doubled. The effect size is Cohen's d_z:
    the mean difference over the standard deviation of the differences.
    """
    a = as_sample(baseline, "baseline", min_size=2)
    b = as_sample(candidate, "candidate", min_size=2)
    if a.shape != b.shape:
        raise ValueError(f"baseline and candidate must be paired (same length), got {a.size} and {b.size}")
    check_probability(confidence, "confidence")
    if resamples < 10:
        raise ValueError(f"resamples must be >= 10, got resamples={resamples}")
    differences = b - a  # (n,)
    n = differences.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        rows = rng.integers(0, n, size=(size, n))  # (size, n) example indices
        means[start : start + size] = differences[rows].mean(1)
    mean = float(differences.mean())
    spread = float(differences.std(ddof=1))
    below = int(np.sum(means <= 0.0))
    above = int(np.sum(means >= 0.0))
    p_value = min(1.0, 2.0 * (min(below, above) + 1) / (resamples + 1))
    effect = mean / spread if spread > 0 else (0.0 if mean == 0 else float(np.sign(mean)) * np.inf)
    details = {
        "lower": float(np.quantile(means, 1.0 - confidence)),
        "upper": float(np.quantile(means, confidence)),
        "confidence": confidence,
        "resamples": resamples,
        "sd_difference": spread,
    }
    return TestResult("paired_bootstrap", mean, effect, p_value, n, n, details)


def mcnemar(baseline_correct: np.ndarray, candidate_correct: np.ndarray) -> TestResult:
    """McNemar's exact test for paired accuracy: a binomial test on the discordant pairs.

    b = examples only the baseline gets right, c = only the candidate. The statistic is the
    continuity-corrected chi-square ``(|b - c| - 1)^2 / (b + c)``; the p-value is the exact two-sided
    binomial ``P(Bin(b + c, 1/2) as extreme as b)``; the effect size is the accuracy drop (b - c) / n.
    """
    from scipy import stats

    a = np.asarray(baseline_correct).astype(bool).ravel()
    c_ = np.asarray(candidate_correct).astype(bool).ravel()
    if a.shape != c_.shape or a.size == 0:
        raise ValueError(
            f"baseline_correct and candidate_correct must be paired and non-empty, got {a.size} and {c_.size}"
        )
    only_baseline = int(np.sum(a & ~c_))
    only_candidate = int(np.sum(~a & c_))
    discordant = only_baseline + only_candidate
    if discordant == 0:
        statistic, p_value = 0.0, 1.0
    else:
        statistic = (abs(only_baseline - only_candidate) - 1) ** 2 / discordant
        p_value = float(stats.binomtest(only_baseline, discordant, 0.5).pvalue)
    effect = (only_baseline - only_candidate) / a.size
    details = {"only_baseline": only_baseline, "only_candidate": only_candidate}
    return TestResult("mcnemar", float(statistic), float(effect), p_value, int(a.size), int(c_.size), details)


def paired_drop_lower_bound(mcnemar_result: TestResult, *, confidence: float = 0.95) -> float:
    """One-sided lower confidence bound of the paired accuracy drop ``acc(baseline) - acc(candidate)``.

    The Wald interval for a difference of paired proportions, from the discordant counts of a :func:`mcnemar`
    result: with b, c those counts and n pairs, the drop is (b - c) / n with standard error
    ``sqrt(b + c - (b - c)^2 / n) / n``; the bound is the drop minus z(confidence) standard errors.
    No discordant pair gives a bound of exactly 0.
    """
    from scipy import stats

    check_probability(confidence, "confidence")
    details, n = mcnemar_result.details, mcnemar_result.n_reference
    b, c = details["only_baseline"], details["only_candidate"]
    standard_error = np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return float((b - c) / n - stats.norm.ppf(confidence) * standard_error)

"""Paired comparisons of a candidate with a baseline on the same examples."""

from __future__ import annotations

import numpy as np

from harness.stats.core import TestResult, as_sample, check_probability


def paired_t(baseline: np.ndarray, candidate: np.ndarray, *, confidence: float = 0.95) -> TestResult:
    """Student's t for the mean per-example difference ``candidate - baseline``, with one-sided bounds.

    ``details`` holds the one-sided bounds ``lower`` and ``upper`` at ``confidence``:
    ``mean -/+ t(confidence, n - 1) * sd / sqrt(n)``. They are exact for normal differences at every n >= 2 and,
    by the central limit theorem, approximately right for others, with a one-sided coverage error that
    falls like ``skewness / sqrt(n)``. At small n the t quantile keeps the bounds honest where a normal
    quantile or a percentile bootstrap gives bounds too narrow to trust.
    The p-value is the two-sided paired t-test's; the effect size is Cohen's d_z (mean over the SD of the
    differences).
    """
    from scipy import stats

    a = as_sample(baseline, "baseline", min_size=2)
    b = as_sample(candidate, "candidate", min_size=2)
    if a.shape != b.shape:
        raise ValueError(f"baseline and candidate must be paired (same length), got {a.size} and {b.size}")
    check_probability(confidence, "confidence")
    differences = b - a  # (n,)
    n = differences.size
    mean, spread = float(differences.mean()), float(differences.std(ddof=1))
    half_width = float(stats.t.ppf(confidence, n - 1)) * spread / np.sqrt(n)
    if spread > 0:
        p_value = float(2 * stats.t.sf(abs(mean) / (spread / np.sqrt(n)), n - 1))
        effect = mean / spread
    else:  # every difference equal: no doubt about the mean
        p_value, effect = (1.0, 0.0) if mean == 0 else (0.0, float(np.sign(mean)) * np.inf)
    details = {"lower": float(mean - half_width), "upper": float(mean + half_width), "confidence": confidence,
               "sd_difference": spread, "method": "student_t"}  # fmt: skip
    return TestResult("paired_t", mean, effect, p_value, n, n, details)


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

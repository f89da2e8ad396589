"""Two-sample tests for one categorical feature: chi-square, Jensen-Shannon and PSI.

Inputs are category counts of the reference and current samples over the same categories (build
them with :class:`CategoryCounts`, an update/compute accumulator).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness.stats.core import TestResult, as_counts, as_sample

EPSILON = 1e-6  # floor of a bin's share in PSI, so an empty bin gives a large but finite term


def _pair(reference: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = as_counts(reference, "reference")
    y = as_counts(current, "current")
    if x.shape != y.shape:
        raise ValueError(f"reference and current need the same categories, got {x.size} and {y.size} counts")
    keep = (x + y) > 0  # categories seen in neither sample carry no information
    return x[keep], y[keep]


def chi_square(reference: np.ndarray, current: np.ndarray) -> TestResult:
    """Pearson's chi-square test of homogeneity on the 2 x K table of counts (no continuity correction).

    The effect size is Cohen's w = sqrt(chi2 / N): 0.1 small, 0.3 medium, 0.5 large.
    """
    from scipy import stats

    x, y = _pair(reference, current)
    table = np.stack([x, y])  # (2, K)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()  # (2, K)
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = max(table.shape[1] - 1, 1)
    total = float(table.sum())
    p_value = float(stats.chi2.sf(statistic, dof))
    return TestResult(
        "chi_square", statistic, float(np.sqrt(statistic / total)), p_value, int(x.sum()), int(y.sum()), {"dof": dof}
    )


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> TestResult:
    """Jensen-Shannon distance (base 2, in [0, 1]) between the two category distributions.

    The p-value is the likelihood-ratio (G) test of homogeneity: G = 2 N JS_w, where JS_w is the
    Jensen-Shannon divergence in nats weighted by the sample shares, chi-square with K - 1 degrees of
    freedom. The statistic and effect size are the (equally weighted) distance.
    """
    from scipy import stats

    x, y = _pair(reference, current)
    p, q = x / x.sum(), y / y.sum()
    distance = float(np.sqrt(max(_js_divergence(p, q, 0.5) / np.log(2), 0.0)))
    total = x.sum() + y.sum()
    g_statistic = 2.0 * total * _js_divergence(p, q, x.sum() / total)
    dof = max(len(x) - 1, 1)
    p_value = float(stats.chi2.sf(g_statistic, dof))
    return TestResult(
        "jensen_shannon", distance, distance, p_value, int(x.sum()), int(y.sum()), {"g": g_statistic, "dof": dof}
    )


def _js_divergence(p: np.ndarray, q: np.ndarray, weight: float) -> float:
    """Weighted JS divergence in nats: H(w p + (1-w) q) - w H(p) - (1-w) H(q)."""
    mixture = weight * p + (1 - weight) * q
    return float(weight * _kl(p, mixture) + (1 - weight) * _kl(q, mixture))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def psi(reference: np.ndarray, current: np.ndarray) -> TestResult:
    """Population stability index sum((q - p) ln(q / p)) over category counts (shares floored at 1e-6).

    Rules of thumb: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift. The p-value uses the
    asymptotic null ``PSI * n_r n_c / (n_r + n_c) ~ chi2(K - 1)`` (PSI is the symmetrised KL divergence).
    """
    from scipy import stats

    x, y = _pair(reference, current)
    p = np.clip(x / x.sum(), EPSILON, None)
    q = np.clip(y / y.sum(), EPSILON, None)
    statistic = float(np.sum((q - p) * np.log(q / p)))
    effective = x.sum() * y.sum() / (x.sum() + y.sum())
    p_value = float(stats.chi2.sf(statistic * effective, max(len(x) - 1, 1)))
    return TestResult("psi", statistic, statistic, p_value, int(x.sum()), int(y.sum()))


def psi_continuous(reference: np.ndarray, current: np.ndarray, *, bins: int = 10) -> TestResult:
    """PSI of a continuous feature over ``bins`` quantile bins of the reference."""
    x = as_sample(reference, "reference")
    y = as_sample(current, "current")
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got bins={bins}")
    edges = np.unique(np.quantile(x, np.linspace(0, 1, bins + 1)[1:-1]))
    ref_counts = np.bincount(np.searchsorted(edges, x, side="right"), minlength=len(edges) + 1)
    cur_counts = np.bincount(np.searchsorted(edges, y, side="right"), minlength=len(edges) + 1)
    return psi(ref_counts, cur_counts)


@dataclass
class CategoryCounts:
    """Accumulates counts of integer categories in ``[0, num_categories)`` (update/compute pair)."""

    num_categories: int  # categories are the integers 0..num_categories-1
    counts: np.ndarray = field(init=False)  # (num_categories,) running counts

    def __post_init__(self) -> None:
        if self.num_categories < 2:
            raise ValueError(f"num_categories must be >= 2, got {self.num_categories}")
        self.counts = np.zeros(self.num_categories, dtype=np.int64)

    def update(self, values: np.ndarray) -> None:
        """Add a batch of category ids (any shape)."""
        values = np.asarray(values).ravel().astype(np.int64)
        if values.size and (values.min() < 0 or values.max() >= self.num_categories):
            raise ValueError(f"category ids must be in [0, {self.num_categories}), got {values.min()}..{values.max()}")
        self.counts += np.bincount(values, minlength=self.num_categories)

    def compute(self) -> np.ndarray:
        """The counts so far (a copy)."""
        return self.counts.copy()


def chi_square_permutation(
    reference_rows: np.ndarray, current_rows: np.ndarray, *, permutations: int = 200, seed: int = 0
) -> TestResult:
    """Chi-square homogeneity statistic with a permutation p-value over examples, not over counts.

    Rows are per-example category counts (n, K). Tokens of one text are not independent draws, so
    the asymptotic chi-square p-value of pooled token counts is anti-conservative on real text;
    permuting whole examples between the samples keeps that clustering in the null. p-value:
    ``(k + 1) / (permutations + 1)``. Effect size: Cohen's w of the pooled counts.
    """
    from harness.stats.permutation import permutation_p_value

    x = as_sample(reference_rows, "reference_rows", ndim=2)
    y = as_sample(current_rows, "current_rows", ndim=2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"reference_rows and current_rows need the same categories, got {x.shape[1]} and {y.shape[1]}")
    observed = chi_square(x.sum(0), y.sum(0))
    pooled = np.concatenate([x, y])  # (N, K)
    total = pooled.sum(0)  # (K,)
    rng = np.random.default_rng(seed)
    null = np.empty(permutations)
    for i in range(permutations):
        first = pooled[rng.permutation(len(pooled))[: len(x)]].sum(0)  # (K,)
        null[i] = _chi_square_statistic(first, total - first)
    p_value = permutation_p_value(observed.statistic, null)
    details = {**observed.details, "permutations": permutations, "examples": [len(x), len(y)]}
    return TestResult(
        "chi_square_permutation", observed.statistic, observed.effect_size, p_value,
        observed.n_reference, observed.n_current, details,
    )  # fmt: skip


def _chi_square_statistic(x: np.ndarray, y: np.ndarray) -> float:
    table = np.stack([x, y])[:, (x + y) > 0]  # (2, K')
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return float(np.sum((table - expected) ** 2 / np.maximum(expected, 1e-300)))

"""Drift and regression statistics as pure functions (update/compute accumulators where they accumulate).

Every test returns a frozen :class:`TestResult`: the statistic, an effect size, the p-value and the
sample sizes. Continuous: :func:`ks_test`, :func:`wasserstein`. Categorical: :func:`chi_square`,
:func:`jensen_shannon`, :func:`psi`. Multivariate: :func:`hotelling_t2`, :func:`mmd_rbf`. Paired:
:func:`paired_t`, :func:`mcnemar`. Corrections: :func:`benjamini_hochberg`, :func:`holm`.
Power: the ``mde_*`` functions and :func:`simulated_power`.
"""

from harness.stats.categorical import (
    CategoryCounts,
    chi_square,
    chi_square_permutation,
    jensen_shannon,
    psi,
    psi_continuous,
)
from harness.stats.continuous import ks_test, wasserstein, wasserstein_distance
from harness.stats.core import TestResult
from harness.stats.multiple import CORRECTIONS, benjamini_hochberg, holm
from harness.stats.multivariate import MeanCovariance, hotelling_t2, median_bandwidth, mmd_rbf, pca_project
from harness.stats.paired import mcnemar, paired_t
from harness.stats.permutation import permutation_p_value, permutations_for
from harness.stats.power import (
    hotelling_power,
    mde_chi_square,
    mde_hotelling,
    mde_ks,
    mde_mean_shift,
    mde_mmd,
    mde_paired_mean,
    sample_size_for,
    simulated_power,
)

__all__ = [
    "CORRECTIONS",
    "CategoryCounts",
    "MeanCovariance",
    "TestResult",
    "benjamini_hochberg",
    "chi_square",
    "chi_square_permutation",
    "holm",
    "hotelling_power",
    "hotelling_t2",
    "jensen_shannon",
    "ks_test",
    "mcnemar",
    "mde_chi_square",
    "mde_hotelling",
    "mde_ks",
    "mde_mean_shift",
    "mde_mmd",
    "mde_paired_mean",
    "median_bandwidth",
    "mmd_rbf",
    "paired_t",
    "pca_project",
    "permutation_p_value",
    "permutations_for",
    "psi",
    "psi_continuous",
    "sample_size_for",
    "simulated_power",
    "wasserstein",
    "wasserstein_distance",
]

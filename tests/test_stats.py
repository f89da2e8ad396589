"""Every statistic against scipy or a brute-force computation; calibration with generous bounds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats as sp

from harness import stats


def samples(seed: int, n: int = 60, m: int = 80, shift: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.normal(shift, 1.0, size=m)


def test_ks_matches_scipy():
    x, y = samples(0)
    result = stats.ks_test(x, y)
    reference = sp.ks_2samp(x, y)
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert (result.n_reference, result.n_current) == (60, 80)


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=30), st.lists(st.floats(-100, 100), min_size=1, max_size=30))
def test_wasserstein_distance_matches_scipy(x, y):
    assert stats.wasserstein_distance(np.array(x), np.array(y)) == pytest.approx(
        sp.wasserstein_distance(x, y), rel=1e-9, abs=1e-9
    )


def test_wasserstein_permutation_p_value_is_brute_force():
    x, y = samples(1, 20, 25)
    result = stats.wasserstein(x, y, permutations=99, seed=3)
    rng = np.random.default_rng(3)
    pooled = np.concatenate([x, y])
    null = [sp.wasserstein_distance(*np.split(rng.permutation(pooled), [20])) for _ in range(99)]
    k = sum(v >= result.statistic - 1e-12 for v in null)
    assert result.p_value == pytest.approx((k + 1) / 100)
    assert result.effect_size == pytest.approx(result.statistic / pooled.std())


def test_chi_square_matches_scipy():
    x, y = np.array([30, 20, 10, 5]), np.array([20, 25, 15, 0])
    result = stats.chi_square(x, y)
    chi2, p, dof, _ = sp.chi2_contingency(np.stack([x, y]), correction=False)
    assert result.statistic == pytest.approx(chi2)
    assert result.p_value == pytest.approx(p)
    assert result.effect_size == pytest.approx(np.sqrt(chi2 / (x.sum() + y.sum())))


def test_jensen_shannon_matches_scipy_and_g_test():
    x, y = np.array([30, 20, 10, 5]), np.array([20, 25, 15, 3])
    result = stats.jensen_shannon(x, y)
    assert result.statistic == pytest.approx(
        __import__("scipy.spatial.distance", fromlist=["jensenshannon"]).jensenshannon(x / x.sum(), y / y.sum(), base=2)
    )
    g, p, _, _ = sp.chi2_contingency(np.stack([x, y]), correction=False, lambda_="log-likelihood")
    assert result.details["g"] == pytest.approx(g)
    assert result.p_value == pytest.approx(p)


def test_psi_brute_force():
    x, y = np.array([50, 30, 20]), np.array([40, 30, 30])
    p, q = x / x.sum(), y / y.sum()
    assert stats.psi(x, y).statistic == pytest.approx(sum((b - a) * np.log(b / a) for a, b in zip(p, q, strict=True)))
    assert stats.psi(x, x).statistic == 0.0


def test_psi_continuous_is_zero_for_identical_samples_and_grows_with_shift():
    x, _ = samples(2, 500, 1)
    assert stats.psi_continuous(x, x).statistic == pytest.approx(0.0)
    assert stats.psi_continuous(x, x + 1.0).statistic > 0.25


def test_category_counts_accumulates():
    counts = stats.CategoryCounts(4)
    counts.update([0, 1, 1])
    counts.update(np.array([[3, 3], [1, 0]]))
    assert counts.compute().tolist() == [2, 3, 0, 2]
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        counts.update([4])


def test_chi_square_permutation_brute_force():
    rng = np.random.default_rng(4)
    x, y = rng.poisson(3, size=(12, 3)).astype(float), rng.poisson(3, size=(10, 3)).astype(float)
    result = stats.chi_square_permutation(x, y, permutations=50, seed=7)
    assert result.statistic == pytest.approx(stats.chi_square(x.sum(0), y.sum(0)).statistic)
    rng = np.random.default_rng(7)
    pooled = np.concatenate([x, y])
    null = []
    for _ in range(50):
        order = rng.permutation(22)
        null.append(stats.chi_square(pooled[order[:12]].sum(0), pooled[order[12:]].sum(0)).statistic)
    assert result.p_value == pytest.approx((sum(v >= result.statistic - 1e-9 for v in null) + 1) / 51)


def _mmd2_unbiased(a: np.ndarray, b: np.ndarray, bandwidth: float) -> float:
    def k(p, q):
        return np.exp(-np.sum((p - q) ** 2) / (2 * bandwidth**2))

    def within(rows):
        return np.mean([k(p, q) for (i, p), (j, q) in itertools.product(enumerate(rows), enumerate(rows)) if i != j])

    return within(a) + within(b) - 2 * np.mean([k(p, q) for p, q in itertools.product(a, b)])


def test_mmd_is_the_unbiased_u_statistic_with_a_brute_force_permutation_p_value():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1, size=(6, 3))
    result = stats.mmd_rbf(x, y, permutations=30, bandwidth=1.3, seed=2)
    assert result.statistic == pytest.approx(_mmd2_unbiased(x, y, 1.3))
    rng = np.random.default_rng(2)
    pooled = np.concatenate([x, y])
    first = np.arange(13) < 7
    null = []
    for _ in range(30):
        order = rng.permutation(first)  # the permuted sample labels
        null.append(_mmd2_unbiased(pooled[order], pooled[~order], 1.3))
    assert result.p_value == pytest.approx((sum(v >= result.statistic - 1e-12 for v in null) + 1) / 31)
    assert result.details["null_sd"] == pytest.approx(np.std(null, ddof=1))


def test_mmd_has_no_upward_bias_on_small_samples():
    """The V-statistic's diagonal made 50-vs-50 samples of one distribution look drifted; the U-statistic's mean
    over 200 such pairs is 0 within 3 standard errors."""
    rng = np.random.default_rng(8)
    values = [stats.mmd_rbf(rng.normal(size=(50, 16)), rng.normal(size=(50, 16)), permutations=2).statistic
              for _ in range(200)]  # fmt: skip
    assert abs(np.mean(values)) <= 3 * np.std(values) / np.sqrt(200), np.mean(values)


def test_mde_mmd_is_close_to_simulated_power():
    """A mean shift whose population MMD equals the MDE at 100 vs 100 is detected about 80% of the time."""
    rng = np.random.default_rng(9)
    null_sd = np.mean([stats.mmd_rbf(rng.normal(size=(100, 4)), rng.normal(size=(100, 4)), permutations=200,
                                     bandwidth=2.8).details["null_sd"] for _ in range(10)])  # fmt: skip
    mde = stats.mde_mmd(null_sd, alpha=0.05, power=0.8)

    def population_mmd(shift):  # a large-sample estimate of the population MMD of N(0, I) vs N(shift e1, I)
        big = np.random.default_rng(1)
        return stats.mmd_rbf(big.normal(size=(1500, 4)), big.normal(size=(1500, 4)) + [shift, 0, 0, 0],
                             permutations=2, bandwidth=2.8).effect_size  # fmt: skip

    from scipy import optimize

    shift = optimize.brentq(lambda s: population_mmd(s) - mde, 0.05, 2.0, xtol=1e-3)
    power, _ = stats.simulated_power(
        lambda x, y: stats.mmd_rbf(x, y, permutations=100, bandwidth=2.8).p_value,
        lambda r: (r.normal(size=(100, 4)), r.normal(size=(100, 4)) + [shift, 0, 0, 0]),
        trials=100,
    )
    print(f"MMD at its MDE {mde:.4f} (shift {shift:.3f} SD): simulated power {power:.2f}")
    assert abs(power - 0.8) < 0.15, (power, shift, mde)


def test_permutations_for_lets_the_smallest_p_value_survive_the_correction():
    for tests, alpha in ((1, 0.05), (7, 0.01), (40, 0.001)):
        permutations = stats.permutations_for(tests, alpha)
        smallest = 1 / (permutations + 1)
        assert stats.holm(np.array([smallest] + [1.0] * (tests - 1)))[0] <= alpha / 2
        assert stats.benjamini_hochberg(np.array([smallest] + [1.0] * (tests - 1)))[0] <= alpha / 2
        assert tests / (permutations + 0) > alpha / 2  # one fewer would not do
    assert stats.permutations_for(2, 0.05, at_least=500) == 500


def test_sample_size_for_is_the_smallest_size_reaching_the_effect():
    def mde(n):
        return stats.mde_mean_shift(n, n, alpha=0.05)

    needed = stats.sample_size_for(mde, 0.25)
    assert mde(needed) <= 0.25 < mde(needed - 1)
    assert stats.sample_size_for(mde, 10.0, start=7) == 7
    assert stats.sample_size_for(lambda n: 1.0, 0.5, limit=1000) is None


def test_median_bandwidth_brute_force():
    rows = np.random.default_rng(6).normal(size=(9, 2))
    distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(rows, 2)]
    assert stats.median_bandwidth(rows) == pytest.approx(np.median(distances))


def test_hotelling_brute_force():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(30, 4)), rng.normal(0.4, 1, size=(25, 4))
    result = stats.hotelling_t2(x, y)
    pooled = ((len(x) - 1) * np.cov(x.T) + (len(y) - 1) * np.cov(y.T)) / (len(x) + len(y) - 2)
    d = x.mean(0) - y.mean(0)
    t2 = 30 * 25 / 55 * d @ np.linalg.inv(pooled) @ d
    f = (55 - 4 - 1) / (4 * 53) * t2
    assert result.statistic == pytest.approx(t2)
    assert result.p_value == pytest.approx(sp.f.sf(f, 4, 50))


def test_mean_covariance_merges_batches():
    rows = np.random.default_rng(9).normal(size=(50, 3))
    accumulator = stats.MeanCovariance(3)
    for chunk in np.array_split(rows, 4):
        accumulator.update(chunk)
    n, mean, scatter = accumulator.compute()
    assert n == 50
    np.testing.assert_allclose(mean, rows.mean(0))
    np.testing.assert_allclose(scatter / 49, np.cov(rows.T))


@given(st.lists(st.floats(0, 1), min_size=1, max_size=40))
def test_benjamini_hochberg_matches_scipy(p_values):
    np.testing.assert_allclose(
        stats.benjamini_hochberg(np.array(p_values)), sp.false_discovery_control(p_values, method="bh"), atol=1e-12
    )


@given(st.lists(st.floats(0, 1), min_size=1, max_size=12))
def test_holm_brute_force(p_values):
    p = np.array(p_values)
    m = p.size
    order = np.argsort(p)
    expected = np.empty(m)
    for rank, i in enumerate(order):
        expected[i] = min(1.0, max((m - r) * p[order[r]] for r in range(rank + 1)))
    np.testing.assert_allclose(stats.holm(p), expected, atol=1e-12)


def test_paired_t_matches_scipy():
    rng = np.random.default_rng(10)
    a = rng.normal(size=40)
    b = a + rng.normal(0.2, 0.5, size=40)
    result = stats.paired_t(a, b, confidence=0.9)
    d = b - a
    low, high = sp.t.interval(0.8, 39, loc=d.mean(), scale=sp.sem(d))  # two-sided 80% = one-sided 90% bounds
    assert result.statistic == pytest.approx(d.mean())
    assert result.details["lower"] == pytest.approx(low) and result.details["upper"] == pytest.approx(high)
    assert result.p_value == pytest.approx(sp.ttest_rel(b, a).pvalue)
    assert result.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    same = stats.paired_t(a, a + 0.3)  # every difference equal: the bounds close on the mean
    assert same.details["lower"] == pytest.approx(0.3) and same.p_value == 0.0


def test_mcnemar_brute_force():
    baseline = np.array([1] * 30 + [0] * 10 + [1] * 8 + [0] * 2)
    candidate = np.array([1] * 30 + [0] * 10 + [0] * 8 + [1] * 2)
    result = stats.mcnemar(baseline, candidate)
    from math import comb

    tail = sum(comb(10, k) for k in range(0, 3)) / 2**10
    assert result.p_value == pytest.approx(min(1.0, 2 * tail))
    assert result.effect_size == pytest.approx(6 / 50)
    assert result.details == {"only_baseline": 8, "only_candidate": 2}


def test_mde_closed_forms_match_power():
    mde = stats.mde_hotelling(500, 500, 32, alpha=0.05, power=0.8)
    assert stats.hotelling_power(500, 500, 32, mde) == pytest.approx(0.8, abs=1e-6)
    w = stats.mde_chi_square(300, 300, 4)
    assert sp.ncx2.sf(sp.chi2.isf(0.05, 4), 4, 600 * w**2) == pytest.approx(0.8, abs=1e-6)
    assert stats.mde_mean_shift(100, 100) == pytest.approx((1.959964 + 0.841621) * np.sqrt(0.02), rel=1e-5)


def test_mde_ks_is_close_to_simulated_power():
    mde = stats.mde_ks(100, 100, alpha=0.05)
    power, error = stats.simulated_power(
        lambda x, y: stats.ks_test(x, y).p_value,
        lambda rng: (rng.normal(size=100), rng.normal(mde, 1, size=100)),
        trials=200,
    )
    assert abs(power - 0.8) < 0.12, (power, error)


@pytest.mark.parametrize(
    "name, test",
    [
        ("ks", lambda x, y: stats.ks_test(x, y).p_value),
        ("hotelling", lambda x, y: stats.hotelling_t2(x, y).p_value),
        ("mmd", lambda x, y: stats.mmd_rbf(x, y, permutations=50).p_value),
    ],
)
def test_false_alarm_rate_is_calibrated(name, test):
    """On 200 reference-vs-reference splits the false-alarm rate is <= 5% + 3 standard errors."""
    dims = 1 if name == "ks" else 8
    rate, _ = stats.simulated_power(
        lambda x, y: test(x.squeeze(-1) if dims == 1 else x, y.squeeze(-1) if dims == 1 else y),
        lambda rng: tuple(np.split(rng.normal(size=(120, dims)), 2)),
        trials=200,
    )
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200), (name, rate)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="non-finite"):
        stats.ks_test([1.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="same categories"):
        stats.chi_square([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="confidence"):
        stats.paired_t([1.0, 2.0], [1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="dim"):
        stats.hotelling_t2(np.zeros((2, 5)), np.zeros((2, 5)))


def test_paired_drop_lower_bound_is_the_wald_bound_of_the_per_example_differences():
    baseline = np.array([1] * 30 + [0] * 10 + [1] * 8 + [0] * 2)
    candidate = np.array([1] * 30 + [0] * 10 + [0] * 8 + [1] * 2)
    differences = baseline - candidate  # the paired drop of each example: -1, 0 or 1
    expected = differences.mean() - sp.norm.ppf(0.95) * differences.std(ddof=0) / np.sqrt(differences.size)
    result = stats.mcnemar(baseline, candidate)
    assert stats.paired.paired_drop_lower_bound(result) == pytest.approx(expected)
    assert stats.paired.paired_drop_lower_bound(result, confidence=0.99) < stats.paired.paired_drop_lower_bound(result)
    assert stats.paired.paired_drop_lower_bound(stats.mcnemar(baseline, baseline)) == 0.0

"""Drift: a current profile against a reference, feature by feature, corrected across features.

Per feature (see ``harness.monitoring.profile``): continuous -> KS test, effect W1 / pooled SD, MDE of
KS for a location shift; tokens -> chi-square over the reference's top categories with a permutation
p-value over examples, effect Cohen's w; embedding -> Hotelling T^2 on pooled principal axes (effect
the bias-corrected Mahalanobis distance) and MMD with an RBF kernel (effect the unbiased MMD, MDE from its
permutation null). A permutation test whose p-value could matter (at most ``alpha_warn``) is rerun with as
many permutations as the correction across all tests needs (:func:`harness.stats.permutations_for`), so
the p-value's resolution never keeps a drift from ``fail``.

Verdict per feature after the correction: ``fail`` (corrected p <= alpha_fail and effect >= the effect
that matters), ``warn`` (corrected p <= alpha_warn), ``inconclusive`` (not significant, and the MDE
exceeds the effect that matters; ``n_needed`` is the sample per profile that would have been enough), else
``ok``. The overall verdict is the worst: fail > warn > inconclusive > ok.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness import stats
from harness.monitoring.config import MonitorConfig
from harness.result import json_safe

VERDICTS = ("ok", "inconclusive", "warn", "fail")  # in increasing severity


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's test: the numbers and the verdict after the multiple-testing correction."""

    feature: str  # profile feature, e.g. "output_entropy"
    test: str  # statistical test used
    statistic: float
    effect_size: float  # in the unit of ``min_effect``
    min_effect: float  # the effect that matters (from MonitorConfig)
    mde: float  # minimum detectable effect at this sample size, alpha_fail and power
    p_value: float
    adjusted_p: float  # after the correction across features
    n_reference: int
    n_current: int
    verdict: str  # ok / warn / fail / inconclusive
    n_needed: int | None = None  # inconclusive: examples per profile whose MDE reaches min_effect
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftReport:
    """Every feature's drift and the overall verdict."""

    verdict: str  # the worst feature verdict
    features: tuple[FeatureDrift, ...]
    config: MonitorConfig
    embedding: str | None  # the profiles' embedding source ("minilm", "model"), None when they have none

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return json_safe({"kind": "drift", "verdict": self.verdict, "embedding": self.embedding,
                          "features": [asdict(f) for f in self.features], "config": asdict(self.config)})  # fmt: skip


def compare_profiles(
    reference: dict[str, Any], current: dict[str, Any], config: MonitorConfig | None = None
) -> DriftReport:
    """Compare every feature present in both profiles; see the module docstring for the rules."""
    config = config or MonitorConfig()
    embedding = embedding_source(reference)
    if embedding != embedding_source(current):
        raise ValueError(
            f"the reference profile's embedding is {embedding!r} but the current one's is "
            f"{embedding_source(current)!r}: profile both with the same embedding"
        )
    shared = [name for name in reference["features"] if name in current["features"]]
    if not shared:
        raise ValueError("the reference and current profiles share no feature")
    for name in shared:
        if reference["features"][name]["kind"] != current["features"][name]["kind"]:
            raise ValueError(f"feature {name!r} is {reference['features'][name]['kind']} in the reference but "
                             f"{current['features'][name]['kind']} now")  # fmt: skip
    tests = sum(2 if reference["features"][name]["kind"] == "embedding" else 1 for name in shared)
    rows = [row for name in shared for row in _tests(name, reference["features"][name],
                                                     current["features"][name], config, tests)]  # fmt: skip
    adjusted = stats.CORRECTIONS[config.correction](np.array([row.result.p_value for row in rows]))
    features = tuple(_verdict(row, float(p), config) for row, p in zip(rows, adjusted, strict=True))
    worst = max((f.verdict for f in features), key=VERDICTS.index)
    return DriftReport(worst, features, config, embedding)


def embedding_source(profile: dict[str, Any]) -> str | None:
    """Which embedding a profile holds: its ``embedding`` feature's source, None without one."""
    feature = profile["features"].get("embedding")
    return None if feature is None else feature.get("source", "model")


@dataclass(frozen=True)
class _Row:
    """One test of a feature before the correction: its result, the effect that matters, its MDE at the
    observed sizes and its MDE at n examples per profile (for ``n_needed``)."""

    feature: str
    result: stats.TestResult  # effect size in the unit of min_effect
    min_effect: float
    mde: float
    mde_at: Callable[[int], float]


def _tests(name: str, ref: dict[str, Any], cur: dict[str, Any], config: MonitorConfig, tests: int) -> list[_Row]:
    """The rows of one feature; ``tests`` is the number of tests the correction runs across."""
    from dataclasses import replace

    alpha, power = config.alpha_fail, config.power
    kind = ref["kind"]
    if kind == "continuous":
        x, y = np.asarray(ref["values"], float), np.asarray(cur["values"], float)
        ks = stats.ks_test(x, y)
        scale = float(np.concatenate([x, y]).std()) or 1.0
        shift = stats.wasserstein_distance(x, y) / scale
        details = {"ks_d": ks.statistic, "mean_shift_sd": float((y.mean() - x.mean()) / scale)}

        def mde_ks(n: int) -> float:
            return stats.mde_ks(n, n, alpha=alpha, power=power)

        mde = stats.mde_ks(len(x), len(y), alpha=alpha, power=power)
        return [_Row(name, replace(ks, effect_size=shift, details=details), config.min_shift_sd, mde, mde_ks)]
    if kind == "tokens":
        ref_rows, cur_rows = _category_rows(ref["rows"], cur["rows"], config.max_categories)
        result = _permuted(lambda p: stats.chi_square_permutation(ref_rows, cur_rows, permutations=p,
                                                                  seed=config.seed), config, tests)  # fmt: skip
        js = stats.jensen_shannon(ref_rows.sum(0), cur_rows.sum(0))
        population = stats.psi(ref_rows.sum(0), cur_rows.sum(0))
        details = {**result.details, "jensen_shannon": js.statistic, "psi": population.statistic}
        dof = int(result.details["dof"])
        per_example = (result.n_reference + result.n_current) / (len(ref_rows) + len(cur_rows))  # tokens

        def mde_chi(n: int) -> float:
            return stats.mde_chi_square(max(2, round(n * per_example)), max(2, round(n * per_example)), dof,
                                        alpha=alpha, power=power)  # fmt: skip

        mde = stats.mde_chi_square(result.n_reference, result.n_current, dof, alpha=alpha, power=power)
        return [_Row(name, replace(result, details=details), config.min_cohens_w, mde, mde_chi)]
    if kind == "embedding":
        x, y = np.asarray(ref["values"], float), np.asarray(cur["values"], float)
        dims = min(config.max_embedding_dims, x.shape[1], max(1, (len(x) + len(y)) // 10))
        px, py = stats.pca_project(x, y, dims)
        hotelling = stats.hotelling_t2(px, py)
        dims = px.shape[1]

        def mde_hotelling(n: int) -> float:
            return stats.mde_hotelling(n, n, dims, alpha=alpha, power=power)

        unbiased = hotelling.details["mahalanobis_unbiased"]
        hotelling = replace(hotelling, effect_size=unbiased, details={**hotelling.details, "dims": int(dims)})
        mmd = _permuted(lambda p: stats.mmd_rbf(x, y, permutations=p, seed=config.seed), config, tests)
        mde_mmd = stats.mde_mmd(mmd.details["null_sd"], alpha=alpha, power=power)
        harmonic = 2.0 / (1.0 / len(x) + 1.0 / len(y))  # MMD's MDE falls like 1 / sqrt(n)
        return [
            _Row(name, hotelling, config.min_mahalanobis,
                 stats.mde_hotelling(len(x), len(y), dims, alpha=alpha, power=power), mde_hotelling),
            _Row(f"{name}_distribution", mmd, config.min_mmd, mde_mmd,
                 lambda n: mde_mmd * float(np.sqrt(harmonic / n))),
        ]  # fmt: skip
    raise ValueError(f"feature {name!r} has unknown kind {kind!r}")


def _permuted(run: Callable[[int], stats.TestResult], config: MonitorConfig, tests: int) -> stats.TestResult:
    """A permutation test run with ``config.permutations``, and again with enough for the correction across
    ``tests`` tests when its p-value could matter (at most ``alpha_warn``)."""
    result = run(config.permutations)
    enough = stats.permutations_for(tests, config.alpha_fail, at_least=config.permutations)
    if result.p_value <= config.alpha_warn and enough > config.permutations:
        result = run(enough)
    return result


def _category_rows(
    ref_rows: list[list[int]], cur_rows: list[list[int]], max_categories: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example counts (n, K + 1) over the reference's ``max_categories`` most frequent ids + other."""
    ids, counts = np.unique(np.concatenate([np.asarray(r, dtype=np.int64) for r in ref_rows] + [np.zeros(0, np.int64)]),
                            return_counts=True)  # fmt: skip
    top = ids[np.argsort(-counts, kind="stable")[:max_categories]]
    lookup = {int(token): column for column, token in enumerate(top)}

    def table(rows: list[list[int]]) -> np.ndarray:
        out = np.zeros((len(rows), len(top) + 1))
        for i, row in enumerate(rows):
            for token in row:
                out[i, lookup.get(int(token), len(top))] += 1
        return out

    return table(ref_rows), table(cur_rows)


def _verdict(row: _Row, adjusted: float, config: MonitorConfig) -> FeatureDrift:
    result, min_effect, mde = row.result, row.min_effect, row.mde
    needed = None
    if adjusted <= config.alpha_fail and result.effect_size >= min_effect:
        verdict = "fail"
    elif adjusted <= config.alpha_warn:
        verdict = "warn"
    elif mde > min_effect:
        verdict = "inconclusive"
        needed = stats.sample_size_for(row.mde_at, min_effect)
    else:
        verdict = "ok"
    return FeatureDrift(
        feature=row.feature, test=result.test, statistic=float(result.statistic),
        effect_size=float(result.effect_size), min_effect=min_effect, mde=float(mde), p_value=float(result.p_value),
        adjusted_p=adjusted, n_reference=result.n_reference, n_current=result.n_current, verdict=verdict,
        n_needed=needed, details=result.details,
    )  # fmt: skip

"""Drift: a current profile against a reference, feature by feature, corrected across features.

Per feature (see ``harness.monitoring.profile``): continuous -> KS test, effect W1 / pooled SD, MDE of
KS for a location shift; tokens -> chi-square over the reference's top categories with a permutation
p-value over examples, effect Cohen's w; embedding -> Hotelling T^2 on pooled principal axes (effect
the bias-corrected Mahalanobis distance) and MMD with an RBF kernel (effect MMD). Verdict per feature after the
correction: ``fail`` (corrected p <= alpha_fail and effect >= the effect that matters), ``warn``
(corrected p <= alpha_warn), ``inconclusive`` (not significant, and the MDE exceeds the effect that
matters), else ``ok``. The overall verdict is the worst: fail > warn > inconclusive > ok.
"""

from __future__ import annotations

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
    mde: float | None  # minimum detectable effect at this sample size and power (None: no closed form)
    p_value: float
    adjusted_p: float  # after the correction across features
    n_reference: int
    n_current: int
    verdict: str  # ok / warn / fail / inconclusive
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftReport:
    """Every feature's drift and the overall verdict."""

    verdict: str  # the worst feature verdict
    features: tuple[FeatureDrift, ...]
    config: MonitorConfig

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return json_safe({"kind": "drift", "verdict": self.verdict, "features": [asdict(f) for f in self.features],
                           "config": asdict(self.config)})  # fmt: skip


def compare_profiles(
    reference: dict[str, Any], current: dict[str, Any], config: MonitorConfig | None = None
) -> DriftReport:
    """Compare every feature present in both profiles; see the module docstring for the rules."""
    config = config or MonitorConfig()
    shared = [name for name in reference["features"] if name in current["features"]]
    if not shared:
        raise ValueError("the reference and current profiles share no feature")
    raw = []
    for name in shared:
        ref, cur = reference["features"][name], current["features"][name]
        if ref["kind"] != cur["kind"]:
            raise ValueError(f"feature {name!r} is {ref['kind']} in the reference but {cur['kind']} now")
        raw.extend(_tests(name, ref, cur, config))
    adjusted = stats.CORRECTIONS[config.correction](np.array([row[1].p_value for row in raw]))
    features = tuple(
        _verdict(name, result, min_effect, mde, float(p), config)
        for (name, result, min_effect, mde), p in zip(raw, adjusted, strict=True)
    )
    worst = max((f.verdict for f in features), key=VERDICTS.index)
    return DriftReport(worst, features, config)


def _tests(name: str, ref: dict[str, Any], cur: dict[str, Any], config: MonitorConfig) -> list[tuple]:
    """``(feature, TestResult with effect in the unit of min_effect, min_effect, mde)`` rows."""
    from dataclasses import replace

    kind = ref["kind"]
    if kind == "continuous":
        x, y = np.asarray(ref["values"], float), np.asarray(cur["values"], float)
        ks = stats.ks_test(x, y)
        scale = float(np.concatenate([x, y]).std()) or 1.0
        shift = stats.wasserstein_distance(x, y) / scale
        details = {"ks_d": ks.statistic, "mean_shift_sd": float((y.mean() - x.mean()) / scale)}
        mde = stats.mde_ks(len(x), len(y), alpha=config.alpha_fail, power=config.power)
        return [(name, replace(ks, effect_size=shift, details=details), config.min_shift_sd, mde)]
    if kind == "tokens":
        ref_rows, cur_rows = _category_rows(ref["rows"], cur["rows"], config.max_categories)
        result = stats.chi_square_permutation(ref_rows, cur_rows, permutations=config.permutations, seed=config.seed)
        js = stats.jensen_shannon(ref_rows.sum(0), cur_rows.sum(0))
        population = stats.psi(ref_rows.sum(0), cur_rows.sum(0))
        details = {**result.details, "jensen_shannon": js.statistic, "psi": population.statistic}
        dof = int(result.details["dof"])
        mde = stats.mde_chi_square(
            result.n_reference, result.n_current, dof, alpha=config.alpha_fail, power=config.power
        )
        return [(name, replace(result, details=details), config.min_cohens_w, mde)]
    if kind == "embedding":
        x, y = np.asarray(ref["values"], float), np.asarray(cur["values"], float)
        dims = min(config.max_embedding_dims, x.shape[1], max(1, (len(x) + len(y)) // 10))
        px, py = stats.pca_project(x, y, dims)
        hotelling = stats.hotelling_t2(px, py)
        mde = stats.mde_hotelling(len(x), len(y), px.shape[1], alpha=config.alpha_fail, power=config.power)
        unbiased = hotelling.details["mahalanobis_unbiased"]
        hotelling = replace(hotelling, effect_size=unbiased, details={**hotelling.details, "dims": int(px.shape[1])})
        mmd = stats.mmd_rbf(x, y, permutations=config.permutations, seed=config.seed)
        return [
            (name, hotelling, config.min_mahalanobis, mde),
            (f"{name}_distribution", mmd, config.min_mmd, None),
        ]
    raise ValueError(f"feature {name!r} has unknown kind {kind!r}")


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


def _verdict(name: str, result: stats.TestResult, min_effect: float, mde: float | None, adjusted: float,
             config: MonitorConfig) -> FeatureDrift:  # fmt: skip
    if adjusted <= config.alpha_fail and result.effect_size >= min_effect:
        verdict = "fail"
    elif adjusted <= config.alpha_warn:
        verdict = "warn"
    elif mde is not None and mde > min_effect:
        verdict = "inconclusive"
    else:
        verdict = "ok"
    return FeatureDrift(
        feature=name, test=result.test, statistic=float(result.statistic), effect_size=float(result.effect_size),
        min_effect=min_effect, mde=mde, p_value=float(result.p_value), adjusted_p=adjusted,
        n_reference=result.n_reference, n_current=result.n_current, verdict=verdict, details=result.details,
    )  # fmt: skip

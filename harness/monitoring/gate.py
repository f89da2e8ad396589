"""The regression gate: a candidate against a baseline on the same eval set, non-inferiority style.

The degradation is the per-example difference ``candidate loss - baseline loss`` (per-example mean
NLL per token, or cross-entropy for classifiers). Its one-sided confidence bounds L and U at ``confidence``
are Student's t bounds of the mean difference (:func:`harness.stats.paired_t`): exact for normal
differences at any size and, for the skewed differences of real losses, trusted from ``min_examples``
examples on (the coverage measured on real per-example losses is in the notes of issue 21). Verdicts, with
margin M:

- ``inconclusive``: fewer than ``min_examples`` examples (the bound's method is not trusted there), or
  U > M and the sample's MDE exceeds M while L <= M; ``n_needed`` says how many examples would have been
  enough
- ``fail``: L > M (worse than the margin, at any size from ``min_examples`` on), or U > M and the sample
  could have shown non-inferiority (MDE <= M)
- ``ok``: U <= M (non-inferiority shown); ``warn`` if also L > 0 (worse, within margin)

A moved point estimate alone never fails the gate.

The baseline can be a stored file (``save_baseline`` / ``load_baseline``): the baseline model's
evaluation with its per-example values and the eval set it was computed on, the artifact a CI job keeps
from the main branch so that a pull request's candidate is gated against main's model, not against a
second copy of itself.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from harness import stats
from harness.evaluation import Evaluation
from harness.io import atomic_write_text, read_json_file
from harness.monitoring.config import MonitorConfig
from harness.result import json_safe

BASELINE_SCHEMA = 1  # version of the stored baseline file layout


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict and the numbers behind it."""

    verdict: str  # ok / warn / fail / inconclusive
    degradation: float  # mean per-example (candidate - baseline) loss
    lower: float  # one-sided lower confidence bound of the degradation
    upper: float  # one-sided upper confidence bound of the degradation
    margin: float  # the non-inferiority margin
    mde: float  # minimum detectable degradation at this sample size (one-sided, at config.power)
    p_value: float  # two-sided paired t-test p-value of "no difference"
    effect_size: float  # Cohen's d_z of the differences
    n_examples: int
    n_needed: int | None  # examples that would have been enough to tell (MDE <= margin, at least min_examples)
    details: dict[str, Any] = field(default_factory=dict)  # bound method, n_needed, baseline/candidate metrics, McNemar

    def to_dict(self) -> dict[str, Any]:
        return json_safe({"kind": "gate", **asdict(self)})


def regression_gate(baseline: Evaluation, candidate: Evaluation, config: MonitorConfig | None = None) -> GateResult:
    """Gate ``candidate`` against ``baseline`` (both evaluated on the same examples)."""
    config = config or MonitorConfig()
    if baseline.data_hash != candidate.data_hash:
        raise ValueError(
            f"baseline ({baseline.n_examples} examples, {baseline.n_tokens} tokens) and candidate "
            f"({candidate.n_examples} examples, {candidate.n_tokens} tokens) were not evaluated on the same eval set"
        )
    return gate_losses(
        np.asarray(baseline.example_loss), np.asarray(candidate.example_loss), config,
        details={"baseline": baseline.to_dict(), "candidate": candidate.to_dict()},
        correct=(np.asarray(baseline.example_correct), np.asarray(candidate.example_correct)),
    )  # fmt: skip


def gate_losses(
    baseline: np.ndarray,
    candidate: np.ndarray,
    config: MonitorConfig | None = None,
    *,
    details: dict[str, Any] | None = None,
    correct: tuple[np.ndarray, np.ndarray] | None = None,
) -> GateResult:
    """The gate on paired per-example losses (lower is better)."""
    config = config or MonitorConfig()
    result = stats.paired_t(baseline, candidate, confidence=config.confidence)
    lower, upper, spread = result.details["lower"], result.details["upper"], result.details["sd_difference"]
    n, margin = result.n_reference, config.loss_margin
    mde = stats.mde_paired_mean(spread, n, alpha=1 - config.confidence, power=config.power)
    if n < config.min_examples:
        verdict = "inconclusive"
    elif lower > margin:
        verdict = "fail"
    elif upper <= margin:
        verdict = "warn" if lower > 0 else "ok"
    else:
        verdict = "fail" if mde <= margin else "inconclusive"
    needed = stats.sample_size_for(
        lambda size: stats.mde_paired_mean(spread, size, alpha=1 - config.confidence, power=config.power),
        margin, start=config.min_examples,
    )  # fmt: skip
    extra = {**(details or {}), "method": result.details["method"], "min_examples": config.min_examples,
             "sd_difference": spread}  # fmt: skip
    if correct is not None and all(np.isin(c, (0.0, 1.0)).all() for c in correct):
        extra["mcnemar"] = stats.mcnemar(correct[0], correct[1]).to_dict()
    return GateResult(
        verdict=verdict, degradation=float(result.statistic), lower=float(lower), upper=float(upper),
        margin=margin, mde=float(mde), p_value=float(result.p_value), effect_size=float(result.effect_size),
        n_examples=n, n_needed=needed, details=extra,
    )  # fmt: skip


def save_baseline(evaluation: Evaluation, path: str | Path, *, data: dict[str, Any]) -> Path:
    """Write ``evaluation`` (per-example values kept) and its eval set ``data`` to one JSON file, atomically."""
    stored = {
        "schema": BASELINE_SCHEMA,
        "kind": "baseline",
        "model": evaluation.model,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": data,
        "evaluation": evaluation.to_dict(per_example=True),
    }
    return atomic_write_text(path, json.dumps(json_safe(stored), allow_nan=False))


def load_baseline(path: str | Path) -> tuple[Evaluation, dict[str, Any]]:
    """``(evaluation, data)`` of a stored baseline; a ValueError names the path when it cannot be used."""
    path = Path(path)
    stored = read_json_file(path, "baseline")
    if not isinstance(stored, dict) or stored.get("kind") != "baseline" or "evaluation" not in stored:
        raise ValueError(f"{path} is not a stored baseline (no kind 'baseline' and 'evaluation')")
    if stored.get("schema") != BASELINE_SCHEMA:
        raise ValueError(f"{path} has baseline schema {stored.get('schema')}; this harness reads {BASELINE_SCHEMA}")
    row = stored["evaluation"]
    try:
        evaluation = Evaluation(
            **{key: row[key] for key in ("model", "task", "loss", "perplexity", "accuracy", "n_examples", "n_tokens",
                                         "data_hash")},
            example_loss=tuple(float(v) for v in row["example_loss"]),
            example_tokens=tuple(int(v) for v in row["example_tokens"]),
            example_correct=tuple(float(v) for v in row["example_correct"]),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"baseline {path} has an incomplete evaluation: {error!r}") from None
    if not len(evaluation.example_loss) == evaluation.n_examples:
        raise ValueError(
            f"baseline {path} holds {len(evaluation.example_loss)} per-example losses for {evaluation.n_examples} examples"
        )
    return evaluation, dict(stored.get("data") or {})

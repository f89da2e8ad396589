"""The result every statistical test returns, and argument validation shared by the tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.result import json_safe


@dataclass(frozen=True)
class TestResult:
    """One two-sample (or paired) test: what was measured, how big the effect is, how surprising it is."""

    __test__ = False  # not a pytest test class

    test: str  # which test, e.g. "ks", "hotelling_t2", "paired_bootstrap"
    statistic: float  # the test statistic (D for KS, T^2 for Hotelling, MMD^2, ...)
    effect_size: float  # a scale-free size of the difference (documented per test)
    p_value: float  # probability under the null of a statistic at least this extreme
    n_reference: int  # sample size of the reference (or first paired) sample
    n_current: int  # sample size of the current (or second paired) sample
    details: dict[str, Any] = field(default_factory=dict)  # JSON-able extras (bounds, bandwidth, ...)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; non-finite floats become strings."""
        row = {
            "test": self.test,
            "statistic": self.statistic,
            "effect_size": self.effect_size,
            "p_value": self.p_value,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "details": self.details,
        }
        return json_safe(row)


def as_sample(values: Any, name: str, *, min_size: int = 1, ndim: int = 1) -> np.ndarray:
    """``values`` as a finite float64 array of ``ndim`` dimensions with at least ``min_size`` rows."""
    array = np.asarray(values, dtype=np.float64)
    if ndim == 2 and array.ndim == 1:
        array = array[:, None]
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-d array, got shape {array.shape}")
    if len(array) < min_size:
        raise ValueError(f"{name} needs at least {min_size} values, got {len(array)}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    return array


def as_counts(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-d array of non-negative counts with a positive total."""
    counts = np.asarray(values, dtype=np.float64)
    if counts.ndim != 1 or counts.size < 2:
        raise ValueError(f"{name} must be a 1-d array of at least 2 category counts, got shape {counts.shape}")
    if np.any(counts < 0) or not np.all(np.isfinite(counts)) or counts.sum() <= 0:
        raise ValueError(f"{name} must hold finite non-negative counts with a positive total, got {counts}")
    return counts


def check_probability(value: float, name: str) -> float:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1), got {name}={value}")
    return float(value)

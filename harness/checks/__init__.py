"""Check functions grouped by tier; importing this package registers the whole catalog."""

from harness.checks import (  # noqa: F401  (registers tiers 1-5)
    ablation,
    attention,
    attribution,
    export,
    interventions,
    invariants,
    language,
    memory,
    metrics,
    monitoring,
    numerics,
    robustness,
    training,
)
from harness.checks.base import CHECKS, Check, CheckOptions, applicable_checks, run_check

__all__ = ["CHECKS", "Check", "CheckOptions", "applicable_checks", "run_check"]

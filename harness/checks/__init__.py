"""Check functions grouped by tier; importing this package registers the whole catalog."""

from harness.checks import behaviour, export, invariants, monitoring, training  # noqa: F401  (registers tiers 1-5)
from harness.checks.base import CHECKS, Check, CheckOptions, applicable_checks, run_check

__all__ = ["CHECKS", "Check", "CheckOptions", "applicable_checks", "run_check"]

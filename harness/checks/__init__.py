"""Check functions grouped by tier; importing this package registers the whole catalog."""

from harness.checks import export, invariants  # noqa: F401  (Tier 1, Tier 4)
from harness.checks.base import CHECKS, Check, CheckOptions, applicable_checks, run_check

__all__ = ["CHECKS", "Check", "CheckOptions", "applicable_checks", "run_check"]

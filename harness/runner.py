"""Running checks without pytest: ``harness.check_model(spec)``."""

from __future__ import annotations

from harness.checks import CheckOptions, applicable_checks, run_check
from harness.result import CheckResult
from harness.spec import ModelSpec


def check_model(
    spec: ModelSpec, *, tiers: tuple[int, ...] = (1,), options: CheckOptions | None = None
) -> list[CheckResult]:
    """Build the model once and run every check of the given tiers on a private copy of it.

    Checks that do not apply to the spec come back as skipped results with the reason.
    """
    options = options or CheckOptions()
    model = spec.build_model()
    return [run_check(check, spec, model, options) for check, _ in applicable_checks(spec, tiers)]

"""Tier 5: has anything drifted or regressed? Every Tier 5 check on every selected model."""

import pytest

from harness.checks import run_check

pytestmark = pytest.mark.tier(5)


def test_tier5(harness_case, harness_model, harness_options, record_check):
    record_check(run_check(harness_case.check, harness_case.spec, harness_model, harness_options))

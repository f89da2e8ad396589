"""Tier 2: does the model behave sensibly? Every Tier 2 check on every selected model."""

import pytest

from harness.checks import run_check

pytestmark = pytest.mark.tier(2)


def test_tier2(harness_case, harness_model, harness_options, record_check):
    record_check(run_check(harness_case.check, harness_case.spec, harness_model, harness_options))

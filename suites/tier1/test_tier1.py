"""Tier 1: is the model well-formed? Every Tier 1 check on every selected model."""

import pytest

from harness.checks import run_check

pytestmark = pytest.mark.tier(1)


def test_tier1(harness_case, harness_model, harness_options, record_check):
    record_check(run_check(harness_case.check, harness_case.spec, harness_model, harness_options))

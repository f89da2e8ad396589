"""Tier 4: does the exported model match? TorchScript and ONNX parity, int8 agreement, latency ratios."""

import pytest

from harness.checks import run_check

pytestmark = pytest.mark.tier(4)


def test_tier4(harness_case, harness_model, harness_options, record_check):
    record_check(run_check(harness_case.check, harness_case.spec, harness_model, harness_options))

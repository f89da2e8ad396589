"""Tier 3: does it train? Overfitting, learning on real text, accumulation, resume, freezing, schedules, sweeps."""

import pytest
import torch

from harness.checks import run_check

pytestmark = pytest.mark.tier(3)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tier3(harness_case, harness_model, harness_options, record_check):
    record_check(run_check(harness_case.check, harness_case.spec, harness_model, harness_options))

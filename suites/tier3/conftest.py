"""Tier 3 fixtures: training is a fixture, cached on disk by a hash of the config and the model spec."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from harness.spec import ModelSpec
from harness.training.runs import TrainedRun


@pytest.fixture(scope="session")
def trained_run_for() -> Callable[[ModelSpec], TrainedRun]:
    """``spec -> TrainedRun`` under the ``fast-dev`` preset: trained once per config hash, on disk under
    ``harness.cache.cache_dir("runs")``, so later sessions, other workers and other tiers reuse it
    (the ``learning_on_real_text`` check trains the same run)."""
    from harness.training.presets import preset, within_input_space
    from harness.training.runs import train

    runs: dict[str, TrainedRun] = {}

    def get(spec: ModelSpec) -> TrainedRun:
        if spec.name not in runs:
            runs[spec.name] = train(spec, within_input_space(preset("fast-dev")[0].replace(task=spec.task), spec))
        return runs[spec.name]

    return get


@pytest.fixture
def trained_run(harness_case, trained_run_for) -> TrainedRun:
    """The case's model trained under ``fast-dev``: checkpoint, metrics history and run id."""
    return trained_run_for(harness_case.spec)

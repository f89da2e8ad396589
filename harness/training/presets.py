"""Presets: named (training, task, eval) configs for the common kinds of run.

- ``fast-dev``: seconds on a CPU; what Tier 3's ``trained_run`` fixture and the learning check use.
- ``standard``: a real short training run (minutes on a CPU).
- ``ablation-sweep``: the base config and grid of a small sweep (see ``run_grid_sweep``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.config import ConfigError
from harness.training.config import TrainingConfig

if TYPE_CHECKING:  # pragma: no cover
    from harness.spec import ModelSpec


@dataclass(frozen=True)
class TaskConfig:
    """What the model is trained to do and on which data."""

    task: str | None = None  # the spec's task; None: take the spec's
    sequence_length: int = 32  # tokens per row for sequence tasks
    data: tuple[str, ...] = ()  # local text files; empty: the harness's reference text


@dataclass(frozen=True)
class EvalConfig:
    """How a run is evaluated."""

    metric: str = "val_loss"  # the run metric a sweep ranks by (lower is better)
    validation_batches: int = 8  # held-out batches averaged
    grid: dict[str, list[Any]] = field(default_factory=dict)  # sweep grid (ablation-sweep only)


def _fast_dev() -> tuple[TrainingConfig, TaskConfig, EvalConfig]:
    training = TrainingConfig(max_steps=200, batch_size=16, learning_rate=1e-2, max_rows=4096, validation_batches=8)
    return training, TaskConfig(), EvalConfig(validation_batches=8)


def _standard() -> tuple[TrainingConfig, TaskConfig, EvalConfig]:
    training = TrainingConfig(
        max_steps=2000,
        batch_size=32,
        learning_rate=1e-3,
        weight_decay=0.01,
        scheduler="cosine-warmup",
        scheduler_kwargs={"total_steps": 2000, "warmup_steps": 100, "min_lr_ratio": 0.1},
        gradient_clip=1.0,
        sequence_length=64,
        max_rows=None,
        validation_batches=32,
        validate_every=200,
    )
    return training, TaskConfig(sequence_length=64), EvalConfig(validation_batches=32)


def _ablation_sweep() -> tuple[TrainingConfig, TaskConfig, EvalConfig]:
    training = TrainingConfig(max_steps=5, batch_size=4, learning_rate=1e-3, max_rows=64, validation_batches=2)
    grid = {"learning_rate": [1e-3, 3e-3], "batch_size": [4, 8]}
    return training, TaskConfig(), EvalConfig(validation_batches=2, grid=grid)


PRESETS = {"fast-dev": _fast_dev, "standard": _standard, "ablation-sweep": _ablation_sweep}


def preset(name: str) -> tuple[TrainingConfig, TaskConfig, EvalConfig]:
    """The (training, task, eval) configs of a preset; an unknown name lists the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name]()


def within_input_space(config: TrainingConfig, spec: ModelSpec) -> TrainingConfig:
    """``config`` with micro-batches no larger than the spec's ``max_batch_size``: a larger batch is split into
    the fewest equal micro-batches that fit, accumulated into one optimizer step (token-weighted, so the step is
    the larger batch's). The harness's own presets go through this; a user's config is taken as given."""
    limit = spec.inputs.max_batch_size
    if config.batch_size <= limit:
        return config
    parts = math.ceil(config.batch_size / limit)
    return config.replace(
        batch_size=math.ceil(config.batch_size / parts), gradient_accumulation=config.gradient_accumulation * parts
    )

"""The trainer factory: a quiet ``lightning.Trainer`` for a TrainingConfig, with strategy guardrails.

Guardrails (each one warns with :class:`StrategyWarning` and says what it did):

- ``strategy="ddp"`` with one visible device (one CUDA device, or ``devices=1`` on CPU) and one node
  falls back to a single-device run: DDP of one process only adds start-up cost.
- ``strategy="fsdp"`` without several CUDA devices warns and suggests ``ddp`` (several CPU processes)
  or ``auto``; the run uses ``ddp`` when several CPU processes were asked for, else one device.

DDP on CPU runs ``devices`` processes with the gloo backend.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.training.config import TrainingConfig


class StrategyWarning(UserWarning):
    """The requested strategy cannot run as asked on this machine; the run uses another one."""


@dataclass(frozen=True)
class TrainerPlan:
    """How a config will actually run on this machine."""

    strategy: str  # Lightning strategy name
    accelerator: str  # "cpu" or "gpu"
    devices: int  # devices (processes) per node
    num_nodes: int
    notes: tuple[str, ...] = ()  # the guardrail messages that applied


def visible_devices(accelerator: str, requested: int) -> int:
    """CUDA devices present for "gpu"; for "cpu" the processes asked for (a CPU has as many as it is given)."""
    import torch

    if accelerator == "gpu":
        return min(requested, torch.cuda.device_count())
    return requested


def plan(config: TrainingConfig) -> TrainerPlan:
    """Resolve the accelerator and apply the strategy guardrails (warning for each one that applies)."""
    import torch

    accelerator = config.accelerator
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    devices = visible_devices(accelerator, config.devices)
    notes = []
    strategy = config.strategy
    if strategy == "ddp" and devices * config.num_nodes <= 1:
        notes.append(
            f"strategy='ddp' with one visible device ({accelerator}, devices={config.devices}, "
            f"{devices} visible) and num_nodes={config.num_nodes}: running on a single device instead"
        )
        strategy, devices = "auto", 1
    elif strategy == "fsdp" and (accelerator != "gpu" or torch.cuda.device_count() < 2):
        fallback = "ddp" if devices > 1 else "auto"
        notes.append(
            f"strategy='fsdp' needs several CUDA devices, found {torch.cuda.device_count()} ({accelerator}); "
            f"use strategy='ddp' for several processes or 'auto' for one. Running with {fallback!r}"
        )
        strategy = fallback
    if strategy == "auto" and devices > 1:
        strategy = "ddp"
    for note in notes:
        warnings.warn(note, StrategyWarning, stacklevel=3)
    return TrainerPlan(strategy, accelerator, max(devices, 1), config.num_nodes, tuple(notes))


def make_trainer(
    config: TrainingConfig,
    *,
    callbacks: Sequence[Any] = (),
    progress_bar: bool = False,
    root_dir: str | None = None,
    max_steps: int | None = None,
    validate_every: int | None = None,
) -> Any:
    """A ``lightning.Trainer`` for the config: no logger, no model summary, no checkpoint callback,
    no sanity validation, a progress bar only when asked for (the CLI asks)."""
    import logging

    import lightning

    if not progress_bar:  # quiet: no "GPU available" / "max_steps reached" chatter
        for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
            logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*validation_step.* but have no `val_dataloader`")
    resolved = plan(config)
    steps = max_steps if max_steps is not None else config.max_steps
    every = config.validate_every if validate_every is None else validate_every
    return lightning.Trainer(
        accelerator=resolved.accelerator,
        strategy=resolved.strategy,
        devices=resolved.devices,
        num_nodes=resolved.num_nodes,
        precision=config.precision,
        max_steps=steps if steps is not None else -1,
        max_epochs=config.epochs if steps is None else -1,
        accumulate_grad_batches=config.gradient_accumulation,
        gradient_clip_val=config.gradient_clip,
        val_check_interval=every if every else None,
        check_val_every_n_epoch=None if every else 1,
        limit_val_batches=config.validation_batches,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        default_root_dir=root_dir,
        deterministic=False,
    )

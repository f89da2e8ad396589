"""The adapter contract shared by every task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from harness.spec import ModelSpec

Batch = dict[str, torch.Tensor]
"""Model inputs plus ``labels``; every tensor has the batch on dimension 0."""


class Adapter(Protocol):
    """What the checks need from a task. Implementations are stateless.

    Sequence adapters (``sequence = True``, see ``harness.adapters.sequence.SequenceAdapter``) also
    provide ``pad(spec, batch, *, amount, side)`` and ``real_outputs(outputs, *, amount, side, length)``.
    """

    task: str
    sequence: bool  # inputs have a length dimension (token sequences)
    per_token_outputs: bool  # outputs have a length dimension aligned with the inputs

    def make_batch(self, spec: ModelSpec, *, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        """Random valid inputs with labels, no padding."""
        ...

    def forward(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The model's primary output (logits) for the batch's inputs; labels are not passed."""
        ...

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The loss the model computes itself when given labels."""
        ...

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """An independent computation of the task's loss from the logits."""
        ...

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        """The shape ``forward`` must return for this batch."""
        ...


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a forward's output: a tensor, a tuple (first item), a mapping or an object."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return output["logits"]
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot find logits in a forward output of type {type(output).__name__}")


def loss_of(output: Any) -> torch.Tensor:
    """The loss of a forward's output given labels: ``.loss``, ``["loss"]`` or a tuple's second item."""
    if isinstance(output, Mapping):
        loss = output.get("loss")
    elif hasattr(output, "loss"):
        loss = output.loss
    elif isinstance(output, (tuple, list)) and len(output) > 1:
        loss = output[1]
    else:
        loss = None
    if loss is None:
        raise TypeError("the model returned no loss when given labels (expected `.loss` or `['loss']`)")
    return loss


def batch_size_of(batch: Batch) -> int:
    return next(iter(batch.values())).shape[0]


def select_rows(batch: Batch, rows: torch.Tensor | list[int] | slice) -> Batch:
    """The sub-batch of the given rows (dimension 0 of every tensor)."""
    return {key: value[rows] for key, value in batch.items()}

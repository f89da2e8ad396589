"""Shared machinery of adapters whose inputs are token sequences with an attention mask.

Subclasses name the task, the labels a batch carries, the output shape and the reference loss.
"""

from __future__ import annotations

import inspect
from typing import Literal

import torch

from harness.adapters.base import Batch, logits_of, loss_of
from harness.spec import ModelSpec

PaddingSide = Literal["left", "right"]


def accepts(model: torch.nn.Module, argument: str) -> bool:
    """Whether ``model.forward`` takes a parameter of that name (or ``**kwargs``)."""
    parameters = inspect.signature(model.forward).parameters
    return argument in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


class SequenceAdapter:
    """Inputs ``input_ids`` (B, T) and ``attention_mask`` (B, T); labels defined by the subclass."""

    task = ""
    sequence = True
    per_token_outputs = True  # outputs have a length dimension aligned with the inputs
    causal_key = "input_ids"  # the stream a causal claim is about
    causal_shift = 0  # token t of the causal stream first reaches output t + causal_shift
    bidirectional_key: str | None = None  # a stream that must be read bidirectionally whatever the claim

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The labels of a batch of (unpadded) inputs."""
        raise NotImplementedError

    def label_padding(self, spec: ModelSpec) -> int | float | None:
        """The label value at padded positions, or None when labels have no length dimension."""
        return spec.inputs.ignore_index

    def make_batch(self, spec: ModelSpec, *, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        input_ids = torch.randint(0, spec.inputs.vocab_size, (batch_size, length), generator=generator)
        return {
            "input_ids": input_ids,  # (B, T)
            "attention_mask": torch.ones_like(input_ids),  # (B, T)
            "labels": self.labels(spec, input_ids, generator),
        }

    def model_inputs(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The keyword arguments of a forward call.

        With an attention mask and a model that accepts ``position_ids``, positions count real tokens
        only (``cumsum(mask) - 1``), as generation does, so left padding does not shift positions.
        """
        inputs = {"input_ids": batch["input_ids"]}
        if spec.capabilities.has_attention_mask:
            mask = batch["attention_mask"]
            inputs["attention_mask"] = mask
            if accepts(model, "position_ids"):
                inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return inputs

    def forward(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return logits_of(model(**self.model_inputs(spec, model, batch)))

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return loss_of(model(**self.model_inputs(spec, model, batch), labels=batch["labels"]))

    def bidirectional_outputs(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The outputs the ``bidirectional_key`` stream must reach from its last token to its first."""
        return self.forward(spec, model, batch)

    def pad(self, spec: ModelSpec, batch: Batch, *, amount: int, side: PaddingSide) -> Batch:
        """Add ``amount`` masked pad tokens to every row on one side; per-token labels there are ignored."""
        filler = {"input_ids": spec.inputs.pad_id, "attention_mask": 0, "labels": self.label_padding(spec)}
        padded = {}
        for key, value in batch.items():
            if value.dim() < 2 or filler.get(key) is None:
                padded[key] = value
                continue
            block = torch.full((value.shape[0], amount, *value.shape[2:]), filler[key], dtype=value.dtype)
            padded[key] = torch.cat([block, value] if side == "left" else [value, block], dim=1)
        return padded

    def real_outputs(self, outputs: torch.Tensor, *, amount: int, side: PaddingSide, length: int) -> torch.Tensor:
        """The outputs of a padded batch at its real tokens (all of them for pooled outputs)."""
        if not self.per_token_outputs:
            return outputs
        return outputs[:, amount:] if side == "left" else outputs[:, :length]

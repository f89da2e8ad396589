"""Adapter for causal language models following the Hugging Face convention.

``forward(input_ids, attention_mask=None, labels=None, [position_ids=None])`` returning ``.logits``
of shape (batch, length, vocab) and, given labels, ``.loss``: the mean cross-entropy of token t+1
predicted at position t over labels that are not ``ignore_index``. Labels are the input ids; the
model shifts them itself.
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


class CausalLMAdapter:
    task = "causal-lm"
    sequence = True

    def make_batch(self, spec: ModelSpec, *, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        input_ids = torch.randint(0, spec.inputs.vocab_size, (batch_size, length), generator=generator)
        return {
            "input_ids": input_ids,  # (B, T)
            "attention_mask": torch.ones_like(input_ids),  # (B, T)
            "labels": input_ids.clone(),  # (B, T)
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

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Token-weighted mean cross-entropy of position t predicting label t+1, ignored labels excluded."""
        shifted_logits = logits[:, :-1, :].double()  # (B, T-1, V)
        shifted_labels = batch["labels"][:, 1:]  # (B, T-1)
        keep = shifted_labels != spec.inputs.ignore_index  # (B, T-1)
        log_probs = torch.log_softmax(shifted_logits, dim=-1)  # (B, T-1, V)
        targets = shifted_labels.masked_fill(~keep, 0)  # (B, T-1)
        token_nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        return (token_nll * keep).sum() / keep.sum()

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        batch_size, length = batch["input_ids"].shape
        return (batch_size, length, spec.inputs.vocab_size)

    def pad(self, spec: ModelSpec, batch: Batch, *, amount: int, side: PaddingSide) -> Batch:
        """Add ``amount`` masked pad tokens to every row on one side; labels there are ignored."""
        filler = {
            "input_ids": spec.inputs.pad_id,
            "attention_mask": 0,
            "labels": spec.inputs.ignore_index,
        }
        padded = {}
        for key, value in batch.items():
            block = torch.full((value.shape[0], amount), filler[key], dtype=value.dtype)
            padded[key] = torch.cat([block, value] if side == "left" else [value, block], dim=1)
        return padded

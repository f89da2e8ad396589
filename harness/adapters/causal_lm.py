"""Adapter for causal language models following the Hugging Face convention.

``forward(input_ids, attention_mask=None, labels=None, [position_ids=None])`` returning ``.logits``
of shape (batch, length, vocab) and, given labels, ``.loss``: the mean cross-entropy of token t+1
predicted at position t over labels that are not ``ignore_index``. Labels are the input ids; the
model shifts them itself.
"""

from __future__ import annotations

import torch

from harness.adapters.base import Batch
from harness.adapters.sequence import SequenceAdapter
from harness.spec import ModelSpec


class CausalLMAdapter(SequenceAdapter):
    task = "causal-lm"

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return input_ids.clone()  # (B, T): the model shifts them

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

"""Adapter for causal language models following the Hugging Face convention.

``forward(input_ids, attention_mask=None, labels=None, [position_ids=None])`` returning ``.logits``
of shape (batch, length, vocab) and, given labels, ``.loss``: the mean cross-entropy of token t+1
predicted at position t over labels that are not ``ignore_index``. Labels are the input ids; the
model shifts them itself. Real text is its own label, so these models evaluate and train on it.
"""

from __future__ import annotations

import torch

from harness.adapters.base import Batch
from harness.adapters.scoring import mean_masked_nll
from harness.adapters.sequence import SequenceAdapter
from harness.spec import ModelSpec


class CausalLMAdapter(SequenceAdapter):
    task = "causal-lm"
    convention = "forward(input_ids, attention_mask=None, labels=None) -> .logits (B, T, vocab), .loss"
    required_inputs = ("vocab_size", "max_length")
    label_shift = 1  # position t predicts token t + 1
    positions_from_mask = True  # left padding must not shift positions, as in generation
    evaluation = "tokens"
    real_text = "labelled"
    trains_on_text = True

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return input_ids.clone()  # (B, T): the model shifts them

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Token-weighted mean cross-entropy of position t predicting label t+1, ignored labels excluded."""
        return mean_masked_nll(logits[:, :-1, :], batch["labels"][:, 1:], spec.inputs.ignore_index)  # (B, T-1)

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        batch_size, length = batch["input_ids"].shape
        return (batch_size, length, spec.inputs.vocab_size)

    def text_labels(
        self, spec: ModelSpec, input_ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        """The ids themselves, padding ignored."""
        return input_ids.masked_fill(mask == 0, spec.inputs.ignore_index)  # (B, T)

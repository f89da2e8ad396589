"""Adapter for token classifiers following the Hugging Face convention.

``forward(input_ids, attention_mask=None, labels=None, [position_ids=None])`` returning ``.logits`` of
shape (batch, length, num_classes) and, given labels (batch, length) of class ids, ``.loss``: the mean
cross-entropy over every label that is not ``ignore_index`` (no shift: label t belongs to token t).
Real text carries no such labels: these models have no real data unless their spec declares some.
"""

from __future__ import annotations

import torch

from harness.adapters.base import Batch
from harness.adapters.scoring import mean_masked_nll
from harness.adapters.sequence import SequenceAdapter
from harness.spec import ModelSpec


class TokenClassificationAdapter(SequenceAdapter):
    task = "token-classification"
    convention = "forward(input_ids, attention_mask=None, labels=None) -> .logits (B, T, num_classes), .loss"
    required_inputs = ("vocab_size", "max_length", "num_classes")
    evaluation = "tokens"

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random classes in [0, num_classes), one per token: (B, T)."""
        return torch.randint(0, spec.inputs.num_classes, input_ids.shape, generator=generator)

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy of each token's logits against its label, ignored labels excluded, in float64."""
        return mean_masked_nll(logits, batch["labels"], spec.inputs.ignore_index)  # (B, T)

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        batch_size, length = batch["input_ids"].shape
        return (batch_size, length, spec.inputs.num_classes)

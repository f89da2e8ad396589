"""Adapter for token classifiers following the Hugging Face convention.

``forward(input_ids, attention_mask=None, labels=None, [position_ids=None])`` returning ``.logits`` of
shape (batch, length, num_classes) and, given labels (batch, length) of class ids, ``.loss``: the mean
cross-entropy over every label that is not ``ignore_index`` (no shift: label t belongs to token t).
"""

from __future__ import annotations

import torch

from harness.adapters.base import Batch
from harness.adapters.sequence import SequenceAdapter
from harness.spec import ModelSpec


class TokenClassificationAdapter(SequenceAdapter):
    task = "token-classification"

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random classes in [0, num_classes), one per token: (B, T)."""
        return torch.randint(0, spec.inputs.num_classes, input_ids.shape, generator=generator)

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy of each token's logits against its label, ignored labels excluded, in float64."""
        labels = batch["labels"]  # (B, T)
        keep = labels != spec.inputs.ignore_index  # (B, T)
        log_probs = torch.log_softmax(logits.double(), dim=-1)  # (B, T, K)
        targets = labels.masked_fill(~keep, 0)  # (B, T)
        token_nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T)
        return (token_nll * keep).sum() / keep.sum()

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        batch_size, length = batch["input_ids"].shape
        return (batch_size, length, spec.inputs.num_classes)

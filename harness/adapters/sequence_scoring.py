"""Adapter for sequence scorers: one score in [0, 1] per sequence, trained with a squared error.

``forward(input_ids, attention_mask=None, labels=None, [position_ids=None])`` returning ``.logits`` of
shape (batch,): the scores themselves (after the model's sigmoid, not pre-sigmoid logits) and, given
float labels (batch,) in [0, 1], ``.loss``: the mean squared error of the scores against the labels
that are not ``ignore_index``. One ignore index for every task: the loss oracle marks some labels with
it whatever the task, and a scorer excludes those samples from its mean as a classifier excludes tokens.

Outputs are pooled (no length dimension), so padding leaves the whole output unchanged and labels,
having no length dimension, are never padded. Real text carries no scores: there is no real data, and no
likelihood to evaluate.
"""

from __future__ import annotations

import torch

from harness.adapters.base import Batch
from harness.adapters.sequence import SequenceAdapter
from harness.spec import ModelSpec


class SequenceScoringAdapter(SequenceAdapter):
    task = "sequence-scoring"
    convention = "forward(input_ids, attention_mask=None, labels=None) -> .logits (B,) scores in [0, 1], .loss"
    required_inputs = ("vocab_size", "max_length")
    per_token_outputs = False
    output_kind = "score"

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random float targets in [0, 1), one per sequence: (B,)."""
        return torch.rand(input_ids.shape[0], generator=generator)

    def label_padding(self, spec: ModelSpec) -> None:
        return None  # labels (B,) have no length dimension

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean squared error of the (B,) scores against the labels, ignored labels excluded, in float64."""
        labels = batch["labels"].double()  # (B,)
        keep = labels != spec.inputs.ignore_index  # (B,)
        squared = (logits.double() - labels).pow(2)  # (B,)
        return squared[keep].sum() / keep.sum()

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        return (batch["input_ids"].shape[0],)

    def agreement(self, reference: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
        """1.0 where an exported score is within 0.05 of eager's."""
        return ((reference - got).abs() <= 0.05).double().flatten()

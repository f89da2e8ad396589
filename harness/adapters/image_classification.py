"""Adapter for image classifiers following the Hugging Face convention.

``forward(pixel_values, labels=None)`` returning ``.logits`` of shape (batch, num_classes) and, given
labels, ``.loss``: the mean cross-entropy over the batch.
"""

from __future__ import annotations

import torch

from harness.adapters.base import Batch, logits_of, loss_of
from harness.spec import ModelSpec


class ImageClassificationAdapter:
    task = "image-classification"
    sequence = False
    per_token_outputs = False

    def make_batch(self, spec: ModelSpec, *, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        """Standard-normal pixels (the models take normalised images); ``length`` is ignored."""
        channels, height, width = spec.inputs.image_size
        pixels = torch.randn((batch_size, channels, height, width), generator=generator)
        labels = torch.randint(0, spec.inputs.num_classes, (batch_size,), generator=generator)
        return {"pixel_values": pixels, "labels": labels}  # (B, C, H, W), (B,)

    def forward(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return logits_of(model(pixel_values=batch["pixel_values"]))

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return loss_of(model(pixel_values=batch["pixel_values"], labels=batch["labels"]))

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean over the batch of ``-log softmax(logits)[label]``, ignored labels excluded."""
        labels = batch["labels"]
        keep = labels != spec.inputs.ignore_index  # (B,)
        log_probs = torch.log_softmax(logits.double(), dim=-1)  # (B, K)
        nll = -log_probs.gather(-1, labels.masked_fill(~keep, 0).unsqueeze(-1)).squeeze(-1)  # (B,)
        return (nll * keep).sum() / keep.sum()

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        return (batch["pixel_values"].shape[0], spec.inputs.num_classes)

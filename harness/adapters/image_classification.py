"""Adapter for image classifiers: the Hugging Face convention, or a plain PyTorch module.

Hugging Face: ``forward(pixel_values, labels=None)`` returning ``.logits`` of shape (batch, num_classes) and,
given labels, ``.loss``: the mean cross-entropy over the batch. A plain module (``timm``, ``torchvision``: a
``forward`` that takes no ``pixel_values``) is called positionally, ``model(images)``, and its output (a tensor,
or a tuple whose first item is the logits) is the logits; it computes no loss of its own, so its loss is the
one it is trained with, ``torch.nn.functional.cross_entropy`` of the logits. Real images are what the spec
declares (``ModelSpec.real_data``, e.g. :func:`harness.data.digit_examples`); the harness has none of its own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from harness.adapters.base import Adapter, Batch, accepts, logits_of, loss_of
from harness.adapters.scoring import mean_masked_nll
from harness.spec import ModelSpec


def is_plain(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a plain module: its ``forward`` takes no ``pixel_values`` (it takes the images first)."""
    return not accepts(model, "pixel_values")


class ImageClassificationAdapter(Adapter):
    task = "image-classification"
    convention = (
        "forward(pixel_values, labels=None) -> .logits (B, num_classes), .loss; or a plain forward(images) -> logits"
    )
    required_inputs = ("image_size", "num_classes")
    export_keys = ("pixel_values",)
    evaluation = "examples"
    real_batch_size = 256  # small images: many real examples cost little

    def make_batch(self, spec: ModelSpec, *, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        """Standard-normal pixels (the models take normalised images); ``length`` is ignored."""
        channels, height, width = spec.inputs.image_size
        pixels = torch.randn((batch_size, channels, height, width), generator=generator)
        labels = torch.randint(0, spec.inputs.num_classes, (batch_size,), generator=generator)
        return {"pixel_values": pixels, "labels": labels}  # (B, C, H, W), (B,)

    def takes_plain_inputs(self, model: torch.nn.Module) -> bool:
        return is_plain(model)

    def raw_output(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch, **extra: Any) -> Any:
        """By keyword, or positionally for a plain module (which takes no ``extra`` keywords)."""
        if is_plain(model):
            return model(batch["pixel_values"])
        return model(pixel_values=batch["pixel_values"], **extra)

    def forward(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return logits_of(self.raw_output(spec, model, batch))

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        if is_plain(model):  # the loss a plain classifier is trained with
            logits = self.forward(spec, model, batch)
            return F.cross_entropy(logits, batch["labels"], ignore_index=spec.inputs.ignore_index)
        return loss_of(self.raw_output(spec, model, batch, labels=batch["labels"]))

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean over the batch of ``-log softmax(logits)[label]``, ignored labels excluded."""
        return mean_masked_nll(logits, batch["labels"], spec.inputs.ignore_index)  # (B,)

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        return (batch["pixel_values"].shape[0], spec.inputs.num_classes)

    def profile_features(
        self, spec: ModelSpec, model: torch.nn.Module, batch: Batch, *, own_embedding: bool
    ) -> dict[str, list[Any]]:
        """The mean pixel of each image, then the class distribution (and the logits as the embedding)."""
        intensity = batch["pixel_values"].flatten(1).mean(1).tolist()  # (B, C, H, W) -> (B,)
        return {
            "input_intensity": intensity,
            **super().profile_features(spec, model, batch, own_embedding=own_embedding),
        }

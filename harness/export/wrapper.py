"""The module every exporter sees: positional tensors in, the adapter's primary output out."""

from __future__ import annotations

import torch

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.spec import ModelSpec

INPUT_KEYS: dict[str, tuple[str, ...]] = {
    "causal-lm": ("input_ids", "attention_mask"),
    "seq2seq-lm": ("input_ids", "attention_mask", "labels"),  # labels -> decoder inputs inside the graph
    "token-classification": ("input_ids", "attention_mask"),
    "sequence-scoring": ("input_ids", "attention_mask"),
    "text-embedding": ("input_ids", "attention_mask"),
    "image-classification": ("pixel_values",),
}


def export_inputs(spec: ModelSpec, batch: Batch) -> dict[str, torch.Tensor]:
    """The named graph inputs of a batch, in the graph's order."""
    return {key: batch[key] for key in INPUT_KEYS[spec.task]}


def dynamic_axes(key: str) -> dict[int, str]:
    """Axes that vary: batch for every input, length for token inputs."""
    return {0: "batch"} if key == "pixel_values" else {0: "batch", 1: "length"}


class ExportWrapper(torch.nn.Module):
    """``forward(*inputs)`` = ``adapter.forward(spec, model, dict(zip(keys, inputs)))``."""

    def __init__(self, spec: ModelSpec, model: torch.nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.model = model
        self.keys = INPUT_KEYS[spec.task]

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return adapter_for(self.spec).forward(self.spec, self.model, dict(zip(self.keys, inputs, strict=True)))

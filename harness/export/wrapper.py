"""The module every exporter sees: positional tensors in, the adapter's primary output out."""

from __future__ import annotations

import torch

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.spec import ModelSpec


def export_inputs(spec: ModelSpec, batch: Batch) -> dict[str, torch.Tensor]:
    """The named graph inputs of a batch (the adapter's ``export_keys``), in the graph's order."""
    return {key: batch[key] for key in adapter_for(spec).export_keys}


def dynamic_axes(spec: ModelSpec, key: str) -> dict[int, str]:
    """The axes of graph input ``key`` that vary (the adapter's: batch, and length for token inputs)."""
    return adapter_for(spec).dynamic_axes(key)


class ExportWrapper(torch.nn.Module):
    """``forward(*inputs)`` = ``adapter.forward(spec, model, dict(zip(keys, inputs)))``."""

    def __init__(self, spec: ModelSpec, model: torch.nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.model = model
        self.keys = adapter_for(spec).export_keys

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return adapter_for(self.spec).forward(self.spec, self.model, dict(zip(self.keys, inputs, strict=True)))

"""Adapter for text encoders that produce one embedding per text (sentence-transformers style).

``forward(input_ids, attention_mask=None)`` returning ``.last_hidden_state`` (batch, length, hidden)
(or that tensor); the embedding is the mean of the hidden states over the attention mask, the
pooling of all-MiniLM-L6-v2 and most sentence-transformers models. There are no labels and no
loss: specs of this task declare ``supports_training=False``, and the loss checks do not apply.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from harness.adapters.base import Batch
from harness.adapters.sequence import SequenceAdapter
from harness.spec import ModelSpec


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, H) over positions where ``mask`` (B, T) is 1; rows with no token give 0."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, H)


def hidden_states_of(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return output["last_hidden_state"]
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot find last_hidden_state in a forward output of type {type(output).__name__}")


class TextEmbeddingAdapter(SequenceAdapter):
    task = "text-embedding"
    per_token_outputs = False

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(input_ids.shape[0])  # (B,): unused, there is no loss

    def label_padding(self, spec: ModelSpec) -> None:
        return None

    def forward(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        hidden = hidden_states_of(model(**self.model_inputs(spec, model, batch)))  # (B, T, H)
        return mean_pool(hidden, batch["attention_mask"])  # (B, H)

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        raise TypeError(f"{spec.name}: task text-embedding has no loss")

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise TypeError(f"{spec.name}: task text-embedding has no loss")

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        return (batch["input_ids"].shape[0], spec.inputs.embedding_dim)

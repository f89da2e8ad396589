"""Adapter for text encoders that produce one embedding per text (sentence-transformers style).

``forward(input_ids, attention_mask=None)`` returning ``.last_hidden_state`` (batch, length, hidden)
(or that tensor); the embedding is the mean of the hidden states over the attention mask, the
pooling of all-MiniLM-L6-v2 and most sentence-transformers models. There are no labels and no
loss: specs of this task declare ``supports_training=False``, and the loss checks do not apply.
An exported embedding agrees with eager by its cosine similarity; real text needs no labels.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.adapters.base import Batch, hidden_states_of
from harness.adapters.sequence import SequenceAdapter, mean_pool
from harness.spec import ModelSpec

__all__ = ["TextEmbeddingAdapter", "hidden_states_of", "mean_pool"]


class TextEmbeddingAdapter(SequenceAdapter):
    task = "text-embedding"
    convention = "forward(input_ids, attention_mask=None) -> .last_hidden_state (B, T, embedding_dim)"
    required_inputs = ("vocab_size", "max_length", "embedding_dim")
    per_token_outputs = False
    output_kind = "embedding"
    has_loss = False
    real_text = "unlabelled"

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.zeros(input_ids.shape[0])  # (B,): unused, there is no loss

    def label_padding(self, spec: ModelSpec) -> None:
        return None

    def outputs_of(self, spec: ModelSpec, output: Any, batch: Batch) -> torch.Tensor:
        return mean_pool(hidden_states_of(output), batch["attention_mask"])  # (B, T, H) -> (B, H)

    def hidden_states(self, output: Any) -> torch.Tensor | None:
        return hidden_states_of(output)

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        raise TypeError(f"{spec.name}: task text-embedding has no loss")

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        raise TypeError(f"{spec.name}: task text-embedding has no loss")

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        return (batch["input_ids"].shape[0], spec.inputs.embedding_dim)

    def agreement(self, reference: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
        """The cosine similarity of each exported embedding to eager's."""
        return torch.nn.functional.cosine_similarity(reference.double(), got.double(), dim=-1).flatten()

    def pooled_agreement(self, values: torch.Tensor) -> float:
        """The lowest cosine: one bad embedding is a bad export."""
        return float(values.min())

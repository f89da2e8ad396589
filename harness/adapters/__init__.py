"""Adapters: one per task. An adapter makes batches, runs forward, computes losses.

Any model that follows the Hugging Face conventions of its task fits its adapter with no code
from the user; :func:`adapter_for` picks the adapter from ``ModelSpec.task``.
"""

from __future__ import annotations

from harness.adapters.base import Adapter, Batch, logits_of
from harness.adapters.causal_lm import CausalLMAdapter
from harness.adapters.image_classification import ImageClassificationAdapter
from harness.spec import ModelSpec

ADAPTERS: dict[str, Adapter] = {
    "causal-lm": CausalLMAdapter(),
    "image-classification": ImageClassificationAdapter(),
}


def adapter_for(spec: ModelSpec) -> Adapter:
    """The adapter for ``spec.task``."""
    return ADAPTERS[spec.task]


__all__ = ["ADAPTERS", "Adapter", "Batch", "CausalLMAdapter", "ImageClassificationAdapter", "adapter_for", "logits_of"]

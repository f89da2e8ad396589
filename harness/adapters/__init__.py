"""Adapters: one per task. An adapter makes batches, runs forward, computes losses.

Any model that follows the Hugging Face conventions of its task fits its adapter with no code
from the user; :func:`adapter_for` picks the adapter from ``ModelSpec.task``. Adapters are
imported on first use, so a task's dependencies cost nothing until a model of that task runs.
"""

from __future__ import annotations

import importlib
from functools import cache

from harness.adapters.base import Adapter, Batch, logits_of, loss_of
from harness.spec import ModelSpec

ADAPTERS: dict[str, str] = {
    "causal-lm": "harness.adapters.causal_lm:CausalLMAdapter",
    "seq2seq-lm": "harness.adapters.seq2seq_lm:Seq2SeqLMAdapter",
    "token-classification": "harness.adapters.token_classification:TokenClassificationAdapter",
    "sequence-scoring": "harness.adapters.sequence_scoring:SequenceScoringAdapter",
    "text-embedding": "harness.adapters.text_embedding:TextEmbeddingAdapter",
    "image-classification": "harness.adapters.image_classification:ImageClassificationAdapter",
}


@cache
def _load(task: str) -> Adapter:
    module_name, class_name = ADAPTERS[task].split(":")
    return getattr(importlib.import_module(module_name), class_name)()


def adapter_for(spec: ModelSpec) -> Adapter:
    """The adapter for ``spec.task``."""
    return _load(spec.task)


__all__ = ["ADAPTERS", "Adapter", "Batch", "adapter_for", "logits_of", "loss_of"]

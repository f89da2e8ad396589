"""Adapters: one per task, the only code that knows a task (see :class:`harness.adapters.base.Adapter`).

Any model that follows the Hugging Face conventions of its task fits its adapter with no code
from the user; :func:`adapter_for` picks the adapter from ``ModelSpec.task``. The built-in adapters
are imported on first use, so a task's dependencies cost nothing until a model of that task runs.
A new task is one adapter and one call, from any package::

    register_adapter(MyTaskAdapter())  # then ModelSpec(task=MyTaskAdapter.task, ...) is valid
"""

from __future__ import annotations

import importlib

from harness.adapters.base import Adapter, Batch, hidden_states_of, logits_of, loss_of
from harness.spec import ModelSpec, register_task

ADAPTERS: dict[str, str | Adapter] = {
    "causal-lm": "harness.adapters.causal_lm:CausalLMAdapter",
    "seq2seq-lm": "harness.adapters.seq2seq_lm:Seq2SeqLMAdapter",
    "token-classification": "harness.adapters.token_classification:TokenClassificationAdapter",
    "sequence-scoring": "harness.adapters.sequence_scoring:SequenceScoringAdapter",
    "text-embedding": "harness.adapters.text_embedding:TextEmbeddingAdapter",
    "image-classification": "harness.adapters.image_classification:ImageClassificationAdapter",
}
"""Task -> its adapter, or ``"module:Class"`` of a built-in one not imported yet."""


def register_adapter(adapter: Adapter, *, replace: bool = False) -> Adapter:
    """Make ``adapter`` serve ``adapter.task`` and register the task (with ``adapter.required_inputs``) for
    ModelSpec. A task that already has another adapter is an error unless ``replace``. Returns the adapter."""
    if not isinstance(adapter, Adapter):
        raise TypeError(f"register_adapter needs a harness.adapters.base.Adapter, got {type(adapter).__name__}")
    task = adapter.task
    if not task:
        raise ValueError(f"{type(adapter).__name__}.task must name the task it serves")
    current = ADAPTERS.get(task)
    if current is not None and current is not adapter and not replace:
        raise ValueError(f"task {task!r} already has an adapter ({current!r}); pass replace=True to swap it")
    ADAPTERS[task] = adapter
    register_task(task, tuple(adapter.required_inputs))
    return adapter


def adapter_for(spec: ModelSpec) -> Adapter:
    """The adapter for ``spec.task``."""
    adapter = ADAPTERS.get(spec.task)
    if adapter is None:
        raise KeyError(f"no adapter serves task {spec.task!r}; register one with harness.adapters.register_adapter")
    if isinstance(adapter, str):
        module_name, class_name = adapter.split(":")
        adapter = ADAPTERS[spec.task] = getattr(importlib.import_module(module_name), class_name)()
    return adapter


def convention_error(spec: ModelSpec, model) -> str | None:
    """Why ``model`` does not follow the calling convention of ``spec.task`` (one line), or None when it does."""
    return adapter_for(spec).convention_error(spec, model)


__all__ = [
    "ADAPTERS",
    "Adapter",
    "Batch",
    "adapter_for",
    "convention_error",
    "hidden_states_of",
    "logits_of",
    "loss_of",
    "register_adapter",
]

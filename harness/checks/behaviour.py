"""Tier 2: does the model behave sensibly? What the property modules share: requirements and forward helpers.

The checks live by property: :mod:`~harness.checks.attention`, :mod:`~harness.checks.attribution`,
:mod:`~harness.checks.robustness`, :mod:`~harness.checks.ablation` and :mod:`~harness.checks.memory`.

Every check here applies by capability: attention maps to models that return them
(``Capabilities.returns_attentions``), memory to models that name their memory interface
(``ModelSpec.memory``), the rest to every model. The bounds the checks hold models to are
``options.behaviour`` (:class:`harness.checks.options.BehaviourOptions`), each with the reason for its value.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.spec import ModelSpec

# Requirements.


def needs_attentions(spec: ModelSpec) -> str | None:
    if spec.capabilities.returns_attentions:
        return None
    return "the model declares it does not return attention weights (Capabilities.returns_attentions)"


def needs_memory(spec: ModelSpec) -> str | None:
    if not spec.capabilities.has_memory:
        return "the model declares no external memory (Capabilities.has_memory)"
    if spec.memory is None:
        return "the spec names no memory interface (ModelSpec.memory)"
    return None


# Shared helpers.


def raw_forward(spec: ModelSpec, model: nn.Module, batch: Batch, **extra: Any) -> Any:
    """The model's own output object for a batch's inputs (decoder inputs added for seq2seq)."""
    return model(**adapter_for(spec).forward_inputs(spec, model, batch), **extra)


def output_field(output: Any, name: str) -> Any:
    return output.get(name) if isinstance(output, dict) else getattr(output, name, None)

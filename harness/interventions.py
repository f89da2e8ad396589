"""Interventions: code a user attaches to a model instead of building it in (forward hooks, a LoRA/PEFT adapter,
a steering vector, an extra memory read), named by ``ModelSpec.intervention`` and checked in Tier 2
(:mod:`harness.checks.interventions`).

The contract: ``attach(model)`` changes ``model`` in place (registers hooks, swaps or adds modules) and returns a
handle; ``model``'s own forward then runs with the intervention. ``detach(model, handle)`` gives the model back as
it was: the same outputs bit for bit, no hook, parameter or buffer left, every ``requires_grad`` flag restored.
An intervention that trains names its parameters (``parameters(handle)``); attach freezes the base model, so an
optimizer over every parameter that requires grad steps the intervention only. Its state is saved and loaded
with the model's ``state_dict()`` (register its modules on the model), and a second attach is refused (raise) or
changes nothing; it never stacks::

    Intervention(
        attach=lambda model: add_my_hooks(model),       # -> handle
        detach=lambda model, handle: handle.remove(),
        parameters=lambda handle: handle.parameters(),  # optional: what it trains
        targets=("blocks.0.mlp", "blocks.1.mlp"),       # optional: the modules it claims to act on
    )
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.spec import SpecError

if TYPE_CHECKING:  # pragma: no cover - typing only, torch is imported lazily
    import torch


@dataclass(frozen=True)
class Intervention:
    """How to attach something to a model, take it off again, and what it claims to act on."""

    attach: Callable[[torch.nn.Module], Any]  # model -> handle; changes the model in place
    detach: Callable[[torch.nn.Module, Any], None]  # (model, handle) -> None; the model as it was before attach
    parameters: Callable[[Any], Iterable[torch.nn.Parameter]] | None = None  # handle -> the parameters it trains
    targets: tuple[str, ...] = ()  # names in model.named_modules() it acts on; () = whatever attach changes
    name: str = ""  # what it is, for report rows (e.g. "lora r=4 on c_attn")

    def __post_init__(self) -> None:
        for field_name in ("attach", "detach"):
            if not callable(getattr(self, field_name)):
                raise SpecError(f"Intervention.{field_name} must be callable, got {getattr(self, field_name)!r}")
        if self.parameters is not None and not callable(self.parameters):
            raise SpecError(f"Intervention.parameters must be callable or None, got {self.parameters!r}")
        if isinstance(self.targets, str) or not all(isinstance(t, str) for t in self.targets):
            raise SpecError(f"Intervention.targets must be a tuple of module names, got {self.targets!r}")


def freeze(model: torch.nn.Module) -> dict[str, bool]:
    """Set ``requires_grad=False`` on every parameter of ``model``; returns the flags as they were (for
    :func:`restore_flags`, in detach)."""
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    return flags


def restore_flags(model: torch.nn.Module, flags: dict[str, bool]) -> None:
    """Give every parameter of ``model`` the ``requires_grad`` flag :func:`freeze` returned."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(flags[name])

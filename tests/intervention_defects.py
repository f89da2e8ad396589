"""Interventions with planted defects, each one line away from the clean zoo examples
(``harness_zoo.hook_modulator``'s FiLM on cnn-digits, ``harness_zoo.gpt2_lora``'s PEFT LoRA on gpt2-tiny).

``DEFECTS`` maps a defect name to ``(spec, the check that must flag it, text its failure must contain)``.
"""

from __future__ import annotations

import itertools

from torch import nn

from harness.interventions import Intervention, freeze, restore_flags
from harness.spec import ModelSpec
from harness_zoo import gpt2_lora, hook_modulator
from harness_zoo.cnn_digits import SPEC as CNN_DIGITS
from harness_zoo.gpt2_tiny import SPEC as GPT2_TINY
from harness_zoo.hook_modulator import TARGETS, FiLM, FiLMHandle


def _film(model: nn.Module, *, name: str = hook_modulator.ATTRIBUTE, register: bool = True,
          detached: bool = False) -> FiLMHandle:  # fmt: skip
    """The zoo's FiLM attach without its guard: registered under ``name`` (or not at all), its parameters used
    through ``.detach()`` when ``detached``."""
    flags = freeze(model)
    modules = dict(model.named_modules())
    film = FiLM({target: modules[target].num_features for target in TARGETS})
    if register:
        model.add_module(name, film)

    def hook(target: str):
        def modulate(module: nn.Module, args: tuple, output):
            key = film.keys[target]
            scale, shift = film.scale[key], film.shift[key]
            if detached:
                scale, shift = scale.detach(), shift.detach()
            return output * scale[:, None, None] + shift[:, None, None]

        return modulate

    hooks = tuple(modules[target].register_forward_hook(hook(target)) for target in TARGETS)
    return FiLMHandle(film, hooks, flags)


_COUNTER = itertools.count()


def _stacking_attach(model: nn.Module) -> FiLMHandle:
    """No guard: every attach adds another modulator and another hook per target."""
    return _film(model, name=f"film_{next(_COUNTER)}")


def _leaky_detach(model: nn.Module, handle: FiLMHandle) -> None:
    """Removes the first hook only."""
    handle.hooks[0].remove()
    delattr(model, hook_modulator.ATTRIBUTE)
    restore_flags(model, handle.requires_grad)


def _unregistered_detach(model: nn.Module, handle: FiLMHandle) -> None:
    for hook in handle.hooks:
        hook.remove()
    restore_flags(model, handle.requires_grad)


class _LinearSeeker:
    """A modulator that scales the output of every ``nn.Linear`` among its targets: GPT-2's blocks are ``Conv1D``."""

    targets = ("transformer.h.0.mlp.c_fc", "transformer.h.1.mlp.c_fc")

    @staticmethod
    def attach(model: nn.Module) -> list:
        modules = dict(model.named_modules())
        return [modules[name].register_forward_hook(lambda m, args, output: 1.5 * output)
                for name in _LinearSeeker.targets if isinstance(modules[name], nn.Linear)]  # fmt: skip

    @staticmethod
    def detach(model: nn.Module, handles: list) -> None:
        for handle in handles:
            handle.remove()


def _film_spec(name: str, **changes) -> ModelSpec:
    clean = hook_modulator.SPEC.intervention
    fields = {"attach": clean.attach, "detach": clean.detach, "parameters": clean.parameters,
              "targets": clean.targets, **changes}  # fmt: skip
    return CNN_DIGITS.replace(name=f"cnn-digits-film-{name}", intervention=Intervention(**fields))


def _lora_copies(handle) -> list[nn.Parameter]:
    """The LoRA weights as fresh leaf copies: the optimizer would train tensors the forward never uses."""
    return [nn.Parameter(p.detach().clone()) for p in gpt2_lora.parameters(handle)]


DEFECTS: dict[str, tuple[ModelSpec, str, str]] = {
    "modulator-finds-no-linear": (
        GPT2_TINY.replace(name="gpt2-tiny-linear-seeker",
                          intervention=Intervention(_LinearSeeker.attach, _LinearSeeker.detach,
                                                    targets=_LinearSeeker.targets)),
        "intervention_effect",
        "(0 found of 2 claimed); looked at 2 claimed target(s) of type Conv1D",
    ),
    "hooks-stack-on-second-attach": (
        _film_spec("stacking", attach=_stacking_attach, detach=_unregistered_detach),
        "intervention_idempotent",
        "hooks: 2 added by one attach, 4 by two",
    ),
    "detach-leaves-a-hook": (_film_spec("leaky", detach=_leaky_detach), "intervention_removable", "+1 hook(s) on features.4"),
    "modulator-uses-detached-parameters": (
        _film_spec("detached", attach=lambda model: _film(model, detached=True)),
        "intervention_gradient",
        "4 of 4 parameter(s) got no gradient",
    ),
    "adapter-parameters-are-copies": (
        gpt2_lora.SPEC.replace(name="gpt2-tiny-lora-copies",
                               intervention=Intervention(gpt2_lora.attach, gpt2_lora.detach, _lora_copies,
                                                         targets=gpt2_lora.TARGETS)),
        "intervention_gradient",
        "4 of 4 parameter(s) got no gradient",
    ),
    "state-dict-misses-the-modulator": (
        _film_spec("unsaved", attach=lambda model: _film(model, register=False), detach=_unregistered_detach),
        "intervention_roundtrip",
        "4 of 4 intervention parameter(s) are not in model.state_dict()",
    ),
}  # fmt: skip

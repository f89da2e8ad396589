"""cnn-digits-film: cnn-digits with a hook-based modulator as its intervention: FiLM (a learned per-channel scale
and shift) applied by forward hooks to the outputs of named layers, the batch norms of both conv blocks.

The modulator is an ``nn.Module`` registered on the model (``model.film``), so its parameters are in the model's
``state_dict()``; attach freezes the base model and refuses a second attach; detach removes every hook handle,
the module, and restores the requires_grad flags. The scales start near one and the shifts near zero, but not at
them: an identity modulator would move nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.interventions import Intervention, freeze, restore_flags
from harness_zoo.cnn_digits import SPEC as CNN_DIGITS

TARGETS = ("features.1", "features.4")  # the BatchNorm2d after each convolution
ATTRIBUTE = "film"  # where the modulator lives on the model


class FiLM(nn.Module):
    """Per-channel ``scale * x + shift`` for each target layer's (B, C, H, W) output."""

    def __init__(self, channels: dict[str, int]) -> None:
        super().__init__()
        self.keys = {name: name.replace(".", "_") for name in channels}  # parameter dict keys may not hold dots
        self.scale = nn.ParameterDict(
            {self.keys[n]: nn.Parameter(1 + 0.1 * torch.randn(c)) for n, c in channels.items()}
        )
        self.shift = nn.ParameterDict({self.keys[n]: nn.Parameter(0.1 * torch.randn(c)) for n, c in channels.items()})

    def modulate(self, name: str, output: torch.Tensor) -> torch.Tensor:
        key = self.keys[name]
        return output * self.scale[key][:, None, None] + self.shift[key][:, None, None]  # (B, C, H, W)


@dataclass(frozen=True)
class FiLMHandle:
    """What attach returns: the modulator, its hook handles and the requires_grad flags it froze."""

    film: FiLM
    hooks: tuple[torch.utils.hooks.RemovableHandle, ...]
    requires_grad: dict[str, bool]  # parameter name -> flag before attach


def attach(model: nn.Module) -> FiLMHandle:
    """Register the modulator on ``model`` and a forward hook on each target layer."""
    if hasattr(model, ATTRIBUTE):
        raise ValueError(f"a FiLM modulator is already attached to this model (model.{ATTRIBUTE}): detach it first")
    flags = freeze(model)
    modules = dict(model.named_modules())
    film = FiLM({name: modules[name].num_features for name in TARGETS})
    model.add_module(ATTRIBUTE, film)
    hooks = tuple(modules[name].register_forward_hook(lambda module, args, output, name=name: film.modulate(name, output))
                  for name in TARGETS)  # fmt: skip
    return FiLMHandle(film, hooks, flags)


def detach(model: nn.Module, handle: FiLMHandle) -> None:
    """Remove the hooks and the modulator; restore every requires_grad flag."""
    for hook in handle.hooks:
        hook.remove()
    delattr(model, ATTRIBUTE)
    restore_flags(model, handle.requires_grad)


def parameters(handle: FiLMHandle) -> list[nn.Parameter]:
    return list(handle.film.parameters())


SPEC = CNN_DIGITS.replace(
    name="cnn-digits-film",
    intervention=Intervention(attach, detach, parameters, targets=TARGETS, name="FiLM forward hooks on batch norms"),
    description="cnn-digits with a FiLM modulator attached by forward hooks on its two batch norms",
)

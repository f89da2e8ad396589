"""gpt2-tiny-lora: gpt2-tiny with a real PEFT LoRA adapter (rank 4 on every attention ``c_attn``) as its
intervention, and the harness's own metric functions as its metrics.

The adapter comes from the ``peft`` package (extra ``peft``); without it ``build`` raises MissingExtraError and
every check of this model skips, naming the extra. GPT-2's attention projections are ``transformers`` ``Conv1D`` modules (weights
stored in x out), hence ``fan_in_fan_out=True``. The LoRA B matrix is drawn at random (``init_lora_weights=False``)
instead of zero, so the attached adapter is the kind a trained one is: it moves the outputs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from torch import nn

from harness.evaluation import TOKEN_METRICS
from harness.interventions import Intervention, freeze, restore_flags
from harness.spec import MissingExtraError
from harness_zoo.gpt2_tiny import SPEC as GPT2_TINY
from harness_zoo.gpt2_tiny import build_model as build_gpt2

TARGETS = ("transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn")  # the modules LoRA adapts
RANK = 4
EXTRA = "peft"


def _peft() -> Any:
    try:
        import peft
    except ImportError as error:
        raise MissingExtraError(
            f"gpt2-tiny-lora needs the optional extra {EXTRA!r}: pip install -e '.[{EXTRA}]' (package peft)"
        ) from error
    return peft


def build_model() -> nn.Module:
    """gpt2-tiny's model, once ``peft`` is known to be there (the checks of a model without its extra skip)."""
    _peft()
    return build_gpt2()


@dataclass(frozen=True)
class LoraHandle:
    """What attach returns: the PeftModel wrapping the model, and the requires_grad flags it froze."""

    peft_model: Any  # peft.PeftModel; its LoRA layers live inside the user's model
    requires_grad: dict[str, bool]  # parameter name -> flag before attach


def attach(model: nn.Module) -> LoraHandle:
    """Inject LoRA into ``model`` in place (PEFT freezes the base model); a second attach is refused."""
    peft = _peft()
    if any(isinstance(module, peft.tuners.lora.LoraLayer) for module in model.modules()):
        raise ValueError("a LoRA adapter is already attached to this model: detach it first")
    flags = freeze(model)  # PEFT freezes the base model too; the flags before it are what detach restores
    config = peft.LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=["c_attn"], fan_in_fan_out=True,
                             init_lora_weights=False)  # fmt: skip
    with warnings.catch_warnings():  # peft asks transformers a deprecated question (is_gradient_checkpointing)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return LoraHandle(peft.get_peft_model(model, config), flags)


def detach(model: nn.Module, handle: LoraHandle) -> None:
    """Unload the adapter (the original ``Conv1D`` modules back in place) and restore every requires_grad flag."""
    handle.peft_model.unload()
    restore_flags(model, handle.requires_grad)


def parameters(handle: LoraHandle) -> list[nn.Parameter]:
    """The LoRA A and B matrices."""
    return [p for name, p in handle.peft_model.named_parameters() if "lora_" in name]


SPEC = GPT2_TINY.replace(
    name="gpt2-tiny-lora",
    build=build_model,
    intervention=Intervention(attach, detach, parameters, targets=TARGETS, name=f"peft LoRA r={RANK} on c_attn"),
    metrics=TOKEN_METRICS,
    description=f"gpt2-tiny with a PEFT LoRA adapter (r={RANK} on c_attn) and the harness's own metric functions",
)

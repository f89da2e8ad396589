"""Training recipes with one planted defect each, for proving that every Tier 3 check can fail.

Each defect is a user piece (``TrainingRecipe``) put on a small clean spec: a tiny multimode-gpt
token classifier (its own optimizer and freeze/unfreeze) or the digits CNN (real data, for the
learning check). ``defect_spec(name)`` builds the spec; ``DEFECTS`` maps name -> (check, what it does).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR

from harness.adapters import loss_of
from harness.spec import ModelSpec
from harness.training.recipe import TrainingRecipe
from harness_zoo import load_zoo_spec
from harness_zoo.multimode_gpt import build_spec, training_recipe

DEFECTS: dict[str, tuple[str, str]] = {
    "optimizer_missing_unfrozen": ("freeze_unfreeze", "after unfreezing, the body is never added to the optimizer"),
    "loss_ignores_accumulation": (
        "gradient_accumulation",
        "the loss is summed over the batch, so k accumulated micro-batches are not the big batch",
    ),
    "resume_loses_optimizer_state": ("resume_equivalence", "the optimizer's load_state_dict drops Adam's moments"),
    "scheduler_goes_negative": ("scheduler_properties", "a linear decay not clamped at total_steps goes negative"),
    "frozen_learning_rate": ("overfit_one_batch", "the optimizer is built with a learning rate of zero"),
    "loss_without_gradient": ("learning_on_real_text", "the loss is multiplied by zero: nothing is learned"),
    "nan_loss": ("sweep_smoke", "the loss is NaN, so no run of the sweep can be ranked"),
    "knob_never_read": ("knobs", "the z-loss weight is stated as a knob but never added to the loss"),
    "body_rate_forgotten": ("learning_rate_groups", "the recipe states the body at 0.1x; the optimizer gives 1x"),
}


def tagger_spec() -> ModelSpec:
    """A tiny clean multimode-gpt token classifier with its own recipe."""
    return build_spec("token-classifier", name="tiny-tagger", vocab_size=64, block_size=16, n_layer=1, n_embd=16)


def digits_spec() -> ModelSpec:
    return load_zoo_spec("cnn-digits").replace(name="digits-clean")


def no_unfrozen(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> None:
    """Forgets to put the unfrozen parameters into the optimizer."""


def summed_loss(outputs, batch) -> torch.Tensor:
    logits = outputs.logits  # (B, T, K)
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100, reduction="sum")


class ForgetfulAdamW(torch.optim.AdamW):
    """AdamW whose load_state_dict keeps the rates but drops every parameter's state."""

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict({**state_dict, "state": {}})


def forgetful_optimizer(model: torch.nn.Module, config) -> torch.optim.Optimizer:
    return ForgetfulAdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)


def linear_unclamped(optimizer: torch.optim.Optimizer, config) -> LambdaLR:
    """``1 - s / horizon`` with no floor: negative after the horizon."""
    kwargs = config.scheduler_kwargs
    horizon = kwargs.get("total_steps") or kwargs.get("warmup_steps", 0) + 1
    return LambdaLR(optimizer, lambda step: 1 - step / horizon)


def zero_lr_optimizer(model: torch.nn.Module, config) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=0.0)


def zero_loss(outputs, batch) -> torch.Tensor:
    return loss_of(outputs) * 0.0


def nan_loss(outputs, batch) -> torch.Tensor:
    return loss_of(outputs) * math.nan


def defect_spec(name: str | None, *, family: str = "tagger") -> ModelSpec:
    """The clean spec of a family (``"tagger"``, ``"digits"``, ``"knobs"`` or ``"rates"``: the last two state knobs
    and learning-rate multipliers), or the spec carrying defect ``name``."""
    from tests.user_pieces_defects import knob_spec, lr_claim_spec

    if name is None:
        return {"tagger": tagger_spec, "digits": digits_spec, "knobs": knob_spec,
                "rates": lambda: lr_claim_spec(clean=True)}[family]()  # fmt: skip
    if name == "knob_never_read":
        return knob_spec("z_never_read")
    if name == "body_rate_forgotten":
        return lr_claim_spec(clean=False)
    tagger = tagger_spec()
    own = training_recipe("token-classifier")
    recipes = {
        "optimizer_missing_unfrozen": (tagger, dataclasses.replace(own, add_unfrozen=no_unfrozen)),
        "loss_ignores_accumulation": (tagger, dataclasses.replace(own, loss=summed_loss)),
        "resume_loses_optimizer_state": (tagger, TrainingRecipe(configure_optimizers=forgetful_optimizer)),
        "scheduler_goes_negative": (tagger, dataclasses.replace(own, scheduler=linear_unclamped)),
        "frozen_learning_rate": (tagger, TrainingRecipe(configure_optimizers=zero_lr_optimizer)),
        "loss_without_gradient": (digits_spec(), TrainingRecipe(loss=zero_loss)),
        "nan_loss": (tagger, TrainingRecipe(loss=nan_loss)),
    }
    spec, recipe = recipes[name]
    return spec.replace(name=f"{spec.name}-{name.replace('_', '-')}", recipe=recipe)

"""multimode-gpt's head/body transfer-learning schedule, registered as the scheduler ``"transfer-learning"``.

It is multimode-gpt's own piece (it drives the param groups "head" and "body" that the model's
``configure_optimizers`` builds), so it lives beside the model; the harness's generic schedules and the
scheduler registry are in ``harness.training.schedulers``. Importing this module registers the factory
(:func:`transfer_learning`) there, and :data:`CONTRACT` tells Tier 3's scheduler check, through the model's
training recipe, which arguments to fuzz and which values each group's multiplier must take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from harness.training.schedulers import (
    CosineWithWarmup,
    Expectations,
    ScheduleContract,
    cosine_arguments,
    integer_argument,
    real_argument,
    register_scheduler,
    step_argument,
)

NAME = "transfer-learning"  # the scheduler name a TrainingConfig gives

GROUPS: tuple[str, ...] = ("head", "body")
"""Param-group names the transfer-learning schedule drives (:func:`multimode_gpt.configure_optimizers` builds them)."""


@dataclass(frozen=True)
class TransferLearningSchedule:
    """Separate head and body rates: feature extraction (body rate 0), then unfreezing with a head drop
    and a body ramp, both on a shared :class:`CosineWithWarmup` curve ``c(s)``.

    With ``U = unfreeze_step``, ``R = unfreeze_ramp_steps``, ``f = head_drop_factor``::

        head(s) = c(s)                                   for s < U   (feature extraction)
        head(s) = f * c(s)                               for s >= U  (the drop on unfreeze)
        body(s) = 0                                      for s < U   (the body is frozen)
        body(s) = c(s) * min(1, (s - U) / R)             for s >= U  (R = 0: ramp factor 1)

    Each multiplies its own group's initial lr (the body group's already carries ``body_lr_multiplier``).
    Boundaries: ``body(s) = 0`` for every ``s < U``; ``body(U) = 0`` when ``R > 0`` (continuous: the ramp
    starts from 0) and ``body(U) = c(U)`` when ``R = 0`` (a documented jump); ``body(U + R) = c(U + R)``
    and ``body = c`` after; ``head(U) = f * c(U)`` (a jump by ``f`` from ``c(U - 1)``'s curve); at
    ``total_steps`` both are their factor times ``min_lr_ratio``. ``U = 0``: no feature-extraction phase;
    ``U = total_steps``: feature extraction throughout. Never negative, never above 1.

    At step ``U`` the training loop unfreezes the body (``model.unfreeze_transformer()``) and adds its
    parameters to the optimizer's "body" group (``add_unfrozen_parameters``); :meth:`unfreezes_at` says when.
    """

    total_steps: int  # >= 1: the end of the cosine decay
    warmup_steps: int = 0  # in [0, total_steps): warmup of the shared curve
    unfreeze_step: int = 0  # in [0, total_steps]: the first step with a non-frozen body
    unfreeze_ramp_steps: int = 0  # >= 0: steps over which the body rate ramps from 0 to the curve
    head_drop_factor: float = 1.0  # in [0, 1]: the head's rate is multiplied by it from unfreeze_step on
    min_lr_ratio: float = 0.0  # in [0, 1]: the floor of the shared curve
    curve: CosineWithWarmup = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        curve = CosineWithWarmup(self.total_steps, self.warmup_steps, self.min_lr_ratio)  # validates those three
        object.__setattr__(self, "curve", curve)
        for name in ("total_steps", "warmup_steps", "min_lr_ratio"):
            object.__setattr__(self, name, getattr(curve, name))
        object.__setattr__(self, "unfreeze_step", integer_argument("unfreeze_step", self.unfreeze_step, minimum=0))
        if self.unfreeze_step > self.total_steps:
            raise ValueError(
                f"unfreeze_step must be <= total_steps, got unfreeze_step={self.unfreeze_step}, "
                f"total_steps={self.total_steps}"
            )
        ramp = integer_argument("unfreeze_ramp_steps", self.unfreeze_ramp_steps, minimum=0)
        object.__setattr__(self, "unfreeze_ramp_steps", ramp)
        drop = real_argument("head_drop_factor", self.head_drop_factor, low=0.0, high=1.0)
        object.__setattr__(self, "head_drop_factor", drop)

    def unfreezes_at(self, step: int) -> bool:
        """Whether ``step`` is the unfreeze step (never true for ``unfreeze_step = 0``: nothing was frozen)."""
        return self.unfreeze_step > 0 and step_argument(step) == self.unfreeze_step

    def head(self, step: int) -> float:
        s = step_argument(step)
        return self.curve(s) * (self.head_drop_factor if s >= self.unfreeze_step else 1.0)

    def body(self, step: int) -> float:
        s = step_argument(step)
        if s < self.unfreeze_step:
            return 0.0
        ramp = 1.0 if self.unfreeze_ramp_steps == 0 else min(1.0, (s - self.unfreeze_step) / self.unfreeze_ramp_steps)
        return self.curve(s) * ramp

    def multiplier(self, group: str, step: int) -> float:
        if group not in GROUPS:
            raise ValueError(f"group must be one of {', '.join(GROUPS)}; got group={group!r}")
        return self.head(step) if group == "head" else self.body(step)

    def lambdas_for(self, optimizer: torch.optim.Optimizer) -> list[GroupMultiplier]:
        """One multiplier per param group of ``optimizer``, matched by the group's ``"name"``."""
        names = [group.get("name") for group in optimizer.param_groups]
        unknown = [name for name in names if name not in GROUPS]
        if unknown:
            raise ValueError(
                f"transfer_learning needs param groups named {' and '.join(GROUPS)}; the optimizer's groups "
                f"are named {names} (build it with configure_optimizers)"
            )
        return [GroupMultiplier(self, name) for name in names]


@dataclass(frozen=True)
class GroupMultiplier:
    """A LambdaLR multiplier for one named param group of a :class:`TransferLearningSchedule`."""

    schedule: TransferLearningSchedule
    group: str  # "head" or "body"

    def __call__(self, step: int) -> float:
        return self.schedule.multiplier(self.group, step)


def transfer_learning(optimizer: torch.optim.Optimizer, **arguments: Any) -> LambdaLR:
    """LambdaLR of a :class:`TransferLearningSchedule` (keyword arguments), one multiplier per named group."""
    return LambdaLR(optimizer, TransferLearningSchedule(**arguments).lambdas_for(optimizer))


register_scheduler(NAME, transfer_learning)


# What Tier 3's scheduler check may assert of the schedule (harness.checks.training.check_scheduler_properties).


def _arguments(horizon: int) -> Any:
    """Fuzzed arguments whose schedules end within ``horizon`` steps; zero-valued and boundary settings included."""
    from hypothesis import strategies as st

    @st.composite
    def arguments(draw: st.DrawFn) -> dict[str, Any]:
        shared = draw(cosine_arguments(horizon))  # the shared curve's
        total = shared["total_steps"]
        return shared | {
            "unfreeze_step": draw(st.one_of(st.just(0), st.just(total), st.integers(0, total))),
            "unfreeze_ramp_steps": draw(st.one_of(st.just(0), st.integers(0, 10))),
            "head_drop_factor": draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0))),
        }

    return arguments()


def _expectations(arguments: dict[str, Any], group: str) -> Expectations:
    """The documented boundary values of the group's multiplier (see :class:`TransferLearningSchedule`)."""
    total, ratio = arguments["total_steps"], arguments["min_lr_ratio"]
    curve = CosineWithWarmup(total, arguments["warmup_steps"], ratio)  # the shared curve c(s)
    u, ramp, drop = arguments["unfreeze_step"], arguments["unfreeze_ramp_steps"], arguments["head_drop_factor"]
    if group == "head":
        values = {total: drop * ratio if u <= total else ratio, u: drop * curve(u)}
        if u > 0:
            values[0] = curve(0)
        return values, []
    values = {s: 0.0 for s in range(u)} | {u: 0.0 if ramp else curve(u)}
    values[u + ramp] = curve(u + ramp)
    return values, []


CONTRACT = ScheduleContract(NAME, _arguments, _expectations)
"""The schedule's contract, named by multimode-gpt's training recipe (``TrainingRecipe.schedules``)."""


__all__ = ["CONTRACT", "GROUPS", "NAME", "GroupMultiplier", "TransferLearningSchedule", "transfer_learning"]

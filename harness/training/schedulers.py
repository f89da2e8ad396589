"""Learning-rate schedules that drive a real ``torch.optim`` optimizer.

Each schedule is a callable ``step -> multiplier`` for :class:`torch.optim.lr_scheduler.LambdaLR`, which
sets every param group's ``lr`` to ``initial_lr * multiplier(step)``. ``step`` counts scheduler steps:
LambdaLR evaluates the multiplier at step 0 when it is built (the rate of the first optimizer step) and
at step ``k`` after ``k`` calls of ``scheduler.step()``. The factories (:func:`cosine_with_warmup`,
:func:`warmup_only`, :func:`transfer_learning`, :func:`plateau_adaptive`) build the LambdaLR.

Schedules are frozen dataclasses (the plateau one carries state and is not): LambdaLR's ``state_dict``
saves their fields, so a resumed run continues the same schedule.

Every argument is validated when a schedule is built: a wrong type raises ``TypeError`` and a value out
of range ``ValueError``, both naming the parameter and the value (``warmup_steps must be >= 0, got
warmup_steps=-1``). Steps must be integers >= 0.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

# Argument validation: errors name the parameter and the value.


def _integer(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {name}={value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value!r}")
    return int(value)


def _real(name: str, value: Any, *, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {name}={value!r}")
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below) or math.isnan(value):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {name}={value!r}")
    return value


def _step(step: Any) -> int:
    return _integer("step", step, minimum=0)


@dataclass(frozen=True)
class WarmupOnly:
    """Linear warmup, then constant.

    ``m(s) = start_factor + (1 - start_factor) * s / warmup_steps`` for ``s < warmup_steps``, else ``1``.

    Boundaries: ``m(0) = start_factor`` (``1`` when ``warmup_steps = 0``: no warmup at all);
    ``m(warmup_steps) = 1`` and ``m(s) = 1`` for every later step. Monotone non-decreasing, continuous
    (the last warmup step is ``1 - (1 - start_factor) / warmup_steps``, one slope below 1).
    """

    warmup_steps: int  # >= 0: steps of the linear ramp; 0 gives the constant 1
    start_factor: float = 0.0  # in [0, 1]: the multiplier at step 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "warmup_steps", _integer("warmup_steps", self.warmup_steps, minimum=0))
        object.__setattr__(self, "start_factor", _real("start_factor", self.start_factor, low=0.0, high=1.0))

    def __call__(self, step: int) -> float:
        s = _step(step)
        if s < self.warmup_steps:
            return self.start_factor + (1.0 - self.start_factor) * s / self.warmup_steps
        return 1.0


@dataclass(frozen=True)
class CosineWithWarmup:
    """Linear warmup from 0, then a half-cosine decay to ``min_lr_ratio`` at ``total_steps``, held after.

    With ``W = warmup_steps``, ``T = total_steps``, ``r = min_lr_ratio``::

        m(s) = s / W                                                   for s < W
        m(s) = r + (1 - r) * (1 + cos(pi * min(1, (s - W) / (T - W)))) / 2   for s >= W

    Boundaries: ``m(0) = 0`` if ``W > 0``, ``m(0) = 1`` if ``W = 0``; ``m(W) = 1`` (the peak);
    ``m(T) = r`` exactly, and ``m(s) = r`` for ``s > T`` (unlike ``transformers``'
    ``get_cosine_schedule_with_warmup``, which rises again after T; up to T the two agree for ``r = 0``).
    Non-decreasing on ``[0, W]``, non-increasing on ``[W, inf)``, in ``[0, 1]``; consecutive steps differ by
    at most ``max(1 / W, (1 - r) * pi / (2 * (T - W)))``: no jump at the end of warmup.
    """

    total_steps: int  # >= 1: the step at which the decay reaches min_lr_ratio
    warmup_steps: int = 0  # in [0, total_steps): steps of the linear warmup
    min_lr_ratio: float = 0.0  # in [0, 1]: the floor of the decay, as a fraction of the peak

    def __post_init__(self) -> None:
        object.__setattr__(self, "total_steps", _integer("total_steps", self.total_steps, minimum=1))
        object.__setattr__(self, "warmup_steps", _integer("warmup_steps", self.warmup_steps, minimum=0))
        object.__setattr__(self, "min_lr_ratio", _real("min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0))
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps must be < total_steps, got warmup_steps={self.warmup_steps}, "
                f"total_steps={self.total_steps} (for warmup without decay use WarmupOnly)"
            )

    def __call__(self, step: int) -> float:
        s = _step(step)
        if s < self.warmup_steps:
            return s / self.warmup_steps
        progress = min(1.0, (s - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


GROUPS: tuple[str, ...] = ("head", "body")
"""Param-group names the transfer-learning schedule drives (``harness_zoo.multimode_gpt.configure_optimizers``)."""


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
        object.__setattr__(self, "unfreeze_step", _integer("unfreeze_step", self.unfreeze_step, minimum=0))
        if self.unfreeze_step > self.total_steps:
            raise ValueError(
                f"unfreeze_step must be <= total_steps, got unfreeze_step={self.unfreeze_step}, "
                f"total_steps={self.total_steps}"
            )
        ramp = _integer("unfreeze_ramp_steps", self.unfreeze_ramp_steps, minimum=0)
        object.__setattr__(self, "unfreeze_ramp_steps", ramp)
        drop = _real("head_drop_factor", self.head_drop_factor, low=0.0, high=1.0)
        object.__setattr__(self, "head_drop_factor", drop)

    def unfreezes_at(self, step: int) -> bool:
        """Whether ``step`` is the unfreeze step (never true for ``unfreeze_step = 0``: nothing was frozen)."""
        return self.unfreeze_step > 0 and _step(step) == self.unfreeze_step

    def head(self, step: int) -> float:
        s = _step(step)
        return self.curve(s) * (self.head_drop_factor if s >= self.unfreeze_step else 1.0)

    def body(self, step: int) -> float:
        s = _step(step)
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


class PlateauAdaptive:
    """Reduce-on-plateau multiplier: multiply by ``factor`` when a monitored metric stops improving.

    State: ``multiplier`` (starts at 1), ``best`` (None until the first metric), ``bad_steps``,
    ``cooldown_left``. :meth:`record` takes one metric value and updates the state::

        improved = best is None or metric < best - min_delta   (mode "max": metric > best + min_delta)
        if improved: best = metric; bad_steps = 0       else: bad_steps += 1
        if cooldown_left > 0: cooldown_left -= 1; bad_steps = 0
        if bad_steps > patience:
            multiplier = max(min_multiplier, multiplier * factor); cooldown_left = cooldown; bad_steps = 0

    (``torch.optim.lr_scheduler.ReduceLROnPlateau`` with ``threshold_mode="abs"``, ``threshold=min_delta``,
    ``eps=0``, ``min_lr = min_multiplier * initial lr``.) Boundaries: the multiplier is 1 until the first
    reduction; a metric that never improves after the first record reduces it on record number
    ``patience + 2`` and then every ``patience + 1 + cooldown`` records; after ``k`` reductions it is
    ``max(min_multiplier, factor ** k)``: never negative, never increasing, never below ``min_multiplier``.
    ``__call__(step)`` returns the current multiplier whatever the step. A NaN or infinite metric raises.
    """

    def __init__(
        self,
        *,
        mode: str = "min",  # "min": lower metric is better (a loss); "max": higher is better (accuracy)
        factor: float = 0.5,  # in (0, 1): the multiplier's factor per reduction
        patience: int = 2,  # >= 0: non-improving records tolerated before a reduction
        min_delta: float = 0.0,  # >= 0: an improvement must beat the best by more than this
        cooldown: int = 0,  # >= 0: records after a reduction during which bad records are not counted
        min_multiplier: float = 0.0,  # in [0, 1]: the floor of the multiplier
    ) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got mode={mode!r}")
        self.mode = mode
        self.factor = _real("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = _integer("patience", patience, minimum=0)
        self.min_delta = _real("min_delta", min_delta, low=0.0, high=math.inf, high_open=True)
        self.cooldown = _integer("cooldown", cooldown, minimum=0)
        self.min_multiplier = _real("min_multiplier", min_multiplier, low=0.0, high=1.0)
        self.multiplier = 1.0
        self.best: float | None = None
        self.bad_steps = 0
        self.cooldown_left = 0
        self.reductions = 0

    def _improved(self, metric: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return metric < self.best - self.min_delta
        return metric > self.best + self.min_delta

    def record(self, metric: float) -> float:
        """Update the state with one metric value; returns the new multiplier."""
        if isinstance(metric, torch.Tensor):
            metric = metric.item()
        if isinstance(metric, bool) or not isinstance(metric, numbers.Real):
            raise TypeError(f"metric must be a real number, got metric={metric!r}")
        value = float(metric)
        if not math.isfinite(value):
            raise ValueError(f"metric must be finite, got metric={metric!r}")
        if self._improved(value):
            self.best, self.bad_steps = value, 0
        else:
            self.bad_steps += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_steps = 0
        if self.bad_steps > self.patience:
            self.multiplier = max(self.min_multiplier, self.multiplier * self.factor)
            self.cooldown_left, self.bad_steps = self.cooldown, 0
            self.reductions += 1
        return self.multiplier

    def __call__(self, step: int) -> float:
        _step(step)
        return self.multiplier


class PlateauAdaptiveLR(LambdaLR):
    """LambdaLR driven by a :class:`PlateauAdaptive`: ``scheduler.step(metric)`` records, then applies."""

    def __init__(self, optimizer: torch.optim.Optimizer, plateau: PlateauAdaptive) -> None:
        super().__init__(optimizer, plateau)

    @property
    def plateau(self) -> PlateauAdaptive:
        """The multiplier's state: the object ``load_state_dict`` restores (not an attribute of its own,
        which ``state_dict`` would save by reference)."""
        return self.lr_lambdas[0]

    def step(self, metric: float | None = None) -> None:  # type: ignore[override]
        if metric is not None:
            self.plateau.record(metric)
        super().step()


# Factories: a schedule bound to an optimizer.


def warmup_only(optimizer: torch.optim.Optimizer, *, warmup_steps: int, start_factor: float = 0.0) -> LambdaLR:
    """LambdaLR of :class:`WarmupOnly` on every param group."""
    return LambdaLR(optimizer, WarmupOnly(warmup_steps, start_factor))


def cosine_with_warmup(
    optimizer: torch.optim.Optimizer, *, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """LambdaLR of :class:`CosineWithWarmup` on every param group."""
    return LambdaLR(optimizer, CosineWithWarmup(total_steps, warmup_steps, min_lr_ratio))


def transfer_learning(optimizer: torch.optim.Optimizer, **arguments: Any) -> LambdaLR:
    """LambdaLR of a :class:`TransferLearningSchedule` (keyword arguments), one multiplier per named group."""
    return LambdaLR(optimizer, TransferLearningSchedule(**arguments).lambdas_for(optimizer))


def plateau_adaptive(optimizer: torch.optim.Optimizer, **arguments: Any) -> PlateauAdaptiveLR:
    """:class:`PlateauAdaptiveLR` of a :class:`PlateauAdaptive` (keyword arguments) on every param group."""
    return PlateauAdaptiveLR(optimizer, PlateauAdaptive(**arguments))


SCHEDULERS = {
    "cosine-warmup": cosine_with_warmup,
    "transfer-learning": transfer_learning,
    "warmup-only": warmup_only,
    "plateau-adaptive": plateau_adaptive,
}
"""Scheduler name -> factory ``(optimizer, **arguments) -> LRScheduler``."""


__all__ = [
    "GROUPS",
    "SCHEDULERS",
    "CosineWithWarmup",
    "GroupMultiplier",
    "PlateauAdaptive",
    "PlateauAdaptiveLR",
    "TransferLearningSchedule",
    "WarmupOnly",
    "cosine_with_warmup",
    "plateau_adaptive",
    "transfer_learning",
    "warmup_only",
]

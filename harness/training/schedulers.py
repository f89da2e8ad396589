"""Learning-rate schedules that drive a real ``torch.optim`` optimizer, and the registry of named schedulers.

Each schedule is a callable ``step -> multiplier`` for :class:`torch.optim.lr_scheduler.LambdaLR`, which
sets every param group's ``lr`` to ``initial_lr * multiplier(step)``. ``step`` counts scheduler steps:
LambdaLR evaluates the multiplier at step 0 when it is built (the rate of the first optimizer step) and
at step ``k`` after ``k`` calls of ``scheduler.step()``. The factories (:func:`cosine_with_warmup`,
:func:`warmup_only`, :func:`plateau_adaptive`) build the LambdaLR.

``SCHEDULERS`` maps the names a ``TrainingConfig.scheduler`` may hold to factories. These are the generic
ones; a model's own schedule lives with the model, which registers it (:func:`register_scheduler`) and names
it in its training recipe with a :class:`ScheduleContract`, what Tier 3's scheduler check may assert of it
(the reference zoo's multimode-gpt brings its head/body transfer-learning schedule that way).

Schedules are frozen dataclasses (the plateau one carries state and is not): LambdaLR's ``state_dict``
saves their fields, so a resumed run continues the same schedule.

Every argument is validated when a schedule is built: a wrong type raises ``TypeError`` and a value out
of range ``ValueError``, both naming the parameter and the value (``warmup_steps must be >= 0, got
warmup_steps=-1``). Steps must be integers >= 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


@dataclass(frozen=True)
class ArgumentRange:
    """The range of one scheduler argument that the scheduler check fuzzes (bounds included)."""

    low: float
    high: float
    integer: bool = True  # an int argument (a number of steps); False: a real number

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"ArgumentRange needs low <= high, got low={self.low}, high={self.high}")


Duration = str | Callable[[dict[str, Any]], int]
"""A phase's length in steps: the name of a scheduler argument, or a function of all of them."""


@dataclass(frozen=True)
class Phase:
    """One stretch of a schedule: its length and its direction (+1 non-decreasing, -1 non-increasing, 0 constant,
    None: no claim). A length of zero means the phase does not happen at all."""

    name: str
    duration: Duration
    direction: int | None = None


@dataclass(frozen=True)
class ScheduleClaim:
    """What the user states about their scheduler, so that ``scheduler_properties`` can hold it to generic
    properties over the stated argument ranges instead of to any formula of the harness's.

    The recipe's scheduler is driven with ``TrainingConfig(scheduler=name, scheduler_kwargs=<fuzzed arguments>)``.
    At every step the multiplier (lr / initial lr of each param group in ``groups``) is finite and >= 0; inside a
    phase it moves in the phase's direction; a phase of length zero takes no step (the next one starts there, so a
    zero read as "use the default" shows); at every phase boundary it is continuous (no larger step than inside the
    adjacent phases) unless ``jumps`` allows a jump there; from the end of the last phase on it equals ``end_value``.
    Arguments the factory refuses (a ValueError or TypeError naming them) are skipped and counted."""

    name: str  # a registered scheduler name (register_scheduler; TrainingConfig validates it) the recipe is driven with
    arguments: tuple[tuple[str, ArgumentRange], ...]  # every fuzzed argument and its range
    phases: tuple[Phase, ...]  # consecutive phases from step 0
    end_value: str | float | None = None  # the multiplier held after the last phase: an argument's name or a number
    jumps: tuple[tuple[str, Callable[[dict[str, Any]], float]], ...] = ()  # phase name -> largest jump at its start
    groups: tuple[str, ...] = ()  # param-group names the claim is about (empty: every group)
    constants: tuple[tuple[str, Any], ...] = ()  # scheduler_kwargs passed as they are (not fuzzed)


# Argument validation: errors name the parameter and the value.


def integer_argument(name: str, value: Any, *, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; TypeError or ValueError naming ``name`` and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {name}={value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {name}={value!r}")
    return int(value)


def real_argument(
    name: str, value: Any, *, low: float, high: float, low_open: bool = False, high_open: bool = False
) -> float:
    """``value`` as a float in the interval; TypeError or ValueError naming ``name``, the interval and the value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {name}={value!r}")
    value = float(value)
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (above and below) or math.isnan(value):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be in {interval}, got {name}={value!r}")
    return value


def step_argument(step: Any) -> int:
    """A scheduler step: an int >= 0."""
    return integer_argument("step", step, minimum=0)


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
        object.__setattr__(self, "warmup_steps", integer_argument("warmup_steps", self.warmup_steps, minimum=0))
        object.__setattr__(self, "start_factor", real_argument("start_factor", self.start_factor, low=0.0, high=1.0))

    def __call__(self, step: int) -> float:
        s = step_argument(step)
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
        object.__setattr__(self, "total_steps", integer_argument("total_steps", self.total_steps, minimum=1))
        object.__setattr__(self, "warmup_steps", integer_argument("warmup_steps", self.warmup_steps, minimum=0))
        object.__setattr__(self, "min_lr_ratio", real_argument("min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0))
        if self.warmup_steps >= self.total_steps:
            raise ValueError(
                f"warmup_steps must be < total_steps, got warmup_steps={self.warmup_steps}, "
                f"total_steps={self.total_steps} (for warmup without decay use WarmupOnly)"
            )

    def __call__(self, step: int) -> float:
        s = step_argument(step)
        if s < self.warmup_steps:
            return s / self.warmup_steps
        progress = min(1.0, (s - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


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
        self.factor = real_argument("factor", factor, low=0.0, high=1.0, low_open=True, high_open=True)
        self.patience = integer_argument("patience", patience, minimum=0)
        self.min_delta = real_argument("min_delta", min_delta, low=0.0, high=math.inf, high_open=True)
        self.cooldown = integer_argument("cooldown", cooldown, minimum=0)
        self.min_multiplier = real_argument("min_multiplier", min_multiplier, low=0.0, high=1.0)
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
        step_argument(step)
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


def plateau_adaptive(optimizer: torch.optim.Optimizer, **arguments: Any) -> PlateauAdaptiveLR:
    """:class:`PlateauAdaptiveLR` of a :class:`PlateauAdaptive` (keyword arguments) on every param group."""
    return PlateauAdaptiveLR(optimizer, PlateauAdaptive(**arguments))


SCHEDULERS: dict[str, Callable[..., Any]] = {
    "cosine-warmup": cosine_with_warmup,
    "warmup-only": warmup_only,
    "plateau-adaptive": plateau_adaptive,
}
"""Scheduler name -> factory ``(optimizer, **arguments) -> LRScheduler``; models add theirs with register_scheduler."""


def register_scheduler(name: str, factory: Callable[..., Any]) -> None:
    """Make ``factory`` the scheduler ``name`` (a model module registers its own schedule on import).

    Registering the same factory again changes nothing; another factory under a taken name is a ValueError.
    """
    held = SCHEDULERS.get(name)
    if held is not None and held is not factory:
        raise ValueError(
            f"scheduler {name!r} is already registered ({held.__module__}.{held.__qualname__}); "
            f"cannot register {factory.__module__}.{factory.__qualname__} under it"
        )
    SCHEDULERS[name] = factory


def cosine_arguments(horizon: int) -> Any:
    """A Hypothesis strategy of :class:`CosineWithWarmup` arguments whose decay ends by ``horizon - 5`` (a check
    that drives ``horizon`` steps sees the held floor after it), zero warmup and the ratio's bounds included."""
    from hypothesis import strategies as st

    @st.composite
    def arguments(draw: st.DrawFn) -> dict[str, Any]:
        total = draw(st.integers(1, horizon - 5))
        warmup = draw(st.one_of(st.just(0), st.integers(0, total - 1)))
        ratio = draw(st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 1.0)))
        return {"total_steps": total, "warmup_steps": warmup, "min_lr_ratio": ratio}

    return arguments()


def _builtin_claims() -> tuple[Any, ...]:
    """The ScheduleClaims of the generic schedules above: what Tier 3 holds them to (the same generic properties
    as any user's scheduler), over arguments whose schedules fit in 60 steps."""
    cosine = ScheduleClaim(
        "cosine-warmup",
        arguments=(
            ("total_steps", ArgumentRange(1, 55)),
            ("warmup_steps", ArgumentRange(0, 54)),
            ("min_lr_ratio", ArgumentRange(0.0, 1.0, integer=False)),
        ),  # fmt: skip
        phases=(
            Phase("warmup", "warmup_steps", +1),
            Phase("decay", lambda a: a["total_steps"] - a["warmup_steps"], -1),
        ),
        end_value="min_lr_ratio",
    )
    warmup = ScheduleClaim(
        "warmup-only",
        arguments=(("warmup_steps", ArgumentRange(0, 55)), ("start_factor", ArgumentRange(0.0, 1.0, integer=False))),
        phases=(Phase("warmup", "warmup_steps", +1),),
        end_value=1.0,
    )
    return cosine, warmup


BUILTIN_CLAIMS = _builtin_claims()
"""ScheduleClaims of ``cosine-warmup`` and ``warmup-only`` (see :class:`harness.training.recipe.ScheduleClaim`)."""


Expectations = tuple[dict[int, float], list[tuple[int, int, int]]]
"""Documented multipliers ``{step: value}`` and monotone stretches ``(start, end, +1 up / -1 down)``."""


@dataclass(frozen=True)
class ScheduleContract:
    """A model's own named schedule and what Tier 3's scheduler check may assert of it.

    The check fuzzes ``arguments(horizon)`` (``scheduler_kwargs`` of schedules that fit in ``horizon`` steps),
    drives the recipe's optimizer with ``TrainingConfig(scheduler=name, scheduler_kwargs=...)`` and compares
    each param group's multipliers with ``expectations(arguments, group)``, the group named by its ``"name"``
    (or its index). Beyond those it checks, as for every schedule, that no multiplier is negative or non-finite.
    """

    name: str  # a SCHEDULERS name (the model's module registers the factory)
    arguments: Callable[[int], Any]  # horizon -> Hypothesis strategy of scheduler_kwargs dicts
    expectations: Callable[[dict[str, Any], str], Expectations]  # (arguments, param-group name) -> expectations


__all__ = [
    "BUILTIN_CLAIMS",
    "SCHEDULERS",
    "CosineWithWarmup",
    "PlateauAdaptive",
    "PlateauAdaptiveLR",
    "ScheduleContract",
    "WarmupOnly",
    "cosine_arguments",
    "cosine_with_warmup",
    "integer_argument",
    "plateau_adaptive",
    "real_argument",
    "register_scheduler",
    "step_argument",
    "warmup_only",
]

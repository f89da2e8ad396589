"""The check catalog: uniformly shaped check functions, registered with the capabilities they need.

A check is ``check_<property>(spec, model, *, options) -> CheckResult``. It builds its own seeded
inputs, asserts one rule, and returns the measured value, the threshold and the verdict. It never
imports pytest. :func:`applicable_checks` yields the checks that apply to a spec, the way
scikit-learn's ``_yield_all_checks`` does, with a reason for each one that does not.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from harness.checks.options import BehaviourOptions, MonitoringCheckOptions, NumericsOptions, TrainingCheckOptions
from harness.result import CheckResult, Status
from harness.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class CheckOptions:
    """Every knob and bound of every check, one frozen value passed to each check; the defaults suit CI on two
    cores. Tiers 1 and 4 read the fields here; Tiers 2, 3 and 5 their own group (:mod:`harness.checks.options`)."""

    seed: int = 0  # seed of every generated input
    batch_size: int = 4  # rows of the fixed batches (batch independence, gradient flow, ...)
    length: int = 16  # sequence length of the fixed batches, capped at the spec's max_length
    num_batches: int = 3  # batches back-propagated by the gradient-flow check
    repeats: int = 3  # repeated eval forwards in the determinism check (at least 3)
    artifacts_dir: str | None = None  # where exports are written (None: a temporary folder)
    max_int8_excess_error: float = 2.0  # int8 export: RMS error at most this many times what int8 explains
    max_int8_accuracy_drop: float = 0.02  # int8 export: 95% lower bound of the real-input accuracy drop
    min_int8_cosine: float = 0.95  # int8 export of an embedding model: lowest cosine to eager on real text
    latency_repeats: int = 30  # interleaved timed calls per backend
    max_latency_ratio: float = 3.0  # an exported backend's p50 may be at most this many times eager's
    behaviour: BehaviourOptions = field(default_factory=BehaviourOptions)  # Tier 2 bounds
    training: TrainingCheckOptions = field(default_factory=TrainingCheckOptions)  # Tier 3 budgets and tolerances
    monitoring: MonitoringCheckOptions = field(default_factory=MonitoringCheckOptions)  # Tier 5 sample sizes
    numerics: NumericsOptions = field(default_factory=NumericsOptions)  # Tier 3 numerics (precision, compile)

    def __post_init__(self) -> None:
        try:
            validate_seed(self.seed)
        except ValueError as error:
            raise ValueError(f"CheckOptions.seed {error}") from None
        for name in ("batch_size", "length", "num_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"CheckOptions.{name} must be >= 1, got {name}={getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"CheckOptions.batch_size must be >= 2, got batch_size={self.batch_size}")
        if self.max_int8_excess_error < 1.0:
            raise ValueError(f"CheckOptions.max_int8_excess_error must be >= 1, got {self.max_int8_excess_error}")
        for name in ("max_int8_accuracy_drop", "min_int8_cosine"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CheckOptions.{name} must be in [0, 1], got {name}={getattr(self, name)}")
        if self.latency_repeats < 5 or self.max_latency_ratio <= 0:
            raise ValueError(
                f"CheckOptions needs latency_repeats >= 5 and max_latency_ratio > 0, "
                f"got latency_repeats={self.latency_repeats}, max_latency_ratio={self.max_latency_ratio}"
            )
        if self.repeats < 3:
            raise ValueError(f"CheckOptions.repeats must be >= 3, got repeats={self.repeats}")

    def length_for(self, spec: ModelSpec) -> int:
        """The fixed-batch length for a spec: ``length`` within the spec's bounds."""
        high = spec.inputs.max_length or 1
        return max(spec.inputs.min_length, min(self.length, high))


SEED_HEADROOM = 10_000  # checks add offsets up to this to the seed
MAX_SEED = 2**63 - 1 - SEED_HEADROOM  # torch.Generator.manual_seed takes a signed 64-bit integer


def validate_seed(value: object) -> int:
    """The seed as an int in [0, MAX_SEED]; ValueError naming the value otherwise."""
    try:
        seed = int(str(value))
    except ValueError:
        raise ValueError(f"must be an integer, got {value!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"must be in [0, {MAX_SEED}], got {seed}")
    return seed


CheckFunction = Callable[..., CheckResult]
Requirement = Callable[[ModelSpec], "str | None"]  # returns why a check does not apply, or None


@dataclass(frozen=True)
class Check:
    """A registered check: its function, tier and the requirements a spec must meet."""

    name: str
    tier: int
    function: CheckFunction
    requirements: tuple[Requirement, ...] = field(default=())

    def not_applicable_because(self, spec: ModelSpec) -> str | None:
        for requirement in self.requirements:
            reason = requirement(spec)
            if reason:
                return reason
        return None

    @property
    def rule(self) -> str:
        """The first line of the check function's docstring."""
        return (self.function.__doc__ or self.name).strip().splitlines()[0].rstrip(".")


CHECKS: dict[str, Check] = {}


def register(tier: int, *requirements: Requirement) -> Callable[[CheckFunction], CheckFunction]:
    """Add a ``check_<name>`` function to the catalog under ``<name>``."""

    def decorator(function: CheckFunction) -> CheckFunction:
        name = function.__name__.removeprefix("check_")
        if name in CHECKS:
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS[name] = Check(name, tier, function, requirements)
        return function

    return decorator


# Requirements: each returns the reason a check does not apply to a spec, or None.


def needs_sequence(spec: ModelSpec) -> str | None:
    from harness.adapters import adapter_for

    return None if adapter_for(spec).sequence else f"task {spec.task} has no sequence dimension"


def needs_attention_mask(spec: ModelSpec) -> str | None:
    return None if spec.capabilities.has_attention_mask else "the model declares no attention mask"


def needs_training(spec: ModelSpec) -> str | None:
    return None if spec.capabilities.supports_training else "the model declares it does not support training"


def needs_fresh_weights(spec: ModelSpec) -> str | None:
    return "the model loads pretrained weights" if spec.capabilities.pretrained else None


def applicable_checks(spec: ModelSpec, tiers: tuple[int, ...] = (1,)) -> Iterator[tuple[Check, str | None]]:
    """Every check of the given tiers, with the reason it does not apply to ``spec`` (None if it does).

    The catalog is whole here: importing this module first runs ``harness/checks/__init__.py``, which imports
    every check module (an import of the package from here would be an import circle)."""
    for check in CHECKS.values():
        if check.tier in tiers:
            yield check, check.not_applicable_because(spec)


def run_check(check: Check, spec: ModelSpec, model: torch.nn.Module, options: CheckOptions) -> CheckResult:
    """Run one check on a private copy of the model; a crash becomes a failed result, not an error."""
    import copy

    reason = check.not_applicable_because(spec)
    if reason:
        return skipped(spec, check.name, reason, seed=options.seed)
    started = time.perf_counter()
    try:
        result = check.function(spec, copy.deepcopy(model), options=options)
    except Exception as error:  # noqa: BLE001 - a model that crashes fails the check
        frames = traceback.extract_tb(error.__traceback__)
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        result = CheckResult(
            check.name,
            spec.name,
            check.tier,
            Status.FAILED,
            check.rule,
            seed=options.seed,
            expected="the check to run",
            got=f"{type(error).__name__}: {error} (at {where})",
            hint="The model raised while the check ran it; the traceback is in details.",
            details={"traceback": traceback.format_exc(limit=8)},
        )
    return replace(result, details={**result.details, "duration_s": round(time.perf_counter() - started, 4)})


def skipped(spec: ModelSpec, check: str, reason: str, *, seed: int) -> CheckResult:
    """A skipped CheckResult of the registered check ``check``, saying why it does not apply."""
    registered = CHECKS[check]
    return CheckResult(check, spec.name, registered.tier, Status.SKIPPED, registered.rule, got=reason, seed=seed)


def verdict(
    spec: ModelSpec,
    check: str,
    *,
    passed: bool,
    measured: float | None,
    threshold: float | None,
    expected: str,
    got: str,
    hint: str,
    sample_size: int,
    seed: int,
    tolerance: dict[str, float] | None = None,
    details: dict[str, Any] | None = None,
) -> CheckResult:
    """A passed or failed CheckResult of the registered check ``check``, with the numbers behind it."""
    registered = CHECKS[check]
    if tolerance is not None and set(tolerance) != {"rtol", "atol"}:  # the report schema's tolerance shape
        raise ValueError(f"{check}: a tolerance names exactly rtol and atol, got {sorted(tolerance)}")
    return CheckResult(
        check=check,
        model=spec.name,
        tier=registered.tier,
        status=Status.PASSED if passed else Status.FAILED,
        rule=registered.rule,
        measured=measured,
        threshold=threshold,
        tolerance=tolerance,
        sample_size=sample_size,
        seed=seed,
        expected=expected,
        got=got,
        hint=hint,
        details=details or {},
    )

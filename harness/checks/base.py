"""The check catalog: uniformly shaped check functions, registered with the capabilities they need.

A check is ``check_<property>(spec, model, *, options) -> CheckResult``. It builds its own seeded
inputs, asserts one rule, and returns the measured value, the threshold and the verdict. It never
imports pytest. :func:`applicable_checks` yields the checks that apply to a spec, the way
scikit-learn's ``_yield_all_checks`` does, with a reason for each one that does not.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import math
import os
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from harness.checks.options import BehaviourOptions, MonitoringCheckOptions, NumericsOptions, TrainingCheckOptions
from harness.config import validate_seed
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.tolerances import UnsupportedPrecision

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
    artifacts_dir: str | None = None  # where exports are cached (None: the shared cache, harness.cache.cache_dir)
    device: str = "cpu"  # where the model runs (harness.placement: --harness-device)
    dtype: str = "float32"  # the model's floating dtype; every tolerance is this dtype's row (--harness-dtype)
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

    def batch_size_for(self, spec: ModelSpec) -> int:
        """The fixed-batch size for a spec: ``batch_size``, at most the spec's ``max_batch_size``."""
        return min(self.batch_size, spec.inputs.max_batch_size)


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
        """The first paragraph of the check function's docstring, joined into one line: a whole sentence, never one
        cut at a line break."""
        paragraph = (self.function.__doc__ or self.name).strip().split("\n\n")[0]
        return " ".join(line.strip() for line in paragraph.splitlines()).rstrip(".")


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


@dataclass
class Progress:
    """What a running check has established so far: the step it is in, the facts it measured, the input shapes
    the model under test was called with. A crash reports all three (:func:`run_check`)."""

    step: str = "setting up"  # the step running now, in words ("backward of batch 2")
    established: dict[str, Any] = field(default_factory=dict)  # facts measured before any later step raised
    shapes: set[tuple[int, ...]] = field(default_factory=set)  # shapes of the first tensor of every model call
    model: Any = None  # the model under test (run_check's private copy), which carries the recording hook
    hook: Any = None  # the handle of its shape-recording forward pre-hook

    def at(self, step: str) -> None:
        """Enter ``step``."""
        self.step = step

    def establish(self, **facts: Any) -> None:
        """Record facts the check has measured (JSON-ready values); a later crash reports them."""
        self.established.update(facts)


_PROGRESS: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("harness_check_progress", default=None)


def progress() -> Progress:
    """The running check's :class:`Progress` (a throwaway one when a check function is called directly)."""
    return _PROGRESS.get() or Progress()


def _record_shapes(record: Progress) -> Callable[..., None]:
    """A forward pre-hook recording the shape of the first tensor argument of every call, outside tracing."""
    import torch

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        first = next((v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)), None)
        if first is not None and type(first) is torch.Tensor:  # not a fake or functional tensor of an export
            record.shapes.add(tuple(int(d) for d in first.shape))

    return hook


def _user_files(spec: ModelSpec, model: Any) -> set[str]:
    """Source files of the user's code: the model's module classes (torch's own excepted), the spec's build,
    memory, recipe, intervention and metric pieces. A traceback through one of them means the model (or its
    pieces) raised."""
    import torch

    harness_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    library_dirs = (os.path.dirname(os.path.abspath(torch.__file__)), harness_dir)
    objects: list[Any] = [type(module) for module in model.modules()] + [spec.build, spec.memory]
    for pieces in (spec.recipe, spec.intervention):
        if pieces is not None:
            objects += [getattr(pieces, name) for name in vars(pieces) if callable(getattr(pieces, name))]
    objects += list(spec.metrics.values())
    files = set()
    for item in objects:
        target = getattr(item, "func", item)  # functools.partial
        try:
            path = inspect.getsourcefile(
                target if inspect.isclass(target) or inspect.isfunction(target) else type(target)
            )
        except TypeError:
            continue
        if path and not os.path.abspath(path).startswith(library_dirs):
            files.add(os.path.abspath(path))
    return files


def raised_by(error: BaseException, user_files: set[str]) -> str:
    """``"model"`` when the traceback passes through the user's code (``user_files``), else ``"harness"``."""
    frames = traceback.extract_tb(error.__traceback__)
    return "model" if any(os.path.abspath(frame.filename) in user_files for frame in frames) else "harness"


ORIGIN_TEXT = {"model": "the model (or the spec's own pieces)", "harness": "the harness's own code"}
ORIGIN_HINT = {
    "model": "The model raised while the check ran it; the traceback is in details.",
    "harness": "The exception came from the harness, not from the model: a harness bug, or a model output the "
    "harness cannot handle; the traceback is in details.",
}


@contextlib.contextmanager
def shapes_unrecorded() -> Iterator[None]:
    """The running check's model without its shape-recording hook, for ``torch.jit.script`` (which compiles
    every hook of the module it scripts, and cannot compile this one)."""
    record = progress()
    if record.hook is None:
        yield
        return
    record.hook.remove()
    try:
        yield
    finally:
        record.hook = _recording(record)


def _recording(record: Progress) -> Any:
    """Attach the shape-recording hook to ``record.model``; its handle."""
    return record.model.register_forward_pre_hook(_record_shapes(record), with_kwargs=True)


def run_check(check: Check, spec: ModelSpec, model: torch.nn.Module, options: CheckOptions) -> CheckResult:
    """Run one check on a private copy of the model; a crash becomes a failed result, not an error.

    The result records the input shapes the model was called with (``details["input_shapes"]``). A crash
    reports the step that raised, whether the model or the harness raised, and what the check had established."""
    import copy

    reason = check.not_applicable_because(spec)
    if reason:
        return skipped(spec, check.name, reason, seed=options.seed)
    started = time.perf_counter()
    private = copy.deepcopy(model)
    record = Progress(model=private)
    record.hook = _recording(record)
    token = _PROGRESS.set(record)
    try:
        result = check.function(spec, private, options=options)
    except UnsupportedPrecision as error:  # the check is not defined in this dtype: nothing to judge
        result = skipped(spec, check.name, str(error), seed=options.seed)
    except Exception as error:  # noqa: BLE001 - a model that crashes fails the check
        result = _crashed(check, spec, private, options, record, error)
    finally:
        record.hook.remove()
        _PROGRESS.reset(token)
    shapes = ["x".join(map(str, shape)) for shape in sorted(record.shapes)]
    details = {**result.details, "input_shapes": shapes, "duration_s": round(time.perf_counter() - started, 4)}
    return replace(result, details=details)


def _crashed(
    check: Check, spec: ModelSpec, model: Any, options: CheckOptions, record: Progress, error: Exception
) -> CheckResult:
    frames = traceback.extract_tb(error.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    origin = raised_by(error, _user_files(spec, model))
    established = "; ".join(f"{key}: {value}" for key, value in record.established.items())
    return CheckResult(
        check.name,
        spec.name,
        check.tier,
        Status.FAILED,
        check.rule,
        seed=options.seed,
        expected="the check to run",
        got=f"{type(error).__name__}: {error} (at {where}), raised by {ORIGIN_TEXT[origin]} during step "
        f"'{record.step}'" + (f"; established before it raised: {established}" if established else ""),
        hint=ORIGIN_HINT[origin],
        details={
            "traceback": traceback.format_exc(limit=8),
            "raised_by": origin,
            "step": record.step,
            "established": dict(record.established),
        },
    )


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
    """A passed or failed CheckResult of the registered check ``check``, with the numbers behind it.

    A non-finite ``measured`` value never passes (every comparison with NaN is false, so a rule written as
    ``not value > bound`` would pass it): the result fails and says so; the check's ``got`` says where it arose."""
    registered = CHECKS[check]
    if tolerance is not None and set(tolerance) != {"rtol", "atol"}:  # the report schema's tolerance shape
        raise ValueError(f"{check}: a tolerance names exactly rtol and atol, got {sorted(tolerance)}")
    if measured is not None and not math.isfinite(measured):
        passed = False
        if "non-finite" not in got and "NaN" not in got and "Inf" not in got:
            got = f"a non-finite measured value ({measured}); {got}"
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


def non_finite(label: str, value: Any) -> str | None:
    """Where a tensor (or number) holds NaN or Inf, in words (``"2 NaN, 0 Inf in one-at-a-time outputs, first at
    index (1, 0, 3)"``), or None when every element is finite."""
    import torch

    tensor = torch.as_tensor(value).detach()
    if not (tensor.is_floating_point() or tensor.is_complex()):
        return None
    bad = ~torch.isfinite(tensor)
    if not bool(bad.any()):
        return None
    first = tuple(int(i) for i in bad.nonzero()[0]) if tensor.dim() else ()
    nans = int(torch.isnan(tensor).sum())
    return f"{nans} NaN, {int(bad.sum()) - nans} Inf in {label}" + (f", first at index {first}" if first else "")


def first_non_finite(**tensors: Any) -> str | None:
    """:func:`non_finite` of the first of several tensors that holds NaN or Inf, named by their keyword (underscores
    read as spaces), or None when all are finite."""
    return next(
        (where for label, value in tensors.items() if (where := non_finite(label.replace("_", " "), value))), None
    )


def worst_item(values: Mapping[str, float]) -> tuple[str, float]:
    """The key and value of the largest value, NaN counting as the largest of all (``max`` would skip it)."""
    return max(values.items(), key=lambda item: math.inf if math.isnan(item[1]) else item[1])


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """Run a block as the running check's step ``name`` (a crash inside it names the step)."""
    record = progress()
    previous = record.step
    record.at(name)
    yield
    record.at(previous)

"""Numerics and the training path as people really run them: half precision, mixed-precision training,
``torch.compile``, gradient checkpointing, and inputs that are valid but extreme.

The other tiers run every model in float32, eagerly, without checkpointing, on ordinary inputs. Each path
here has shipped silent bugs (a model all-NaN in float16 without an error, compiled and eager results that
differ, encoder gradients dropped under reentrant checkpointing), so each check runs the model the other
way and holds it to the float32 eager run, taking every bound from :mod:`harness.tolerances`.

The checks are Tier 3 (does it train?): each runs a backward pass or training steps where the model trains, and
compiling or training twice costs far more than Tier 1's seconds. Their knobs are ``options.numerics``
(:class:`harness.checks.options.NumericsOptions`).

Where an output is compared with float32 in half precision, the error is measured in units of the float32
output's root mean square, so one bound serves logits of any magnitude (a scorer's [0, 1] scores and a T5's
logits of size 30 alike). Gradients are compared parameter by parameter with the table's rule applied to
norms: ``||g - g_ref|| <= atol + rtol * ||g_ref||``, so a tiny gradient is held to its own scale.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from harness.adapters import adapter_for, logits_of
from harness.adapters.base import Batch, batch_size_of
from harness.checks.base import CheckOptions, needs_training, register, skipped, verdict
from harness.checks.fuzz import Violation, fuzz
from harness.checks.inputs import fixed_batch
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.strategies import BatchShape
from harness.tolerances import Tolerance, compare, require_float32, tolerance_for
from harness.training.recipe import resolve

# Shared helpers.


def _on(batch: Batch, device: str, dtype: torch.dtype | None = None) -> Batch:
    """The batch on ``device``, its floating tensors cast to ``dtype`` (integer ids and masks unchanged)."""
    return {
        key: value.to(device=device, dtype=dtype if dtype is not None and value.is_floating_point() else None)
        for key, value in batch.items()
    }


def _tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    """The tensors in a module's output: a tensor, a mapping (Hugging Face ModelOutput), a sequence, a dataclass."""
    if depth > 3:
        return
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _tensors(item, depth + 1)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item, depth + 1)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from _tensors(getattr(value, item.name), depth + 1)


class ActivationWatch:
    """Forward hooks on every submodule: the largest finite activation magnitude and where it was, and the first
    module (in the order modules finish) whose output holds a NaN or Inf, with the last finite one before it.

    A module's hook runs when its forward returns, so the first non-finite output is the innermost module that
    produced it; ``<model>`` means the model's own forward, outside any submodule."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.largest = 0.0
        self.largest_at = ""
        self.first_non_finite: str | None = None
        self.non_finite_input = False  # the first non-finite value reached that module's input, not its output
        self.last_finite: str | None = None
        self.calls = 0
        self._handles: list[Any] = []

    def __enter__(self) -> ActivationWatch:
        for name, module in self.model.named_modules():
            self._handles.append(module.register_forward_hook(functools.partial(self._hook, name or "<model>")))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.calls += 1
        # NaN or +Inf reaching a module's input was made by the code around it (-Inf is how scores get masked)
        if self.first_non_finite is None and any(
            t.is_floating_point() and bool((torch.isnan(t) | (t == math.inf)).any()) for t in _tensors(args)
        ):
            self.first_non_finite, self.non_finite_input = name, True
        finite_output = True
        for tensor in _tensors(output):
            if not tensor.is_floating_point() or tensor.numel() == 0:
                continue
            values = tensor.detach()
            finite = torch.isfinite(values)
            if not bool(finite.all()):
                finite_output = False
            if bool(finite.any()):
                largest = float(values[finite].abs().max())
                if largest > self.largest:
                    self.largest, self.largest_at = largest, name
        if not finite_output and self.first_non_finite is None:
            self.first_non_finite = name
        elif finite_output and self.first_non_finite is None:
            self.last_finite = name

    def where(self) -> str:
        """Where the first non-finite activation appeared, in words ('' when none did)."""
        if self.first_non_finite is None:
            return ""
        if self.non_finite_input:
            between = f"between {self.last_finite} and it" if self.last_finite else "before it"
            return (f"first non-finite value in the input of {self.first_non_finite}: made {between}, in forward "
                    "code outside any submodule")  # fmt: skip
        after = f", after {self.last_finite} (finite)" if self.last_finite else ""
        return f"first non-finite activation in the output of {self.first_non_finite}{after}"


def _gradients(model: torch.nn.Module) -> dict[str, torch.Tensor | None]:
    """Every trainable parameter's gradient (None where it got none), detached copies."""
    return {
        name: None if p.grad is None else p.grad.detach().clone()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def _non_finite_gradients(gradients: Mapping[str, torch.Tensor | None]) -> list[str]:
    return [name for name, grad in gradients.items() if grad is not None and not bool(torch.isfinite(grad).all())]


@dataclass(frozen=True)
class GradientComparison:
    """Per-parameter gradients of a run against a reference, with the table's rule applied to norms."""

    relative: dict[str, float]  # ||g - g_ref|| / ||g_ref|| per parameter (inf: a gradient dropped or non-finite)
    violations: dict[str, str]  # parameter -> what is wrong, for those outside atol + rtol * ||g_ref||

    @property
    def worst(self) -> tuple[str, float]:
        if not self.relative:
            return "", 0.0
        name = max(self.relative, key=self.relative.get)
        return name, self.relative[name]


def compare_gradients(
    got: Mapping[str, torch.Tensor | None], reference: Mapping[str, torch.Tensor | None], tolerance: Tolerance
) -> GradientComparison:
    """Compare two runs' gradients parameter by parameter: ``||g - g_ref|| <= atol + rtol * ||g_ref||``.

    A parameter with a reference gradient that the run left without one is a dropped gradient (infinitely far);
    one the reference left without a gradient must stay without one (or all zero)."""
    relative: dict[str, float] = {}
    violations: dict[str, str] = {}
    for name in [*reference, *(n for n in got if n not in reference)]:  # parameter order: messages stay stable
        ref, value = reference.get(name), got.get(name)
        if ref is None and value is None:
            continue
        if value is None:
            scale = float(ref.double().norm())
            if scale > 0:
                relative[name], violations[name] = math.inf, "no gradient (the reference has one)"
            continue
        value64 = value.double()
        if not bool(torch.isfinite(value64).all()):
            relative[name], violations[name] = math.inf, "non-finite gradient"
            continue
        ref64 = torch.zeros_like(value64) if ref is None else ref.double()
        difference, scale = float((value64 - ref64).norm()), float(ref64.norm())
        relative[name] = difference / scale if scale > 0 else (0.0 if difference == 0 else math.inf)
        if difference > tolerance.atol + tolerance.rtol * scale:
            violations[name] = f"||difference|| {difference:.3g} vs ||reference|| {scale:.3g}"
    return GradientComparison(relative, violations)


def _names(items: list[str], most: int = 3) -> str:
    more = f" and {len(items) - most} more" if len(items) > most else ""
    return ", ".join(items[:most]) + more


# Half-precision parity.

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def half_precision_runs(*, cuda: bool, float16_on_cpu: bool) -> tuple[list[tuple[str, str]], list[str]]:
    """The (dtype, device) pairs half_precision_parity runs, and a note for each part it leaves out.

    bfloat16 always runs on the CPU (its kernels are complete there); with CUDA, bfloat16 and float16 run on the
    GPU too. float16 needs CUDA unless ``float16_on_cpu``: CPU float16 kernels are slow and not what people serve."""
    runs = [("bfloat16", "cpu")]
    notes = []
    if cuda:
        runs += [("bfloat16", "cuda"), ("float16", "cuda")]
    elif float16_on_cpu:
        runs.append(("float16", "cpu"))
    else:
        notes.append("float16 skipped: it needs CUDA (torch.cuda.is_available() is False)")
    if float16_on_cpu and cuda:
        runs.append(("float16", "cpu"))
    return runs, notes


def _half_run(
    spec: ModelSpec, model: torch.nn.Module, batch: Batch, dtype_name: str, device: str, trains: bool
) -> dict[str, Any]:
    """One dtype on one device against float32 on the same device: output and loss errors, non-finite values, and
    the activations that explain them."""
    adapter = adapter_for(spec)
    recipe = resolve(spec)
    dtype = DTYPES[dtype_name]
    tolerance = tolerance_for(dtype, "cast")
    reference_model = copy.deepcopy(model).to(device).eval()
    reference_batch = _on(batch, device)
    with torch.no_grad(), ActivationWatch(reference_model) as reference_watch:
        reference = adapter.forward(spec, reference_model, reference_batch)
        reference_loss = recipe.loss(reference_model, reference_batch) if trains else None
    half_model = copy.deepcopy(model).to(device=device, dtype=dtype).eval()
    half_batch = _on(batch, device, dtype)
    problems: list[str] = []
    with ActivationWatch(half_model) as watch:
        with torch.no_grad():
            outputs = adapter.forward(spec, half_model, half_batch)
        loss = recipe.loss(half_model, half_batch) if trains else None
    output_comparison = compare(outputs, reference, tolerance)  # per RMS of the float32 outputs (the cast row)
    error, within = output_comparison.max_abs, output_comparison.within
    non_finite = int((~torch.isfinite(outputs)).sum())
    if non_finite:
        problems.append(f"{non_finite} of {outputs.numel()} outputs non-finite")
    elif not within:
        problems.append(f"outputs off by {error:.3g} RMS")
    row: dict[str, Any] = {"dtype": dtype_name, "device": device, "output_error": error}
    if loss is not None:
        loss_comparison = compare(loss.detach().float(), reference_loss, tolerance)
        loss_error, loss_within = loss_comparison.max_abs, loss_comparison.within
        row["loss_error"] = loss_error
        if not bool(torch.isfinite(loss)):
            problems.append(f"loss {float(loss.detach())}")
        elif not loss_within:
            problems.append(f"loss {float(loss.detach()):.5g} vs float32 {float(reference_loss):.5g}")
        loss.backward()
        bad = _non_finite_gradients(_gradients(half_model))
        row["non_finite_gradients"] = bad[:10]
        if bad:
            problems.append(f"non-finite gradients of {_names(bad)}")
    limit = float(torch.finfo(dtype).max)
    row |= {
        "tolerance": tolerance.as_dict(),
        "largest_activation": watch.largest,
        "largest_activation_at": watch.largest_at,
        "largest_float32_activation": reference_watch.largest,
        "largest_float32_activation_at": reference_watch.largest_at,
        "dtype_max": limit,
        "first_non_finite_at": watch.first_non_finite,
        "problems": problems,
    }
    explanation = f"largest {dtype_name} activation {watch.largest:.3g} at {watch.largest_at or '-'}"
    if watch.first_non_finite is not None:
        explanation = f"{watch.where()}; {explanation}"
    if reference_watch.largest > limit / 8:  # within 8x of the limit: a softmax or a sum of it overflows
        explanation += (
            f"; float32 activations reach {reference_watch.largest:.3g} at {reference_watch.largest_at}, "
            f"near {dtype_name}'s limit {limit:.5g}"
        )
    row["explanation"] = f"{explanation} ({dtype_name} max {limit:.5g})"
    finite = not non_finite and (loss is None or (bool(torch.isfinite(loss)) and not row["non_finite_gradients"]))
    row["error"] = max(error, row.get("loss_error", 0.0)) if finite else math.inf  # outputs and loss, RMS units
    row["ratio"] = row["error"] / tolerance.atol  # how far past its bound this run is
    return row


@register(3)
def check_half_precision_parity(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Half-precision outputs and loss (bfloat16; float16 where CUDA runs) match float32 within the tolerance table, all finite.

    Also reports the largest activation against the dtype's limit and where the first non-finite value appeared, so an
    overflow is explained, not just flagged."""
    require_float32(options.dtype, "it compares a lower-precision run with the float32 model itself")
    numerics = options.numerics
    runs, notes = half_precision_runs(cuda=torch.cuda.is_available(), float16_on_cpu=numerics.float16_on_cpu)
    trains = spec.capabilities.supports_training and adapter_for(spec).has_loss
    batch = fixed_batch(spec, options)
    rows = [_half_run(spec, model, batch, dtype, device, trains) for dtype, device in runs]
    worst = max(rows, key=lambda row: row["ratio"])
    failing = [row for row in rows if row["problems"]]
    tolerances = "; ".join(f"{row['dtype']} atol={row['tolerance']['atol']:g}" for row in rows)
    shown = failing or [worst]
    got = "; ".join(
        f"{row['dtype']} on {row['device']}: {', '.join(row['problems']) or 'within'} "
        f"(output error {row['output_error']:.3g} RMS, loss error {row.get('loss_error', 0.0):.3g}; {row['explanation']})"
        for row in shown
    )
    return verdict(
        spec,
        "half_precision_parity",
        passed=not failing,
        measured=worst["error"],
        threshold=worst["tolerance"]["atol"],
        tolerance=worst["tolerance"],
        expected=f"{', '.join(f'{d} on {v}' for d, v in runs)} outputs{' and loss' if trains else ''} within the "
        f"'cast' tolerance of float32 (errors in units of the float32 output's RMS: {tolerances}) and finite "
        f"outputs{', loss and gradients' if trains else ''}",
        got=got + (f" [{'; '.join(notes)}]" if notes else ""),
        hint="Half precision overflows above its limit (float16: 65504): subtract the row maximum before exp (or "
        "use torch.softmax), scale q before q @ k^T rather than after, and keep softmax, norms and losses in float32; "
        "an error beyond the bound without overflow is precision lost in a long sum or a cancellation.",
        sample_size=batch_size_of(batch) * len(rows),
        seed=options.seed,
        details={"runs": rows, "notes": notes},
    )


# Mixed-precision training.


def _floating_dtypes(values: Any) -> set[torch.dtype]:
    """The dtypes of the floating tensors in an optimizer's state (a step counter excluded)."""
    dtypes = set()
    for state in values:
        for key, tensor in state.items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and key != "step":
                dtypes.add(tensor.dtype)
    return dtypes


@register(3, needs_training)
def check_mixed_precision_training(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """A few Lightning bf16-mixed steps follow the float32 loss trajectory within the table's bound; master weights stay float32.

    The same rows in the same order train twice from the same weights (deterministic steps: eval mode), through the
    spec's recipe; after the bf16-mixed run the parameters, their gradients and the optimizer's state must be float32."""
    from harness.checks.training import _fit

    require_float32(options.dtype, "it compares a lower-precision run with the float32 model itself")
    numerics = options.numerics
    steps = numerics.mixed_precision_steps
    tolerance = tolerance_for(torch.bfloat16, "autocast")
    batch_size = options.batch_size_for(spec)  # within the input space
    batches = [fixed_batch(spec, options, seed_offset=step) for step in range(steps)]
    rows = {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
    config = options.training.config.replace(task=spec.task, max_steps=steps, batch_size=batch_size, seed=options.seed)
    state = {key: value.clone() for key, value in model.state_dict().items()}
    full = _fit(spec, model, config.replace(precision="32-true"), rows)
    full_losses = [row["train_loss"] for row in full.history]
    model.load_state_dict(state)
    mixed = _fit(spec, model, config.replace(precision="bf16-mixed"), rows, capture_gradients=True)
    mixed_losses = [row["train_loss"] for row in mixed.history]
    problems: list[str] = []
    if len(mixed_losses) != len(full_losses):
        problems.append(f"{len(mixed_losses)} bf16-mixed steps recorded against {len(full_losses)} float32 steps")
    paired = list(zip(mixed_losses, full_losses, strict=False))
    comparison = compare(torch.tensor([m for m, _ in paired]), torch.tensor([f for _, f in paired]), tolerance)
    relative = [abs(m - f) / abs(f) if f else abs(m - f) for m, f in paired]
    relative = [gap if math.isfinite(gap) else math.inf for gap in relative]  # a NaN loss is infinitely far
    worst_step = max(range(len(relative)), key=relative.__getitem__)
    measured = relative[worst_step]
    if not comparison.within:
        problems.append(
            f"loss at step {worst_step + 1} {mixed_losses[worst_step]:.5g} vs float32 {full_losses[worst_step]:.5g}"
        )
    not_float32 = [name for name, p in mixed.model.named_parameters() if p.dtype != torch.float32]
    if not_float32:
        problems.append(f"master weights not float32: {_names(not_float32)}")
    low_gradients = [n for n, g in (mixed.gradients[-1] if mixed.gradients else {}).items() if g.dtype != torch.float32]
    if low_gradients:
        problems.append(f"gradients not float32: {_names(low_gradients)}")
    optimizer = mixed.trainer.optimizers[0] if mixed.trainer.optimizers else None
    state_dtypes = _floating_dtypes(optimizer.state.values()) if optimizer is not None else set()
    if state_dtypes - {torch.float32}:
        problems.append(f"optimizer state in {', '.join(sorted(map(str, state_dtypes)))}")
    return verdict(
        spec,
        "mixed_precision_training",
        passed=not problems,
        measured=measured,
        threshold=tolerance.rtol,
        tolerance=tolerance.as_dict(),
        expected=f"{steps} bf16-mixed losses within atol={tolerance.atol:g} + rtol={tolerance.rtol:g} * |float32 loss| "
        f"of the float32 run's, step by step, and float32 master weights, gradients and optimizer state",
        got="; ".join(problems)
        or f"worst relative loss gap {measured:.3g} at step {worst_step + 1}; weights, gradients, state float32",
        hint="Under autocast only matmuls and convolutions should run in bfloat16: a model that casts itself "
        "(.to(torch.bfloat16), .half()) loses the float32 master weights and updates smaller than bfloat16's "
        "resolution vanish; a normalisation or loss computed in bfloat16 drifts from the float32 trajectory.",
        sample_size=steps * batch_size,
        seed=options.seed,
        details={
            "recipe": mixed.recipe.sources,
            "float32_losses": full_losses,
            "bf16_mixed_losses": mixed_losses,
            "relative_gaps": relative,
            "optimizer_state_dtypes": sorted(map(str, state_dtypes)),
        },
    )


# torch.compile parity.


class CompileCounter:
    """A torch.compile backend that counts the graphs it is handed and compiles each with ``backend``."""

    def __init__(self, backend: str) -> None:
        from torch._dynamo.backends.registry import lookup_backend

        self.backend = lookup_backend(backend)
        self.graphs = 0

    def __call__(self, graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Callable[..., Any]:
        self.graphs += 1
        return self.backend(graph, example_inputs)


def compile_unavailable_because(backend: str) -> str | None:
    """Why torch.compile cannot run here with ``backend`` (None: it can)."""
    try:
        import torch._dynamo
        from torch._dynamo.backends.registry import lookup_backend
    except ImportError as error:  # pragma: no cover - every supported torch has dynamo
        return f"torch._dynamo cannot be imported: {error}"
    if not torch._dynamo.is_dynamo_supported():
        return (
            "torch.compile is not supported on this Python or platform (torch._dynamo.is_dynamo_supported() is False)"
        )
    try:
        lookup_backend(backend)
    except Exception as error:  # noqa: BLE001 - an unknown or broken backend names itself
        return f"torch.compile backend {backend!r} is not available: {error}"
    return None


def _labelled_call(
    spec: ModelSpec, model: torch.nn.Module, batch: Batch, trains: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(primary outputs, training loss or None) from one call of ``model``: with labels through the recipe's loss
    piece when the model trains, so one compiled graph serves both; the adapter's forward otherwise."""
    adapter = adapter_for(spec)
    if not trains:
        return adapter.forward(spec, model, batch), None
    recipe = resolve(spec)
    raw = recipe.forward(model, batch)
    outputs = adapter.outputs_of(spec, raw, batch) if hasattr(adapter, "outputs_of") else logits_of(raw)
    return outputs, recipe.loss_of(raw, batch)


@contextlib.contextmanager
def _fresh_dynamo() -> Iterator[None]:
    """Dynamo reset before and after (no graph or guard of another model survives), with room for recompiles."""
    import torch._dynamo

    torch._dynamo.reset()
    try:
        with torch._dynamo.config.patch(recompile_limit=64, accumulated_recompile_limit=256):
            yield
    finally:
        torch._dynamo.reset()


@register(3)
def check_compile_parity(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """torch.compile's forward and backward match eager within the tolerance table at fuzzed shapes, without recompiling at each.

    Backend ``aot_eager`` by default: Dynamo's capture plus AOTAutograd's traced joint forward/backward graph, run
    with eager kernels, so the backward really is compiled, and both the compile-only bugs of the user's code (a
    branch on ``torch.compiler.is_compiling()``, a side effect that runs once at trace time, a guard on a size) and
    those of the trace (functionalisation, decompositions) show. Inductor only adds C++ code generation, too slow
    here: on two busy cores (load ~7) gpt2-tiny's first forward+backward compiled in 117 s with inductor, 13 s with
    aot_eager, 8 s with ``eager``; this check over the whole zoo took 489 s with aot_eager and 193 s with ``eager``
    (which compiles no backward: gradients are eager autograd through the captured graph).
    ``NumericsOptions.compile_backend`` picks another backend. Shapes: two explicit ones (static, then the
    recompile that makes the dimensions dynamic), fuzzed ones (batch >= 2, length >= 3, which should compile
    nothing more), then batch 1 at the shortest length (Dynamo specialises sizes 0 and 1: one expected compile).
    """
    numerics = options.numerics
    reason = compile_unavailable_because(numerics.compile_backend)
    if reason:
        return skipped(spec, "compile_parity", reason, seed=options.seed)
    adapter = adapter_for(spec)
    tolerance = tolerance_for(options.dtype, "compiled")
    trains = spec.capabilities.supports_training and adapter.has_loss
    sequence = adapter.sequence
    high = spec.inputs.max_length or 1
    # fuzzed lengths from 3: Dynamo specialises sizes 0 and 1, and a causal LM's shifted length T - 1 is 1 at T = 2
    low = min(high, max(3, spec.inputs.min_length)) if sequence else 1
    length = options.length_for(spec) if sequence else 1
    model.eval()
    shapes: list[dict[str, Any]] = []
    counter = CompileCounter(numerics.compile_backend)

    def run(shape: BatchShape, seed: int, compiled: torch.nn.Module, phase: str) -> float:
        batch = adapter.make_batch(
            spec, batch_size=shape.batch_size, length=shape.length, generator=torch.Generator().manual_seed(seed)
        )
        model.zero_grad(set_to_none=True)
        eager_out, eager_loss = _labelled_call(spec, model, batch, trains)
        if trains:
            eager_loss.backward()
        eager_grads = _gradients(model)
        compiled.zero_grad(set_to_none=True)
        before = counter.graphs
        got_out, got_loss = _labelled_call(spec, compiled, batch, trains)
        if trains:
            got_loss.backward()
        compiled_now = counter.graphs - before
        got_grads = _gradients(compiled)
        outputs = compare(got_out, eager_out, tolerance)
        problems = [] if outputs.within else [f"outputs differ by {outputs.max_abs:.3g}"]
        row = {"batch_size": shape.batch_size, "length": shape.length, "phase": phase, "graphs_compiled": compiled_now,
               "output_max_abs": outputs.max_abs}  # fmt: skip
        worst = outputs.max_abs
        if trains and not bool(torch.isfinite(eager_loss)):  # no label scored (a causal LM at length 1): NaN in eager
            row["loss_undefined"] = True
            if bool(torch.isfinite(got_loss)):
                problems.append(f"loss {float(got_loss.detach()):.6g} where eager's is {float(eager_loss.detach())}")
        elif trains:
            loss = compare(got_loss.detach().reshape(1), eager_loss.detach().reshape(1), tolerance)
            gradients = compare_gradients(got_grads, eager_grads, tolerance)
            name, relative = gradients.worst
            row |= {"loss_abs": loss.max_abs, "worst_gradient": name, "gradient_relative": relative}
            if not loss.within:
                problems.append(f"loss {float(got_loss.detach()):.6g} vs eager {float(eager_loss.detach()):.6g}")
            if gradients.violations:
                problems.append(
                    f"gradients of {_names(list(gradients.violations))} differ ({name}: {relative:.3g} relative)"
                )
            worst = max(worst, loss.max_abs, relative * tolerance.rtol)
        shapes.append(row)
        if problems:
            raise Violation(
                math.inf if not math.isfinite(worst) else worst,
                f"batch {shape.batch_size} x length {shape.length}: {'; '.join(problems)}",
            )
        return worst

    first = BatchShape(2, length)
    second = BatchShape(3, max(low, length // 2) if length > low else min(high, length + 1))  # every size moves
    corner = BatchShape(1, spec.inputs.min_length if sequence else 1)

    @st.composite
    def fuzzed(draw: st.DrawFn) -> tuple[BatchShape, int]:
        size = draw(st.integers(2, max(2, spec.inputs.max_batch_size)))
        drawn = draw(st.integers(low, max(low, high))) if sequence else 1
        return BatchShape(size, drawn), draw(st.integers(0, 2**31 - 1))

    with _fresh_dynamo():
        # Module.compile() compiles the copy's __call__ in place: its forward keeps the signature adapters inspect
        compiled = copy.deepcopy(model)
        compiled.compile(backend=counter)
        failure = None
        try:
            for phase, shape in (("static", first), ("dynamic", second)):
                run(shape, options.seed, compiled, phase)
            outcome = fuzz(
                fuzzed(), lambda case: run(case[0], case[1], compiled, "fuzzed"), max_examples=numerics.compile_examples
            )
            failure = outcome.failure
            if failure is None:
                run(corner, options.seed, compiled, "size-1")
        except Violation as violation:
            failure = str(violation)
        from torch._dynamo.utils import counters

        graph_breaks = dict(counters["graph_break"])
    recompiling = [row for row in shapes if row["phase"] == "fuzzed" and row["graphs_compiled"]]
    graphs = counter.graphs
    worst = max((row["output_max_abs"] for row in shapes), default=0.0)
    worst_gradient = max((row.get("gradient_relative", 0.0) for row in shapes), default=0.0)
    described = ", ".join(f"{r['batch_size']}x{r['length']}" + (f" ({r['graphs_compiled']} compiled)" if r["graphs_compiled"] else "")
                          for r in shapes)  # fmt: skip
    result = verdict(
        spec,
        "compile_parity",
        passed=failure is None,
        measured=math.inf if failure and "inf" in failure else worst,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"compiled ({numerics.compile_backend}) outputs{', loss and every gradient' if trains else ''} within "
        f"atol={tolerance.atol:g} + rtol={tolerance.rtol:g}*|eager| of eager at every shape, and at most "
        f"{numerics.max_recompiles} fuzzed shape(s) compiling again",
        got=failure
        or f"max output difference {worst:.3g}, worst gradient {worst_gradient:.3g} relative; {graphs} graph(s) compiled "
        f"over {len(shapes)} shapes ({described}); {len(recompiling)} fuzzed shape(s) recompiled",
        hint="A branch on torch.compiler.is_compiling(), state mutated in forward, a Python number taken from a "
        "tensor (.item(), int(x.shape[i]) in a branch) or an in-place op on a view can make compiled and eager "
        "differ; a recompile at every shape means a size is baked into a guard (mark it dynamic or remove the branch).",
        sample_size=len(shapes),
        seed=options.seed,
        details={
            "backend": numerics.compile_backend,
            "graphs_compiled": graphs,
            "recompiling_fuzzed_shapes": len(recompiling),
            "shapes": shapes,
            "graph_breaks": {str(k): v for k, v in list(graph_breaks.items())[:10]},
            "worst_gradient_relative": worst_gradient,
        },
    )
    if result.status is Status.PASSED and len(recompiling) > numerics.max_recompiles:
        result = dataclasses.replace(
            result,
            status=Status.WARNED,
            got=f"{len(recompiling)} of {sum(r['phase'] == 'fuzzed' for r in shapes)} fuzzed shapes compiled again "
            f"({graphs} graphs in all over {len(shapes)} shapes: {described}); outputs agree (max difference {worst:.3g})",
        )
    return result


# Gradient checkpointing.

CHECKPOINT_METHODS = ("activation_checkpointing_enable", "gradient_checkpointing_enable")
"""Hugging Face's switches: ``activation_checkpointing_enable`` since transformers 5 (the older name is a
deprecated alias there), ``gradient_checkpointing_enable`` before and in most other code."""


def checkpointing_route(spec: ModelSpec, model: torch.nn.Module) -> tuple[str, dict[str, Callable[[Any], None]]] | str:
    """(where checkpointing is switched on, {mode: enable(model)}), or why the model cannot checkpoint.

    The user's recipe piece ``gradient_checkpointing(model[, use_reentrant=...])`` wins over the model's own
    method; a switch that takes a ``*checkpointing_kwargs`` dict or ``use_reentrant`` runs in both modes, any
    other in its own default mode only."""
    piece = getattr(spec.recipe, "gradient_checkpointing", None) if spec.recipe is not None else None
    if piece is not None:
        switch, where = piece, "recipe.gradient_checkpointing"

        def call(target: Any, **kwargs: Any) -> None:
            switch(target, **kwargs)

        parameters = inspect.signature(piece).parameters
    else:
        name = next((n for n in CHECKPOINT_METHODS if callable(getattr(model, n, None))), None)
        if name is None:
            return "the model has no gradient_checkpointing_enable (nor activation_checkpointing_enable) and the " \
                   "recipe names no gradient_checkpointing piece"  # fmt: skip
        if getattr(model, "supports_gradient_checkpointing", True) is False:
            return f"{type(model).__name__}.supports_gradient_checkpointing is False"
        where = f"model.{name}"

        def call(target: Any, **kwargs: Any) -> None:
            getattr(target, name)(**kwargs)

        parameters = inspect.signature(getattr(model, name)).parameters
    dict_argument = next((p for p in parameters if p.endswith("checkpointing_kwargs")), None)
    if dict_argument:
        modes = {mode: functools.partial(call, **{dict_argument: {"use_reentrant": flag}})
                 for mode, flag in (("reentrant", True), ("non-reentrant", False))}  # fmt: skip
    elif "use_reentrant" in parameters:
        modes = {mode: functools.partial(call, use_reentrant=flag)
                 for mode, flag in (("reentrant", True), ("non-reentrant", False))}  # fmt: skip
    else:
        modes = {"default": call}
    return where, modes


class _RecomputeCounter:
    """Counts module forwards that run during backward: the recomputation checkpointing does."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.backward = False
        self.recomputed = 0

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
            self.recomputed += int(self.backward)

        handles = [module.register_forward_hook(hook) for module in self.model.modules()]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def _train_step(
    spec: ModelSpec, model: torch.nn.Module, batch: Batch, seed: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor | None], int]:
    """Loss (through the recipe's loss piece) and gradients of one seeded training-mode forward and backward;
    dropout draws the same masks in every run, and checkpointing must recompute them identically."""
    counter = _RecomputeCounter(model)
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    with counter.watching():
        loss = resolve(spec).loss(model, batch)
        counter.backward = True
        loss.backward()
    return loss.detach(), _gradients(model), counter.recomputed


@register(3, needs_training)
def check_gradient_checkpointing_equivalence(
    spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions
) -> CheckResult:
    """With gradient checkpointing (reentrant and non-reentrant where allowed) the loss and every gradient equal the run without it.

    Applies where the model has ``gradient_checkpointing_enable`` (or transformers 5's ``activation_checkpointing_enable``)
    or the recipe names a ``gradient_checkpointing`` piece; both runs are seeded training-mode steps, so dropout draws
    the same masks and checkpointing must recompute them identically."""
    route = checkpointing_route(spec, model)
    if isinstance(route, str):
        return skipped(spec, "gradient_checkpointing_equivalence", route, seed=options.seed)
    where, modes = route
    tolerance = tolerance_for(options.dtype, "recomputed")
    batch = fixed_batch(spec, options)
    reference_loss, reference, _ = _train_step(spec, copy.deepcopy(model), batch, options.seed)
    rows: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for mode, enable in modes.items():
        checkpointed = copy.deepcopy(model)
        enable(checkpointed)
        loss, gradients, recomputed = _train_step(spec, checkpointed, batch, options.seed)
        comparison = compare_gradients(gradients, reference, tolerance)
        loss_gap = abs(float(loss) - float(reference_loss))
        name, relative = comparison.worst
        rows[mode] = {"loss": float(loss), "loss_gap": loss_gap, "worst_gradient": name, "gradient_relative": relative,
                      "recomputed_module_calls": recomputed, "violations": dict(list(comparison.violations.items())[:10])}  # fmt: skip
        if not loss_gap <= tolerance.atol + tolerance.rtol * abs(float(reference_loss)):
            problems.append(f"{mode}: loss {float(loss):.6g} vs {float(reference_loss):.6g} without checkpointing")
        if comparison.violations:
            listed = _names([f"{n} ({why})" for n, why in comparison.violations.items()])
            problems.append(f"{mode}: {len(comparison.violations)} parameter gradient(s) differ: {listed}")
    worst_mode = max(rows, key=lambda m: rows[m]["gradient_relative"])
    worst = rows[worst_mode]
    inactive = [mode for mode, row in rows.items() if row["recomputed_module_calls"] == 0]
    result = verdict(
        spec,
        "gradient_checkpointing_equivalence",
        passed=not problems,
        measured=worst["gradient_relative"],
        threshold=tolerance.rtol,
        tolerance=tolerance.as_dict(),
        expected=f"loss and every gradient with {where} ({', '.join(modes)}) within "
        f"||g - g_ref|| <= {tolerance.atol:g} + {tolerance.rtol:g}*||g_ref|| of the run without checkpointing",
        got="; ".join(problems)
        or f"worst gradient {worst['worst_gradient']} {worst['gradient_relative']:.3g} relative ({worst_mode}); "
        + ", ".join(f"{m}: {r['recomputed_module_calls']} module calls recomputed" for m, r in rows.items()),
        hint="Reentrant checkpointing (use_reentrant=True) returns no gradient for a block whose inputs do not require "
        "grad (frozen embeddings, detached inputs): use use_reentrant=False or enable_input_require_grads(); a "
        "wrapper that detaches its input, or recomputes without the saved RNG state (dropout), also breaks equivalence.",
        sample_size=batch_size_of(batch),
        seed=options.seed,
        details={"route": where, "modes": rows, "recipe": resolve(spec).sources},
    )
    if result.status is Status.PASSED and inactive:
        result = dataclasses.replace(
            result,
            status=Status.WARNED,
            got=f"{result.got}; with {_names(inactive)} nothing was recomputed in backward: checkpointing did not engage",
        )
    return result


# Degenerate inputs.


def _value_range(spec: ModelSpec, key: str, options: CheckOptions) -> tuple[float, float]:
    """The range of a floating input: over the spec's real examples when it has some, else [-3, 3] (the harness's
    range for standardised inputs, :func:`harness.strategies.images`)."""
    real = adapter_for(spec).real_batch(spec, batch_size=256, length=options.length_for(spec))
    if real is not None and key in real and real[key].is_floating_point():
        return float(real[key].min()), float(real[key].max())
    return -3.0, 3.0


def degenerate_cases(spec: ModelSpec, options: CheckOptions) -> list[tuple[str, Batch]]:
    """Valid but extreme batches of two rows, named: per floating input a constant, an all-zero, an all-minimum and
    an all-maximum batch; for token sequences one token repeated to the maximum length, the largest and the smallest
    token id everywhere, and rows that are all padding but one token (right, and left for causal models)."""
    adapter = adapter_for(spec)
    generator = torch.Generator().manual_seed(options.seed)
    cases: list[tuple[str, Batch]] = []
    if adapter.sequence and spec.inputs.vocab_size:
        longest = spec.inputs.max_length or options.length_for(spec)
        vocab, pad = spec.inputs.vocab_size, spec.inputs.pad_id
        base = adapter.make_batch(spec, batch_size=2, length=longest, generator=generator)
        repeated = (pad + 1) % vocab
        for name, token in ((f"token {repeated} repeated to length {longest}", repeated),
                            (f"largest token id {vocab - 1} at all {longest} positions", vocab - 1),
                            (f"smallest token id 0 at all {longest} positions", 0)):  # fmt: skip
            ids = torch.full_like(base["input_ids"], token)
            batch = {**base, "input_ids": ids}
            if hasattr(adapter, "labels"):
                batch["labels"] = adapter.labels(spec, ids, torch.Generator().manual_seed(options.seed))
            cases.append((name, batch))
        if spec.capabilities.has_attention_mask and hasattr(adapter, "pad") and longest > spec.inputs.min_length:
            shortest = spec.inputs.min_length
            short = adapter.make_batch(spec, batch_size=1, length=shortest, generator=generator)
            sides = ("right", "left") if spec.capabilities.is_causal else ("right",)
            for side in sides:
                # row 0: the shortest row padded to the longest, beside a full row (a padded batch's short row);
                # what the adapter does not pad (a seq2seq decoder stream) keeps the full row's shape and values
                padded = adapter.pad(spec, short, amount=longest - shortest, side=side)
                batch = {key: value.clone() for key, value in base.items()}
                for key, value in padded.items():
                    if key in batch and value.shape[1:] == batch[key].shape[1:]:
                        batch[key][0] = value[0]
                cases.append((f"a row of {shortest} real token(s) and {longest - shortest} {side} padding", batch))
    base = adapter.make_batch(spec, batch_size=2, length=options.length_for(spec), generator=generator)
    for key, value in base.items():
        if key == "labels" or not value.is_floating_point():
            continue
        low, high = _value_range(spec, key, options)
        level = (low + 3 * high) / 4  # a constant that is neither zero nor an extreme
        for name, fill in ((f"constant {key} {level:.3g}", level), (f"all-zero {key}", 0.0),
                           (f"all-minimum {key} {low:.3g}", low), (f"all-maximum {key} {high:.3g}", high)):  # fmt: skip
            cases.append((name, {**base, key: torch.full_like(value, fill)}))
    return cases


@register(3)
def check_degenerate_inputs(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Valid but extreme inputs (constant, zero or maximal images; repeated, extreme or padded-away tokens) give finite outputs, loss and gradients.

    The inputs are those of :func:`degenerate_cases`; the row names the input that gave the first non-finite value and
    where (the module, the loss or the parameter whose gradient)."""
    adapter = adapter_for(spec)
    trains = spec.capabilities.supports_training and adapter.has_loss
    recipe = resolve(spec)
    cases = degenerate_cases(spec, options)
    model.eval()
    failures: list[str] = []
    rows: list[dict[str, Any]] = []
    for name, batch in cases:
        found: list[str] = []
        with ActivationWatch(model) as watch:
            with torch.no_grad():
                outputs = adapter.forward(spec, model, batch)
            bad = int((~torch.isfinite(outputs)).sum())
            if bad:
                found.append(f"{bad} of {outputs.numel()} outputs non-finite ({watch.where() or 'in the output'})")
            loss = None
            if trains:
                model.zero_grad(set_to_none=True)
                loss = recipe.loss(model, batch)
                if not bool(torch.isfinite(loss)):
                    found.append(f"loss {float(loss.detach())} ({watch.where() or 'computed from finite outputs'})")
        if loss is not None:
            loss.backward()
            dead = _non_finite_gradients(_gradients(model))
            if dead:
                found.append(f"non-finite gradients of {_names(dead)} (the first in parameter order: {dead[0]})")
        rows.append({"input": name, "largest_activation": watch.largest, "largest_activation_at": watch.largest_at,
                     "loss": None if loss is None else float(loss.detach()), "problems": found})  # fmt: skip
        if found:
            failures.append(f"{name}: {found[0]}")
    first = failures[0] if failures else ""
    return verdict(
        spec,
        "degenerate_inputs",
        passed=not failures,
        measured=float(len(failures)),
        threshold=0.0,
        expected=f"finite outputs{', loss and gradients' if trains else ''} on all {len(cases)} extreme inputs "
        f"({'; '.join(name for name, _ in cases)})",
        got=f"{len(failures)} input(s) gave non-finite values; the first: {first}"
        + (f"; also {_names([f.split(':')[0] for f in failures[1:]], 2)}" if len(failures) > 1 else "")
        if failures
        else f"all {len(cases)} finite; largest activation {max(r['largest_activation'] for r in rows):.3g}",
        hint="A log, division, rsqrt or normalisation of something an extreme input drives to zero (a constant image's "
        "variance, an all-zero activation, a row with one real token's pooled mask): add an epsilon or clamp before it.",
        sample_size=sum(batch_size_of(batch) for _, batch in cases),
        seed=options.seed,
        details={"inputs": rows, "recipe": recipe.sources},
    )

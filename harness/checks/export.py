"""Tier 4: does the exported model match? Parity at fuzzed shapes, int8 agreement, latency ratios.

Every export is traced at one shape (``EXPORT_SHAPE``); parity is checked at Hypothesis-generated
shapes that differ from it, batch 1, length 1 and the maximum length always included, so a size
baked in at export time shows. An export that fails is a failed check naming the operator and opset.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from harness.adapters import adapter_for
from harness.adapters.base import select_rows
from harness.checks.base import CheckOptions, register, shapes_unrecorded, skipped, verdict
from harness.checks.fuzz import Violation, fuzz
from harness.checks.inputs import seeded_generator
from harness.data import real_batch
from harness.export import ExportError, Exports, export_inputs, exports_for
from harness.export.artifacts import EXPORT_SHAPE, run_session
from harness.export.int8_reference import QUANTIZE_DYNAMIC, fake_quantized
from harness.result import CheckResult
from harness.spec import ModelSpec
from harness.stats.paired import mcnemar, paired_drop_lower_bound
from harness.strategies import BatchShape, batch_shapes
from harness.tolerances import compare, tolerance_for

Runner = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def needs_export(spec: ModelSpec) -> str | None:
    return None if spec.capabilities.exportable else "the model declares it is not exportable"


def agreements(spec: ModelSpec, reference: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
    """Per prediction, whether the exported model says the same thing, as the task's adapter measures it (top-1
    equality for class outputs, cosine similarity for embeddings, |difference| <= 0.05 for scores)."""
    return adapter_for(spec).agreement(reference, got)


def pooled_agreement(spec: ModelSpec, per_prediction: list[torch.Tensor]) -> float:
    """Agreement over every prediction of every shape, pooled by the adapter (the share that agree; the lowest
    cosine for embeddings)."""
    return adapter_for(spec).pooled_agreement(torch.cat(per_prediction))


@dataclass(frozen=True)
class ShapeParity:
    """Parity at one fuzzed shape."""

    batch_size: int
    length: int
    max_abs: float
    max_rel: float
    fraction_within: float
    agreement: float  # share of predictions that agree (lowest cosine for embeddings)

    @property
    def shape(self) -> str:
        return f"{self.batch_size}x{self.length}"


def _fuzzed_shapes(spec: ModelSpec) -> tuple[st.SearchStrategy[tuple[BatchShape, int]], list[tuple[BatchShape, int]]]:
    """Shapes other than the export shape, and the corners every run includes."""
    sequence = adapter_for(spec).sequence
    max_length = spec.inputs.max_length if sequence else 1
    export_shape = BatchShape(EXPORT_SHAPE[0], EXPORT_SHAPE[1] if sequence else 1)
    corners = {BatchShape(1, 1), BatchShape(1, max_length), BatchShape(spec.inputs.max_batch_size, max_length)}
    corners.discard(export_shape)
    seeds = st.integers(0, 2**31 - 1)
    strategy = st.tuples(batch_shapes(spec).filter(lambda shape: shape != export_shape), seeds)
    return strategy, [(corner, 0) for corner in sorted(corners, key=lambda s: (s.batch_size, s.length))]


def _case_inputs(spec: ModelSpec, case: tuple[BatchShape, int]) -> tuple[BatchShape, dict[str, torch.Tensor]]:
    """The export inputs of one fuzzed (shape, seed) case."""
    shape, seed = case
    batch = adapter_for(spec).make_batch(
        spec, batch_size=shape.batch_size, length=shape.length, generator=seeded_generator(seed)
    )
    return shape, export_inputs(spec, batch)


def _parity(
    spec: ModelSpec,
    model: torch.nn.Module,
    options: CheckOptions,
    *,
    check: str,
    runner: Callable[[Exports], Runner],
    fmt: str,
    backend: str,
) -> CheckResult:
    """Compare an exported runner with eager at fuzzed shapes; the result names the worst shape."""
    tolerance = tolerance_for(options.dtype, backend)
    exports = exports_for(spec, model, options.artifacts_dir)
    try:
        run = runner(exports)
        record = exports.record(fmt)
    except ExportError as error:
        return _export_failure(spec, check, error, options)
    eager = exports.wrapper()
    shapes: list[ShapeParity] = []
    predictions: list[torch.Tensor] = []

    def body(case: tuple[BatchShape, int]) -> float:
        shape, inputs = _case_inputs(spec, case)
        with torch.no_grad():
            reference = eager(*inputs.values())
        got = run(inputs)
        if tuple(got.shape) != tuple(reference.shape):
            raise Violation(
                float("inf"),
                f"shape {shape.batch_size}x{shape.length}: output {tuple(got.shape)}, eager {tuple(reference.shape)}",
            )
        comparison = compare(got, reference, tolerance)
        scale = float(reference.abs().max()) or 1.0
        agree = agreements(spec, reference, got)
        parity = ShapeParity(shape.batch_size, shape.length, comparison.max_abs, comparison.max_abs / scale,
                             comparison.fraction_within, pooled_agreement(spec, [agree]))  # fmt: skip
        shapes.append(parity)
        predictions.append(agree)
        if not comparison.within:
            raise Violation(parity.max_abs, f"shape {parity.shape}: max abs error {parity.max_abs:.3g}")
        return parity.max_abs

    strategy, corners = _fuzzed_shapes(spec)
    outcome = fuzz(strategy, body, explicit=corners)
    worst = max(shapes, key=lambda s: s.max_abs) if shapes else None
    pooled = pooled_agreement(spec, predictions) if predictions else 0.0
    failure = outcome.failure
    details: dict[str, Any] = {
        "format": fmt,
        "exporter": record.exporter,
        "opset": record.opset,
        "export_seconds": record.seconds,
        "export_notes": list(record.notes),
        "artifact": str(record.path),
        "export_shape": list(EXPORT_SHAPE),
        "worst_shape": worst.shape if worst else None,
        "shapes": [vars(s) for s in shapes],
        "agreement": pooled,
        "predictions": sum(p.numel() for p in predictions),
        "min_fraction_within": min((s.fraction_within for s in shapes), default=None),
        "max_relative_error": max((s.max_rel for s in shapes), default=None),
    }
    threshold = tolerance.atol
    expected = f"max abs error within atol={tolerance.atol:g} + rtol={tolerance.rtol:g}*|eager| at every fuzzed shape"
    measured = worst.max_abs if worst else float("inf")
    summary = (
        f"worst shape {worst.shape}: max abs {worst.max_abs:.3g}, agreement {worst.agreement:.3f}" if worst else ""
    )
    return verdict(
        spec,
        check,
        passed=failure is None,
        measured=measured,
        threshold=threshold,
        tolerance=tolerance.as_dict(),
        expected=expected,
        got=f"{failure}; {summary}" if failure else f"{summary} over {len(shapes)} shapes",
        hint="A size baked in at export time (Python ints from tensor.shape, data-dependent control flow), "
        "an operator exported with other semantics, or weights changed after export.",
        sample_size=len(shapes),
        seed=options.seed,
        details=details,
    )


def _export_failure(spec: ModelSpec, check: str, error: ExportError, options: CheckOptions) -> CheckResult:
    return verdict(
        spec,
        check,
        passed=False,
        measured=None,
        threshold=None,
        expected="the model to export",
        got=f"export failed: {error}",
        hint="Replace the operator, pick another opset, or declare Capabilities(exportable=False) with a reason.",
        sample_size=0,
        seed=options.seed,
        details={"operator": error.operator, "opset": error.opset},
    )


def _torchscript_runner(fmt: str) -> Callable[[Exports], Runner]:
    def make(exports: Exports) -> Runner:
        run = exports.torchscript_runner(fmt)

        def run_without_grad(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
            with torch.no_grad():
                return run(inputs)

        return run_without_grad

    return make


def _onnx_runner(fmt: str, optimization: str) -> Callable[[Exports], Runner]:
    def make(exports: Exports) -> Runner:
        session = exports.session(fmt, optimization)
        return lambda inputs: run_session(session, inputs)

    return make


@register(4, needs_export)
def check_torchscript_parity(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The traced TorchScript export matches eager at fuzzed shapes other than the traced one."""
    return _parity(spec, model, options, check="torchscript_parity", runner=_torchscript_runner("torchscript"),
                   fmt="torchscript", backend="torchscript")  # fmt: skip


@register(4, needs_export)
def check_torchscript_script_parity(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Where the model can be scripted, the scripted model matches eager at fuzzed shapes."""
    try:
        with shapes_unrecorded():
            exports_for(spec, model, options.artifacts_dir).record("torchscript-script")
    except ExportError as error:
        return skipped(spec, "torchscript_script_parity", str(error), seed=options.seed)
    return _parity(spec, model, options, check="torchscript_script_parity",
                   runner=_torchscript_runner("torchscript-script"), fmt="torchscript-script", backend="torchscript")  # fmt: skip


@register(4, needs_export)
def check_onnx_parity(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The ONNX export under onnxruntime, graph optimisations off, matches eager at fuzzed shapes."""
    return _parity(
        spec,
        model,
        options,
        check="onnx_parity",
        runner=_onnx_runner("onnx", "disabled"),
        fmt="onnx",
        backend="onnxruntime",
    )


@register(4, needs_export)
def check_onnx_optimized_parity(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The ONNX export under onnxruntime, every graph optimisation on, matches eager at fuzzed shapes."""
    return _parity(
        spec,
        model,
        options,
        check="onnx_optimized_parity",
        runner=_onnx_runner("onnx", "all"),
        fmt="onnx",
        backend="onnxruntime",
    )


@dataclass(frozen=True)
class Int8ShapeError:
    """The int8 export's error at one fuzzed shape, beside the error that int8 quantization explains."""

    batch_size: int
    length: int
    onnx_rms: float  # RMS(int8 ONNX output - eager output)
    reference_rms: float  # RMS(eager fake-quantized output - eager output): what int8 itself costs
    excess: float  # onnx_rms / (reference_rms + floor): 1 when the file is exactly as good as int8 can be
    agreement: float  # share of decided predictions the int8 file agrees on with eager (lowest cosine: embeddings)
    reference_agreement: float  # the same for the fake-quantized reference
    near_ties: int  # class predictions whose eager top-2 margin int8 itself can close: not held to agreement

    @property
    def shape(self) -> str:
        return f"{self.batch_size}x{self.length}"


def _decided(spec: ModelSpec, reference: torch.Tensor, emulated: torch.Tensor) -> torch.Tensor:
    """Flat bool per prediction: for class outputs, whether eager's top-1 margin exceeds twice the largest logit
    change that int8 quantization itself makes to that prediction (the fake-quantized reference's), so int8 cannot
    flip it by quantization alone. Untrained models' margins (median 0.03) sit below int8 error: their top-1 is a
    near-tie that decides nothing. Other outputs are all decided."""
    predictions = agreements(spec, reference, reference).numel()
    if (
        adapter_for(spec).output_kind != "classes"
        or reference.shape[-1] < 2
        or predictions != reference[..., 0].numel()
    ):
        return torch.ones(predictions, dtype=torch.bool)  # not one top-1 prediction per row (e.g. multi-label)
    top2 = reference.double().topk(2, dim=-1).values  # (..., 2)
    change = (emulated.double() - reference.double()).abs().amax(-1)  # (...)
    return ((top2[..., 0] - top2[..., 1]) > 2 * change).flatten()


def _decided_agreement(spec: ModelSpec, reference: torch.Tensor, got: torch.Tensor, decided: torch.Tensor) -> float:
    """The pooled agreement over the decided predictions (1.0 when every prediction is a near-tie)."""
    values = agreements(spec, reference, got)
    return pooled_agreement(spec, [values[decided]]) if bool(decided.any()) else 1.0


def _rms(difference: torch.Tensor) -> float:
    return float(difference.double().pow(2).mean().sqrt())


@register(4, needs_export)
def check_onnx_int8_parity(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The int8 ONNX export is no further from eager than int8 quantization of the same weights explains.

    At every fuzzed shape, RMS(int8 ONNX - eager) <= ``max_int8_excess_error`` x (RMS(fake-quantized
    eager - eager) + atol), where the reference runs the eager model under onnxruntime's own dynamic
    int8 scheme (:mod:`harness.export.int8_reference`). Quantization noise cancels out of the ratio;
    a wrong scale, axis or kernel (int16 saturation, a bad fusion) does not.
    """
    exports = exports_for(spec, model, options.artifacts_dir)
    try:
        run = _onnx_runner("onnx-int8", "all")(exports)
        record = exports.record("onnx-int8")
    except ExportError as error:
        return _export_failure(spec, "onnx_int8_parity", error, options)
    eager = exports.wrapper()
    floor = tolerance_for(options.dtype, "onnxruntime").atol  # float32 export noise, the smallest error that counts
    rows: list[Int8ShapeError] = []
    quantized_ops: list[int] = []

    def body(case: tuple[BatchShape, int]) -> float:
        shape, inputs = _case_inputs(spec, case)
        with torch.no_grad():
            reference = eager(*inputs.values())
        with fake_quantized() as mode:
            emulated = eager(*inputs.values())
        quantized_ops.append(mode.quantized_calls)
        got = run(inputs)
        if tuple(got.shape) != tuple(reference.shape):
            raise Violation(
                float("inf"),
                f"shape {shape.batch_size}x{shape.length}: output {tuple(got.shape)}, eager {tuple(reference.shape)}",
            )
        onnx_rms, reference_rms = _rms(got - reference), _rms(emulated - reference)
        decided = _decided(spec, reference, emulated)
        row = Int8ShapeError(shape.batch_size, shape.length, onnx_rms, reference_rms, onnx_rms / (reference_rms + floor),
                             _decided_agreement(spec, reference, got, decided),
                             _decided_agreement(spec, reference, emulated, decided), int((~decided).sum()))  # fmt: skip
        rows.append(row)
        if row.excess > options.max_int8_excess_error:
            raise Violation(
                row.excess,
                f"shape {row.shape}: RMS error {onnx_rms:.3g}, {row.excess:.2f}x the {reference_rms:.3g} that int8 "
                f"quantization of the same weights gives",
            )
        return row.excess

    strategy, corners = _fuzzed_shapes(spec)
    outcome = fuzz(strategy, body, explicit=corners)
    worst = max(rows, key=lambda row: row.excess) if rows else None
    summary = (
        f"worst shape {worst.shape}: RMS error {worst.onnx_rms:.3g} vs {worst.reference_rms:.3g} explained by int8 "
        f"({worst.excess:.2f}x)"
        if worst
        else ""
    )
    return verdict(
        spec,
        "onnx_int8_parity",
        passed=outcome.failure is None,
        measured=worst.excess if worst else float("inf"),
        threshold=options.max_int8_excess_error,
        tolerance={"rtol": 0.0, "atol": floor},
        expected=f"RMS error <= {options.max_int8_excess_error:g} x (the fake-quantized reference's + {floor:g}) "
        "at every fuzzed shape",
        got=f"{outcome.failure}; {summary}" if outcome.failure else f"{summary} over {len(rows)} shapes",
        hint="The int8 file is worse than its quantization explains: a scale or axis the quantizer got wrong, "
        "weights changed after quantization, or a CPU kernel that saturates (quantize with reduce_range).",
        sample_size=len(rows),
        seed=options.seed,
        details={
            "format": "onnx-int8",
            "exporter": record.exporter,
            "opset": record.opset,
            "export_notes": list(record.notes),
            "artifact": str(record.path),
            "quantization": QUANTIZE_DYNAMIC,
            "reference_quantized_ops": max(quantized_ops, default=0),
            "worst_shape": worst.shape if worst else None,
            "shapes": [{**vars(row), "shape": row.shape} for row in rows],
        },
    )


@register(4, needs_export)
def check_onnx_int8_accuracy(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """On real inputs, the int8 ONNX export loses at most ``max_int8_accuracy_drop`` of eager's top-1 accuracy.

    Paired on the same examples: the one-sided 95% lower confidence bound of the accuracy drop
    (eager - int8) must not exceed the allowed drop, with McNemar's exact test beside it. Embedding models
    have no labels: there the lowest cosine similarity to eager must reach ``min_int8_cosine``.
    """
    adapter = adapter_for(spec)
    batch = real_batch(spec, batch_size=adapter.real_batch_size, length=min(32, spec.inputs.max_length or 32))
    if batch is None or adapter.output_kind == "score":
        reason = f"the harness has no real labelled inputs for {spec.task} (spec.tokenizer or spec.real_data)"
        return skipped(spec, "onnx_int8_accuracy", reason, seed=options.seed)
    exports = exports_for(spec, model, options.artifacts_dir)
    try:
        run = _onnx_runner("onnx-int8", "all")(exports)
    except ExportError as error:
        return _export_failure(spec, "onnx_int8_accuracy", error, options)
    eager, rows, size = exports.wrapper(), len(next(iter(batch.values()))), spec.inputs.max_batch_size
    chunks = [export_inputs(spec, select_rows(batch, slice(start, start + size))) for start in range(0, rows, size)]
    with torch.no_grad():  # in batches the input space allows
        reference = torch.cat([eager(*inputs.values()) for inputs in chunks])
    got = torch.cat([run(inputs) for inputs in chunks])
    hint = ("Weights with outliers (one large value per channel rounds the rest to zero), or a layer that "
            "should stay float (keep it out of quantization, or use static quantization with calibration).")  # fmt: skip
    if adapter.output_kind == "embedding":  # no labels: closeness to eager is the accuracy
        cosine = agreements(spec, reference, got)
        lowest = float(cosine.min())
        return verdict(
            spec, "onnx_int8_accuracy", passed=lowest >= options.min_int8_cosine, measured=lowest,
            threshold=options.min_int8_cosine, expected=f"lowest cosine similarity to eager >= {options.min_int8_cosine:g}",
            got=f"lowest cosine {lowest:.4f}, mean {float(cosine.mean()):.4f} over {cosine.numel()} real texts",
            hint=hint, sample_size=int(cosine.numel()), seed=options.seed,
            details={"mean_cosine": float(cosine.mean()), "min_cosine": lowest},
        )  # fmt: skip
    eager_correct = adapter.correct(spec, reference, batch).numpy()  # teacher forcing, the task's label shift
    int8_correct = adapter.correct(spec, got, batch).numpy()
    test = mcnemar(eager_correct, int8_correct)
    drop, bound = test.effect_size, paired_drop_lower_bound(test)
    return verdict(
        spec,
        "onnx_int8_accuracy",
        passed=bound <= options.max_int8_accuracy_drop,
        measured=bound,
        threshold=options.max_int8_accuracy_drop,
        expected=f"95% lower bound of the accuracy drop <= {options.max_int8_accuracy_drop:g}",
        got=f"accuracy {eager_correct.mean():.3f} eager, {int8_correct.mean():.3f} int8 (drop {drop:.3f}, "
        f"lower bound {bound:.3f}, McNemar p={test.p_value:.3g}) over {eager_correct.size} real predictions",
        hint=hint,
        sample_size=int(eager_correct.size),
        seed=options.seed,
        details={
            "eager_accuracy": float(eager_correct.mean()),
            "int8_accuracy": float(int8_correct.mean()),
            "drop": drop,
            "drop_lower_bound": bound,
            "mcnemar": test.to_dict(),
        },  # fmt: skip
    )


@register(4, needs_export)
def check_latency_ratios(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Exported backends are at most ``max_latency_ratio`` times slower than eager (p50, interleaved runs)."""
    exports = exports_for(spec, model, options.artifacts_dir)
    batch = adapter_for(spec).make_batch(
        spec,
        batch_size=options.batch_size_for(spec),  # within the input space
        length=options.length_for(spec),
        generator=torch.Generator().manual_seed(options.seed),
    )
    inputs = export_inputs(spec, batch)
    try:
        eager = exports.wrapper()
        backends: dict[str, Runner] = {
            "eager": lambda named: eager(*named.values()),
            "torchscript": _torchscript_runner("torchscript")(exports),
            "onnxruntime": _onnx_runner("onnx", "all")(exports),
        }
    except ExportError as error:
        return _export_failure(spec, "latency_ratios", error, options)
    timings = _interleaved_timings(backends, inputs, repeats=options.latency_repeats)
    p50 = {name: statistics.median(times) for name, times in timings.items()}
    p95 = {name: _percentile(times, 0.95) for name, times in timings.items()}
    ratios = {name: p50[name] / p50["eager"] for name in backends if name != "eager"}
    slowest = max(ratios, key=ratios.get)
    return verdict(
        spec,
        "latency_ratios",
        passed=ratios[slowest] <= options.max_latency_ratio,
        measured=ratios[slowest],
        threshold=options.max_latency_ratio,
        expected=f"every backend's p50 <= {options.max_latency_ratio:g} x eager's",
        got=", ".join(f"{name} {ratio:.2f}x" for name, ratio in ratios.items()) + f" (slowest: {slowest})",
        hint="A slow exported graph: unfused ops, optimisations disabled, or shape-dependent recompilation.",
        sample_size=options.latency_repeats,
        seed=options.seed,
        details={
            "p50_ratio": ratios,
            "p95_ratio": {name: p95[name] / p95["eager"] for name in ratios},
            "p50_ms_eager": p50["eager"] * 1e3,  # context only: gates compare ratios, never absolute times
            "batch_shape": [options.batch_size, options.length_for(spec)],
        },
    )


def _interleaved_timings(
    backends: dict[str, Runner], inputs: dict[str, torch.Tensor], *, repeats: int
) -> dict[str, list[float]]:
    """Seconds per call of each backend, the order rotated every round so drift hits all alike."""
    names = list(backends)
    timings: dict[str, list[float]] = {name: [] for name in names}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # onnxruntime sessions run one intra-op thread too
    try:
        with torch.no_grad():
            for name in names:  # warm-up
                backends[name](inputs)
            for round_ in range(repeats):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    started = time.perf_counter()
                    backends[name](inputs)
                    timings[name].append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return timings


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

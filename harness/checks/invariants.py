"""Tier 1: is the model well-formed? Fast invariants every commit should satisfy."""

from __future__ import annotations

import fnmatch
import math
import tempfile
from pathlib import Path

import torch
from hypothesis import strategies as st

from harness.adapters import adapter_for
from harness.adapters.base import Batch, batch_size_of, select_rows
from harness.checks.base import (
    CheckOptions,
    first_non_finite,
    needs_fresh_weights,
    needs_sequence,
    needs_training,
    progress,
    register,
    step,
    verdict,
)
from harness.checks.fuzz import Violation, fuzz
from harness.checks.inputs import fixed_batch, seeded_generator
from harness.result import CheckResult
from harness.spec import ModelSpec
from harness.strategies import BatchShape, PaddingLayout, batch_shapes, padding_layouts
from harness.tolerances import compare, tolerance_for

SEEDS = st.integers(0, 2**31 - 1)


@torch.no_grad()
def _outputs(spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    return adapter_for(spec).forward(spec, model.eval(), batch)


def _shape_text(batch: Batch) -> str:
    return "x".join(str(d) for d in next(iter(batch.values())).shape)


@register(1)
def check_output_shapes(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Outputs have the task's shape and are finite at every batch size and length in the input space."""
    adapter = adapter_for(spec)
    max_length = spec.inputs.max_length or 1
    corners = [
        BatchShape(1, spec.inputs.min_length),
        BatchShape(1, max_length),
        BatchShape(spec.inputs.max_batch_size, max_length),
    ]

    def body(case: tuple[BatchShape, int]) -> float:
        shape, seed = case
        batch = adapter.make_batch(
            spec, batch_size=shape.batch_size, length=shape.length, generator=seeded_generator(seed)
        )
        out = _outputs(spec, model, batch)
        expected = adapter.output_shape(spec, batch)
        if tuple(out.shape) != expected:
            raise Violation(1.0, f"input {_shape_text(batch)} gave output {tuple(out.shape)}, expected {expected}")
        non_finite = int((~torch.isfinite(out)).sum())
        if non_finite:
            raise Violation(1.0, f"input {_shape_text(batch)} gave {non_finite} non-finite outputs")
        return 0.0

    outcome = fuzz(st.tuples(batch_shapes(spec), SEEDS), body, explicit=[(c, options.seed) for c in corners])
    return verdict(
        spec,
        "output_shapes",
        passed=outcome.passed,
        measured=float(outcome.failing_example is not None),
        threshold=0.0,
        expected="the task's output shape with finite values for every fuzzed input",
        got=outcome.failure or f"all {outcome.examples} fuzzed shapes correct and finite",
        hint="Look for sizes baked into forward (reshape/view with constants) or NaN at length 1 or max length.",
        sample_size=outcome.examples,
        seed=options.seed,
        details={"failing_example": repr(outcome.failing_example) if outcome.failing_example else None},
    )


@register(1)
def check_batch_independence(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Row i's output does not change when the other rows of its batch are replaced."""
    tolerance = tolerance_for(options.dtype, "eager")
    batch = fixed_batch(spec, options)
    reference = _outputs(spec, model, batch)
    worst, worst_row = None, 0
    where = first_non_finite(reference_outputs=reference)
    for row in range(batch_size_of(batch)):
        others = fixed_batch(spec, options, seed_offset=1000 + row)
        mixed = {key: others[key].clone() for key in others}
        for key in mixed:
            mixed[key][row] = batch[key][row]
        with step(f"forward of the batch with row {row} among other rows"):
            got = _outputs(spec, model, mixed)[row]
        where = where or first_non_finite(**{f"row_{row}_among_other_rows": got})
        comparison = compare(got, reference[row], tolerance)
        if worst is None or comparison.worst_excess > worst.worst_excess:
            worst, worst_row = comparison, row
    return verdict(
        spec,
        "batch_independence",
        passed=worst.within,
        measured=worst.max_abs,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"max |difference| within atol={tolerance.atol:g} + rtol={tolerance.rtol:g}*|ref|",
        got=f"max |difference| {worst.max_abs:.3g} at row {worst_row}" + (f" ({where})" if where else ""),
        hint="Something mixes rows: normalisation or statistics over the batch dimension, or a batch-wide reduction.",
        sample_size=batch_size_of(batch),
        seed=options.seed,
        details={"fraction_within": worst.fraction_within},
    )


@register(1)
def check_batch_size_invariance(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """A batch's outputs equal its rows run one at a time."""
    tolerance = tolerance_for(options.dtype, "eager")
    batch = fixed_batch(spec, options)
    together = _outputs(spec, model, batch)
    with step("one-at-a-time forwards"):
        alone = torch.cat([_outputs(spec, model, select_rows(batch, [row])) for row in range(batch_size_of(batch))])
    comparison = compare(together, alone, tolerance)
    where = first_non_finite(batched_outputs=together, one_at_a_time_outputs=alone)
    return verdict(
        spec,
        "batch_size_invariance",
        passed=comparison.within,
        measured=comparison.max_abs,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"max |batched - one-at-a-time| within atol={tolerance.atol:g} + rtol={tolerance.rtol:g}*|ref|",
        got=f"max |difference| {comparison.max_abs:.3g}, {comparison.fraction_within:.1%} of elements within"
        + (f" ({where})" if where else ""),
        hint="The output depends on the batch size: a division by the batch size, or a shape taken from the batch.",
        sample_size=batch_size_of(batch),
        seed=options.seed,
        details={"fraction_within": comparison.fraction_within, "max_rel": comparison.max_rel},
    )


def padded_batches(spec: ModelSpec) -> bool:
    """Whether the model is run on padded batches: the spec's claim, by default yes for every sequence task."""
    claim = spec.capabilities.padded_batches
    return adapter_for(spec).sequence if claim is None else claim


@register(1, needs_sequence)
def check_padding_invariance(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Padding leaves the outputs at real tokens unchanged for a model used on padded batches (masked right padding, and left padding of a causal stream; unmasked right padding for a model without an attention mask).

    A model the spec says is never run on padded batches (``Capabilities.padded_batches=False``) is measured all
    the same: the row reports how far padding moves it, and passes."""
    adapter = adapter_for(spec)
    tolerance = tolerance_for(options.dtype, "eager")
    masked = spec.capabilities.has_attention_mask
    # left padding shifts positions unless a mask says where the real tokens are, and it only has to leave a causal
    # stream's outputs alone when the padded stream is that stream (a seq2seq decoder's claim says nothing of its encoder)
    left = masked and spec.capabilities.is_causal and adapter.causal_key == "input_ids"
    sides = ("right", "left") if left else ("right",)
    judged = padded_batches(spec)
    unjudged: list[str] = []  # non-finite outputs of a model never run on padded batches: reported, not judged

    def body(case: tuple[PaddingLayout, int]) -> float:
        layout, seed = case
        batch = adapter.make_batch(
            spec, batch_size=layout.batch_size, length=layout.length, generator=seeded_generator(seed)
        )
        padded = adapter.pad(spec, batch, amount=layout.amount, side=layout.side)
        with step(f"forward of {layout.batch_size}x{layout.length} rows with {layout.amount} {layout.side} pad tokens"):
            real = adapter.real_outputs(
                _outputs(spec, model, padded), amount=layout.amount, side=layout.side, length=layout.length
            )
        with step(f"forward of the same {layout.batch_size}x{layout.length} rows unpadded"):
            unpadded = _outputs(spec, model, batch)
        where = first_non_finite(padded_outputs_at_real_tokens=real, unpadded_outputs=unpadded)
        if where and not judged:
            unjudged.append(where)
            return 0.0
        if where:
            raise Violation(math.inf, f"{layout.amount} {layout.side} pad tokens on a {layout.batch_size}x"
                            f"{layout.length} batch: {where}")  # fmt: skip
        comparison = compare(real, unpadded, tolerance)
        if not comparison.within and judged:
            raise Violation(
                comparison.max_abs,
                f"{layout.amount} {layout.side} pad tokens on a {layout.batch_size}x{layout.length} batch moved "
                f"real-token outputs by {comparison.max_abs:.3g}",
            )
        return comparison.max_abs

    max_length = spec.inputs.max_length
    shortest = spec.inputs.min_length
    explicit = [(PaddingLayout(2, shortest, max_length - shortest, side), options.seed) for side in sides]
    strategy = padding_layouts(spec, sides=sides, max_size=min(4, spec.inputs.max_batch_size))
    outcome = fuzz(st.tuples(strategy, SEEDS), body, explicit=explicit)
    kind = "masked" if masked else "unmasked (the model declares no attention mask)"
    if not judged:
        use = "not judged: the spec says the model is never run on padded batches"
    else:
        use = "the model is run on padded batches"
    hint = (
        "The attention mask is ignored somewhere, or positions are not derived from it (left padding)."
        if masked
        else "Padding reaches the real tokens' outputs and the model takes no attention mask: add one (and declare "
        "has_attention_mask), or declare Capabilities(padded_batches=False) if it is never run on padded batches."
    )
    return verdict(
        spec,
        "padding_invariance",
        passed=outcome.passed,
        measured=outcome.worst,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"real-token outputs within atol={tolerance.atol:g} + rtol={tolerance.rtol:g}*|ref| ({kind} "
        f"{'/'.join(sides)} padding; {use})",
        got=outcome.failure
        or f"max |difference| {outcome.worst:.3g} over {outcome.examples} padding layouts"
        + (f" ({unjudged[0]})" if unjudged else ""),
        hint=hint,
        sample_size=outcome.examples,
        seed=options.seed,
        details={
            "sides": list(sides),
            "masked": masked,
            "padded_batches": judged,
            "failing_example": repr(outcome.failing_example) if outcome.failing_example else None,
        },
    )


def _first_output(adapter, outputs: torch.Tensor) -> torch.Tensor:
    """The output at the first position, or the whole output when it has no length dimension."""
    return outputs[:, :1] if adapter.per_token_outputs else outputs


@register(1, needs_sequence)
def check_causality(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """A causal stream's later tokens never move earlier outputs; a bidirectional stream's last token moves the first output."""
    adapter = adapter_for(spec)
    tolerance = tolerance_for(options.dtype, "eager")
    max_length = spec.inputs.max_length
    if max_length < 2:
        raise ValueError(f"causality needs max_length >= 2, the spec has {max_length}")

    def edited_pair(key: str, length: int, changed: int, seed: int) -> tuple[Batch, Batch]:
        batch = adapter.make_batch(spec, batch_size=2, length=length, generator=seeded_generator(seed))
        if key == "labels":  # no pad id in a label stream: its last token stays its last real one (see below)
            pad = spec.inputs.pad_id
            batch[key] = batch[key].masked_fill(batch[key] == pad, (pad + 1) % spec.inputs.vocab_size)
        edited = {name: value.clone() for name, value in batch.items()}
        edited[key][:, changed] = (batch[key][:, changed] + 1) % spec.inputs.vocab_size
        return batch, edited

    measured: dict[str, float] = {}
    problems: list[str] = []
    sample = 0
    with step("two identical forwards (determinism probe)"):
        probe, _ = edited_pair(adapter.causal_key if spec.capabilities.is_causal else "input_ids", max_length, 1,
                               options.seed)  # fmt: skip
        first, second = _outputs(spec, model, probe), _outputs(spec, model, probe)
    where = first_non_finite(outputs_of_the_probe_batch=first)
    if where or not torch.equal(first, second):
        noise = float((first.double() - second.double()).nan_to_num(nan=0.0).abs().max())
        return verdict(
            spec,
            "causality",
            passed=False,
            measured=math.nan if where else noise,  # the probe's non-finite output, or how far the forwards differ
            threshold=tolerance.atol,
            tolerance=tolerance.as_dict(),
            expected="finite, deterministic eval outputs, without which causality cannot be judged",
            got=f"{where} (causality not judged)"
            if where
            else f"two identical eval forwards differ by {noise:.3g} (nondeterministic: causality not judged)",
            hint="Make eval forwards deterministic first (see eval_determinism): dropout or sampling in eval mode.",
            sample_size=2,
            seed=options.seed,
            details={"claimed_causal": spec.capabilities.is_causal, "nondeterminism": noise},
        )
    if spec.capabilities.is_causal:
        key = adapter.causal_key

        shift = adapter.causal_shift  # seq2seq: label c is decoder input c+1, so outputs <= c must hold

        # a decoder may take its start token from the last label (mBART's shift_tokens_right wraps it round to
        # position 0), so a label stream keeps its last token: changing it is no leak of the architecture
        spare = 1 if key == "labels" else 0
        shortest = max(2 + spare, spec.inputs.min_length)
        if max_length < shortest:
            raise ValueError(f"causality of {key} needs max_length >= {shortest}, the spec has {max_length}")

        @st.composite
        def edits(draw: st.DrawFn) -> tuple[int, int, int]:
            length = draw(st.integers(shortest, max_length))
            changed = draw(st.integers(1, length - 1 - spare))  # the token that changes
            return length, changed, draw(SEEDS)

        def body(case: tuple[int, int, int]) -> float:
            length, changed, seed = case
            batch, edited = edited_pair(key, length, changed, seed)
            past = slice(0, changed + shift)  # every output the changed token must not reach
            with step(f"forwards of a {length}-token batch and of it with token {changed} changed"):
                after, before = _outputs(spec, model, edited)[:, past], _outputs(spec, model, batch)[:, past]
            where = first_non_finite(outputs_with_the_token_changed=after, outputs_of_the_original=before)
            if where:
                raise Violation(math.inf, f"changing {key} token {changed} of {length}: {where} (not judged)")
            comparison = compare(after, before, tolerance)
            if not comparison.within:
                leaks.append(changed)
                raise Violation(
                    comparison.max_abs,
                    f"changing {key} token {changed} of {length} moved outputs at positions <= {changed + shift - 1} "
                    f"by {comparison.max_abs:.3g}",
                )
            return comparison.max_abs

        leaks: list[int] = []  # changed positions whose change reached earlier outputs
        outcome = fuzz(
            edits(), body, explicit=[(max_length, 1, options.seed), (max_length, max_length - 1 - spare, options.seed)]
        )
        measured["future_leak"] = outcome.worst
        sample += outcome.examples
        if outcome.raised:
            problems.append(f"{outcome.failure} (the forward raised: causality not judged)")
        elif not outcome.passed:
            problems.append(
                outcome.failure + (" (future leakage: the causal mask is missing or wrong)" if leaks else "")
            )
    bidirectional_key = adapter.bidirectional_key or (None if spec.capabilities.is_causal else "input_ids")
    if bidirectional_key:
        # "moved" means beyond ulp-level noise: a causal model leaves the first output bitwise equal, while a
        # small bidirectional model may move it by less than the eager tolerance (6e-5 was seen)
        noise = tolerance_for(torch.float32, "serialized")  # in any dtype: a causal first output is bitwise equal
        batch, edited = edited_pair(bidirectional_key, max_length, max_length - 1, options.seed)
        with torch.no_grad():
            moved = adapter.bidirectional_outputs(spec, model.eval(), edited)
            still = adapter.bidirectional_outputs(spec, model.eval(), batch)
        sensitivity = compare(_first_output(adapter, moved), _first_output(adapter, still), noise)
        measured["first_output_sensitivity"] = sensitivity.max_abs
        sample += 2
        where = first_non_finite(outputs_with_the_last_token_changed=moved, outputs_of_the_original=still)
        if where:  # NaN is "infinitely far", which must not read as "the last token reached the first output"
            problems.append(f"{where} (bidirectionality not judged)")
        elif sensitivity.within:
            problems.append(
                f"changing the last {bidirectional_key} token moved the first output by only {sensitivity.max_abs:.3g} "
                f"(<= {noise.atol:g}: claimed bidirectional, behaves causally)"
            )
    causal_text = f"no future leakage in {adapter.causal_key} (within atol={tolerance.atol:g})"
    bidirectional_text = f"the first output to depend on the last {bidirectional_key} token"
    expected = " and ".join(
        text
        for text, applies in ((causal_text, spec.capabilities.is_causal), (bidirectional_text, bidirectional_key))
        if applies
    )
    return verdict(
        spec,
        "causality",
        passed=not problems,
        measured=measured.get("future_leak", measured.get("first_output_sensitivity")),
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=expected,
        got="; ".join(problems) or ", ".join(f"{name} {value:.3g}" for name, value in measured.items()),
        hint="Check the attention masks against the is_causal claim: a missing or inverted causal mask, "
        "or a bidirectional encoder built with a causal one.",
        sample_size=sample,
        seed=options.seed,
        details={"claimed_causal": spec.capabilities.is_causal, **measured},
    )


def _gradient_problems(trainable: list[tuple[str, torch.nn.Parameter]]) -> dict[str, str]:
    problems = {}
    for name, parameter in trainable:
        if parameter.grad is None:
            problems[name] = "no gradient"
        elif not torch.isfinite(parameter.grad).all():
            problems[name] = f"non-finite gradient ({first_non_finite(gradient=parameter.grad)})"
        elif not parameter.grad.any():
            problems[name] = "all-zero gradient"
    return problems


def _frozen_problems(spec: ModelSpec, model: torch.nn.Module) -> dict[str, str]:
    """Parameters built with requires_grad=False that the spec does not declare frozen (InitSpec.frozen_ok), unless
    another seed builds them bitwise equal: a table computed from the configuration (sinusoidal positions), not
    learned, is frozen by design."""
    frozen = [name for name, p in model.named_parameters()
              if not p.requires_grad and not any(fnmatch.fnmatch(name, pattern) for pattern in spec.init.frozen_ok)]  # fmt: skip
    if not frozen:
        return {}
    other = dict(spec.build_model(seed=spec.seed + 1).named_parameters())
    named = dict(model.named_parameters())
    return {
        name: "requires_grad is False (frozen at build; declare it in InitSpec.frozen_ok if intended)"
        for name in frozen
        if name not in other or not torch.equal(other[name].detach(), named[name].detach())
    }


@register(1, needs_training)
def check_gradient_flow(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Every parameter is trainable (unless declared frozen) and receives a finite, not-all-zero gradient from the first backward (further batches, and one optimizer step for a zero-initialised branch, only clear all-zero ones)."""
    adapter = adapter_for(spec)
    model.train()
    model.zero_grad(set_to_none=True)
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    problems = _frozen_problems(spec, model)
    with step("forward and backward of batch 1"):
        adapter.model_loss(spec, model, fixed_batch(spec, options)).backward()
    dead = _gradient_problems(trainable)
    progress().establish(dead_after_first_backward=dict(dead))  # reported even if a later step raises
    passes = 1
    for index in range(1, options.num_batches):  # more batches may reach a parameter batch 1 did not
        if not any(why in ("all-zero gradient", "no gradient") for why in dead.values()):
            break
        with step(f"forward and backward of batch {index + 1}"):
            adapter.model_loss(spec, model, fixed_batch(spec, options, seed_offset=index)).backward()
        passes += 1
        dead = {name: why for name, why in _gradient_problems(trainable).items() if name in dead}
    zeros = [name for name, why in dead.items() if why == "all-zero gradient"]
    if zeros:  # a zero-initialised branch passes no gradient to its inside until its zero weight has moved
        with step("one optimizer step, then forward and backward of batch 1 (zero-initialised branches)"):
            with torch.no_grad():
                for _, parameter in trainable:
                    if parameter.grad is not None and torch.isfinite(parameter.grad).all():
                        parameter -= 1e-2 * parameter.grad.sign()
            model.zero_grad(set_to_none=True)
            adapter.model_loss(spec, model, fixed_batch(spec, options)).backward()
        passes += 1
        revived = {name for name, why in _gradient_problems(trainable).items() if why == "all-zero gradient"}
        dead = {name: why for name, why in dead.items() if why != "all-zero gradient" or name in revived}
    problems |= dead
    listed = ", ".join(f"{name} ({why})" for name, why in list(problems.items())[:5])
    more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
    return verdict(
        spec,
        "gradient_flow",
        passed=not problems and bool(trainable),
        measured=float(len(problems)),
        threshold=0.0,
        expected=f"0 dead parameters among {len(trainable)} trainable",
        got=f"{len(problems)} dead: {listed}{more}" if problems else f"all {len(trainable)} receive gradient",
        hint="A dead parameter is detached (.detach(), torch.no_grad, .data), unused in forward, or its gradient overflowed.",
        sample_size=passes,
        seed=options.seed,
        details={"dead_parameters": problems, "trainable_parameters": len(trainable), "backward_passes": passes},
    )


def _fingerprint(value: object) -> object:
    """A comparable stand-in for an attribute: tensors by shape, dtype and bytes; containers recursively;
    plain values as they are; any other object by identity (its insides are not the model's state)."""
    if isinstance(value, torch.Tensor):
        data = value.detach().cpu().contiguous()
        return ("tensor", tuple(data.shape), str(data.dtype), data.view(-1).view(torch.uint8).numpy().tobytes())
    if isinstance(value, (bool, int, float, str, bytes, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(_fingerprint(item) for item in value))
    if isinstance(value, (set, frozenset)):
        return ("set", len(value), frozenset(map(repr, value)))
    if isinstance(value, dict):
        return ("dict", tuple((repr(key), _fingerprint(item)) for key, item in value.items()))
    return ("object", id(value))


def _state_snapshot(model: torch.nn.Module) -> dict[str, object]:
    """Every parameter and buffer, and every public attribute (tensors, containers, scalars) of every submodule."""
    state: dict[str, object] = {
        name: value.detach().clone() for name, value in model.state_dict(keep_vars=True).items()
    }
    for module_name, module in model.named_modules():
        for attribute, value in vars(module).items():
            if not attribute.startswith("_"):
                state[f"{module_name}.{attribute}" if module_name else attribute] = _fingerprint(value)
    return state


def _changed_entries(before: dict[str, object], after: dict[str, object]) -> list[str]:
    changed = []
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if isinstance(old, torch.Tensor) and isinstance(new, torch.Tensor):
            if old.shape != new.shape or not torch.equal(old, new):
                changed.append(key)
        elif old != new:
            changed.append(key)
    return sorted(changed)


@register(1)
def check_eval_determinism(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Repeated eval forwards are bitwise equal and change no parameter, buffer or attribute."""
    batch = fixed_batch(spec, options)
    model.eval()
    before = _state_snapshot(model)
    outputs = [_outputs(spec, model, batch) for _ in range(options.repeats)]
    changed = _changed_entries(before, _state_snapshot(model))
    max_diff = max(float((out.double() - outputs[0].double()).abs().max()) for out in outputs[1:])
    identical = all(torch.equal(out, outputs[0]) for out in outputs[1:])
    problems = []
    if not identical:
        problems.append(f"repeated outputs differ by up to {max_diff:.3g}")
    if changed:
        problems.append(f"the forward changed {', '.join(changed[:5])}")
    return verdict(
        spec,
        "eval_determinism",
        passed=not problems,
        measured=max_diff,
        threshold=0.0,
        tolerance={"rtol": 0.0, "atol": 0.0},
        expected=f"{options.repeats} bitwise-equal outputs and an unchanged state",
        got="; ".join(problems) or f"{options.repeats} identical outputs, state unchanged",
        hint="Dropout or sampling active in eval mode (F.dropout(training=True)), or a counter/cache updated in forward.",
        sample_size=options.repeats,
        seed=options.seed,
        details={"changed_state": changed},
    )


_NORM_CLASS_MARKERS = ("Norm",)


def _norm_parameters(model: torch.nn.Module) -> set[str]:
    """Names of the weights of normalisation layers (LayerNorm, RMSNorm, BatchNorm, GroupNorm, ...)."""
    names = set()
    for module_name, module in model.named_modules():
        if any(marker in type(module).__name__ for marker in _NORM_CLASS_MARKERS):
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.nn.Parameter):
                names.add(f"{module_name}.weight" if module_name else "weight")
    return names


def _expectation_problems(spec: ModelSpec, model: torch.nn.Module) -> dict[str, str]:
    """Where the stated per-pattern means and stds (InitSpec.expectations) and tied pairs (InitSpec.tied) fail."""
    named = dict(model.named_parameters(remove_duplicate=False))  # tied aliases under each of their names
    problems: dict[str, str] = {}
    for claim in spec.init.expectations:
        matches = [name for name in named if fnmatch.fnmatch(name, claim.pattern)]
        if not matches:
            problems[claim.pattern] = "the stated pattern matches no parameter"
        for name in matches:
            values = named[name].detach().double()
            for stat, stated in (("mean", claim.mean), ("std", claim.std)):
                if stated is None:
                    continue
                got = float(values.mean() if stat == "mean" else values.std()) if values.numel() > 1 else float(values)
                if not abs(got - stated) <= claim.atol:
                    problems[name] = f"{stat} {got:.4g}, stated {stated:g} within {claim.atol:g} ({claim.pattern})"
    for first, second in spec.init.tied:
        missing = [name for name in (first, second) if name not in named]
        if missing:
            problems[f"{first}~{second}"] = f"stated tied, but {', '.join(missing)} is no parameter"
        elif named[first] is not named[second]:
            problems[f"{first}~{second}"] = "stated tied, but they are two tensors"
    return problems


@register(1, needs_fresh_weights)
def check_initialization(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Fresh parameters are finite, norm weights are all one (or all zero, a 1+w norm), other tensors are not constant unless zero or one-dimensional, weight matrices' stds are within the spec's bounds, and every stated per-pattern statistic and tie holds."""
    low, high = spec.init.std_bounds
    norm_weights = _norm_parameters(model)
    problems: dict[str, str] = {}
    stds: dict[str, float] = {}
    for name, parameter in model.named_parameters():
        values = parameter.detach().double()
        if not torch.isfinite(values).all():
            problems[name] = first_non_finite(values=values)
        elif any(fnmatch.fnmatch(name, pattern) for pattern in spec.init.constant_ok):
            continue
        elif name in norm_weights:
            if not (torch.equal(values, torch.ones_like(values)) or not values.any()):
                problems[name] = f"norm weight neither all ones nor all zeros (mean {float(values.mean()):.3g})"
        elif values.numel() > 1:
            std = float(values.std())
            stds[name] = std
            if std == 0.0:
                # a zero tensor (a zero-initialised branch) and a constant vector (a layer scale) are deliberate
                if values.any() and values.dim() > 1:
                    problems[name] = f"constant ({float(values.flatten()[0]):.3g})"
            elif not low <= std <= high and name.rsplit(".", 1)[-1] == "weight" and values.dim() > 1:
                # the bounds are for weight matrices that multiply activations; a learned token or table may
                # start near zero (timm's cls_token: std 1e-6)
                problems[name] = f"std {std:.3g} outside [{low:g}, {high:g}]"
    problems |= _expectation_problems(spec, model)
    listed = ", ".join(f"{name}: {why}" for name, why in list(problems.items())[:5])
    stated = len(spec.init.expectations) + len(spec.init.tied)
    return verdict(
        spec,
        "initialization",
        passed=not problems,
        measured=float(len(problems)),
        threshold=0.0,
        expected=f"0 badly initialised parameters (std in [{low:g}, {high:g}], constants only for "
        f"{', '.join(spec.init.constant_ok)}, zero tensors and vectors; {stated} stated statistics and ties)",
        got=f"{len(problems)} bad: {listed}"
        if problems
        else f"{len(stds)} weight tensors, std {min(stds.values(), default=0):.3g}..{max(stds.values(), default=0):.3g}",
        hint="Check _init_weights / reset_parameters; declare intentional constants in InitSpec.constant_ok.",
        sample_size=sum(1 for _ in model.parameters()),
        seed=spec.seed,
        details={"problems": problems, "weight_stds": stds},
    )


@register(1)
def check_save_load_roundtrip(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Outputs survive a safetensors state-dict round trip and save_pretrained/from_pretrained into a fresh model."""
    from safetensors.torch import load_model, save_model

    tolerance = tolerance_for(options.dtype, "serialized")
    batch = fixed_batch(spec, options)
    reference = _outputs(spec, model, batch)
    differences: dict[str, float] = {}
    problems: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        save_model(model, str(path))
        fresh = spec.build_model(seed=spec.seed + 1)  # other weights: a load that does nothing shows
        missing, unexpected = load_model(fresh, str(path), strict=False)
        if missing or unexpected:
            problems.append(f"state dict keys missing {sorted(missing)[:3]} unexpected {sorted(unexpected)[:3]}")
        differences["safetensors"] = compare(_outputs(spec, fresh, batch), reference, tolerance).max_abs
        if hasattr(model, "save_pretrained") and hasattr(type(model), "from_pretrained"):
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            model.save_pretrained(Path(folder) / "pretrained")
            # same attention kernels as the original: the round trip is about weights, not kernel choice
            # (from_pretrained picks sdpa by default; eager vs sdpa differ by ~1e-5 on t5-tiny)
            kernels = getattr(getattr(model, "config", None), "_attn_implementation", None)
            loaded = type(model).from_pretrained(
                Path(folder) / "pretrained", **({"attn_implementation": kernels} if kernels else {})
            )
            differences["save_pretrained"] = compare(_outputs(spec, loaded, batch), reference, tolerance).max_abs
    worst_route = max(differences, key=differences.get)
    if differences[worst_route] > tolerance.atol:
        problems.append(f"outputs after the {worst_route} round trip differ by {differences[worst_route]:.3g}")
    return verdict(
        spec,
        "save_load_roundtrip",
        passed=not problems,
        measured=differences[worst_route],
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"outputs within atol={tolerance.atol:g} after {' and '.join(differences)}",
        got="; ".join(problems) or f"max |difference| {differences[worst_route]:.3g}",
        hint="State the forward uses but the state dict lacks: a plain tensor attribute, a non-persistent buffer, a config value.",
        sample_size=batch_size_of(batch),
        seed=options.seed,
        details={"routes": differences},
    )


@register(1, needs_training)
def check_loss_oracle(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The model's own loss equals an independent cross-entropy of its logits (the task's targets, ignore index honoured)."""
    adapter = adapter_for(spec)
    tolerance = tolerance_for(options.dtype, "reference")
    batch = fixed_batch(spec, options)
    ignored = torch.rand(batch["labels"].shape, generator=seeded_generator(options.seed + 7)) < 0.25
    if batch["labels"].is_floating_point():  # regression targets: there is no ignore index to honour
        ignored.zero_()
    ignored.view(-1)[-1] = False  # at least one label is scored
    batch["labels"] = batch["labels"].masked_fill(ignored, spec.inputs.ignore_index)
    model.eval()
    with torch.no_grad():
        with step("the forward with labels (the model's own loss)"):
            model_loss = float(adapter.model_loss(spec, model, batch))
        with step("the forward without labels (the reference loss)"):
            reference = float(adapter.reference_loss(spec, adapter.forward(spec, model, batch), batch))
    difference = abs(model_loss - reference)
    where = first_non_finite(model_loss=model_loss, reference_loss=reference)
    return verdict(
        spec,
        "loss_oracle",
        passed=difference <= tolerance.atol + tolerance.rtol * abs(reference),
        measured=difference,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"model loss = reference {reference:.6f} within {tolerance.atol:g}",
        got=f"model loss {model_loss:.6f} (|difference| {difference:.3g})" + (f" ({where})" if where else ""),
        hint="Labels not shifted for next-token prediction, ignore_index not honoured, or a sum where a mean belongs.",
        sample_size=int((batch["labels"] != spec.inputs.ignore_index).sum()),
        seed=options.seed,
        details={"model_loss": model_loss, "reference_loss": reference, "ignored_labels": int(ignored.sum())},
    )

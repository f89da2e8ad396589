"""Tier 5: has anything drifted or regressed? Evaluation, regression gates and drift.

Every check runs on real data (CPython's documentation text through the model's tokenizer, or the real
examples the spec declares, such as the scikit-learn digits), so the numbers are those a user's eval set
would produce. Which data a task has, and how it is scored, the task's adapter says.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from harness.checks.base import CheckOptions, register, verdict
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.tolerances import tolerance_for

if TYPE_CHECKING:  # pragma: no cover
    import torch


def needs_token_loss(spec: ModelSpec) -> str | None:
    from harness.adapters import adapter_for

    adapter = adapter_for(spec)
    if adapter.evaluation != "tokens" or adapter.real_text != "labelled":
        return f"task {spec.task} has no token-level language-model loss"
    return adapter.no_real_data_because(spec)


def needs_eval_data(spec: ModelSpec) -> str | None:
    from harness.adapters import adapter_for

    adapter = adapter_for(spec)
    if adapter.evaluation is None:
        return f"the harness has no real labelled data for task {spec.task}"
    return adapter.no_real_data_because(spec)


def _examples(spec: ModelSpec, options: CheckOptions, *, stop: int | None = None) -> tuple[list[Any], list[Any]]:
    """Two halves (seeded random split) of ``stop`` real examples (default ``options.monitoring.examples``)."""
    stop = stop or options.monitoring.examples
    from harness.adapters import adapter_for
    from harness.adapters.base import select_rows
    from harness.evaluation import text_batches, text_examples

    adapter = adapter_for(spec)
    if adapter.real_text != "labelled":  # the spec's own real examples, in batches the input space allows
        batch = adapter.real_batch(spec, batch_size=stop, length=options.length_for(spec))
        order = random.Random(options.seed).sample(range(len(batch["labels"])), len(batch["labels"]))
        half, size = len(order) // 2, spec.inputs.max_batch_size

        def batches_of(rows: list[int]) -> list[Any]:
            return [select_rows(batch, rows[start : start + size]) for start in range(0, len(rows), size)]

        return batches_of(order[:half]), batches_of(order[half:])
    texts = text_examples()
    texts = random.Random(options.seed).sample(texts, stop)
    half = stop // 2
    length = min(options.monitoring.max_tokens, spec.inputs.max_length)
    return (
        text_batches(spec, texts[:half], batch_size=min(16, spec.inputs.max_batch_size), max_length=length),
        text_batches(spec, texts[half:], batch_size=min(16, spec.inputs.max_batch_size), max_length=length),
    )


@register(5, needs_token_loss)
def check_token_weighted_perplexity(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The log of the token-weighted perplexity on real text equals the model's own loss and is finite.

    Rows of different lengths are padded (labels ignored there), so a loss that averages per-row
    means, or counts padding, disagrees with exp of the token-weighted mean NLL.
    """
    import torch

    from harness.adapters import adapter_for
    from harness.evaluation import evaluate

    batches = [_ragged(spec, batch) for batch in _examples(spec, options, stop=32)[0]]
    evaluation = evaluate(spec, model, batches)
    with torch.no_grad():
        losses = [(float(adapter_for(spec).model_loss(spec, model, b)), b) for b in batches]
    counts = [_scored_tokens(spec, b) for _, b in losses]
    model_loss = sum(loss * n for (loss, _), n in zip(losses, counts, strict=True)) / sum(counts)
    log_ppl = (
        math.log(evaluation.perplexity) if evaluation.perplexity and math.isfinite(evaluation.perplexity) else math.inf
    )
    gap = abs(log_ppl - model_loss) / max(1.0, abs(model_loss)) if math.isfinite(model_loss) else math.inf
    rtol = max(
        options.monitoring.perplexity_rtol, tolerance_for(options.dtype, "reference").rtol
    )  # a half-precision loss
    return verdict(
        spec, "token_weighted_perplexity", passed=gap <= rtol, measured=gap, threshold=rtol,
        expected=f"log(perplexity) = model loss within {rtol:g} (relative), finite",
        got=f"log(perplexity) {log_ppl:.6f} vs token-weighted model loss {model_loss:.6f} (gap {gap:.2e})",
        hint="The model's loss is not the token-weighted mean NLL over non-ignored labels: look for a mean of "
        "per-sequence means, padding counted in the loss, or a label shift that disagrees with the logits.",
        sample_size=evaluation.n_tokens, seed=options.seed,
        details={"perplexity": evaluation.perplexity, "n_examples": evaluation.n_examples,
                 "batch_losses": [loss for loss, _ in losses]},
    )  # fmt: skip


def _ragged(spec: ModelSpec, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with row i cut to about (i + 1) / B of its length (right padding, labels ignored there)."""
    from harness.adapters import adapter_for

    batch = {key: value.clone() for key, value in batch.items()}
    key = adapter_for(spec).causal_key  # the stream the labels follow: the inputs, or the decoder's own
    rows, width = batch[key].shape
    for row in range(rows):
        keep = max(2, width * (row + 1) // rows)
        batch["labels"][row, keep:] = spec.inputs.ignore_index
        if key == "input_ids":
            batch["input_ids"][row, keep:] = spec.inputs.pad_id
            batch["attention_mask"][row, keep:] = 0
    return batch


def _scored_tokens(spec: ModelSpec, batch: dict[str, Any]) -> int:
    from harness.adapters import adapter_for

    shift = adapter_for(spec).label_shift  # a label at position < shift is never predicted
    keep = batch["labels"][:, shift:]
    return int((keep != spec.inputs.ignore_index).sum())


@register(5, needs_eval_data)
def check_self_regression_gate(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """The model gated against itself (two evaluations of one model on the same real eval set) is not worse.

    An identical candidate must pass the non-inferiority gate; a model whose outputs change from
    one evaluation to the next (state carried across forwards, weights updated in eval) does not.
    """
    from harness.evaluation import evaluate
    from harness.monitoring import MonitorConfig, regression_gate

    first, second = _examples(spec, options)
    batches = first + second
    config = MonitorConfig(seed=options.seed)
    baseline = evaluate(spec, model, batches)
    candidate = evaluate(spec, model, batches)
    gate = regression_gate(baseline, candidate, config)
    result = verdict(
        spec, "self_regression_gate", passed=gate.verdict in ("ok", "warn"), measured=gate.upper, threshold=gate.margin,
        expected=f"the upper {config.confidence:.0%} bound of the degradation <= margin {gate.margin:g}",
        got=f"gate {gate.verdict}: degradation {gate.degradation:.4g} [{gate.lower:.4g}, {gate.upper:.4g}], "
        f"MDE {gate.mde:.4g}",
        hint="Evaluating the same model twice gave different losses: it carries state across forward calls "
        "or changes its weights in eval mode.",
        sample_size=gate.n_examples, seed=options.seed, details=gate.to_dict(),
    )  # fmt: skip
    return replace(result, status=Status.WARNED) if gate.verdict == "warn" else result


@register(5, needs_eval_data)
def check_output_drift_halves(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """A profile of the model on one random half of real data shows no drift against the other half.

    Both halves come from one distribution, so a ``fail`` is a false alarm of the drift tests or a
    model whose outputs depend on something other than its inputs (state carried across calls).
    """
    from harness.monitoring import MonitorConfig, build_profile, compare_profiles

    first, second = _examples(spec, options)
    config = MonitorConfig(seed=options.seed, permutations=100)
    reference = build_profile(spec, model, first, embedding="model", seed=options.seed)  # the model's own outputs
    current = build_profile(spec, model, second, embedding="model", seed=options.seed)
    report = compare_profiles(reference, current, config)
    failing = [f.feature for f in report.features if f.verdict == "fail"]
    smallest = min(f.adjusted_p for f in report.features)
    return verdict(
        spec, "output_drift_halves", passed=report.verdict != "fail", measured=smallest, threshold=config.alpha_fail,
        expected="no feature failing (corrected p <= alpha_fail with an effect that matters)",
        got=f"drift {report.verdict}" + (f", failing: {', '.join(failing)}" if failing else "")
        + f"; smallest corrected p {smallest:.3g}",
        hint="The outputs on two halves of one data set differ: the model carries state across calls, or its "
        "outputs depend on the batch rather than the example.",
        sample_size=reference["n_examples"] + current["n_examples"], seed=options.seed,
        details={**report.to_dict(), "distributions": _distributions(reference, current)},
    )  # fmt: skip


def _distributions(reference: dict, current: dict, limit: int = 200) -> dict[str, dict[str, list[float]]]:
    """Reference and current values of each one-dimensional feature (at most ``limit`` each), for the
    HTML report's reference-vs-current plots."""
    return {
        name: {"reference": feature["values"][:limit], "current": current["features"][name]["values"][:limit]}
        for name, feature in reference["features"].items()
        if "values" in feature and feature["values"] and not isinstance(feature["values"][0], list)
    }

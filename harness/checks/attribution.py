"""Tier 2, attribution: integrated gradients are complete (they sum to f(x) - f(baseline))."""

from __future__ import annotations

import torch
from torch import nn

from harness.adapters import adapter_for
from harness.adapters.base import Batch, accepts, select_rows
from harness.checks.base import CheckOptions, register, verdict
from harness.checks.inputs import fixed_batch
from harness.result import CheckResult
from harness.spec import ModelSpec
from harness.tolerances import require_float32


def _embedding_module(spec: ModelSpec, model: nn.Module) -> nn.Module:
    """The token embedding: ``get_input_embeddings()``, else the one nn.Embedding with vocab_size rows."""
    getter = getattr(model, "get_input_embeddings", None)
    module = getter() if callable(getter) else None
    if isinstance(module, nn.Module):
        return module
    candidates = [
        m for m in model.modules() if isinstance(m, nn.Embedding) and m.num_embeddings == spec.inputs.vocab_size
    ]
    if not candidates:
        raise TypeError(
            f"{spec.name}: no input embedding found (no get_input_embeddings(), "
            f"no nn.Embedding with {spec.inputs.vocab_size} rows)"
        )
    return candidates[0]


def _forward_from_inputs(spec: ModelSpec, model: nn.Module, batch: Batch, inputs: torch.Tensor) -> torch.Tensor:
    """The task output when the token embeddings (or pixels) are replaced by ``inputs``.

    Models that accept ``inputs_embeds`` get them (Hugging Face convention; for seq2seq this is the
    encoder's input only); other models get their embedding module's output replaced by a hook.
    """
    adapter = adapter_for(spec)
    if not adapter.sequence:
        return adapter.forward(spec, model, {**batch, "pixel_values": inputs})
    if accepts(model, "inputs_embeds"):
        arguments = adapter.forward_inputs(spec, model, batch)
        del arguments["input_ids"]
        return adapter.outputs_of(spec, model(**arguments, inputs_embeds=inputs), batch)
    handle = _embedding_module(spec, model).register_forward_hook(lambda module, args, output: inputs)
    try:
        return adapter.forward(spec, model, batch)
    finally:
        handle.remove()


def _targets(
    spec: ModelSpec, outputs: torch.Tensor, position: int, chosen: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One scalar per row of ``outputs``, and the class (or coordinate) it reads.

    (B, T, K): the logit of class ``chosen`` at ``position``; (B, K): class ``chosen``; (B,): the score.
    ``chosen`` defaults to the last row's predicted class (for a text embedding: its largest-magnitude coordinate).
    """
    if outputs.dim() == 1:
        return outputs, torch.tensor(-1)
    values = outputs[:, position] if outputs.dim() == 3 else outputs  # (B, K)
    if chosen is None:
        embedding = adapter_for(spec).output_kind == "embedding"
        chosen = values[-1].abs().argmax() if embedding else values[-1].argmax()
    return values[:, chosen], chosen


def _trapezoid_attribution(
    spec: ModelSpec,
    model: nn.Module,
    row: Batch,
    inputs: torch.Tensor,
    baseline: torch.Tensor,
    position: int,
    steps: int,
) -> tuple[torch.Tensor, float, float, int]:
    """Integrated gradients of one example: (attributions like inputs[0], f(x) - f(baseline), the sum of
    attributions at half the steps, the class read). The path is run in chunks of at most 65 points."""
    with torch.no_grad():
        _, chosen = _targets(spec, _forward_from_inputs(spec, model, row, inputs), position, None)
    alphas = torch.linspace(0.0, 1.0, steps + 1)  # (S+1,)
    shape = (-1, *([1] * (inputs.dim() - 1)))
    values, gradients = [], []
    for part in alphas.split(min(65, spec.inputs.max_batch_size)):  # within the input space
        path = (baseline + part.view(shape) * (inputs - baseline)).requires_grad_(True)  # (P, ...): baseline -> x
        repeated = {key: value.expand(len(part), *value.shape[1:]) for key, value in row.items()}
        chunk_values, _ = _targets(spec, _forward_from_inputs(spec, model, repeated, path), position, chosen)  # (P,)
        (chunk_gradients,) = torch.autograd.grad(chunk_values.sum(), path)  # (P, ...)
        values.append(chunk_values.detach().double())
        gradients.append(chunk_gradients.double())
    grads = torch.cat(gradients)  # (S+1, ...)
    weights = torch.ones(steps + 1, dtype=torch.double)  # trapezoid rule on [0, 1]
    weights[[0, -1]] = 0.5
    half = weights[::2].clone()
    half[[0, -1]] = 0.5
    difference = (inputs - baseline)[0].double()  # (...): x - baseline
    attributions = difference * (weights.view(shape) * grads).sum(0) / steps
    half_sum = float((difference * (half.view(shape) * grads[::2]).sum(0)).sum() / (steps // 2))
    ends = torch.cat(values)  # (S+1,)
    return attributions, float(ends[-1] - ends[0]), half_sum, int(chosen)


@register(2)
def check_attribution_completeness(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Integrated-gradient attributions sum to f(x) - f(baseline), and causal outputs get no attribution from future positions."""
    require_float32(options.dtype, "completeness sums hundreds of gradient steps, whose half-precision rounding "
                    "alone misses the bound")  # fmt: skip
    adapter = adapter_for(spec)
    model.eval()
    batch = fixed_batch(spec, options, batch_size=max(options.behaviour.ig_rows, 2))
    references = fixed_batch(spec, options, batch_size=max(options.behaviour.ig_rows, 2), seed_offset=1)
    length = batch["input_ids"].shape[1] if adapter.sequence else 0
    position = length // 2 if adapter.sequence else 0  # per-token outputs are read in the middle
    future_applies = spec.capabilities.is_causal and adapter.causal_key == "input_ids" and adapter.per_token_outputs
    embedding = _embedding_module(spec, model) if adapter.sequence else None
    errors, estimates, deltas, used, future, examples = [], [], [], [], 0.0, []
    for index in range(options.behaviour.ig_rows):
        row = select_rows(batch, [index])
        with torch.no_grad():  # baseline: another input of the space (all-pad or all-zero inputs are singular
            # points of the normalisations: a zero pad-embedding row or a zero image gives every token, patch or
            # pixel a zero-variance vector, where LayerNorm/RMSNorm gradients reach 1/sqrt(eps))
            reference = select_rows(references, [index])
            if embedding is not None:
                inputs = embedding(row["input_ids"])  # (1, T, C)
                baseline = embedding(reference["input_ids"])  # (1, T, C)
            else:
                inputs = row["pixel_values"]  # (1, C, H, W)
                baseline = reference["pixel_values"]  # (1, C, H, W)
        steps = options.behaviour.ig_steps
        while True:  # double the steps until the discretisation error estimate is well inside the bound
            attributions, delta, half_sum, chosen = _trapezoid_attribution(
                spec, model, row, inputs, baseline, position, steps
            )
            total = float(attributions.sum())
            scale = max(abs(delta), options.behaviour.min_ig_delta)
            estimate = abs(total - half_sum) / scale  # |S(m) - S(m/2)|: the error at m/2 steps, >= that at m
            if estimate <= options.behaviour.max_ig_relative_error / 4 or steps >= options.behaviour.ig_max_steps:
                break
            steps *= 2
        used.append(steps)
        errors.append(abs(total - delta) / scale)
        estimates.append(estimate)
        deltas.append(delta)
        per_unit = attributions.sum(-1) if adapter.sequence else attributions.sum(0)  # (T,) or (H, W)
        if future_applies:
            future = max(future, float(per_unit[position + 1 :].abs().max()) if position + 1 < length else 0.0)
        order = per_unit.abs().flatten().argsort(descending=True)[: options.behaviour.top_positions]
        places = [int(i) for i in order] if adapter.sequence else [divmod(int(i), per_unit.shape[1]) for i in order]
        examples.append(
            {
                "row": index,
                "target": chosen,
                "f_x_minus_f_baseline": delta,
                "sum_attributions": total,
                "top_positions": places,
                "top_attributions": [float(per_unit.flatten()[i]) for i in order],
            }
        )
    worst = max(errors)
    problems = []
    if worst > options.behaviour.max_ig_relative_error:
        problems.append(f"attributions miss f(x) - f(baseline) by {worst:.1%} (relative)")
    if future:
        problems.append(f"position {position}'s output has attribution {future:.3g} from future positions")
    where = f"logit at position {position}" if adapter.per_token_outputs else "the output"
    return verdict(
        spec,
        "attribution_completeness",
        passed=not problems,
        measured=worst,
        threshold=options.behaviour.max_ig_relative_error,
        expected=f"relative completeness error <= {options.behaviour.max_ig_relative_error:g} at {max(used)} trapezoid steps"
        + (" and exactly 0 attribution from future positions" if future_applies else ""),
        got="; ".join(problems)
        or f"relative error {worst:.2e} (discretisation error bound {max(estimates):.1e}), "
        f"f(x) - f(baseline) {', '.join(f'{d:.3g}' for d in deltas)}",
        hint="Gradients miss part of the output's path from the input: .detach(), torch.round, argmax or integer "
        "casts inside forward (or, for future attribution, a causal mask applied after the softmax).",
        sample_size=options.behaviour.ig_rows,
        seed=options.seed,
        details={
            "steps": used,
            "discretisation_error_bounds": estimates,
            "rule": "trapezoid",
            "baseline": f"another generated input (seed {options.seed + 1})",
            "attributed": "input embeddings" if adapter.sequence else "pixels",
            "target": where,
            "relative_errors": errors,
            "future_attribution": future if future_applies else None,
            "examples": examples,
        },
    )

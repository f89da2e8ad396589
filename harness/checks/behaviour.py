"""Tier 2: does the model behave sensibly? Attention, attribution, robustness, ablation, memory.

Every check here applies by capability: attention maps to models that return them
(``Capabilities.returns_attentions``), memory to models that name their memory interface
(``ModelSpec.memory``), the rest to every model. The bounds the checks hold models to are in one
frozen :class:`BehaviourConfig` (:data:`CONFIG`), each with the reason for its value.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.adapters import adapter_for, logits_of
from harness.adapters.base import Batch, batch_size_of, select_rows
from harness.adapters.sequence import accepts
from harness.adapters.text_embedding import hidden_states_of, mean_pool
from harness.checks.base import CHECKS, CheckOptions, register, verdict
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.tolerances import compare, tolerance_for


@dataclass(frozen=True)
class BehaviourConfig:
    """The bounds of the Tier 2 checks; the defaults suit tiny models on two CPU cores."""

    near_uniform_entropy: float = 0.9  # a head whose mean normalised row entropy is >= this is near-uniform
    near_one_hot_weight: float = 0.9  # a head whose mean largest row weight is >= this is near-one-hot
    padding_amount: int = 4  # right-padding tokens added for the attention-mask part of the attention check
    ig_steps: int = 64  # trapezoid steps of integrated gradients (error O(1/steps^2) for smooth models)
    ig_max_steps: int = 1024  # steps are doubled up to this while the error estimate exceeds a quarter of the bound
    ig_rows: int = 2  # examples attributed
    max_ig_relative_error: float = 0.05  # |sum(attributions) - (f(x) - f(baseline))| / |f(x) - f(baseline)|
    min_ig_delta: float = 1e-4  # |f(x) - f(baseline)| below this makes the relative error meaningless
    top_positions: int = 3  # most attributed positions (pixels) reported
    perturbation_samples: int = 200  # examples per perturbation kind (each gives one independent flip or not)
    max_flip_rate: float = 0.25  # allowed share of flipped predictions (a random-init CNN flips ~16% on shifts)
    noise_std: float = 0.05  # std of the Gaussian pixel noise (pixels are standardised)
    max_score_change: float = 0.1  # a scalar score "flips" when it moves by more than this
    dead_tolerance: float = 1e-6  # a component whose ablation moves the loss less than this is dead
    max_ablation_effect: float = 1.0  # a relative change (|delta loss| / loss, or cosine distance) that is "everything"
    memory_examples: int = 20  # Hypothesis examples (operation sequences) of the memory state machine, at most
    memory_steps: int = 15  # operations per sequence, at most
    memory_atol: float = 1e-4  # distances and reconstructions are compared within this (float32 sums)

    def __post_init__(self) -> None:
        for name in ("ig_steps", "ig_rows", "perturbation_samples", "memory_examples", "memory_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"BehaviourConfig.{name} must be >= 1, got {name}={getattr(self, name)}")
        if self.ig_steps % 2:
            raise ValueError(
                f"BehaviourConfig.ig_steps must be even (halved for the error estimate), got {self.ig_steps}"
            )
        if not 0.0 <= self.max_flip_rate < 1.0:
            raise ValueError(f"BehaviourConfig.max_flip_rate must be in [0, 1), got {self.max_flip_rate}")


CONFIG = BehaviourConfig()


# Requirements.


def needs_attentions(spec: ModelSpec) -> str | None:
    if spec.capabilities.returns_attentions:
        return None
    return "the model declares it does not return attention weights (Capabilities.returns_attentions)"


def needs_memory(spec: ModelSpec) -> str | None:
    if not spec.capabilities.has_memory:
        return "the model declares no external memory (Capabilities.has_memory)"
    if spec.memory is None:
        return "the spec names no memory interface (ModelSpec.memory)"
    return None


# Shared helpers.


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _fixed_batch(spec: ModelSpec, options: CheckOptions, *, batch_size: int | None = None, length: int | None = None):
    return adapter_for(spec).make_batch(
        spec,
        batch_size=batch_size or options.batch_size,
        length=length or options.length_for(spec),
        generator=_generator(options.seed),
    )


def _raw_forward(spec: ModelSpec, model: nn.Module, batch: Batch, **extra: Any) -> Any:
    """The model's own output object for a batch's inputs (decoder inputs added for seq2seq)."""
    adapter = adapter_for(spec)
    inputs = adapter.model_inputs(spec, model, batch)
    if hasattr(adapter, "decoder_input_ids"):
        inputs["decoder_input_ids"] = adapter.decoder_input_ids(spec, model, batch["labels"])
    return model(**inputs, **extra)


def _field(output: Any, name: str) -> Any:
    return output.get(name) if isinstance(output, dict) else getattr(output, name, None)


# Attention patterns ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionStream:
    """Where an attention output's queries and keys come from."""

    padded_queries: bool  # queries are the (right-padded) input tokens
    padded_keys: bool  # keys are the (right-padded) input tokens
    causal: bool  # causal when the model claims causality


ATTENTION_STREAMS: dict[str, AttentionStream] = {
    "attentions": AttentionStream(padded_queries=True, padded_keys=True, causal=True),
    "encoder_attentions": AttentionStream(padded_queries=True, padded_keys=True, causal=False),
    "decoder_attentions": AttentionStream(padded_queries=False, padded_keys=False, causal=True),
    "cross_attentions": AttentionStream(padded_queries=False, padded_keys=True, causal=False),
}
"""Output field -> its stream (Hugging Face names); decoder inputs are never padded."""


@register(2, needs_attentions)
def check_attention_patterns(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Attention rows sum to one and put no weight on masked padding keys nor, in causal models, on future keys."""
    adapter = adapter_for(spec)
    tolerance = tolerance_for(torch.float32, "reference")
    if not adapter.sequence:
        raise TypeError(f"{spec.name}: returns_attentions is claimed for task {spec.task}, which has no sequence")
    max_length = spec.inputs.max_length
    amount = (
        min(CONFIG.padding_amount, max_length - spec.inputs.min_length) if spec.capabilities.has_attention_mask else 0
    )
    length = max(spec.inputs.min_length, min(options.length_for(spec), max_length - amount))
    batch = adapter.make_batch(spec, batch_size=options.batch_size, length=length, generator=_generator(options.seed))
    side = "left" if spec.capabilities.is_causal else "right"  # right pad keys are a causal query's future
    if amount:
        batch = adapter.pad(spec, batch, amount=amount, side=side)
    with torch.no_grad():
        output = _raw_forward(spec, model.eval(), batch, output_attentions=True)
    worst = {"row_sum_error": 0.0, "padding_weight": 0.0, "future_weight": 0.0}
    heads: dict[str, dict[str, float]] = {}
    found = []
    sample_map: list[list[float]] = []  # layer 0, head 0 of the first row: drawn in the HTML report
    for name, stream in ATTENTION_STREAMS.items():
        layers = _field(output, name)
        if not layers:
            continue
        found.append(name)
        if not sample_map:
            sample_map = [[round(float(w), 4) for w in row] for row in layers[0][0, 0, :32, :32]]
        causal = stream.causal and spec.capabilities.is_causal
        for index, weights in enumerate(layers):
            measured, per_head = _attention_measures(weights.double(), stream, amount, side, causal)
            for key, value in measured.items():
                worst[key] = max(worst[key], value)
            for head, values in enumerate(per_head):
                heads[f"{name}.{index}.{head}"] = values
    if not found:
        raise TypeError(
            f"{spec.name}: forward(output_attentions=True) returned none of {', '.join(ATTENTION_STREAMS)} "
            "although the spec claims returns_attentions"
        )
    uniform = sum(values["entropy"] >= CONFIG.near_uniform_entropy for values in heads.values())
    one_hot = sum(values["max_weight"] >= CONFIG.near_one_hot_weight for values in heads.values())
    problems = [f"{key.replace('_', ' ')} {value:.3g}" for key, value in worst.items() if value > tolerance.atol]
    result = verdict(
        spec,
        "attention_patterns",
        passed=not problems,
        measured=max(worst.values()),
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"row sums 1 and weight on padding{' and future' if spec.capabilities.is_causal else ''} keys 0, "
        f"within {tolerance.atol:g}",
        got=("; ".join(problems) if problems else ", ".join(f"{k} {v:.3g}" for k, v in worst.items()))
        + f" over {len(heads)} heads ({uniform} near-uniform, {one_hot} near-one-hot)",
        hint="The attention mask or causal triangle is not applied to the scores before the softmax, "
        "or the weights are renormalised after masking.",
        sample_size=batch_size_of(batch),
        seed=options.seed,
        details={
            **worst,
            "streams": found,
            "padding_amount": amount,
            "padding_side": side,
            "near_uniform_share": uniform / len(heads),
            "near_one_hot_share": one_hot / len(heads),
            "warning_band_applied": spec.capabilities.pretrained,
            "heads": heads,
            "attention_map": sample_map,
        },
    )
    degenerate = uniform == len(heads) or one_hot == len(heads)
    if result.status is Status.PASSED and degenerate and spec.capabilities.pretrained:
        which = "near-uniform" if uniform == len(heads) else "near-one-hot"
        return dataclasses.replace(
            result,
            status=Status.WARNED,
            got=f"all {len(heads)} heads are {which}: {result.got}",
            hint="Trained heads that all attend uniformly (or all to one key) usually mean attention learned nothing.",
        )
    return result


def _attention_measures(
    weights: torch.Tensor, stream: AttentionStream, amount: int, side: str, causal: bool
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Rule violations of one layer's weights (B, H, Q, K) at its real queries, and each head's entropy.

    ``amount`` pad tokens sit on ``side`` of every padded stream; rows of pad queries are not held to anything.
    """
    queries, keys = weights.shape[-2:]
    query_pad = amount if stream.padded_queries else 0
    key_pad = amount if stream.padded_keys else 0
    first_query = query_pad if side == "left" else 0
    real = weights[:, :, first_query : first_query + queries - query_pad]  # (B, H, Qr, K)
    real_queries, real_keys = queries - query_pad, keys - key_pad
    pad_keys = real[..., :key_pad] if side == "left" else real[..., keys - key_pad :]  # (B, H, Qr, Kp)
    measured = {
        "row_sum_error": float((real.sum(-1) - 1).abs().max()),
        "padding_weight": float(pad_keys.abs().max()) if key_pad else 0.0,
        "future_weight": 0.0,
    }
    visible = torch.full((real_queries,), float(real_keys))  # (Qr,): keys each query may see
    if causal:
        if queries != keys:
            raise ValueError(f"a causal self-attention map must be square, got {queries}x{keys}")
        measured["future_weight"] = float(real.triu(diagonal=first_query + 1).abs().max())  # key index > query index
        visible = torch.arange(1, real_queries + 1).clamp(max=real_keys).double()  # (Qr,)
    informative = visible >= 2  # one visible key: the row is one-hot by construction
    probabilities = real.clamp(min=0)  # (B, H, Qr, K)
    entropy = -(probabilities * probabilities.clamp(min=1e-30).log()).sum(-1)  # (B, H, Qr)
    normalised = entropy[..., informative] / visible[informative].log()  # (B, H, Qi)
    max_weight = probabilities.max(-1).values[..., informative]  # (B, H, Qi)
    per_head = [
        {
            "entropy": round(float(normalised[:, head].mean()), 4),
            "max_weight": round(float(max_weight[:, head].mean()), 4),
        }
        for head in range(weights.shape[1])
    ]
    return measured, per_head


# Attribution -----------------------------------------------------------------------------------------


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
        arguments = adapter.model_inputs(spec, model, batch)
        del arguments["input_ids"]
        if hasattr(adapter, "decoder_input_ids"):
            arguments["decoder_input_ids"] = adapter.decoder_input_ids(spec, model, batch["labels"])
        output = model(**arguments, inputs_embeds=inputs)
        if spec.task == "text-embedding":
            return mean_pool(hidden_states_of(output), batch["attention_mask"])  # (B, H)
        return logits_of(output)
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
        chosen = values[-1].abs().argmax() if spec.task == "text-embedding" else values[-1].argmax()
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
    for part in alphas.split(65):
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
    adapter = adapter_for(spec)
    model.eval()
    batch = _fixed_batch(spec, options, batch_size=max(CONFIG.ig_rows, 2))
    length = batch["input_ids"].shape[1] if adapter.sequence else 0
    position = length // 2 if adapter.sequence else 0  # per-token outputs are read in the middle
    future_applies = spec.capabilities.is_causal and adapter.causal_key == "input_ids" and adapter.per_token_outputs
    embedding = _embedding_module(spec, model) if adapter.sequence else None
    errors, estimates, deltas, used, future, examples = [], [], [], [], 0.0, []
    for index in range(CONFIG.ig_rows):
        row = select_rows(batch, [index])
        with torch.no_grad():
            if embedding is not None:  # baseline: the pad token at every position (zeros meet RMSNorm's kink)
                inputs = embedding(row["input_ids"])  # (1, T, C)
                baseline = embedding(torch.full_like(row["input_ids"], spec.inputs.pad_id))  # (1, T, C)
            else:  # baseline: the all-zero image, the mean of standardised pixels
                inputs = row["pixel_values"]  # (1, C, H, W)
                baseline = torch.zeros_like(inputs)
        steps = CONFIG.ig_steps
        while True:  # double the steps until the discretisation error estimate is well inside the bound
            attributions, delta, half_sum, chosen = _trapezoid_attribution(
                spec, model, row, inputs, baseline, position, steps
            )
            total = float(attributions.sum())
            scale = max(abs(delta), CONFIG.min_ig_delta)
            estimate = abs(total - half_sum) / scale  # |S(m) - S(m/2)|: the error at m/2 steps, >= that at m
            if estimate <= CONFIG.max_ig_relative_error / 4 or steps >= CONFIG.ig_max_steps:
                break
            steps *= 2
        used.append(steps)
        errors.append(abs(total - delta) / scale)
        estimates.append(estimate)
        deltas.append(delta)
        per_unit = attributions.sum(-1) if adapter.sequence else attributions.sum(0)  # (T,) or (H, W)
        if future_applies:
            future = max(future, float(per_unit[position + 1 :].abs().max()) if position + 1 < length else 0.0)
        order = per_unit.abs().flatten().argsort(descending=True)[: CONFIG.top_positions]
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
    if worst > CONFIG.max_ig_relative_error:
        problems.append(f"attributions miss f(x) - f(baseline) by {worst:.1%} (relative)")
    if future:
        problems.append(f"position {position}'s output has attribution {future:.3g} from future positions")
    where = f"logit at position {position}" if adapter.per_token_outputs else "the output"
    return verdict(
        spec,
        "attribution_completeness",
        passed=not problems,
        measured=worst,
        threshold=CONFIG.max_ig_relative_error,
        expected=f"relative completeness error <= {CONFIG.max_ig_relative_error:g} at {max(used)} trapezoid steps"
        + (" and exactly 0 attribution from future positions" if future_applies else ""),
        got="; ".join(problems)
        or f"relative error {worst:.2e} (discretisation error bound {max(estimates):.1e}), "
        f"f(x) - f(baseline) {', '.join(f'{d:.3g}' for d in deltas)}",
        hint="Gradients miss part of the output's path from the input: .detach(), torch.round, argmax or integer "
        "casts inside forward (or, for future attribution, a causal mask applied after the softmax).",
        sample_size=CONFIG.ig_rows,
        seed=options.seed,
        details={
            "steps": used,
            "discretisation_error_bounds": estimates,
            "rule": "trapezoid",
            "baseline": "pad-token embeddings" if adapter.sequence else "zeros",
            "attributed": "input embeddings" if adapter.sequence else "pixels",
            "target": where,
            "relative_errors": errors,
            "future_attribution": future if future_applies else None,
            "examples": examples,
        },
    )


# Robustness and metamorphic relations ----------------------------------------------------------------


def wilson_interval(flips: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a binomial rate ``flips / total``."""
    if total < 1:
        raise ValueError(f"wilson_interval needs total >= 1, got total={total}")
    rate = flips / total
    centre = (rate + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(rate * (1 - rate) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def _inputs_for_robustness(spec: ModelSpec, options: CheckOptions, size: int) -> tuple[Batch, str]:
    """Real data when the harness has some for the task (perturbations preserve real labels), else generated."""
    from harness.data import real_batch

    length = options.length_for(spec)
    real = real_batch(spec, batch_size=size, length=length)
    if real is not None and batch_size_of(real) == size:
        return real, "real"
    return adapter_for(spec).make_batch(
        spec, batch_size=size, length=length, generator=_generator(options.seed)
    ), "generated"


@torch.no_grad()
def _chunked_forward(spec: ModelSpec, model: nn.Module, batch: Batch, chunk: int = 32) -> torch.Tensor:
    adapter = adapter_for(spec)
    size = batch_size_of(batch)
    return torch.cat(
        [adapter.forward(spec, model, select_rows(batch, slice(i, i + chunk))) for i in range(0, size, chunk)]
    )


def _flips(spec: ModelSpec, before: torch.Tensor, after: torch.Tensor, observed: torch.Tensor | None) -> torch.Tensor:
    """(N,) bool: whether each example's prediction changed.

    Per-token outputs: the argmax at the observed position; classes: the argmax; a text embedding: its
    nearest original embedding (cosine) is no longer its own; a scalar score: it moved by > max_score_change.
    """
    if before.dim() == 3:
        rows = torch.arange(before.shape[0])
        return before[rows, observed].argmax(-1) != after[rows, observed].argmax(-1)
    if before.dim() == 1:
        return (before - after).abs() > CONFIG.max_score_change
    if spec.task == "text-embedding":
        similarity = nn.functional.normalize(after, dim=-1) @ nn.functional.normalize(before, dim=-1).T  # (N, N)
        return similarity.argmax(-1) != torch.arange(before.shape[0])
    return before.argmax(-1) != after.argmax(-1)


def _token_substitution(spec: ModelSpec, batch: Batch, generator: torch.Generator) -> tuple[Batch, torch.Tensor]:
    """One random non-first token per row replaced by another id, and the position whose output is read."""
    ids = batch["input_ids"]
    size, length = ids.shape
    if length < 3:
        raise ValueError(f"token substitution needs length >= 3, got {length}")
    causal = spec.capabilities.is_causal and adapter_for(spec).causal_key == "input_ids"
    changed = torch.randint(1, length - 1 if causal else length, (size,), generator=generator)  # (N,)
    if causal:  # read a later position: the only outputs that can see the change
        observed = changed + 1 + (torch.rand(size, generator=generator) * (length - 1 - changed)).long()
    else:  # read any other position
        observed = (changed + torch.randint(1, length, (size,), generator=generator)) % length
    rows = torch.arange(size)
    shift = torch.randint(1, spec.inputs.vocab_size, (size,), generator=generator)
    edited = ids.clone()
    edited[rows, changed] = (ids[rows, changed] + shift) % spec.inputs.vocab_size
    return {**batch, "input_ids": edited}, observed


def _image_perturbations(batch: Batch, generator: torch.Generator) -> dict[str, Batch]:
    """Gaussian noise, and a one-pixel shift in a random direction (zero fill: the standardised mean)."""
    pixels = batch["pixel_values"]  # (N, C, H, W)
    noisy = pixels + CONFIG.noise_std * torch.randn(pixels.shape, generator=generator)
    shifted = torch.zeros_like(pixels)
    directions = torch.randint(0, 4, (pixels.shape[0],), generator=generator)
    for row, direction in enumerate(directions.tolist()):
        source = pixels[row]
        if direction == 0:
            shifted[row, :, 1:, :] = source[:, :-1, :]
        elif direction == 1:
            shifted[row, :, :-1, :] = source[:, 1:, :]
        elif direction == 2:
            shifted[row, :, :, 1:] = source[:, :, :-1]
        else:
            shifted[row, :, :, :-1] = source[:, :, 1:]
    return {"gaussian_noise": {**batch, "pixel_values": noisy}, "one_pixel_shift": {**batch, "pixel_values": shifted}}


@register(2)
def check_perturbation_flip_rate(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Label-preserving perturbations flip at most the allowed share of predictions (95% Wilson bound)."""
    adapter = adapter_for(spec)
    model.eval()
    size = CONFIG.perturbation_samples
    batch, source = _inputs_for_robustness(spec, options, size)
    generator = _generator(options.seed + 1)
    before = _chunked_forward(spec, model, batch)
    rates: dict[str, dict[str, float]] = {}
    for kind, (perturbed, observed) in _perturbations(spec, batch, generator).items():
        flips = _flips(spec, before, _chunked_forward(spec, model, perturbed), observed)
        low, high = wilson_interval(int(flips.sum()), size)
        rates[kind] = {"rate": float(flips.float().mean()), "ci_low": low, "ci_high": high, "n": size}
    allowed = CONFIG.max_flip_rate
    failed = [kind for kind, r in rates.items() if r["ci_low"] > allowed]
    undecided = [kind for kind, r in rates.items() if r["ci_low"] <= allowed < r["ci_high"]]
    worst = max(rates, key=lambda kind: rates[kind]["rate"])
    text = "; ".join(
        f"{kind} {r['rate']:.1%} (95% CI {r['ci_low']:.1%}..{r['ci_high']:.1%}, n={size})" for kind, r in rates.items()
    )
    result = verdict(
        spec,
        "perturbation_flip_rate",
        passed=not failed,
        measured=rates[worst]["rate"],
        threshold=allowed,
        expected=f"flip rate <= {allowed:.0%} (the 95% Wilson interval's lower bound above it fails)",
        got=text,
        hint="Predictions hinge on single tokens or pixels: look for hashing, rounding or very large logit "
        "scales; a real model that flips this often under label-preserving edits is brittle.",
        sample_size=size * len(rates),
        seed=options.seed,
        details={"inputs": source, "perturbations": rates, "sequence": adapter.sequence},
    )
    if not failed and undecided:
        return dataclasses.replace(
            result,
            status=Status.INCONCLUSIVE,
            got=f"{text}: the interval straddles {allowed:.0%}, the sample cannot decide",
        )
    return result


def _perturbations(spec: ModelSpec, batch: Batch, generator: torch.Generator) -> dict[str, tuple[Batch, Any]]:
    if adapter_for(spec).sequence:
        return {"token_substitution": _token_substitution(spec, batch, generator)}
    return {kind: (perturbed, None) for kind, perturbed in _image_perturbations(batch, generator).items()}


@register(2)
def check_batch_order_equivariance(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Permuting the rows of a batch permutes the outputs the same way."""
    adapter = adapter_for(spec)
    tolerance = tolerance_for(torch.float32, "eager")
    size = max(2, min(spec.inputs.max_batch_size, 2 * options.batch_size))
    batch = _fixed_batch(spec, options, batch_size=size)
    order = torch.randperm(size, generator=_generator(options.seed))
    if torch.equal(order, torch.arange(size)):
        order = order.flip(0)
    model.eval()
    with torch.no_grad():
        reference = adapter.forward(spec, model, batch)
        permuted = adapter.forward(spec, model, select_rows(batch, order))
    comparison = compare(permuted, reference[order], tolerance)
    return verdict(
        spec,
        "batch_order_equivariance",
        passed=comparison.within,
        measured=comparison.max_abs,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"outputs of the permuted batch = permuted outputs within atol={tolerance.atol:g}",
        got=f"max |difference| {comparison.max_abs:.3g}, {comparison.fraction_within:.1%} of elements within",
        hint="The output depends on a row's place in the batch: a cumulative sum, scan or position taken over dim 0.",
        sample_size=size,
        seed=options.seed,
        details={"permutation": order.tolist(), "fraction_within": comparison.fraction_within},
    )


# Ablation --------------------------------------------------------------------------------------------


def block_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    """The outermost nn.ModuleLists whose modules all share one type: the transformer block stacks."""
    found: dict[str, nn.ModuleList] = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        if any(name.startswith(f"{outer}.") for outer in found):
            continue
        found[name] = module
    return found


@contextmanager
def _skipped(block: nn.Module) -> Iterator[None]:
    """The block returns its input hidden states: its residual contribution is removed."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hidden = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
        if not isinstance(hidden, torch.Tensor):
            raise TypeError(f"cannot find the input hidden states of {type(module).__name__}")
        if isinstance(output, torch.Tensor):
            return hidden
        if isinstance(output, (tuple, list)):
            return type(output)([hidden, *output[1:]])
        raise TypeError(f"cannot ablate a {type(module).__name__} returning {type(output).__name__}")

    handle = block.register_forward_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _effect_function(spec: ModelSpec, model: nn.Module, batch: Batch) -> tuple[str, Callable[[], torch.Tensor]]:
    adapter = adapter_for(spec)
    try:
        with torch.no_grad():
            adapter.model_loss(spec, model, batch)
    except TypeError:
        return "output", lambda: adapter.forward(spec, model, batch)
    return "loss", lambda: adapter.model_loss(spec, model, batch)


@register(2)
def check_layer_ablation(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Removing any one block changes the loss measurably and leaves it finite (no dead block)."""
    lists = block_lists(model)
    if not lists:
        rule = CHECKS["layer_ablation"].rule
        reason = "the model has no nn.ModuleList of same-type blocks to ablate"
        return CheckResult("layer_ablation", spec.name, 2, Status.SKIPPED, rule, got=reason, seed=options.seed)
    model.eval()
    batch = _fixed_batch(spec, options)
    metric, evaluate = _effect_function(spec, model, batch)
    with torch.no_grad():
        reference = evaluate().double()
        effects: dict[str, float] = {}
        for list_name, blocks in lists.items():
            for index, block in enumerate(blocks):
                with _skipped(block):
                    ablated = evaluate().double()
                if metric == "loss":  # signed change of the loss
                    change = float(ablated - reference)
                else:  # mean cosine distance of the outputs, in [0, 2]
                    cosine = nn.functional.cosine_similarity(ablated.flatten(1), reference.flatten(1), dim=-1)
                    change = float((1 - cosine).mean()) if torch.isfinite(ablated).all() else math.inf
                effects[f"{list_name}.{index}"] = change
    scale = abs(float(reference)) if metric == "loss" else 1.0  # "everything": a relative change above the bound
    dead = [name for name, change in effects.items() if abs(change) <= CONFIG.dead_tolerance]
    non_finite = [name for name, change in effects.items() if not math.isfinite(change)]
    dominant = [
        name
        for name, change in effects.items()
        if math.isfinite(change) and abs(change) > CONFIG.max_ablation_effect * scale
    ]
    ranking = sorted(effects, key=lambda name: -abs(effects[name]) if math.isfinite(effects[name]) else -math.inf)
    smallest = min(abs(change) for change in effects.values())
    problems = []
    if dead:
        problems.append(f"dead (|change| <= {CONFIG.dead_tolerance:g}): {', '.join(dead)}")
    if non_finite:
        problems.append(f"non-finite {metric} without {', '.join(non_finite)}")
    what = "loss" if metric == "loss" else "output (mean cosine distance)"
    changes = ", ".join(f"{name} {effects[name]:+.3g}" for name in ranking)
    result = verdict(
        spec,
        "layer_ablation",
        passed=not problems,
        measured=smallest,
        threshold=CONFIG.dead_tolerance,
        expected=f"every block's removal to change the {what} by more than {CONFIG.dead_tolerance:g}, finitely",
        got="; ".join(problems) or f"{len(effects)} blocks ranked by effect: {changes}",
        hint="A dead block's output is multiplied by zero, detached from the residual stream or never used.",
        sample_size=batch_size_of(batch),
        seed=options.seed,
        details={
            "metric": metric,
            "reference_loss": float(reference) if metric == "loss" else None,
            "ranking": [{"component": name, "change": effects[name]} for name in ranking],
            "dead": dead,
            "non_finite": non_finite,
            "dominant": dominant,
            "dominant_bound": CONFIG.max_ablation_effect * scale,
            "warning_band_applied": spec.capabilities.pretrained,
            "block_lists": list(lists),
        },
    )
    if result.status is Status.PASSED and dominant and spec.capabilities.pretrained:
        return dataclasses.replace(
            result,
            status=Status.WARNED,
            got=f"removing {', '.join(dominant)} changes everything (> {CONFIG.max_ablation_effect:g}x): {result.got}",
            hint="One trained block carries the whole computation; the others may be redundant.",
        )
    return result


# Memory ----------------------------------------------------------------------------------------------


class MemoryViolation(AssertionError):
    """The memory disagrees with the brute-force oracle."""


def _memory_machine(factory: Callable[[], Any], log: list[str]):
    """A RuleBasedStateMachine driving a fresh memory from ``factory`` against a dict oracle."""
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

    class MemoryMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.memory = factory()
            self.dim = int(self.memory.dim)
            existing = self.memory.ids()
            vectors = self.memory.reconstruct(existing) if len(existing) else torch.empty(0, self.dim)
            self.oracle: dict[int, torch.Tensor] = {
                int(i): v.detach().clone() for i, v in zip(existing.tolist(), vectors, strict=True)
            }
            self.used = set(self.oracle)
            self.operations: list[str] = []  # this sequence's operations, for the failure message
            log.append("new memory")

        def _note(self, operation: str) -> None:
            self.operations.append(operation)
            log.append(operation)

        def _vectors(self, count: int, seed: int) -> torch.Tensor:
            return torch.randn((count, self.dim), generator=_generator(seed))  # (n, d)

        def _live(self, data: Any, most: int) -> list[int]:
            return data.draw(st.lists(st.sampled_from(sorted(self.oracle)), min_size=1, max_size=most, unique=True))

        @rule(count=st.integers(1, 4), seed=st.integers(0, 2**16))
        def add(self, count: int, seed: int) -> None:
            vectors = self._vectors(count, seed)
            ids = [int(i) for i in self.memory.add(vectors, ids=None).tolist()]
            self._note(f"add {count} -> ids {ids}")
            if len(ids) != count or len(set(ids)) != count or set(ids) & set(self.oracle):
                raise MemoryViolation(
                    f"add({count} vectors) returned ids {ids}; live ids were {sorted(self.oracle)} "
                    f"after: {'; '.join(self.operations)}"
                )
            self._store(ids, vectors)

        @rule(count=st.integers(1, 3), seed=st.integers(0, 2**16))
        def add_with_ids(self, count: int, seed: int) -> None:
            start = max(self.used, default=-1) + 1
            ids = list(range(start + 1, start + 1 + count))  # skip one id: ids need not be contiguous
            vectors = self._vectors(count, seed)
            returned = [int(i) for i in self.memory.add(vectors, ids=torch.tensor(ids)).tolist()]
            self._note(f"add {count} with ids {ids} -> {returned}")
            if returned != ids:
                raise MemoryViolation(
                    f"add(vectors, ids={ids}) returned ids {returned} after: {'; '.join(self.operations)}"
                )
            self._store(ids, vectors)

        def _store(self, ids: list[int], vectors: torch.Tensor) -> None:
            for i, vector in zip(ids, vectors, strict=True):
                self.oracle[i] = vector
            self.used.update(ids)

        @precondition(lambda self: self.oracle)
        @rule(data=st.data())
        def remove(self, data: Any) -> None:
            ids = self._live(data, 3)
            self.memory.remove(torch.tensor(ids))
            self._note(f"remove {ids}")
            for i in ids:
                del self.oracle[i]

        @precondition(lambda self: self.oracle)
        @rule(data=st.data(), seed=st.integers(0, 2**16))
        def update(self, data: Any, seed: int) -> None:
            ids = self._live(data, 3)
            vectors = self._vectors(len(ids), seed)
            self.memory.update(torch.tensor(ids), vectors)
            self._note(f"update {ids}")
            self._store(ids, vectors)

        @precondition(lambda self: self.oracle)
        @rule()
        def forget_all(self) -> None:
            ids = sorted(self.oracle)
            self.memory.remove(torch.tensor(ids))
            self._note(f"forget all {ids}")
            self.oracle.clear()

        @invariant()
        def agrees_with_oracle(self) -> None:
            try:
                _compare_with_oracle(self.memory, self.oracle, self.dim)
            except MemoryViolation as violation:
                raise MemoryViolation(f"{violation} after: {'; '.join(self.operations) or 'no operation'}") from None

    return MemoryMachine


def _compare_with_oracle(memory: Any, oracle: dict[int, torch.Tensor], dim: int) -> None:
    atol = CONFIG.memory_atol
    live = sorted(oracle)
    listed = sorted(int(i) for i in memory.ids().tolist())
    if listed != live:
        raise MemoryViolation(f"ids() is {listed}, the live ids are {live}")
    if len(memory) != len(live):
        raise MemoryViolation(f"len(memory) is {len(memory)}, {len(live)} ids are live")
    if not live:
        _, _, valid = memory.search(torch.zeros(1, dim), 1)
        if bool(valid.any()):
            raise MemoryViolation("search on an empty memory returned a valid hit")
        return
    stored = torch.stack([oracle[i] for i in live])  # (n, d)
    reconstructed = memory.reconstruct(torch.tensor(live))  # (n, d)
    error = float((reconstructed - stored).abs().max())
    if error > atol:
        raise MemoryViolation(f"reconstruct(ids) differs from the stored vectors by {error:.3g}")
    queries = torch.cat([stored[:2] + 0.01, torch.randn(2, dim, generator=_generator(len(live)))])  # (q, d)
    ids, distances, valid = memory.search(queries, 1)  # (q, 1) each
    truth = torch.cdist(queries.double(), stored.double()).pow(2)  # (q, n)
    best = truth.min(-1).values  # (q,)
    for q in range(queries.shape[0]):
        if not bool(valid[q, 0]):
            raise MemoryViolation(f"query {q}: no valid top-1 hit with {len(live)} vectors stored")
        got_id, got_distance = int(ids[q, 0]), float(distances[q, 0])
        if abs(got_distance - float(best[q])) > atol * max(1.0, float(best[q])):
            raise MemoryViolation(f"query {q}: top-1 distance {got_distance:.6g}, brute force {float(best[q]):.6g}")
        if got_id not in oracle or float(truth[q, live.index(got_id)]) > float(best[q]) + atol * max(
            1.0, float(best[q])
        ):
            raise MemoryViolation(f"query {q}: top-1 id {got_id} is not a nearest stored id (live: {live})")


@register(2, needs_memory)
def check_memory_oracle(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Random add, remove, update and forget sequences leave the memory agreeing with a brute-force oracle."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    log: list[str] = []
    steps: list[int] = []

    def factory() -> Any:
        steps.append(0)
        return spec.memory(copy.deepcopy(model))

    machine = _memory_machine(factory, log)
    bounded = settings(
        settings.default,
        max_examples=min(CONFIG.memory_examples, settings.default.max_examples),
        stateful_step_count=CONFIG.memory_steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    failure = None
    try:
        run_state_machine_as_test(machine, settings=bounded)
    except MemoryViolation as violation:
        failure = str(violation)
    except Exception as error:  # noqa: BLE001 - the memory raised: that is a failure too
        cause = error.exceptions[0] if isinstance(error, BaseExceptionGroup) else error
        failure = f"{type(cause).__name__}: {cause}"
    return verdict(
        spec,
        "memory_oracle",
        passed=failure is None,
        measured=float(failure is not None),
        threshold=0.0,
        expected="top-1 id and squared distance, reconstructions, len and ids() equal to the brute-force oracle "
        f"after every operation (within {CONFIG.memory_atol:g})",
        got=failure or f"{len(steps)} random operation sequences agreed",
        hint="Ids renumbered on removal (compaction), an update that appends instead of replacing, a stale "
        "index after removal, or distances that are not squared L2.",
        sample_size=len(steps),
        seed=options.seed,
        details={
            "sequences": len(steps),
            "operations": sum(1 for entry in log if entry != "new memory"),
            "failure": failure,
        },
    )

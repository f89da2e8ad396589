"""Tier 2, robustness and metamorphic relations: perturbation flip rates and batch-order equivariance."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from harness.adapters import adapter_for
from harness.adapters.base import Batch, batch_size_of, select_rows
from harness.checks.base import CheckOptions, register, verdict
from harness.checks.inputs import fixed_batch, seeded_generator
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.tolerances import compare, tolerance_for


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
        spec, batch_size=size, length=length, generator=seeded_generator(options.seed)
    ), "generated"


@torch.no_grad()
def _chunked_forward(spec: ModelSpec, model: nn.Module, batch: Batch, chunk: int = 32) -> torch.Tensor:
    adapter = adapter_for(spec)
    size, chunk = batch_size_of(batch), min(chunk, spec.inputs.max_batch_size)  # within the input space
    return torch.cat(
        [adapter.forward(spec, model, select_rows(batch, slice(i, i + chunk))) for i in range(0, size, chunk)]
    )


def _flips(
    spec: ModelSpec,
    before: torch.Tensor,
    after: torch.Tensor,
    observed: torch.Tensor | None,
    *,
    max_score_change: float,
) -> torch.Tensor:
    """(N,) bool: whether each example's prediction changed.

    Per-token outputs: the argmax at the observed position; classes: the argmax; a text embedding: its
    nearest original embedding (cosine) is no longer its own; a scalar score: it moved by > max_score_change.
    """
    if before.dim() == 3:
        rows = torch.arange(before.shape[0])
        return before[rows, observed].argmax(-1) != after[rows, observed].argmax(-1)
    if before.dim() == 1:
        return (before - after).abs() > max_score_change
    if adapter_for(spec).output_kind == "embedding":
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


def _image_perturbations(batch: Batch, generator: torch.Generator, noise_std: float) -> dict[str, Batch]:
    """Gaussian noise, and a one-pixel shift in a random direction (zero fill: the standardised mean)."""
    pixels = batch["pixel_values"]  # (N, C, H, W)
    noisy = pixels + noise_std * torch.randn(pixels.shape, generator=generator)
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


SAMPLE_DOUBLINGS = 2  # an undecided flip rate is measured again on 2x, then 4x the examples


@register(2)
def check_perturbation_flip_rate(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Label-preserving perturbations flip at most the allowed share of predictions (95% Wilson bound).

    While the interval straddles the bound, the sample is doubled (at most ``SAMPLE_DOUBLINGS`` times): an
    untrained language model flips ~20% of its near-tie predictions under one token substitution, and 200
    examples cannot tell that from 25%. A one-pixel shift is a small change of a real image only: a shifted
    white-noise image is a different image, so generated images get the Gaussian noise alone.
    """
    adapter = adapter_for(spec)
    model.eval()
    allowed = options.behaviour.max_flip_rate
    size = options.behaviour.perturbation_samples
    batch, source = _inputs_for_robustness(spec, options, size)
    rates = _flip_rates(spec, model, batch, source, options)
    for doubling in range(SAMPLE_DOUBLINGS + 1):
        failed = [kind for kind, r in rates.items() if r["ci_low"] > allowed]
        undecided = [kind for kind, r in rates.items() if r["ci_low"] <= allowed < r["ci_high"]]
        if failed or not undecided or doubling == SAMPLE_DOUBLINGS:
            break
        larger, larger_source = _inputs_for_robustness(spec, options, 2 * size)
        if larger_source != source:  # no more real examples: the real sample stands
            break
        size, batch = 2 * size, larger
        rates = _flip_rates(spec, model, batch, source, options)
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
        details={"inputs": source, "perturbations": rates, "sequence": adapter.sequence, "doublings": doubling},
    )
    if not failed and undecided:
        return dataclasses.replace(
            result,
            status=Status.INCONCLUSIVE,
            got=f"{text}: the interval straddles {allowed:.0%}, the sample cannot decide",
        )
    return result


def _flip_rates(
    spec: ModelSpec, model: nn.Module, batch: Batch, source: str, options: CheckOptions
) -> dict[str, dict[str, float]]:
    """The flip rate of each perturbation kind on ``batch``, with its 95% Wilson interval."""
    size = batch_size_of(batch)
    generator = seeded_generator(options.seed + 1)
    before = _chunked_forward(spec, model, batch)
    rates: dict[str, dict[str, float]] = {}
    for kind, (perturbed, observed) in _perturbations(spec, batch, generator, options.behaviour.noise_std).items():
        if kind == "one_pixel_shift" and source != "real":
            continue
        after = _chunked_forward(spec, model, perturbed)
        flips = _flips(spec, before, after, observed, max_score_change=options.behaviour.max_score_change)
        low, high = wilson_interval(int(flips.sum()), size)
        rates[kind] = {"rate": float(flips.float().mean()), "ci_low": low, "ci_high": high, "n": size}
    return rates


def _perturbations(
    spec: ModelSpec, batch: Batch, generator: torch.Generator, noise_std: float
) -> dict[str, tuple[Batch, Any]]:
    if adapter_for(spec).sequence:
        return {"token_substitution": _token_substitution(spec, batch, generator)}
    return {kind: (perturbed, None) for kind, perturbed in _image_perturbations(batch, generator, noise_std).items()}


@register(2)
def check_batch_order_equivariance(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Permuting the rows of a batch permutes the outputs the same way."""
    adapter = adapter_for(spec)
    tolerance = tolerance_for(options.dtype, "eager")
    size = max(2, min(spec.inputs.max_batch_size, 2 * options.batch_size))
    batch = fixed_batch(spec, options, batch_size=size)
    order = torch.randperm(size, generator=seeded_generator(options.seed))
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

"""Tier 2, attention: rows sum to one, causal and padding masks hold in the attention maps."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from harness.adapters import adapter_for
from harness.adapters.base import batch_size_of
from harness.checks.base import CheckOptions, register, skipped, verdict
from harness.checks.behaviour import needs_attentions, output_field
from harness.checks.inputs import seeded_generator
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.tolerances import tolerance_for


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
    tolerance = tolerance_for(options.dtype, "reference")
    kernel = _eager_attention(model)
    if adapter.sequence:
        max_length = spec.inputs.max_length
        masked = spec.capabilities.has_attention_mask
        amount = min(options.behaviour.padding_amount, max_length - spec.inputs.min_length) if masked else 0
        length = max(spec.inputs.min_length, min(options.length_for(spec), max_length - amount))
    else:  # images: every query and key is real, nothing is causal
        amount, length = 0, options.length_for(spec)
    batch = adapter.make_batch(
        spec, batch_size=options.batch_size_for(spec), length=length, generator=seeded_generator(options.seed)
    )
    side = "left" if spec.capabilities.is_causal else "right"  # right pad keys are a causal query's future
    if amount:
        batch = adapter.pad(spec, batch, amount=amount, side=side)
    with torch.no_grad():
        output = adapter.raw_output(spec, model.eval(), batch, output_attentions=True)
    worst = {"row_sum_error": 0.0, "padding_weight": 0.0, "future_weight": 0.0}
    heads: dict[str, dict[str, float]] = {}
    found = []
    sample_map: list[list[float]] = []  # layer 0, head 0 of the first row: drawn in the HTML report
    for name, stream in ATTENTION_STREAMS.items():
        layers = output_field(output, name)
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
        returned = f"forward(output_attentions=True) returned none of {', '.join(ATTENTION_STREAMS)}"
        if _kernel(model) not in (None, "eager"):  # a fused kernel the model cannot leave: it has no weights to show
            reason = f"{returned}: its attention kernel {kernel!r} computes no weights and cannot be switched to eager"
            return skipped(spec, "attention_patterns", reason, seed=options.seed)
        raise TypeError(f"{spec.name}: {returned} although the spec claims returns_attentions")
    uniform = sum(values["entropy"] >= options.behaviour.near_uniform_entropy for values in heads.values())
    one_hot = sum(values["max_weight"] >= options.behaviour.near_one_hot_weight for values in heads.values())
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
            "attention_kernel": _kernel(model) or "the model's own",
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


def _kernel(model: nn.Module) -> str | None:
    """The attention kernel a ``transformers`` model runs (``config._attn_implementation``), None for other models."""
    return getattr(getattr(model, "config", None), "_attn_implementation", None)


def _eager_attention(model: nn.Module) -> str | None:
    """Switch a ``transformers`` model (this check's private copy) to the eager attention kernel, the only one that
    computes attention weights (``sdpa`` and flash kernels return none and only log a warning). Returns the kernel
    the model was built with."""
    kernel = _kernel(model)
    if kernel not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        try:
            model.set_attn_implementation("eager")
        except (ValueError, ImportError):  # a model without an eager path keeps its own kernel
            pass
    return kernel


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

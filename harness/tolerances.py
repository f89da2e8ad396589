"""The one tolerance table: (dtype, backend) -> (rtol, atol). Every numeric comparison uses it.

Backends name *what* is compared with the eager fp32 reference:

- ``eager``: the same model run differently (other batch composition, padding, repeated calls);
  fp32 kernels block differently by batch size and length, so the error grows with the size of the
  accumulations: t5-tiny's logits (magnitude ~30) moved by 1.5e-5 under left padding. atol 1e-4
  keeps a margin; a real leak moves outputs by 1e-2 or more.
- ``serialized``: the model after a save/load round trip; the weights are identical, so only
  ulp-level noise is allowed.
- ``reference``: an independent re-computation (e.g. the loss oracle) of the same quantity.
- ``torchscript`` / ``onnxruntime``: exported artefacts (Tier 4).
- int8 exports have no entry: their error is judged against what int8 quantization explains
  (``onnx_int8_parity``), not against a fixed bound.
- ``compiled``: ``torch.compile`` against eager (``compile_parity``). aot_eager reproduced every zoo model's
  outputs, loss and gradients bitwise; inductor moved gpt2-tiny's logits by 2.4e-7. The torchscript bound.
- ``recomputed``: gradient checkpointing against the same step without it, per parameter on gradient norms
  (``||g - g_ref|| <= atol + rtol * ||g_ref||``). Worst clean value: t5-tiny, reentrant, 5.2e-7 relative over
  seeds 0-4 (summation order); gpt2-tiny is bitwise equal. A dropped gradient is infinitely far.
- ``cast``: the whole model cast to bfloat16 / float16 against float32, errors in units of the float32 output's
  RMS (rtol 0: the scale is already relative), for outputs and the loss (``half_precision_parity``). Worst clean
  max error over the zoo, seeds 0-9 of the 4 x 16 batch: bfloat16 0.060 (minilm; t5-tiny 0.056, the rest
  <= 0.032), loss 0.012 (multimode-gpt-scorer); float16, measured with CPU float16 kernels, 0.0073 (minilm),
  loss 0.0016. Bounds about 3.4x the worst output error; an overflow is non-finite and fails on its own.
- ``autocast``: losses of a bf16-mixed run step by step against the float32 run (``mixed_precision_training``).
  Worst clean relative gap: multimode-gpt-scorer 0.069 (seed 4 of 0-9: MSE losses near 0.05, so a small
  absolute gap); every cross-entropy model <= 0.0024 over seeds 0-4.

The float16 / bfloat16 rows of ``eager``, ``serialized`` and ``reference`` serve a run whose whole model is in that
dtype (``--harness-dtype``, :mod:`harness.placement`); measured over every check of the zoo in bfloat16 and Tier 1 in
float16 (CPU kernels):

- ``eager`` is per RMS (``Tolerance.per_rms``): two half-precision computations differ in proportion to the output's
  RMS, not to each element (eager vs sdpa in bfloat16: t5-tiny |d| 0.36 at logits RMS 8.2, minilm 0.008 at RMS 0.2,
  both about 0.04 RMS). Worst clean: bfloat16 0.096 RMS (attention backends, minilm; padding 0.032), float16 0.012
  (the same); bounds 0.2 and 0.025 RMS, the ``cast`` rows'. A leak or a batch-mixing defect moves outputs by O(1) RMS.
- ``serialized``: a round trip in the same dtype is bitwise equal in every zoo model.
- ``reference``: a loss, row sum or gradient norm recomputed in half precision. bfloat16 worst clean: loss_oracle
  t5-tiny 0.087 (loss 37.5, bound 1.14), token-weighted perplexity 0.0099 relative, gradient accumulation 0.0126
  relative (t5-tiny, seeds 0-4), attention row sums 0.0028 (minilm); float16: loss_oracle t5-tiny 0.0086. A loss
  1.4% off (the unshifted loss of an untrained model) is below what bfloat16 resolves: float32 runs catch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Tolerance:
    """``|got - expected| <= atol + rtol * |expected|`` elementwise (numpy/torch ``allclose`` rule); with
    ``per_rms``, ``atol`` is in units of the expected tensor's root mean square (``atol * rms(expected)``)."""

    rtol: float
    atol: float
    per_rms: bool = False  # half precision: rounding error scales with the activations, not with each element

    def as_dict(self) -> dict[str, float]:
        return {"rtol": self.rtol, "atol": self.atol}


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "eager"): Tolerance(rtol=1e-5, atol=1e-4),
    ("float32", "serialized"): Tolerance(rtol=0.0, atol=1e-6),
    ("float32", "reference"): Tolerance(rtol=0.0, atol=1e-5),
    ("float32", "torchscript"): Tolerance(rtol=1e-5, atol=1e-5),
    ("float32", "onnxruntime"): Tolerance(rtol=1e-4, atol=1e-4),
    # --harness-dtype float16 / bfloat16: the whole model in that dtype (harness.placement); measurements below
    ("float16", "eager"): Tolerance(rtol=0.0, atol=0.025, per_rms=True),
    ("float16", "serialized"): Tolerance(rtol=0.0, atol=1e-3),
    ("float16", "reference"): Tolerance(rtol=4e-3, atol=1e-3),
    ("bfloat16", "eager"): Tolerance(rtol=0.0, atol=0.2, per_rms=True),
    ("bfloat16", "serialized"): Tolerance(rtol=0.0, atol=1e-2),
    ("bfloat16", "reference"): Tolerance(rtol=3e-2, atol=1e-2),
    # harness/checks/numerics.py; the zoo measurements behind each bound are in the module docstring
    ("float32", "compiled"): Tolerance(rtol=1e-5, atol=1e-5),
    ("float32", "recomputed"): Tolerance(rtol=1e-5, atol=1e-9),
    ("bfloat16", "cast"): Tolerance(rtol=0.0, atol=0.2, per_rms=True),
    ("float16", "cast"): Tolerance(rtol=0.0, atol=0.025, per_rms=True),
    ("bfloat16", "autocast"): Tolerance(rtol=0.2, atol=1e-3),
}


class UnsupportedPrecision(Exception):
    """A check cannot run in the run's dtype (``--harness-dtype``): it skips with this message, which says why
    (:func:`harness.checks.base.run_check`)."""


def require_float32(dtype: str | torch.dtype, reason: str) -> None:
    """Raise UnsupportedPrecision unless ``dtype`` is float32; ``reason`` says why the check needs float32."""
    name = str(dtype).removeprefix("torch.")
    if name != "float32":
        raise UnsupportedPrecision(f"runs in float32 only, and the run's models are {name}: {reason}")


class NoTolerance(UnsupportedPrecision, KeyError):
    """The table has no row for a (dtype, backend): a check comparing that way cannot run in that dtype."""

    def __str__(self) -> str:
        return str(self.args[0])


def tolerance_for(dtype: str | torch.dtype, backend: str) -> Tolerance:
    """Look up the tolerance for a dtype (``"float32"`` or ``torch.float32``) and a backend."""
    name = str(dtype).removeprefix("torch.")
    try:
        return TOLERANCES[(name, backend)]
    except KeyError:
        rows = ", ".join(d for d, b in TOLERANCES if b == backend) or "none"
        raise NoTolerance(
            f"the tolerance table has no {name}/{backend} row (rows for {backend}: {rows}), so this comparison "
            f"is not defined in {name}"
        ) from None


@dataclass(frozen=True)
class Comparison:
    """How far ``got`` is from ``expected`` under a tolerance."""

    max_abs: float  # max |got - expected|, in the tolerance's units (divided by ``scale``)
    max_rel: float  # max |got - expected| / |expected| (0/0 counts as 0)
    fraction_within: float  # share of elements within atol + rtol * |expected|
    worst_excess: float  # max of |got - expected| - (atol + rtol * |expected|); <= 0 means all close
    numel: int
    scale: float = 1.0  # the unit both sides were divided by: rms(expected) for a per_rms tolerance, else 1

    @property
    def within(self) -> bool:
        return self.worst_excess <= 0.0


def compare(got: torch.Tensor, expected: torch.Tensor, tolerance: Tolerance) -> Comparison:
    """Compare two tensors of equal shape; NaN or Inf anywhere counts as infinitely far. With a ``per_rms``
    tolerance both sides are first divided by the RMS of ``expected``'s finite values, so every number of the
    comparison is in the tolerance's units and a row's measured value and threshold stay comparable."""
    import torch

    if got.shape != expected.shape:
        raise ValueError(f"shape mismatch: got {tuple(got.shape)}, expected {tuple(expected.shape)}")
    got64, exp64 = got.detach().double().cpu(), expected.detach().double().cpu()
    if got64.numel() == 0:
        return Comparison(0.0, 0.0, 1.0, float("-inf"), 0)
    scale = _rms(exp64[torch.isfinite(exp64)]) if tolerance.per_rms else 1.0
    got64, exp64 = got64 / scale, exp64 / scale
    finite = torch.isfinite(got64) & torch.isfinite(exp64)  # NaN or Inf on either side: infinitely far
    diff = torch.where(finite, (got64 - exp64).abs(), torch.full_like(got64, float("inf")))
    bound = torch.where(finite, tolerance.atol + tolerance.rtol * exp64.abs(), torch.zeros_like(got64))
    excess = diff - bound
    rel = torch.where(diff == 0, torch.zeros_like(diff), diff / exp64.abs())
    rel = torch.where(finite, rel, diff)  # inf, never inf/inf = NaN
    return Comparison(
        max_abs=float(diff.max()),
        max_rel=float(rel.max()),
        fraction_within=float((excess <= 0).double().mean()),
        worst_excess=float(excess.max()),
        numel=diff.numel(),
        scale=scale,
    )


def _rms(values: torch.Tensor) -> float:
    """Root mean square of the finite reference values; 1 when there are none or all are zero."""
    rms = float(values.pow(2).mean().sqrt()) if values.numel() else 0.0
    return rms if rms > 0 else 1.0

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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Tolerance:
    """``|got - expected| <= atol + rtol * |expected|`` elementwise (numpy/torch ``allclose`` rule)."""

    rtol: float
    atol: float

    def as_dict(self) -> dict[str, float]:
        return {"rtol": self.rtol, "atol": self.atol}


TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "eager"): Tolerance(rtol=1e-5, atol=1e-4),
    ("float32", "serialized"): Tolerance(rtol=0.0, atol=1e-6),
    ("float32", "reference"): Tolerance(rtol=0.0, atol=1e-5),
    ("float32", "torchscript"): Tolerance(rtol=1e-5, atol=1e-5),
    ("float32", "onnxruntime"): Tolerance(rtol=1e-4, atol=1e-4),
    ("float16", "eager"): Tolerance(rtol=1e-3, atol=1e-3),
    ("float16", "serialized"): Tolerance(rtol=0.0, atol=1e-3),
    ("float16", "reference"): Tolerance(rtol=0.0, atol=1e-3),
    ("bfloat16", "eager"): Tolerance(rtol=1.6e-2, atol=1e-2),
    ("bfloat16", "serialized"): Tolerance(rtol=0.0, atol=1e-2),
    ("bfloat16", "reference"): Tolerance(rtol=0.0, atol=1e-2),
    # harness/checks/numerics.py; the zoo measurements behind each bound are in the module docstring
    ("float32", "compiled"): Tolerance(rtol=1e-5, atol=1e-5),
    ("float32", "recomputed"): Tolerance(rtol=1e-5, atol=1e-9),
    ("bfloat16", "cast"): Tolerance(rtol=0.0, atol=0.2),
    ("float16", "cast"): Tolerance(rtol=0.0, atol=0.025),
    ("bfloat16", "autocast"): Tolerance(rtol=0.2, atol=1e-3),
}


def tolerance_for(dtype: str | torch.dtype, backend: str) -> Tolerance:
    """Look up the tolerance for a dtype (``"float32"`` or ``torch.float32``) and a backend."""
    name = str(dtype).removeprefix("torch.")
    try:
        return TOLERANCES[(name, backend)]
    except KeyError:
        known = ", ".join(f"{d}/{b}" for d, b in TOLERANCES)
        raise KeyError(f"no tolerance for dtype={name!r}, backend={backend!r}; known: {known}") from None


@dataclass(frozen=True)
class Comparison:
    """How far ``got`` is from ``expected`` under a tolerance."""

    max_abs: float  # max |got - expected|
    max_rel: float  # max |got - expected| / |expected| (0/0 counts as 0)
    fraction_within: float  # share of elements within atol + rtol * |expected|
    worst_excess: float  # max of |got - expected| - (atol + rtol * |expected|); <= 0 means all close
    numel: int

    @property
    def within(self) -> bool:
        return self.worst_excess <= 0.0


def compare(got: torch.Tensor, expected: torch.Tensor, tolerance: Tolerance) -> Comparison:
    """Compare two tensors of equal shape; NaN or Inf anywhere counts as infinitely far."""
    import torch

    if got.shape != expected.shape:
        raise ValueError(f"shape mismatch: got {tuple(got.shape)}, expected {tuple(expected.shape)}")
    got64, exp64 = got.detach().double().cpu(), expected.detach().double().cpu()
    if got64.numel() == 0:
        return Comparison(0.0, 0.0, 1.0, float("-inf"), 0)
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
    )

"""What int8 quantization itself costs: an eager, fake-quantized run of the same weights.

The ONNX int8 export is ``onnxruntime.quantization.quantize_dynamic`` with the settings in
:data:`QUANTIZE_DYNAMIC`. :func:`fake_quantized` runs the *eager* model under the same scheme, op by
op, so the error it shows against plain eager is the error that int8 explains; an ONNX int8 file
that is much worse than that has an export or runtime bug, not quantization noise. The scheme
(onnxruntime's dynamic quantization, read from its ``quantization`` package):

- a weight matrix multiply (``linear``, ``matmul``/``mm``/``addmm`` with a parameter as the right
  operand; ONNX ``MatMul`` with a constant B): weights per output channel, symmetric int8 in
  [-64, 64] (``reduce_range``); the other operand per tensor, asymmetric uint8 in [0, 255], its range
  taken from each call's values (``DynamicQuantizeLinear``);
- a convolution (``ConvInteger``): weights per tensor, symmetric in [-64, 64]; input as above;
- an embedding lookup (``Gather`` on a constant table): the table per tensor, asymmetric uint8;
- everything else (activation-by-activation products such as attention scores) stays float.

It intercepts torch functions, not module types, so a model that calls ``F.linear`` on its own
parameters is covered like one built from ``nn.Linear``. ``reduce_range`` keeps every product of a
uint8 activation and an int8 weight pair inside int16, so the file computes the same numbers on
CPUs without VNNI (AVX2, where onnxruntime's u8s8 kernels saturate: measured relative errors of
0.2-0.48 on clean models instead of 0.01-0.03) and with it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

QUANTIZE_DYNAMIC: dict[str, Any] = {
    "per_channel": True,  # one scale per output channel of every MatMul weight
    "reduce_range": True,  # weights in [-64, 64]: no int16 saturation on CPUs without VNNI
    "extra_options": {"MatMulConstBOnly": True},  # only products with a constant weight are quantized
}
WEIGHT_QMAX = 64  # symmetric int8 weights with reduce_range span [-64, 64]
ACTIVATION_LEVELS = 255  # uint8 activations span [0, 255]


def quantize_weight_per_channel(weight: torch.Tensor, axis: int) -> torch.Tensor:
    """Symmetric fake quantization with one scale per slice along ``axis`` (zero point 0)."""
    dims = [d for d in range(weight.dim()) if d != axis % weight.dim()]
    absmax = weight.detach().abs().amax(dim=dims, keepdim=True) if dims else weight.detach().abs()
    scale = torch.where(absmax > 0, absmax / WEIGHT_QMAX, torch.ones_like(absmax))
    return torch.clamp(torch.round(weight / scale), -WEIGHT_QMAX, WEIGHT_QMAX) * scale


def quantize_weight_per_tensor(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric fake quantization with one scale for the whole tensor."""
    absmax = weight.detach().abs().max()
    scale = absmax / WEIGHT_QMAX if absmax > 0 else torch.ones_like(absmax)
    return torch.clamp(torch.round(weight / scale), -WEIGHT_QMAX, WEIGHT_QMAX) * scale


def quantize_asymmetric(values: torch.Tensor) -> torch.Tensor:
    """Asymmetric uint8 fake quantization over the tensor's own range (zero always representable)."""
    low = torch.clamp(values.detach().min(), max=0.0)
    high = torch.clamp(values.detach().max(), min=0.0)
    scale = (high - low) / ACTIVATION_LEVELS
    if scale <= 0:
        return values
    zero_point = torch.clamp(torch.round(-low / scale), 0, ACTIVATION_LEVELS)
    levels = torch.clamp(torch.round(values / scale) + zero_point, 0, ACTIVATION_LEVELS)
    return (levels - zero_point) * scale


def _is_weight(value: Any) -> bool:
    return isinstance(value, torch.nn.Parameter) and value.is_floating_point() and value.dim() >= 2


_LINEAR = {torch.nn.functional.linear}
_CONVOLUTION = {torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d}
_MATMUL = {torch.matmul, torch.mm, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.mm}
_EMBEDDING = {torch.nn.functional.embedding: 1, torch.embedding: 0}  # function -> position of the table


class _FakeQuantized(TorchFunctionMode):
    """Rewrites the operands of weight products, convolutions and lookups as :mod:`onnxruntime` would."""

    def __init__(self) -> None:
        super().__init__()
        self.quantized_calls = 0  # how many ops were fake-quantized (reported beside the ONNX count)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        args = list(args)
        if func in _LINEAR and len(args) >= 2 and _is_weight(args[1]):
            args[0], args[1] = quantize_asymmetric(args[0]), quantize_weight_per_channel(args[1], axis=0)
        elif func in _CONVOLUTION and len(args) >= 2 and _is_weight(args[1]):
            args[0], args[1] = quantize_asymmetric(args[0]), quantize_weight_per_tensor(args[1])
        elif func in _MATMUL and len(args) >= 2 and _is_weight(args[1]) and args[1].dim() == 2:
            args[0], args[1] = quantize_asymmetric(args[0]), quantize_weight_per_channel(args[1], axis=1)
        elif func is torch.addmm and len(args) >= 3 and _is_weight(args[2]):
            args[1], args[2] = quantize_asymmetric(args[1]), quantize_weight_per_channel(args[2], axis=1)
        elif func in _EMBEDDING and len(args) >= 2 and _is_weight(args[_EMBEDDING[func]]):
            table = _EMBEDDING[func]
            args[table] = quantize_asymmetric(args[table])
        else:
            return func(*args, **kwargs)
        self.quantized_calls += 1
        return func(*args, **kwargs)


@contextmanager
def fake_quantized() -> Iterator[_FakeQuantized]:
    """Within the block, eager forwards run under onnxruntime's dynamic int8 scheme (see module doc)."""
    mode = _FakeQuantized()
    with torch.no_grad(), mode:
        yield mode

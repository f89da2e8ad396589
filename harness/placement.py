"""Where and in what precision every check runs: ``--harness-device``, ``--harness-dtype``, ``--harness-max-tokens``.

A :class:`Placement` is applied to a spec once (:func:`placed_spec`), so every model any check builds from it,
the session's model and the fresh ones a check builds itself (save/load targets, training runs, probes), is cast
to the dtype and moved to the device the same way. The one place a batch reaches the device is the model's own
boundary: a forward pre-hook moves every tensor argument to the model's device and casts its floating tensors
(pixels, embeddings, float masks) to the model's dtype; integer ids and masks keep their dtype. Inputs are still
drawn by seeded CPU generators, so a seed gives the same inputs on every device, and a forward hook brings the
output tensors back to the CPU, where the checks compare them with their references.

Checks read the dtype from ``CheckOptions.dtype`` and take their bounds from the tolerance table's row for it;
a check whose comparison has no row for that dtype skips, naming the missing row
(:class:`harness.tolerances.NoTolerance`).

The token budget bounds what the checks feed a sequence model: every batch has at most ``max_batch_size`` rows
of at most ``max_length`` tokens, so the budget caps ``max_length`` at ``max_tokens // max_batch_size``.
"""

from __future__ import annotations

import dataclasses
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.spec import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

DTYPES = ("float32", "bfloat16", "float16")
DEVICE_PATTERN = re.compile(r"cpu|mps|cuda(:\d+)?")


class PlacementError(ValueError):
    """A device or dtype that is not valid here: the message lists the allowed values or what is missing."""


@dataclass(frozen=True)
class Placement:
    """The device and floating dtype the models of a run are built on."""

    device: str = "cpu"  # cpu, cuda, cuda:N or mps
    dtype: str = "float32"  # float32, bfloat16 or float16

    def __post_init__(self) -> None:
        if not DEVICE_PATTERN.fullmatch(self.device):
            raise PlacementError(f"device must be cpu, cuda, cuda:N or mps; got {self.device!r}")
        if self.dtype not in DTYPES:
            raise PlacementError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")

    @property
    def is_default(self) -> bool:
        return self == Placement()

    def unavailable_because(self) -> str | None:
        """Why this machine cannot run on the device (None: it can). The CPU needs no torch import to tell (a
        pytest-xdist controller that starts its workers sooner)."""
        if self.device == "cpu":
            return None
        import torch

        if self.device.startswith("cuda"):
            if not torch.cuda.is_available():
                return f"device {self.device}: CUDA is not available (torch {torch.__version__})"
            index = int(self.device.partition(":")[2] or 0)
            if index >= torch.cuda.device_count():
                return f"device {self.device}: only {torch.cuda.device_count()} CUDA device(s) are visible"
        if self.device == "mps" and not torch.backends.mps.is_available():
            return "device mps: the MPS backend is not available on this machine"
        return None

    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    def device_name(self) -> str:
        """What the device is, for the report: the GPU's name, or the CPU's processor and machine (no torch import
        for those: the xdist controller that writes the report has none loaded)."""
        if self.device.startswith("cuda"):
            import torch

            return torch.cuda.get_device_name(self.device)
        if self.device == "mps":
            return f"Apple MPS ({platform.machine()})"
        return f"CPU {_cpu_model() or platform.processor() or platform.machine()}"

    def environment(self) -> dict[str, str]:
        """The report's record of where the checks ran."""
        return {"device": self.device, "device_name": self.device_name(), "dtype": self.dtype}


def _cpu_model() -> str | None:
    """The processor's marketing name on Linux (``model name`` of /proc/cpuinfo), else None."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            line = next((line for line in info if line.startswith("model name")), None)
    except OSError:
        return None
    return line.partition(":")[2].strip() or None if line else None


def place(model: torch.nn.Module, placement: Placement) -> torch.nn.Module:
    """The model cast to the placement's dtype and moved to its device, its inputs placed at its boundary."""
    if placement.is_default:
        return model  # float32 on the CPU: the model as built, with nothing added
    model = model.to(device=placement.device, dtype=placement.torch_dtype())
    model.register_forward_pre_hook(_inputs_to_model, with_kwargs=True)
    if placement.device != "cpu":
        model.register_forward_hook(_outputs_to_cpu)
    return model


def placed_spec(spec: ModelSpec, placement: Placement, *, max_tokens: int | None = None) -> ModelSpec:
    """The spec whose every build is placed (:func:`place`) and whose sequences fit the token budget."""
    if max_tokens is not None and max_tokens < spec.inputs.max_batch_size * spec.inputs.min_length:
        raise PlacementError(
            f"{spec.name}: a budget of {max_tokens} tokens is below max_batch_size x min_length "
            f"({spec.inputs.max_batch_size} x {spec.inputs.min_length})"
        )
    changes: dict[str, Any] = {}
    if not placement.is_default:
        changes["build"] = _placed_build(spec.build, placement)
    if max_tokens is not None and spec.inputs.max_length is not None:
        longest = min(spec.inputs.max_length, max_tokens // spec.inputs.max_batch_size)
        changes["inputs"] = dataclasses.replace(spec.inputs, max_length=longest)
    return spec.replace(**changes) if changes else spec


def _placed_build(build: Any, placement: Placement) -> Any:
    """``build`` followed by :func:`place`; its name carries the placement, so caches keyed by a spec's build
    (trained runs, exports) keep a bfloat16 run apart from a float32 one."""

    def placed() -> torch.nn.Module:
        return place(build(), placement)

    original = getattr(build, "__qualname__", None) or repr(build)
    placed.__qualname__ = f"placed[{placement.device},{placement.dtype}]({original})"
    return placed


def _parameter(model: torch.nn.Module) -> torch.Tensor | None:
    return next(model.parameters(), None)


def _moved(value: Any, device: torch.device, dtype: torch.dtype | None) -> Any:
    """Tensors in a value (alone, or in a plain tuple, list or dict) on ``device``, floating ones cast to ``dtype``.

    Anything else passes unchanged, a model's own outputs fed back to it included (a ModelOutput of encoder states,
    a key/value cache): the model made them on its device, in its dtype."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device=device, dtype=dtype if dtype is not None and value.is_floating_point() else None)
    if type(value) in (tuple, list):
        return type(value)(_moved(item, device, dtype) for item in value)
    if type(value) is dict:
        return {key: _moved(item, device, dtype) for key, item in value.items()}
    return value


def _inputs_to_model(model: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    parameter = _parameter(model)
    if parameter is None:
        return args, kwargs
    return _moved(args, parameter.device, parameter.dtype), _moved(kwargs, parameter.device, parameter.dtype)


def _outputs_to_cpu(model: torch.nn.Module, args: tuple, output: Any) -> Any:
    """Output tensors on the CPU; a mapping output (a ModelOutput) keeps its type, its caches stay on the device."""
    import torch

    if isinstance(output, Mapping):
        for key, value in output.items():
            if isinstance(value, torch.Tensor):
                output[key] = value.cpu()
        return output
    return _moved(output, torch.device("cpu"), None)

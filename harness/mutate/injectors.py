"""Fault injectors: plant one realistic bug in any ``torch.nn.Module`` without touching the user's source.

An injector edits a freshly built model through forward hooks, forward pre-hooks (which rewrite the
keyword arguments: input wrapping), parameter edits or the exported artefact, and declares the specs it
applies to and the tiers whose checks can see it. :func:`mutant_spec` turns a spec and an injector into a
``ModelSpec`` named ``"{spec.name}~{injector.name}"`` whose ``build`` makes the clean model and then
injects, so every existing check runs on the mutant unchanged.

Hooks are module-level functions (or ``functools.partial`` of them) that only touch the module they are
called with, so the faults survive the deep copy every check makes of its model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.spec import SEQUENCE_TASKS, ModelSpec

Applies = Callable[[ModelSpec], "str | None"]  # why an injector does not apply to a spec, or None
Inject = Callable[[ModelSpec, nn.Module, "str | None"], None]  # (mutant spec, model, artifacts_dir): edits in place


@dataclass(frozen=True)
class Injector:
    """One kind of planted fault."""

    name: str  # short word, the suffix of the mutant's name
    description: str  # the bug in one sentence, for the report
    tiers: tuple[int, ...]  # tiers whose checks can see the fault (the runner runs only these on the mutant)
    inject: Inject  # edits a freshly built model in place
    applies: Applies  # returns why the injector does not apply to a spec, or None

    def not_applicable_because(self, spec: ModelSpec) -> str | None:
        return self.applies(spec)


# --- targets -----------------------------------------------------------------------------------------


def _probe(spec: ModelSpec, model: nn.Module) -> list[tuple[str, nn.Module, tuple[int, ...]]]:
    """(name, module, output shape) of every leaf module with parameters and a float tensor output, in call order."""
    from harness.adapters import adapter_for

    adapter = adapter_for(spec)
    length = max(spec.inputs.min_length, min(8, spec.inputs.max_length or 1))
    batch = adapter.make_batch(spec, batch_size=2, length=length, generator=torch.Generator().manual_seed(0))
    names = {module: name for name, module in model.named_modules()}
    seen: list[tuple[str, nn.Module, tuple[int, ...]]] = []
    recorded: set[int] = set()

    def record(module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor) and output.is_floating_point() and id(module) not in recorded:
            recorded.add(id(module))
            seen.append((names[module], module, tuple(output.shape)))

    leaves = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    handles = [module.register_forward_hook(record) for module in leaves]
    try:
        with torch.no_grad():
            adapter.forward(spec, model, batch)
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise ValueError(f"model {spec.name!r}: no leaf module with parameters returned a float tensor")
    return seen


_CROSS_ATTENTION = ("encdec", "cross")  # name parts of cross-attention modules (they see the source)


def _middle(spec: ModelSpec, model: nn.Module, *, sequence: bool = False) -> nn.Module:
    """The leaf module in the middle of the call order (with a (B, T, ...) output, in the decoder if there is
    one, when ``sequence``)."""
    length = max(spec.inputs.min_length, min(8, spec.inputs.max_length or 1))
    found = [
        (name, module)
        for name, module, shape in _probe(spec, model)
        if shape and shape[0] == 2 and (not sequence or (len(shape) >= 3 and shape[1] == length))
    ]
    if sequence and any("decoder" in name for name, _ in found):  # seq2seq: only decoder self-attention is causal
        found = [(n, m) for n, m in found if "decoder" in n and not any(k in n.lower() for k in _CROSS_ATTENTION)]
    if not found:
        raise ValueError(f"model {spec.name!r}: no leaf module has a batch-first output to inject into")
    return found[len(found) // 2][1]


def _largest_weight(model: nn.Module) -> tuple[str, nn.Parameter]:
    """The parameter with the most elements (ties: the first), at least 2-D."""
    candidates = [(name, p) for name, p in model.named_parameters() if p.dim() >= 2]
    return max(candidates, key=lambda item: item[1].numel())


# --- hooks (module level: they survive deepcopy) -----------------------------------------------------


def _detach_hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    return output.detach()


def _row_leak_hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    if output.shape[0] < 2:
        return output
    leak = torch.zeros_like(output)
    leak[1:] = 0.5 * output[:-1]  # (B-1, ...) row i-1 leaks into row i
    return output + leak


def _future_leak_hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    if output.dim() < 3 or output.shape[1] < 2:
        return output
    leak = torch.zeros_like(output)
    leak[:, :-1] = 0.5 * output[:, 1:]  # (B, T-1, ...) position t+1 leaks into t
    return output + leak


def _noise_hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    return output + 1e-2 * torch.randn_like(output)  # in train and eval mode alike


def _hidden_state_hook(module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
    module.mutation_calls += 1  # a counter buffer updated by every forward
    return output + 1e-3 * module.mutation_calls


def _drop_mask_hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    if kwargs.get("attention_mask") is not None:
        kwargs = {**kwargs, "attention_mask": torch.ones_like(kwargs["attention_mask"])}
    return args, kwargs


def _shift_labels_hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
    if kwargs.get("labels") is not None:
        kwargs = {**kwargs, "labels": kwargs["labels"].roll(1, dims=-1)}
    return args, kwargs


# --- injections --------------------------------------------------------------------------------------


def _inject_forward_hook(hook: Callable[..., Any], *, sequence: bool = False) -> Inject:
    def inject(spec: ModelSpec, model: nn.Module, _folder: str | None) -> None:
        _middle(spec, model, sequence=sequence).register_forward_hook(hook)

    return inject


def _inject_hidden_state(spec: ModelSpec, model: nn.Module, _folder: str | None) -> None:
    target = _middle(spec, model)
    target.register_buffer("mutation_calls", torch.zeros(()))
    target.register_forward_hook(_hidden_state_hook)


def _inject_pre_hook(hook: Callable[..., Any]) -> Inject:
    def inject(_spec: ModelSpec, model: nn.Module, _folder: str | None) -> None:
        model.register_forward_pre_hook(hook, with_kwargs=True)

    return inject


def _edit_weight(edit: Callable[[torch.Tensor], None]) -> Inject:
    def inject(_spec: ModelSpec, model: nn.Module, _folder: str | None) -> None:
        with torch.no_grad():
            edit(_largest_weight(model)[1])

    return inject


def _scale(weight: torch.Tensor) -> None:
    weight.mul_(1000.0)  # a unit error: the weight is 1000x too large


def _nan_poison(weight: torch.Tensor) -> None:
    weight.view(-1)[0] = float("nan")


def _constant(weight: torch.Tensor) -> None:
    weight.fill_(0.02)


def _inject_freeze(_spec: ModelSpec, model: nn.Module, _folder: str | None) -> None:
    _largest_weight(model)[1].requires_grad_(False)


def _inject_onnx_initializer(spec: ModelSpec, model: nn.Module, folder: str | None) -> None:
    """Export the clean model through harness.export's cache, then perturb the largest ONNX initializer.

    The cache is keyed by (spec name, weights): the checks' exports of this mutant find the edited file.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from harness.export import exports_for

    exports = exports_for(spec, model.eval(), folder)
    path = exports.record("onnx").path
    graph = onnx.load(str(path))
    largest = max(graph.graph.initializer, key=lambda tensor: int(np.prod(tensor.dims)))
    values = numpy_helper.to_array(largest).copy()
    values += np.random.default_rng(0).normal(0, 1e-2, values.shape).astype(values.dtype)
    largest.CopyFrom(numpy_helper.from_array(values, largest.name))
    onnx.save(graph, str(path))


# --- applicability -----------------------------------------------------------------------------------


def _always(_spec: ModelSpec) -> str | None:
    return None


def _trainable(spec: ModelSpec) -> str | None:
    return None if spec.capabilities.supports_training else "the model declares it does not support training"


def _fresh(spec: ModelSpec) -> str | None:
    return "the model loads pretrained weights" if spec.capabilities.pretrained else None


def _causal(spec: ModelSpec) -> str | None:
    if spec.task not in SEQUENCE_TASKS:
        return f"task {spec.task} has no sequence dimension"
    return None if spec.capabilities.is_causal else "the model does not declare itself causal"


def _masked(spec: ModelSpec) -> str | None:
    return None if spec.capabilities.has_attention_mask else "the model declares no attention mask"


def _has_labels(spec: ModelSpec) -> str | None:
    if spec.task == "text-embedding":
        return "text-embedding models take no labels"
    return _trainable(spec)


def _exportable(spec: ModelSpec) -> str | None:
    return None if spec.capabilities.exportable else "the model declares it is not exportable"


INJECTORS: dict[str, Injector] = {
    injector.name: injector
    for injector in (
        Injector(
            "dead_gradient",
            "a middle submodule's output is detached: everything before it gets no gradient",
            (1, 3),
            _inject_forward_hook(_detach_hook),
            _trainable,
        ),
        Injector(
            "row_leak",
            "each batch row leaks half of the previous row into a middle activation",
            (1, 2),
            _inject_forward_hook(_row_leak_hook),
            _always,
        ),
        Injector(
            "future_leak",
            "each position leaks half of the next position into a middle activation",
            (1, 2),
            _inject_forward_hook(_future_leak_hook, sequence=True),
            _causal,
        ),
        Injector(
            "mask_dropped",
            "forward replaces attention_mask by ones: padding is attended to",
            (1, 2),
            _inject_pre_hook(_drop_mask_hook),
            _masked,
        ),
        Injector(
            "eval_noise",
            "a middle activation gets Gaussian noise in eval mode too (non-determinism)",
            (1,),
            _inject_forward_hook(_noise_hook),
            _always,
        ),
        Injector(
            "hidden_state",
            "a buffer counts forward calls and shifts a middle activation by it",
            (1,),
            _inject_hidden_state,
            _always,
        ),
        Injector(
            "scaled_weight",
            "the largest weight is 1000x too large (a unit error)",
            (1, 3),
            _edit_weight(_scale),
            _fresh,
        ),
        Injector(
            "nan_weight",
            "one element of the largest weight is NaN",
            (1,),
            _edit_weight(_nan_poison),
            _always,
        ),
        Injector(
            "constant_layer",
            "the largest weight is constant-initialised (0.02 everywhere)",
            (1,),
            _edit_weight(_constant),
            _fresh,
        ),
        Injector(
            "shifted_labels",
            "forward rolls the labels by one before computing its loss",
            (1, 3),
            _inject_pre_hook(_shift_labels_hook),
            _has_labels,
        ),
        Injector(
            "silent_freeze",
            "the largest weight is silently frozen (requires_grad=False)",
            (1, 3),
            _inject_freeze,
            _trainable,
        ),
        Injector(
            "onnx_initializer",
            "the exported ONNX graph's largest initializer is perturbed; the eager model is clean",
            (4,),
            _inject_onnx_initializer,
            _exportable,
        ),
    )
}
"""Every injector, by name."""


def applicable_injectors(spec: ModelSpec) -> list[tuple[Injector, str | None]]:
    """Every injector with the reason it does not apply to ``spec`` (None if it does)."""
    return [(injector, injector.not_applicable_because(spec)) for injector in INJECTORS.values()]


def mutant_spec(spec: ModelSpec, injector: Injector, *, artifacts_dir: str | None = None) -> ModelSpec:
    """``spec`` renamed ``"{name}~{injector}"``, whose build makes the clean model and injects the fault."""
    name = f"{spec.name}~{injector.name}"
    holder: list[ModelSpec] = []
    mutant = spec.replace(name=name, build=functools.partial(_build_mutant, spec, injector, holder, artifacts_dir))
    holder.append(mutant)
    return mutant


def _build_mutant(
    clean: ModelSpec, injector: Injector, holder: list[ModelSpec], artifacts_dir: str | None
) -> nn.Module:
    model = clean.build()
    was_training = model.training
    injector.inject(holder[0], model.eval(), artifacts_dir)
    return model.train(was_training)

"""Tier 2, interventions: what a user attaches to a model (``ModelSpec.intervention``, a
:class:`harness.interventions.Intervention`: forward hooks, a LoRA/PEFT adapter, a steering vector) acts where it
claims, trains, attaches once, comes off without a trace, and survives save and load.

Every check attaches under a fixed seed (``torch.manual_seed(options.seed)`` right before ``attach``), so two
attaches of a randomly initialised intervention are the same intervention. An intervention that is the identity
when attached (a LoRA whose B matrix starts at zero) moves nothing: check it in the state it is used in
(trained weights, or ``LoraConfig(init_lora_weights=False)``), or declare ``intervention_effect`` an expected
failure.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.checks.base import CheckOptions, needs_training, register, verdict
from harness.checks.inputs import fixed_batch
from harness.result import CheckResult
from harness.spec import ModelSpec
from harness.tolerances import compare, tolerance_for

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")  # per nn.Module


def needs_intervention(spec: ModelSpec) -> str | None:
    return None if spec.intervention is not None else "the spec names no intervention (ModelSpec.intervention)"


def needs_intervention_parameters(spec: ModelSpec) -> str | None:
    if spec.intervention is None:
        return needs_intervention(spec)
    return None if spec.intervention.parameters is not None else "the intervention names no parameters it trains"


@dataclass(frozen=True)
class Structure:
    """What a model is made of, as far as an intervention can change it."""

    modules: dict[str, tuple[int, str]]  # name -> (id of the module object, its type name)
    hooks: dict[str, int]  # name -> hooks registered on that module (forward, pre-forward, backward)
    parameters: dict[str, bool]  # name -> requires_grad
    buffers: tuple[str, ...]  # buffer names

    def adapted(self, before: Structure) -> list[str]:
        """Modules of ``before`` that are now another object or carry more hooks: what an attach changed."""
        return [
            name
            for name, (identity, _) in before.modules.items()
            if name in self.modules and (self.modules[name][0] != identity or self.hooks[name] > before.hooks[name])
        ]

    def differences(self, before: Structure) -> list[str]:
        """Everything that differs from ``before``, in words (empty: the same structure)."""
        found = [f"module {name or '(root)'} {change}" for name, change in _diff(before.modules, self.modules)]
        found += [f"{self.hooks.get(name, 0) - before.hooks.get(name, 0):+d} hook(s) on {name or '(root)'}"
                  for name in sorted(set(before.hooks) | set(self.hooks))
                  if self.hooks.get(name, 0) != before.hooks.get(name, 0)]  # fmt: skip
        found += [f"parameter {name} {change}" for name, change in _diff(before.parameters, self.parameters)]
        found += [f"buffer {name} {change}" for name, change in _diff(dict.fromkeys(before.buffers),
                                                                        dict.fromkeys(self.buffers))]  # fmt: skip
        return found


def _diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[tuple[str, str]]:
    changes = [(name, "added") for name in after if name not in before]
    changes += [(name, "removed") for name in before if name not in after]
    changes += [(name, f"changed ({before[name]} -> {after[name]})")
                for name in before if name in after and before[name] != after[name]]  # fmt: skip
    return changes


def structure(model: nn.Module) -> Structure:
    """The model's modules, hooks, parameters (with ``requires_grad``) and buffers."""
    named = dict(model.named_modules(remove_duplicate=False))
    return Structure(
        modules={name: (id(module), type(module).__name__) for name, module in named.items()},
        hooks={name: sum(len(getattr(module, key, {})) for key in HOOK_DICTS) for name, module in named.items()},
        parameters={name: p.requires_grad for name, p in model.named_parameters(remove_duplicate=False)},
        buffers=tuple(name for name, _ in model.named_buffers(remove_duplicate=False)),
    )


def _attach(spec: ModelSpec, model: nn.Module, seed: int) -> Any:
    torch.manual_seed(seed)  # a randomly initialised intervention is the same one at every attach
    parameter = next(model.parameters())
    attached = spec.intervention.attach(model)
    model.to(device=parameter.device, dtype=parameter.dtype)  # --harness-dtype/-device: new modules join the model's
    return attached


@torch.no_grad()
def _output(spec: ModelSpec, model: nn.Module, batch: Batch) -> torch.Tensor:
    return adapter_for(spec).forward(spec, model, batch)


def _first_tensor(value: Any) -> torch.Tensor | None:
    """The first tensor of a module's output (a tensor, or nested in a tuple, list or mapping)."""
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else ()
    return next((found for item in items if (found := _first_tensor(item)) is not None), None)


def _module_outputs(spec: ModelSpec, model: nn.Module, names: tuple[str, ...], batch: Batch) -> dict[str, Any]:
    """The output (first tensor) of each named module during one forward of ``batch``; None if it never ran."""
    modules = dict(model.named_modules())
    captured: dict[str, Any] = dict.fromkeys(names)

    def capture(name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            tensor = _first_tensor(output)
            captured[name] = None if tensor is None else tensor.detach().clone()

        return hook

    handles = [modules[name].register_forward_hook(capture(name)) for name in names if name in modules]
    try:
        _output(spec, model, batch)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def _types(model: nn.Module, names: tuple[str, ...] | None = None) -> str:
    modules = dict(model.named_modules())
    chosen = [modules[n] for n in names if n in modules] if names else list(modules.values())
    return ", ".join(sorted({type(module).__name__ for module in chosen})) or "none"


@register(2, needs_intervention)
def check_intervention_effect(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Attached, the intervention moves the output of every module it claims as a target, and attach changes at
    least one module (a hook registered or a module replaced).

    With no targets claimed, the targets are the modules attach changed. Zero found fails and names the module
    types looked at: a modulator that looks for ``nn.Linear`` finds nothing in a GPT-2 block (its layers are
    ``Conv1D``)."""
    intervention = spec.intervention
    tolerance = tolerance_for(options.dtype, "eager")
    batch = fixed_batch(spec, options)
    reference = copy.deepcopy(model)  # the base model, to read each target's output without the intervention
    before = structure(model)
    _attach(spec, model, options.seed)
    found = structure(model).adapted(before)
    targets = intervention.targets or tuple(found)
    unknown = [name for name in targets if name not in before.modules]
    attached = _module_outputs(spec, model, targets, batch)
    base = _module_outputs(spec, reference, targets, batch)
    moved: dict[str, float] = {}  # target -> max |attached - base| of its output (NaN: it never ran)
    still, never_ran = [], []
    for name in (name for name in targets if name not in unknown):
        if attached[name] is None or base[name] is None:
            moved[name] = float("nan")
            never_ran.append(name)
        elif attached[name].shape != base[name].shape:
            moved[name] = float("inf")
        else:
            comparison = compare(attached[name], base[name], tolerance)
            moved[name] = comparison.max_abs
            if comparison.within:
                still.append(name)
    looked_at = f"looked at {len(targets)} claimed target(s) of type {_types(reference, targets)}" if \
        intervention.targets else f"looked at every module, of types {_types(reference)}"  # fmt: skip
    problems = []
    if not found:
        problems.append(f"attach registered no hook and replaced no module (0 found of {len(targets)} claimed); "
                        f"{looked_at}")  # fmt: skip
    problems += [f"no module named {name}" for name in unknown]
    problems += [f"{name} never ran in the forward" for name in never_ran]
    if still:
        problems.append(f"output unchanged at {len(still)} of {len(targets)} target(s): {', '.join(still)}")
    smallest = min((v for v in moved.values() if v == v), default=0.0)
    return verdict(
        spec, "intervention_effect", passed=not problems and bool(targets), measured=smallest,
        threshold=tolerance.atol, tolerance=tolerance.as_dict(),
        expected=f"attach to change at least one module and move every target's output beyond "
        f"atol={tolerance.atol:g} + rtol={tolerance.rtol:g} * |base|",
        got="; ".join(problems) if problems else f"{len(found)} module(s) hooked or replaced, {len(targets)} target(s) "
        f"moved, the least by {smallest:.3g}",
        hint="The intervention looks for modules the model does not have (a type or a name pattern that does not "
        "match), registers its hooks on a copy, or starts as the identity (zero-initialised weights).",
        sample_size=len(targets), seed=options.seed,
        details={"found": len(found), "claimed": len(intervention.targets), "adapted_modules": found[:50],
                 "moved": moved, "intervention": intervention.name},
    )  # fmt: skip


@register(2, needs_intervention_parameters, needs_training)
def check_intervention_gradient(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """The intervention's parameters receive a finite, non-zero gradient, and an optimizer step over every
    parameter that requires grad leaves the base model's parameters unchanged (attach freezes the base)."""
    handle = _attach(spec, model, options.seed)
    own = list(spec.intervention.parameters(handle))
    own_ids = {id(p) for p in own}
    base = {name: p.detach().clone() for name, p in model.named_parameters() if id(p) not in own_ids}
    model.zero_grad(set_to_none=True)
    for parameter in own:
        parameter.grad = None
    loss = adapter_for(spec).model_loss(spec, model, fixed_batch(spec, options))
    if loss.requires_grad:  # else nothing the loss depends on trains: every parameter below gets no gradient
        loss.backward()
    norms = [float("nan") if p.grad is None else float(p.grad.detach().double().norm()) for p in own]
    problems = []
    if not own:
        problems.append("parameters(handle) gave no parameter")
    detached = [i for i, p in enumerate(own) if p.grad is None]
    if detached:
        problems.append(f"{len(detached)} of {len(own)} parameter(s) got no gradient (not in the graph: detached, "
                        f"or not the tensor the forward uses), shapes {[tuple(own[i].shape) for i in detached[:5]]}")  # fmt: skip
    bad = [i for i, p in enumerate(own) if p.grad is not None and not (torch.isfinite(p.grad).all() and p.grad.any())]
    if bad:
        problems.append(
            f"{len(bad)} parameter(s) with a zero or non-finite gradient (norms {[norms[i] for i in bad[:5]]})"
        )
    trainable = list({id(p): p for p in [*(p for p in model.parameters() if p.requires_grad), *own]}.values())
    torch.optim.AdamW(trainable, lr=1e-2).step()
    changed = [name for name, p in model.named_parameters() if name in base and not torch.equal(p.detach(), base[name])]
    if changed:
        problems.append(f"the optimizer step changed {len(changed)} base parameter(s): {', '.join(changed[:5])}"
                        + (" ..." if len(changed) > 5 else ""))  # fmt: skip
    smallest = min((n for n in norms if n == n), default=0.0)
    return verdict(
        spec, "intervention_gradient", passed=not problems, measured=smallest, threshold=0.0,
        expected="every intervention parameter's gradient finite and non-zero (norm > 0); no base parameter "
        "changed by an optimizer step over every parameter that requires grad",
        got="; ".join(problems) or f"{len(own)} parameter(s), smallest gradient norm {smallest:.3g}; "
        f"{len(base)} base parameter(s) unchanged",
        hint="A parameter used through .detach() or .data, a copy of the parameter instead of the parameter, or "
        "an attach that does not set requires_grad=False on the base model.",
        sample_size=len(own), seed=options.seed,
        details={"gradient_norms": norms[:50], "base_changed": changed[:50], "loss": float(loss.detach())},
    )  # fmt: skip


@register(2, needs_intervention)
def check_intervention_idempotent(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Attaching twice either equals attaching once or the second attach is refused (raises); it never stacks."""
    tolerance = tolerance_for(options.dtype, "eager")
    batch = fixed_batch(spec, options)
    twice, before = copy.deepcopy(model), structure(model)
    _attach(spec, model, options.seed)
    once_output, once = _output(spec, model, batch), structure(model)
    _attach(spec, twice, options.seed)
    try:
        _attach(spec, twice, options.seed)
        refused = None
    except Exception as error:  # noqa: BLE001 - refusing a second attach is one of the two allowed answers
        refused = f"{type(error).__name__}: {error}"
    twice_output, again = _output(spec, twice, batch), structure(twice)
    comparison = compare(twice_output, once_output, tolerance)
    added = {"hooks": lambda s: sum(s.hooks.values()), "modules": lambda s: len(s.modules),
             "parameters": lambda s: len(s.parameters)}  # fmt: skip
    counts = {what: (size(once) - size(before), size(again) - size(before)) for what, size in added.items()}
    stacked = [f"{what}: {a} added by one attach, {b} by two" for what, (a, b) in counts.items() if a != b]
    problems = stacked + ([] if comparison.within else [f"outputs moved by {comparison.max_abs:.3g}"])
    answer = f"the second attach was refused ({refused})" if refused else "the second attach was accepted"
    return verdict(
        spec, "intervention_idempotent", passed=not problems, measured=comparison.max_abs, threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected="after a second attach: the outputs, hooks, modules and parameters of one attach",
        got=f"{answer}; " + ("; ".join(problems) if problems else f"same structure, outputs within "
                              f"{comparison.max_abs:.3g}"),  # fmt: skip
        hint="attach registers its hooks (or wraps its modules) again without looking for its own: guard it "
        "(raise, or return the existing handle).",
        sample_size=comparison.numel, seed=options.seed, details={"counts": counts, "refused": refused},
    )  # fmt: skip


@register(2, needs_intervention)
def check_intervention_removable(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """After detach the outputs equal the base model's bit for bit, and no hook, module, parameter, buffer or
    requires_grad flag differs from before attach."""
    batch = fixed_batch(spec, options)
    base_output, before = _output(spec, model, batch), structure(model)
    values = {name: p.detach().clone() for name, p in model.named_parameters()}
    handle = _attach(spec, model, options.seed)
    _output(spec, model, batch)  # the intervention runs once before it is taken off
    spec.intervention.detach(model, handle)
    output, after = _output(spec, model, batch), structure(model)
    leftovers = after.differences(before)
    leftovers += [f"parameter {name} changed value" for name, p in model.named_parameters()
                  if name in values and not torch.equal(p.detach(), values[name])]  # fmt: skip
    same_shape = output.shape == base_output.shape
    difference = float((output.double() - base_output.double()).abs().max()) if same_shape else float("inf")
    bitwise = same_shape and torch.equal(output, base_output)
    return verdict(
        spec, "intervention_removable", passed=bitwise and not leftovers, measured=difference, threshold=0.0,
        expected="outputs after detach bitwise equal to the base model's, the same modules, hooks, parameters, "
        "buffers and requires_grad flags",
        got=("outputs bitwise equal" if bitwise else f"outputs differ by {difference:.3g}")
        + (f"; left behind: {'; '.join(leftovers[:8])}" + (" ..." if len(leftovers) > 8 else "") if leftovers else ""),
        hint="detach misses a hook handle (keep every handle attach returns), leaves the wrapped module in place, "
        "or does not restore requires_grad on the parameters attach froze.",
        sample_size=len(before.modules), seed=options.seed, details={"left_behind": leftovers[:50]},
    )  # fmt: skip


@register(2, needs_intervention)
def check_intervention_roundtrip(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """The attached model's state dict, saved and loaded into a model built and attached under other seeds,
    reproduces its outputs: the intervention's state is saved with the model."""
    tolerance = tolerance_for(options.dtype, "serialized")
    batch = fixed_batch(spec, options)
    handle = _attach(spec, model, options.seed)
    output = _output(spec, model, batch)
    state = model.state_dict()
    saved = {t.data_ptr() for t in state.values()}
    own = list(spec.intervention.parameters(handle)) if spec.intervention.parameters else []
    unsaved = [tuple(p.shape) for p in own if p.data_ptr() not in saved]
    buffer = io.BytesIO()
    torch.save(state, buffer)
    other = spec.build_model(seed=spec.seed + 1)
    _attach(spec, other, options.seed + 1)
    buffer.seek(0)
    problems = []
    try:
        other.load_state_dict(torch.load(buffer, weights_only=True))
    except RuntimeError as error:  # missing or unexpected keys, shape mismatches
        problems.append(f"load_state_dict refused it: {' '.join(str(error).split())[:300]}")
    comparison = compare(_output(spec, other, batch), output, tolerance)
    if unsaved:
        problems.append(f"{len(unsaved)} of {len(own)} intervention parameter(s) are not in model.state_dict() "
                        f"(shapes {unsaved[:5]})")  # fmt: skip
    if not comparison.within:
        problems.append(f"outputs after the round trip differ by {comparison.max_abs:.3g}")
    return verdict(
        spec, "intervention_roundtrip", passed=not problems, measured=comparison.max_abs, threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected="every intervention parameter in model.state_dict(), loaded strictly into another attached model, "
        f"outputs within atol={tolerance.atol:g}",
        got="; ".join(problems) or f"{len(state)} tensors round-tripped, outputs within {comparison.max_abs:.3g}",
        hint="The intervention keeps its state outside the model (in the handle, a closure or a plain tensor "
        "attribute): register it as a submodule, parameter or buffer of the model.",
        sample_size=comparison.numel, seed=options.seed, details={"state_keys": len(state), "unsaved": unsaved},
    )  # fmt: skip

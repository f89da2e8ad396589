"""Tier 2, ablation: removing any one block changes the loss measurably and leaves it finite."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from harness.adapters import adapter_for
from harness.adapters.base import Batch, batch_size_of
from harness.checks.base import CheckOptions, register, skipped, verdict
from harness.checks.inputs import fixed_batch
from harness.result import CheckResult, Status
from harness.spec import ModelSpec


def block_lists(model: nn.Module) -> dict[str, nn.ModuleList]:
    """Every nn.ModuleList whose modules all share one type (block stacks, and the stacks inside stages), outer first."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(child) for child in module}) == 1
    }


def _hidden_input(module: nn.Module, args: tuple, kwargs: dict) -> Any:
    """The hidden states a block is called with: its first positional argument, else ``hidden_states``."""
    return args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))


def _first_tensor(output: Any) -> Any:
    return output[0] if isinstance(output, (tuple, list)) and output else output


def removable_blocks(model: nn.Module, run: Callable[[], Any]) -> tuple[dict[str, nn.Module], list[str]]:
    """The outermost blocks of :func:`block_lists` whose output has their input's shape (a residual block can be
    removed; a stage that changes the width or resolution cannot), found by one recorded forward ``run``; and the
    blocks kept because they change the shape (their inner stacks are searched instead)."""
    candidates = {
        f"{name}.{index}": block for name, blocks in block_lists(model).items() for index, block in enumerate(blocks)
    }
    preserves: dict[str, bool] = {}

    def recorder(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            hidden, first = _hidden_input(module, args, kwargs), _first_tensor(output)
            same = isinstance(hidden, torch.Tensor) and isinstance(first, torch.Tensor) and hidden.shape == first.shape
            preserves[name] = preserves.get(name, True) and same

        return hook

    handles = [block.register_forward_hook(recorder(name), with_kwargs=True) for name, block in candidates.items()]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    removable: dict[str, nn.Module] = {}
    for name, block in candidates.items():  # outer first: a removable block covers the stacks inside it
        if preserves.get(name) and not any(name.startswith(f"{outer}.") for outer in removable):
            removable[name] = block
    kept = [name for name, same in preserves.items() if not same]
    return removable, kept


@contextmanager
def _skipped(block: nn.Module) -> Iterator[None]:
    """The block returns its input hidden states: its residual contribution is removed."""

    def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        hidden = _hidden_input(module, args, kwargs)
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
    """Removing any one block changes the loss measurably and leaves it finite (no dead block).

    The model runs in float64, so the small effect of a block of an untrained model (BART's encoder layers move
    its loss by ~1e-7 through near-uniform cross-attention) is resolved and only a block whose removal changes
    nothing at all is dead. Blocks that change the shape of their input (stages that downsample or widen) cannot
    be removed; the stacks inside them are ablated instead.
    """
    model.eval().double()
    batch = {
        key: value.double() if value.is_floating_point() else value for key, value in fixed_batch(spec, options).items()
    }
    metric, evaluate = _effect_function(spec, model, batch)
    blocks, kept = removable_blocks(model, evaluate)
    if not blocks:
        reason = (
            "the model has no nn.ModuleList of same-type blocks that keep their input's shape, so none can be removed"
        )
        return skipped(spec, "layer_ablation", reason, seed=options.seed)
    with torch.no_grad():
        reference = evaluate().double()
        effects: dict[str, float] = {}
        for name, block in blocks.items():
            with _skipped(block):
                ablated = evaluate().double()
            if metric == "loss":  # signed change of the loss
                change = float(ablated - reference)
            else:  # mean cosine distance of the outputs, in [0, 2]
                cosine = nn.functional.cosine_similarity(ablated.flatten(1), reference.flatten(1), dim=-1)
                change = float((1 - cosine).mean()) if torch.isfinite(ablated).all() else math.inf
            effects[name] = change
    scale = abs(float(reference)) if metric == "loss" else 1.0  # "everything": a relative change above the bound
    dead = [name for name, change in effects.items() if abs(change) <= options.behaviour.dead_tolerance]
    non_finite = [name for name, change in effects.items() if not math.isfinite(change)]
    dominant = [
        name
        for name, change in effects.items()
        if math.isfinite(change) and abs(change) > options.behaviour.max_ablation_effect * scale
    ]
    ranking = sorted(effects, key=lambda name: -abs(effects[name]) if math.isfinite(effects[name]) else -math.inf)
    smallest = min(abs(change) for change in effects.values())
    problems = []
    if dead:
        problems.append(f"dead (|change| <= {options.behaviour.dead_tolerance:g}): {', '.join(dead)}")
    if non_finite:
        problems.append(f"non-finite {metric} without {', '.join(non_finite)}")
    what = "loss" if metric == "loss" else "output (mean cosine distance)"
    changes = ", ".join(f"{name} {effects[name]:+.3g}" for name in ranking)
    result = verdict(
        spec,
        "layer_ablation",
        passed=not problems,
        measured=smallest,
        threshold=options.behaviour.dead_tolerance,
        expected=f"every block's removal to change the float64 {what} by more than {options.behaviour.dead_tolerance:g}, finitely",
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
            "dominant_bound": options.behaviour.max_ablation_effect * scale,
            "warning_band_applied": spec.capabilities.pretrained,
            "block_lists": sorted({name.rsplit(".", 1)[0] for name in blocks}),
            "kept_shape_changing": kept,
            "dtype": "float64",
        },
    )
    if result.status is Status.PASSED and dominant and spec.capabilities.pretrained:
        return dataclasses.replace(
            result,
            status=Status.WARNED,
            got=f"removing {', '.join(dominant)} changes everything (> {options.behaviour.max_ablation_effect:g}x): {result.got}",
            hint="One trained block carries the whole computation; the others may be redundant.",
        )
    return result

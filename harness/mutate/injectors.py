"""Fault injectors: plant one realistic bug in any ``torch.nn.Module`` without touching the user's source.

An injector edits a freshly built model through forward hooks, forward pre-hooks (which rewrite the
keyword arguments: input wrapping), parameter edits or the exported artefact, and declares the tiers whose
checks can see it and the catalog check it applies with (a fault is planted only where the check that sees it
applies: the catalog's own requirements, never a copy of them). :func:`mutant_spec` turns a spec and an injector into a
``ModelSpec`` named ``"{spec.name}~{injector.name}"`` whose ``build`` makes the clean model and then
injects, so every existing check runs on the mutant unchanged.

Hooks are module-level functions (or ``functools.partial`` of them) that only touch the module they are
called with, so the faults survive the deep copy every check makes of its model.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness.spec import ModelSpec

Applies = Callable[[ModelSpec], "str | None"]  # why an injector does not apply to a spec, or None (see _seen_by)
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

    The cache is keyed by content (the spec name included): the checks' exports of this mutant find the edited
    file, and a later run reuses it as it is (the edit is made once).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from harness.export import exports_for

    exports = exports_for(spec, model.eval(), folder)
    graph = onnx.load(str(exports.record("onnx").path))
    largest = max(graph.graph.initializer, key=lambda tensor: int(np.prod(tensor.dims)))
    values = numpy_helper.to_array(largest).copy()
    values += np.random.default_rng(0).normal(0, 1e-2, values.shape).astype(values.dtype)
    largest.CopyFrom(numpy_helper.from_array(values, largest.name))
    exports.edit("onnx", lambda target: onnx.save(graph, str(target)), "mutation: largest initializer perturbed")


# --- language-model paths (the checks of harness.checks.language see them) ---------------------------


def _cache_length(cache: Any) -> int:
    """Tokens a key/value cache holds: ``get_seq_length()`` of a Cache object, else the key length of a tuple."""
    if cache is None:
        return 0
    if callable(getattr(cache, "get_seq_length", None)):
        return int(cache.get_seq_length())
    first = cache
    while isinstance(first, (tuple, list)) and first:
        first = first[0]
    return int(first.shape[-2]) if isinstance(first, torch.Tensor) else 0


def _call_positions(kwargs: dict[str, Any], past: int) -> torch.Tensor | None:
    """This call's position ids: the given ones, else ``past + arange(T)`` (the positions of cached decoding)."""
    if kwargs.get("position_ids") is not None:
        return kwargs["position_ids"]
    tokens = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
    if tokens is None:
        return None
    return torch.arange(past, past + tokens.shape[1], device=tokens.device).unsqueeze(0)


def _shift_cached_positions_hook(
    argument: str, _module: nn.Module, args: tuple, kwargs: dict[str, Any]
) -> tuple[tuple, dict[str, Any]]:
    past = _cache_length(kwargs.get(argument))
    positions = _call_positions(kwargs, past) if past else None
    if positions is None:
        return args, kwargs
    return args, {**kwargs, "position_ids": positions + 1}  # a forward given a cache is one position off


def _drop_kernel_mask_hook(index: int, module: nn.Module, args: tuple, kwargs: dict[str, Any]):
    if getattr(getattr(module, "config", None), "_attn_implementation", "eager") == "eager":
        return args, kwargs  # the eager kernel keeps its mask: only the other kernels drop it
    if len(args) > index:
        return (*args[:index], None, *args[index + 1 :]), kwargs
    return args, {**kwargs, "attention_mask": None} if "attention_mask" in kwargs else kwargs


def _skip_position_embedding_hook(
    table: str, module: nn.Module, args: tuple, kwargs: dict[str, Any]
) -> tuple[tuple, dict[str, Any]]:
    embeds = kwargs.get("inputs_embeds")
    if embeds is None:
        return args, kwargs
    past = _cache_length(kwargs.get("cache", kwargs.get("past_key_values")))
    positions = _call_positions(kwargs, past)
    cancelled = embeds - module.get_submodule(table)(positions).to(embeds)  # the forward adds it back: net zero
    return args, {**kwargs, "inputs_embeds": cancelled}


def _mask_kernels(model: nn.Module) -> list[tuple[nn.Module, int]]:
    """(module, positional index of attention_mask) of the innermost submodules that take an attention mask and
    read their kernel from ``config._attn_implementation`` (the attention layers of Hugging Face models)."""
    import inspect

    candidates = {}
    for module in model.modules():
        if module is model or not hasattr(getattr(module, "config", None), "_attn_implementation"):
            continue
        parameters = [p for p in inspect.signature(module.forward).parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = [p.name for p in parameters]
        if "attention_mask" in names:
            candidates[module] = names.index("attention_mask")
    inner = [m for m in candidates if not any(c in candidates for c in m.modules() if c is not m)]
    return [(module, candidates[module]) for module in inner]


def _inject_cache_position_shift(_spec: ModelSpec, model: nn.Module, _folder: str | None) -> None:
    from harness.checks.language import CACHE_ARGUMENTS

    parameters = inspect.signature(model.forward).parameters
    argument = next(name for name in CACHE_ARGUMENTS if name in parameters)
    model.register_forward_pre_hook(functools.partial(_shift_cached_positions_hook, argument), with_kwargs=True)


def _inject_kernel_mask_drop(_spec: ModelSpec, model: nn.Module, _folder: str | None) -> None:
    kernels = _mask_kernels(model)
    if not kernels:
        raise ValueError("no attention layer takes attention_mask and a config._attn_implementation")
    for module, index in kernels:
        module.register_forward_pre_hook(functools.partial(_drop_kernel_mask_hook, index), with_kwargs=True)


def _inject_embeds_without_positions(spec: ModelSpec, model: nn.Module, _folder: str | None) -> None:
    from harness.checks.language import position_embedding_of

    table = position_embedding_of(spec, model)
    if table is None:
        raise ValueError("the model has no learned position embedding")
    model.register_forward_pre_hook(functools.partial(_skip_position_embedding_hook, table), with_kwargs=True)


# --- applicability: asked of the check catalog, never re-typed here ----------------------------------


def _seen_by(check: str, *claims: Applies) -> Applies:
    """Applies where the catalog check ``check`` applies (its own requirements, from
    :meth:`harness.checks.base.Check.not_applicable_because`) and every extra claim holds: a fault matters only
    where the check that sees it runs."""

    def applies(spec: ModelSpec) -> str | None:
        from harness.checks import CHECKS

        for requirement in (CHECKS[check].not_applicable_because, *claims):
            reason = requirement(spec)
            if reason:
                return reason
        return None

    return applies


def _claims_causal(spec: ModelSpec) -> str | None:
    return None if spec.capabilities.is_causal else "the model does not declare itself causal"


def _claims_mask(spec: ModelSpec) -> str | None:
    return None if spec.capabilities.has_attention_mask else "the model takes no attention mask to drop"


def _takes_labels(spec: ModelSpec) -> str | None:
    from harness.adapters import adapter_for

    return None if adapter_for(spec).has_loss else f"{spec.task} models take no labels"


def _takes_position_ids(spec: ModelSpec) -> str | None:
    from harness.checks.language import model_facts

    facts = model_facts(spec)
    return None if facts is None or facts.position_ids else "the forward takes no position_ids to shift"


def _has_mask_kernels(spec: ModelSpec) -> str | None:
    with torch.random.fork_rng(devices=[]):
        found = _mask_kernels(spec.build_model())
    return None if found else "no attention layer takes attention_mask and reads config._attn_implementation"


def _learned_positions(spec: ModelSpec) -> str | None:
    from harness.checks.language import model_facts

    facts = model_facts(spec)
    return None if facts is None or facts.position_embedding else "the model has no learned position embedding"


INJECTORS: dict[str, Injector] = {
    injector.name: injector
    for injector in (
        Injector(
            "dead_gradient",
            "a middle submodule's output is detached: everything before it gets no gradient",
            (1, 3),
            _inject_forward_hook(_detach_hook),
            _seen_by("gradient_flow"),
        ),
        Injector(
            "row_leak",
            "each batch row leaks half of the previous row into a middle activation",
            (1, 2),
            _inject_forward_hook(_row_leak_hook),
            _seen_by("batch_independence"),
        ),
        Injector(
            "future_leak",
            "each position leaks half of the next position into a middle activation",
            (1, 2),
            _inject_forward_hook(_future_leak_hook, sequence=True),
            _seen_by("causality", _claims_causal),
        ),
        Injector(
            "mask_dropped",
            "forward replaces attention_mask by ones: padding is attended to",
            (1, 2),
            _inject_pre_hook(_drop_mask_hook),
            _seen_by("padding_invariance", _claims_mask),
        ),
        Injector(
            "eval_noise",
            "a middle activation gets Gaussian noise in eval mode too (non-determinism)",
            (1,),
            _inject_forward_hook(_noise_hook),
            _seen_by("eval_determinism"),
        ),
        Injector(
            "hidden_state",
            "a buffer counts forward calls and shifts a middle activation by it",
            (1,),
            _inject_hidden_state,
            _seen_by("eval_determinism"),
        ),
        Injector(
            "scaled_weight",
            "the largest weight is 1000x too large (a unit error)",
            (1, 3),
            _edit_weight(_scale),
            _seen_by("initialization"),
        ),
        Injector(
            "nan_weight",
            "one element of the largest weight is NaN",
            (1,),
            _edit_weight(_nan_poison),
            _seen_by("output_shapes"),
        ),
        Injector(
            "constant_layer",
            "the largest weight is constant-initialised (0.02 everywhere)",
            (1,),
            _edit_weight(_constant),
            _seen_by("initialization"),
        ),
        Injector(
            "shifted_labels",
            "forward rolls the labels by one before computing its loss",
            (1, 3),
            _inject_pre_hook(_shift_labels_hook),
            _seen_by("loss_oracle", _takes_labels),
        ),
        Injector(
            "silent_freeze",
            "the largest weight is silently frozen (requires_grad=False)",
            (1, 3),
            _inject_freeze,
            _seen_by("gradient_flow"),
        ),
        Injector(
            "onnx_initializer",
            "the exported ONNX graph's largest initializer is perturbed; the eager model is clean",
            (4,),
            _inject_onnx_initializer,
            _seen_by("onnx_parity"),
        ),
        Injector(
            "cache_position_shift",
            "a forward given a non-empty key/value cache numbers its tokens one position too far",
            (1,),
            _inject_cache_position_shift,
            _seen_by("cache_consistency", _takes_position_ids),
        ),
        Injector(
            "kernel_mask_dropped",
            "every attention kernel but eager (sdpa, flash) ignores the attention mask",
            (1,),
            _inject_kernel_mask_drop,
            _seen_by("attention_backend_equivalence", _has_mask_kernels),
        ),
        Injector(
            "embeds_skip_positions",
            "the inputs_embeds path skips the position embedding",
            (1,),
            _inject_embeds_without_positions,
            _seen_by("inputs_embeds_equivalence", _learned_positions),
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

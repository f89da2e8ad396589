"""Tier 1, continued: the paths where language models break besides one forward pass.

Seven checks, each an identity between two ways of computing the same thing:

- ``cache_consistency``: a prefix forward, a chunk and one-token steps through the returned key/value cache
  equal one full forward; a forward that is not given a cache leaves an earlier cache untouched.
- ``generation_equivalence``: greedy decoding of a padded batch (prompts on the left; an encoder-decoder's
  sources on the right) equals decoding each prompt alone, with and without the cache, through the harness's own greedy loop and through ``generate`` where the model has it.
- ``attention_backend_equivalence``: outputs and gradients agree across the attention implementations the
  model accepts (``eager``, ``sdpa``), over padding layouts that include a fully masked row, with no NaN.
- ``inputs_embeds_equivalence``: ``forward(inputs_embeds=embed(ids))`` equals ``forward(input_ids=ids)``.
- ``packed_sequences``: documents packed into one row, with reset positions and the boundary told to the model,
  get the outputs they get alone. Packing is a training-time input, so these calls pass ``use_cache=False``:
  transformers 5 separates documents by restarting ``position_ids`` only when it builds no cache, and a Llama
  called with its config's ``use_cache=True`` silently lets the documents attend to each other.
- ``tokenizer_contract``: the tokenizer's ids fit the embedding table, its special tokens agree with the model's
  config, real text round-trips, pad is not eos, and a model that generates pads on the left.
- ``tied_weights``: input and output embeddings that are tied stay tied after save/load and after
  ``resize_token_embeddings``, which keeps the existing rows and does not re-initialise the head.

Why Tier 1 ("is the model well-formed?"): every rule holds at any weights, so a freshly built model with
random weights breaks it exactly when the code is wrong; nothing is trained, and each check costs a few dozen
forwards of a tiny model, seconds on two CPU cores. These are bugs of the model's code (its cache, its
kernels, its embedding path, its tokenizer), the same kind Tier 1's invariants catch on the plain forward,
and Tier 2's question (does the model behave sensibly?) presumes these paths compute what the forward does.

Applicability comes from what the model accepts, never from its name or class: the forward signature
(``cache`` or ``past_key_values`` with ``use_cache``; ``position_ids``; ``inputs_embeds``;
``decoder_input_ids``, which makes a model an encoder-decoder), its methods (``generate``,
``get_input_embeddings``/``get_output_embeddings``, ``set_attn_implementation``, ``resize_token_embeddings``),
its config (``_attn_implementation``, ``tie_word_embeddings``), the weights it shares between an embedding and a
linear head, and for packing, two probes of whether it can be told where documents end. Each requirement below
returns the reason a check does not apply; the facts behind them are gathered once per spec
(:func:`model_facts`) from a model built for the purpose.

Conventions of the calls (Hugging Face's): positions are ``cumsum(attention_mask) - 1`` (clamped at 0), as
generation computes them, whenever a mask is given and the model accepts ``position_ids``; one-token steps
get the full mask of past and present tokens. Every comparison takes its tolerance from
:mod:`harness.tolerances` (``float32``/``eager``: two computations of the same outputs in fp32).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from hypothesis import strategies as st

from harness.adapters import adapter_for
from harness.checks.base import CheckOptions, register, verdict
from harness.checks.fuzz import Violation, fuzz
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.tolerances import Comparison, Tolerance, compare, tolerance_for

SEEDS = st.integers(0, 2**31 - 1)
CACHE_ARGUMENTS = ("cache", "past_key_values")  # transformers 5 calls it `cache`; 4.x and most others the latter
BACKENDS = ("eager", "sdpa")  # attention implementations compared on any device
GPU_BACKENDS = ("flash_attention_2", "flash_attention_3")  # tried only for a model whose weights are on CUDA
CACHE_LENGTH = 16  # longest sequence the cache check builds (capped by the spec's max_length)
GENERATION_PROMPT = 8  # longest prompt the generation check draws
GENERATION_STEPS = 5  # new tokens per greedy decode
BACKEND_LENGTH = 12  # sequence length of the attention-backend batches
PACKED_LENGTH = 16  # longest packed row
RESIZE_ROWS = 8  # rows added by resize_token_embeddings in the tied-weights check
ROUND_TRIP_TEXTS = 20  # paragraphs of real text the tokenizer must round-trip
GENERATION_PROCESSORS = (  # generation_config fields that change greedy tokens away from the plain argmax
    ("repetition_penalty", 1.0),
    ("no_repeat_ngram_size", 0),
    ("encoder_no_repeat_ngram_size", 0),
    ("bad_words_ids", None),
    ("forced_bos_token_id", None),
    ("forced_eos_token_id", None),
    ("suppress_tokens", None),
    ("begin_suppress_tokens", None),
    ("sequence_bias", None),
    ("min_length", 0),
    ("min_new_tokens", None),
    ("exponential_decay_length_penalty", None),
)


# --- what the model accepts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFacts:
    """What a model accepts and does, learned once per spec from a freshly built model."""

    parameters: frozenset[str] = frozenset()  # the forward's named parameters
    cache_argument: str | None = None  # the forward's cache parameter ("cache" or "past_key_values")
    use_cache: bool = False  # the forward takes use_cache
    position_ids: bool = False  # the forward takes position_ids
    inputs_embeds: bool = False  # the forward takes inputs_embeds
    decoder_inputs_embeds: bool = False  # an encoder-decoder's forward takes decoder_inputs_embeds
    encoder_decoder: bool = False  # the forward takes decoder_input_ids
    vocabulary_logits: bool = False  # a probe forward returned (B, T, vocab_size) logits: a language-model head
    generate: bool = False  # a generate() that takes max_new_tokens
    generate_processors: tuple[str, ...] = ()  # generation_config fields that move greedy tokens off the argmax
    decoder_start: int | None = None  # an encoder-decoder's decoder_start_token_id
    eos_ids: tuple[int, ...] = ()  # the model's eos ids (config or generation_config)
    backends: tuple[str, ...] = ()  # attention implementations set_attn_implementation accepts
    current_backend: str | None = None  # config._attn_implementation as built
    embeddings: bool = False  # get_input_embeddings() returns a module with a weight
    tie: tuple[str, ...] = ()  # names of one weight shared by an embedding and a linear head
    tie_claimed: bool = False  # config.tie_word_embeddings is true and the model has an output embedding
    untied_because: str = ""  # why the model counts as untied
    resize: bool = False  # the model has resize_token_embeddings
    position_embedding: str | None = None  # the nn.Embedding fed the position ids, if any (learned positions)
    packing: tuple[str, ...] = ()  # how the model can be told document boundaries: "mask4d-float", "mask4d-bool",
    #   "position_ids" (positions that restart at 0 separate documents when no mask is given)
    packing_refusal: str = ""  # why it cannot, from the probes
    error: str | None = None  # the build or a probe raised: applicability is unknown, the checks run and say so


_FACTS: dict[int, tuple[ModelSpec, ModelFacts | None]] = {}


def model_facts(spec: ModelSpec) -> ModelFacts | None:
    """The facts of ``spec``'s model (None for tasks without token sequences); built and probed once per spec."""
    hit = _FACTS.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    facts = _probe_facts(spec)
    _FACTS[id(spec)] = (spec, facts)  # the spec is kept alive with its entry, so its id is never reused
    return facts


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No Python warnings and no transformers log lines below errors (restored afterwards)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from transformers.utils import logging as hf_logging
        except ImportError:  # pragma: no cover - transformers is a core dependency
            yield
            return
        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()


def _forward_parameters(model: torch.nn.Module) -> frozenset[str]:
    return frozenset(
        name
        for name, p in inspect.signature(model.forward).parameters.items()
        if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    )


def _probe_facts(spec: ModelSpec) -> ModelFacts | None:
    if not adapter_for(spec).sequence:
        return None
    with torch.random.fork_rng(devices=[]), torch.no_grad(), _quiet():
        try:
            model = spec.build_model()
        except Exception as error:  # noqa: BLE001 - an unbuildable model: its checks run (and fail) elsewhere
            return ModelFacts(error=f"build raised {type(error).__name__}: {error}")
        try:
            return _facts_of(spec, model)
        except Exception as error:  # noqa: BLE001 - a probe that raises leaves applicability unknown
            return ModelFacts(error=f"probing the model raised {type(error).__name__}: {error}")


def _facts_of(spec: ModelSpec, model: torch.nn.Module) -> ModelFacts:
    parameters = _forward_parameters(model)
    config = getattr(model, "config", None)
    facts = ModelFacts(
        parameters=parameters,
        cache_argument=next((name for name in CACHE_ARGUMENTS if name in parameters), None),
        use_cache="use_cache" in parameters,
        position_ids="position_ids" in parameters,
        inputs_embeds="inputs_embeds" in parameters,
        decoder_inputs_embeds="decoder_inputs_embeds" in parameters,
        encoder_decoder="decoder_input_ids" in parameters,
        decoder_start=getattr(config, "decoder_start_token_id", None),
        eos_ids=_eos_ids(model),
        embeddings=_input_embeddings(model) is not None,
        resize=callable(getattr(model, "resize_token_embeddings", None)),
    )
    length = max(2, spec.inputs.min_length)
    ids = _token_batch(spec, 1, length, torch.Generator().manual_seed(0))
    probe = _primary(model(**_kwargs(facts, ids=ids, mask=torch.ones_like(ids), decoder_ids=ids)))
    changes: dict[str, Any] = {
        "vocabulary_logits": tuple(probe.shape) == (1, length, spec.inputs.vocab_size),
        "position_embedding": _position_embedding(model, facts, ids) if facts.position_ids else None,
    }
    generate = getattr(model, "generate", None)
    if callable(generate) and (getattr(model, "can_generate", lambda: True)() is not False):
        accepted = inspect.signature(generate).parameters
        changes["generate"] = "max_new_tokens" in accepted or any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        generation_config = getattr(model, "generation_config", None)
        changes["generate_processors"] = tuple(
            name for name, neutral in GENERATION_PROCESSORS if _sets(getattr(generation_config, name, neutral), neutral)
        )
    changes["current_backend"] = getattr(config, "_attn_implementation", None)
    changes["backends"] = _accepted_backends(model)
    tie, claimed, untied = _tie_facts(model)
    changes |= {"tie": tie, "tie_claimed": claimed, "untied_because": untied}
    facts = replace(facts, **changes)
    if adapter_for(spec).per_token_outputs and not facts.encoder_decoder and facts.position_ids:
        packing, refusal = _packing_channels(spec, model, facts)
        facts = replace(facts, packing=packing, packing_refusal=refusal)
    return facts


def _sets(value: Any, neutral: Any) -> bool:
    """Whether a generation_config field holds something other than its neutral value (token id 0 and 1 count:
    Marian forces eos 0 and Pegasus eos 1 at the last step)."""
    return value is not None and value != neutral and not (isinstance(value, (list, tuple)) and not value)


def _eos_ids(model: torch.nn.Module) -> tuple[int, ...]:
    found: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, int):
                found.add(item)
    return tuple(sorted(found))


def _embedding_module(model: torch.nn.Module, getter_name: str) -> torch.nn.Module | None:
    """``model.get_input_embeddings()`` or ``get_output_embeddings()`` when it gives a module with a weight."""
    getter = getattr(model, getter_name, None)
    if not callable(getter):
        return None
    try:
        module = getter()
    except (NotImplementedError, AttributeError):
        return None
    return module if isinstance(getattr(module, "weight", None), torch.Tensor) else None


def _input_embeddings(model: torch.nn.Module) -> torch.nn.Module | None:
    return _embedding_module(model, "get_input_embeddings")


def _output_embeddings(model: torch.nn.Module) -> torch.nn.Module | None:
    return _embedding_module(model, "get_output_embeddings")


def _accepted_backends(model: torch.nn.Module) -> tuple[str, ...]:
    """The attention implementations ``set_attn_implementation`` accepts (the model is left as it was)."""
    setter = getattr(model, "set_attn_implementation", None)
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if not callable(setter) or current is None:
        return ()
    candidates = list(BACKENDS)
    on_cuda = any(p.is_cuda for p in model.parameters())
    if on_cuda:
        candidates += GPU_BACKENDS
    accepted = []
    for name in candidates:
        try:
            setter(name)
        except Exception:  # noqa: BLE001, S112 - an implementation the model (or the machine) does not support
            continue
        if getattr(config, "_attn_implementation", None) == name:
            accepted.append(name)
    setter(current)
    return tuple(accepted)


def _tie_facts(model: torch.nn.Module) -> tuple[tuple[str, ...], bool, str]:
    """(names of a weight shared by an nn.Embedding and a linear head, whether the config claims a tie, why
    the model counts as untied)."""
    config = getattr(model, "config", None)
    inputs, outputs = _input_embeddings(model), _output_embeddings(model)
    claimed = bool(getattr(config, "tie_word_embeddings", False)) and outputs is not None
    names: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(parameter), []).append(name)
    for shared in names.values():
        if len(shared) < 2:
            continue
        kinds = {type(model.get_submodule(name.rpartition(".")[0])) for name in shared}
        if any(issubclass(kind, torch.nn.Embedding) for kind in kinds) and any(
            not issubclass(kind, torch.nn.Embedding) for kind in kinds
        ):
            return tuple(shared), claimed, ""
    if inputs is not None and outputs is not None and inputs.weight is outputs.weight:
        return ("get_input_embeddings().weight", "get_output_embeddings().weight"), claimed, ""
    if outputs is None:
        why = "no embedding weight is shared with a linear head (and get_output_embeddings() gives no head)"
    else:
        why = (
            f"the input and output embeddings are separate tensors "
            f"(config.tie_word_embeddings={getattr(config, 'tie_word_embeddings', None)})"
        )
    return (), claimed, why


def position_embedding_of(spec: ModelSpec, model: torch.nn.Module) -> str | None:
    """The name of the nn.Embedding that ``model``'s forward feeds the position ids (a learned absolute position
    table), or None (rotary or relative positions, or no position_ids parameter)."""
    parameters = _forward_parameters(model)
    if "position_ids" not in parameters:
        return None
    facts = ModelFacts(parameters=parameters, position_ids=True, encoder_decoder="decoder_input_ids" in parameters)
    ids = _token_batch(spec, 1, max(2, spec.inputs.min_length), _generator(0))
    with torch.no_grad(), _quiet():
        return _position_embedding(model, facts, ids)


def _position_embedding(model: torch.nn.Module, facts: ModelFacts, ids: torch.Tensor) -> str | None:
    """The name of the nn.Embedding that a forward feeds the position ids (learned absolute positions)."""
    positions = torch.arange(ids.shape[1]).unsqueeze(0) + 3  # distinctive values, within any context of >= T + 3
    inputs = _input_embeddings(model)
    found: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Embedding) and module is not inputs and module.num_embeddings > 3 + ids.shape[1]:

            def hook(_module: torch.nn.Module, args: tuple, _name: str = name) -> None:
                if (
                    args
                    and isinstance(args[0], torch.Tensor)
                    and torch.equal(args[0].reshape(-1), positions.reshape(-1))
                ):
                    found.append(_name)

            handles.append(module.register_forward_pre_hook(hook))
    if not handles:
        return None
    try:
        model(**_kwargs(facts, ids=ids, mask=torch.ones_like(ids), positions=positions, decoder_ids=ids))
    except Exception:  # noqa: BLE001 - positions beyond what the model allows: no learned table found this way
        return None
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


# --- calls, outputs and caches ---------------------------------------------------------------------------

_UNSET: Any = object()


def _kwargs(
    facts: ModelFacts,
    *,
    ids: torch.Tensor | None = None,
    embeds: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    positions: torch.Tensor | None = None,
    decoder_ids: torch.Tensor | None = None,
    decoder_embeds: torch.Tensor | None = None,
    cache: Any = _UNSET,
    use_cache: bool | None = None,
) -> dict[str, Any]:
    """The keyword arguments of one forward call, only those the model takes."""
    kwargs: dict[str, Any] = {}
    if embeds is not None:
        kwargs["inputs_embeds"] = embeds
    elif ids is not None:
        kwargs["input_ids"] = ids
    if mask is not None:
        kwargs["attention_mask"] = mask
    if positions is not None and facts.position_ids:
        kwargs["position_ids"] = positions
    if facts.encoder_decoder:
        if decoder_embeds is not None:
            kwargs["decoder_inputs_embeds"] = decoder_embeds
        elif decoder_ids is not None:
            kwargs["decoder_input_ids"] = decoder_ids
    if cache is not _UNSET and facts.cache_argument:
        kwargs[facts.cache_argument] = cache
    if use_cache is not None and facts.use_cache:
        kwargs["use_cache"] = use_cache
    return kwargs


def _primary(output: Any) -> torch.Tensor:
    """The primary output tensor: the logits, else the last hidden states."""
    if isinstance(output, torch.Tensor):
        return output
    for key in ("logits", "last_hidden_state"):
        value = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"cannot find logits or last_hidden_state in a forward output of type {type(output).__name__}")


def _returned_cache(output: Any, facts: ModelFacts) -> Any:
    """The cache a forward called with use_cache=True returned (None if it returned none)."""
    for key in dict.fromkeys((facts.cache_argument, *CACHE_ARGUMENTS)):
        if isinstance(output, Mapping):
            value = output.get(key)
        else:
            value = getattr(output, key, None)
        if value is not None:
            return value
    return None


def _continued(output: Any, facts: ModelFacts, cache: Any) -> Any:
    """The cache to continue from: the one returned, or the one given (a cache updated in place may return None)."""
    returned = _returned_cache(output, facts)
    return cache if returned is None else returned


def _cache_tensors(cache: Any, *, depth: int = 0, seen: set[int] | None = None) -> list[torch.Tensor]:
    """Every tensor a cache object holds (Cache objects, tuples of (k, v), dicts), in a fixed order."""
    seen = set() if seen is None else seen
    if isinstance(cache, torch.Tensor):
        return [cache]
    if depth > 6 or cache is None or id(cache) in seen or isinstance(cache, (type, str, bytes, int, float, bool)):
        return []
    seen.add(id(cache))
    if isinstance(cache, Mapping):
        items = list(cache.values())
    elif isinstance(cache, (list, tuple)):
        items = list(cache)
    elif isinstance(cache, torch.nn.Module) or not hasattr(cache, "__dict__"):
        return []  # a module is the model's, not the cache's; an object without attributes holds no tensors
    else:
        items = [value for key, value in vars(cache).items() if key != "config"]
    return [tensor for item in items for tensor in _cache_tensors(item, depth=depth + 1, seen=seen)]


def _snapshot(cache: Any) -> list[torch.Tensor]:
    return [tensor.detach().clone() for tensor in _cache_tensors(cache)]


def _unchanged(before: list[torch.Tensor], cache: Any) -> bool:
    after = _cache_tensors(cache)
    return len(before) == len(after) and all(
        old.shape == new.shape and torch.equal(old, new) for old, new in zip(before, after, strict=True)
    )


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Generation's positions: real tokens counted from 0, padding at 0."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)


def _token_batch(spec: ModelSpec, batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """(B, T) ids from the spec's vocabulary, never the pad id (so a real token never looks like padding)."""
    vocab, pad = spec.inputs.vocab_size, spec.inputs.pad_id
    ids = torch.randint(0, vocab - 1, (batch, length), generator=generator)
    return ids + (ids >= pad).long()  # skips pad: uniform over the other vocab - 1 ids


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _left_padding(lengths: list[int], width: int) -> torch.Tensor:
    """(B, width) mask with each row's real tokens at the right end."""
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, length in enumerate(lengths):
        mask[row, width - length :] = 1
    return mask


def _real(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The entries of (B, T, ...) outputs at real positions (mask 1), flattened to (N, ...); for outputs without a
    length dimension ((B,) scores, (B, K) pooled logits), the rows that hold a real token."""
    if mask is None:
        return values
    if values.dim() >= 2 and tuple(values.shape[:2]) == tuple(mask.shape):
        return values[mask.bool()]
    return values[mask.bool().any(-1)]


def _tolerance_text(tolerance: Tolerance) -> str:
    return f"atol={tolerance.atol:g} + rtol={tolerance.rtol:g}*|ref|"


def _worst(outcome_worst: float) -> float:
    return float(outcome_worst) if math.isfinite(outcome_worst) else float("inf")


# --- requirements ------------------------------------------------------------------------------------------


def _with_facts(rule: Callable[[ModelSpec, ModelFacts], str | None]) -> Callable[[ModelSpec], str | None]:
    """A requirement that reads the model's facts; where they are unknown (the build or a probe raised) the check
    applies, so it runs and reports what the model does."""

    @functools.wraps(rule)
    def requirement(spec: ModelSpec) -> str | None:
        facts = model_facts(spec)
        if facts is None:
            return f"task {spec.task} has no token sequences"
        return None if facts.error else rule(spec, facts)

    return requirement


def _language_model(facts: ModelFacts, spec: ModelSpec) -> str | None:
    if not spec.capabilities.is_causal:
        return "the model does not declare itself causal: it does not decode token by token"
    if not facts.vocabulary_logits:
        return f"the forward returns no (batch, length, vocab_size={spec.inputs.vocab_size}) logits: no language-model head"
    return None


@_with_facts
def needs_kv_cache(spec: ModelSpec, facts: ModelFacts) -> str | None:
    if not facts.cache_argument or not facts.use_cache:
        return "the forward takes no key/value cache (no `cache`/`past_key_values` parameter with `use_cache`)"
    return _language_model(facts, spec)


@_with_facts
def needs_greedy_decoding(spec: ModelSpec, facts: ModelFacts) -> str | None:
    if not spec.capabilities.has_attention_mask:
        return "the model declares no attention mask: prompts of different lengths cannot be batched"
    return _language_model(facts, spec)


@_with_facts
def needs_attention_backends(spec: ModelSpec, facts: ModelFacts) -> str | None:
    if facts.current_backend is None:
        return "the model has no config._attn_implementation: it has one attention kernel"
    if not facts.backends:
        return f"config._attn_implementation={facts.current_backend!r}, but no set_attn_implementation() to switch it"
    if len(facts.backends) < 2:
        return f"set_attn_implementation accepts only {facts.backends[0]} of {', '.join(BACKENDS)}: nothing to compare"
    return None


@_with_facts
def needs_inputs_embeds(spec: ModelSpec, facts: ModelFacts) -> str | None:
    if not facts.inputs_embeds:
        return "the forward takes no inputs_embeds"
    if not facts.embeddings:
        return "the forward takes inputs_embeds but the model has no get_input_embeddings() to embed ids with"
    return None


@_with_facts
def needs_packing(spec: ModelSpec, facts: ModelFacts) -> str | None:
    if not adapter_for(spec).per_token_outputs:
        return "the outputs are pooled (no per-token outputs a document could be read back from)"
    if facts.encoder_decoder:
        return "an encoder-decoder: documents are packed into decoder-only and encoder models"
    if not facts.position_ids:
        return "the forward takes no position_ids, so positions cannot restart at each document"
    if not spec.capabilities.has_attention_mask:
        return "the model declares no attention mask"
    if min(PACKED_LENGTH, spec.inputs.max_length) < 2 * max(1, spec.inputs.min_length):
        return f"two documents of min_length={spec.inputs.min_length} do not fit max_length={spec.inputs.max_length}"
    if not facts.packing:
        return f"the model cannot be told document boundaries: {facts.packing_refusal}"
    return None


def needs_tokenizer(spec: ModelSpec) -> str | None:
    if spec.tokenizer is None:
        return "the spec has no tokenizer"
    return None if adapter_for(spec).sequence else f"task {spec.task} takes no token ids"


@_with_facts
def needs_tied_embeddings(spec: ModelSpec, facts: ModelFacts) -> str | None:
    if facts.tie or facts.tie_claimed:
        return None
    return f"the model does not tie its input and output embeddings: {facts.untied_because}"


def _facts_for_check(spec: ModelSpec) -> ModelFacts:
    facts = model_facts(spec)
    if facts is None or facts.error:
        raise RuntimeError(f"cannot tell what the model accepts: {facts.error if facts else 'no facts'}")
    return facts


# --- cache_consistency -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CacheCase:
    """One cached decode: a prefix forward, a chunk, then one-token steps, against one full forward."""

    batch_size: int
    length: int  # tokens in all (decoder tokens for an encoder-decoder)
    prefix: int  # tokens of the first forward (use_cache=True)
    chunk: int  # tokens of the second forward, given the cache; one-token steps follow
    padding: int  # left padding of the longest-padded row (0: no attention mask is passed)
    explicit_positions: bool  # positions passed as cumsum(mask) - 1; otherwise the model derives them
    seed: int


def _cache_cases(spec: ModelSpec, facts: ModelFacts) -> st.SearchStrategy[CacheCase]:
    high = max(2, min(CACHE_LENGTH, spec.inputs.max_length))
    low = max(2, spec.inputs.min_length)
    batch_high = min(4, spec.inputs.max_batch_size)

    @st.composite
    def cases(draw: st.DrawFn) -> CacheCase:
        batch = draw(st.integers(1, batch_high))
        masked = spec.capabilities.has_attention_mask and draw(st.booleans())
        padding = draw(st.integers(1, max(1, high // 3))) if masked else 0
        length = draw(st.integers(min(high, max(low, padding + 2)), high))
        prefix = draw(st.integers(min(length - 1, max(padding + 1, spec.inputs.min_length)), length - 1))
        chunk = draw(st.integers(1, length - prefix))
        explicit = masked and facts.position_ids and draw(st.booleans())
        return CacheCase(batch, length, prefix, chunk, padding, explicit, draw(SEEDS))

    return cases()


def _cache_explicit(spec: ModelSpec, facts: ModelFacts, seed: int) -> list[CacheCase]:
    high = max(2, min(CACHE_LENGTH, spec.inputs.max_length))
    first = max(1, spec.inputs.min_length)
    batch = min(2, spec.inputs.max_batch_size)
    cases = [CacheCase(batch, high, min(first, high - 1), 1, 0, False, seed)]  # one-token steps from the start
    if spec.capabilities.has_attention_mask and high >= 4:
        padding = max(1, high // 4)
        prefix = min(high - 1, max(padding + 1, spec.inputs.min_length))
        cases.append(CacheCase(batch, high, prefix, 2, padding, facts.position_ids, seed))  # left padding
        cases.append(CacheCase(batch, high, prefix, 1, padding, False, seed))  # padding, positions left to the model
    return cases


def _decoder_only_cache(
    spec: ModelSpec, model: torch.nn.Module, facts: ModelFacts, case: CacheCase, tolerance: Tolerance
) -> tuple[Comparison, bool, str]:
    """(the comparison at real positions, whether a forward not given the cache left it untouched, layout)."""
    generator = _generator(case.seed)
    ids = _token_batch(spec, case.batch_size, case.length, generator)  # (B, T)
    mask = None
    if case.padding:
        pads = [case.padding * row // max(1, case.batch_size - 1) for row in range(case.batch_size)]
        pads[-1] = case.padding
        mask = _left_padding([case.length - pad for pad in pads], case.length)  # (B, T)
        ids = ids.masked_fill(mask == 0, spec.inputs.pad_id)
    positions = _positions(mask) if mask is not None and case.explicit_positions else None

    def window(tensor: torch.Tensor | None, start: int, stop: int) -> torch.Tensor | None:
        return None if tensor is None else tensor[:, start:stop]

    full = _primary(model(**_kwargs(facts, ids=ids, mask=mask, positions=positions, use_cache=False)))  # (B, T, V)
    out = model(
        **_kwargs(facts, ids=ids[:, : case.prefix], mask=window(mask, 0, case.prefix),
                  positions=window(positions, 0, case.prefix), use_cache=True)
    )  # fmt: skip
    cache = _returned_cache(out, facts)
    if cache is None:
        raise Violation(float("inf"), "a forward with use_cache=True returned no cache")
    pieces = [_primary(out)]
    before = _snapshot(cache)
    other = _token_batch(spec, case.batch_size, case.prefix, generator)
    model(**_kwargs(facts, ids=other, use_cache=True))  # a forward that is not given the cache
    untouched = _unchanged(before, cache)
    start = case.prefix
    while start < case.length:
        stop = min(case.length, start + (case.chunk if start == case.prefix else 1))
        out = model(
            **_kwargs(facts, ids=ids[:, start:stop], mask=window(mask, 0, stop), positions=window(positions, start, stop),
                      cache=cache, use_cache=True)
        )  # fmt: skip
        cache = _continued(out, facts, cache)
        pieces.append(_primary(out))
        start = stop
    stepped = torch.cat(pieces, dim=1)  # (B, T, V)
    layout = (
        f"{case.batch_size}x{case.length}, prefix {case.prefix}, chunk {case.chunk}, "
        + (f"left padding up to {case.padding} ({'positions passed' if positions is not None else 'positions derived'})"
           if case.padding else "no mask")
    )  # fmt: skip
    return compare(_real(stepped, mask), _real(full, mask), tolerance), untouched, layout


def _encoder_decoder_cache(
    spec: ModelSpec, model: torch.nn.Module, facts: ModelFacts, case: CacheCase, tolerance: Tolerance
) -> tuple[Comparison, bool, str]:
    generator = _generator(case.seed)
    source_length = max(spec.inputs.min_length, min(case.length, spec.inputs.max_length))
    source = _token_batch(spec, case.batch_size, source_length, generator)  # (B, S)
    mask = None
    if case.padding:  # the source is padded (on the right, masked); the decoder stream has no padding
        mask = torch.ones_like(source)
        keep = max(1, source_length - case.padding)
        mask[-1, keep:] = 0
        source = source.masked_fill(mask == 0, spec.inputs.pad_id)
    decoder = _token_batch(spec, case.batch_size, case.length, generator)  # (B, T)
    encoder = {"ids": source, "mask": mask}
    full = _primary(model(**_kwargs(facts, **encoder, decoder_ids=decoder, use_cache=False)))  # (B, T, V)
    out = model(**_kwargs(facts, **encoder, decoder_ids=decoder[:, : case.prefix], use_cache=True))
    cache = _returned_cache(out, facts)
    if cache is None:
        raise Violation(float("inf"), "a forward with use_cache=True returned no cache")
    pieces = [_primary(out)]
    before = _snapshot(cache)
    model(**_kwargs(facts, ids=_token_batch(spec, case.batch_size, source_length, generator),
                    decoder_ids=decoder[:, : case.prefix].flip(0), use_cache=True))  # fmt: skip
    untouched = _unchanged(before, cache)
    start = case.prefix
    while start < case.length:
        stop = min(case.length, start + (case.chunk if start == case.prefix else 1))
        out = model(**_kwargs(facts, **encoder, decoder_ids=decoder[:, start:stop], cache=cache, use_cache=True))
        cache = _continued(out, facts, cache)
        pieces.append(_primary(out))
        start = stop
    layout = (
        f"{case.batch_size} sources of {source_length}{' (one right-padded)' if case.padding else ''}, "
        f"{case.length} decoder tokens, prefix {case.prefix}, chunk {case.chunk}"
    )
    return compare(torch.cat(pieces, dim=1), full, tolerance), untouched, layout


@register(1, needs_kv_cache)
def check_cache_consistency(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """A prefix forward plus chunked and one-token steps through the returned cache equal one full forward, and a forward not given a cache leaves it unchanged."""
    facts = _facts_for_check(spec)
    tolerance = tolerance_for(options.dtype, "eager")
    run = _encoder_decoder_cache if facts.encoder_decoder else _decoder_only_cache
    model.eval()
    mutated: list[str] = []

    @torch.no_grad()
    def body(case: CacheCase) -> float:
        with _quiet():
            comparison, untouched, layout = run(spec, model, facts, case, tolerance)
        if not untouched:
            mutated.append(layout)
            raise Violation(
                float("inf"), f"a forward that was not given the cache changed it ({layout}): caches are shared state"
            )
        if not comparison.within:
            raise Violation(
                comparison.max_abs, f"cached steps differ from the full forward by {comparison.max_abs:.3g} ({layout})"
            )
        return comparison.max_abs

    outcome = fuzz(_cache_cases(spec, facts), body, explicit=_cache_explicit(spec, facts, options.seed), max_examples=8)
    return verdict(
        spec,
        "cache_consistency",
        passed=outcome.passed,
        measured=_worst(outcome.worst),
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"logits through the cache within {_tolerance_text(tolerance)} of the full forward at every real "
        "position, and caches unchanged by forwards not given them",
        got=outcome.failure or f"max |difference| {outcome.worst:.3g} over {outcome.examples} cached decodes",
        hint="Look at how positions are derived from the cache length (an off-by-one, or positions restarting at 0 "
        "on each step), whether the attention mask reaches the cached keys, and whether a cache object is reused "
        "across calls.",
        sample_size=outcome.examples,
        seed=options.seed,
        details={
            "cache_argument": facts.cache_argument,
            "encoder_decoder": facts.encoder_decoder,
            "mutated_by_unrelated_forward": mutated[:3],
            "failing_example": repr(outcome.failing_example) if outcome.failing_example else None,
        },
    )


# --- generation_equivalence --------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationCase:
    prompt_lengths: tuple[int, ...]  # one prompt per row (sources, for an encoder-decoder)
    steps: int  # new tokens
    seed: int


@dataclass
class Decoded:
    tokens: torch.Tensor  # (B, N) chosen tokens; -1 where generate() had stopped
    logits: torch.Tensor | None  # (B, N, V) float64 logits each token was chosen from (harness loops only)


def _generation_bounds(spec: ModelSpec) -> tuple[int, int, int]:
    """(shortest prompt, longest prompt, steps) within the spec's input space."""
    low = max(1, spec.inputs.min_length)
    steps = max(1, min(GENERATION_STEPS, spec.inputs.max_length - low))
    high = max(low, min(GENERATION_PROMPT, spec.inputs.max_length - steps))
    return low, high, steps


def _generation_cases(spec: ModelSpec) -> st.SearchStrategy[GenerationCase]:
    low, high, steps = _generation_bounds(spec)
    batch_high = min(4, spec.inputs.max_batch_size)
    lengths = st.lists(st.integers(low, high), min_size=2, max_size=batch_high).map(tuple)
    return st.builds(GenerationCase, lengths, st.integers(1, steps), SEEDS)


def _greedy_rows(
    model: torch.nn.Module, facts: ModelFacts, spec: ModelSpec, ids: torch.Tensor, mask: torch.Tensor, steps: int,
    *, use_cache: bool,
) -> Decoded:  # fmt: skip
    """Greedy decoding of one (left-padded) batch by the harness's own loop over the model's forward."""
    tokens, logits = [], []
    cache = None
    start = facts.decoder_start if facts.decoder_start is not None else spec.inputs.pad_id
    stream = torch.full((ids.shape[0], 1), start, dtype=torch.long) if facts.encoder_decoder else ids
    stream_mask = mask
    for _ in range(steps):
        step_cache = cache if use_cache and cache is not None else _UNSET
        if facts.encoder_decoder:
            fed = stream[:, -1:] if step_cache is not _UNSET else stream
            kwargs = _kwargs(facts, ids=ids, mask=mask, decoder_ids=fed, cache=step_cache, use_cache=use_cache)
        else:
            positions = _positions(stream_mask)
            fed = slice(-1, None) if step_cache is not _UNSET else slice(None)
            kwargs = _kwargs(facts, ids=stream[:, fed], mask=stream_mask, positions=positions[:, fed],
                             cache=step_cache, use_cache=use_cache)  # fmt: skip
        out = model(**kwargs)
        if use_cache:
            cache = _returned_cache(out, facts)
            if cache is None:
                raise RuntimeError("a forward with use_cache=True returned no cache")
        step = _primary(out)[:, -1].double()  # (B, V)
        chosen = step.argmax(-1, keepdim=True)  # (B, 1)
        tokens.append(chosen)
        logits.append(step)
        stream = torch.cat([stream, chosen], dim=1)
        if not facts.encoder_decoder:
            stream_mask = torch.cat([stream_mask, torch.ones_like(chosen)], dim=1)
    return Decoded(torch.cat(tokens, dim=1), torch.stack(logits, dim=1))


def _generate_rows(
    model: torch.nn.Module, facts: ModelFacts, spec: ModelSpec, ids: torch.Tensor, mask: torch.Tensor, steps: int,
    *, use_cache: bool,
) -> Decoded:  # fmt: skip
    """Greedy decoding of one (left-padded) batch by the model's own ``generate``."""
    kwargs: dict[str, Any] = {
        "input_ids": ids,
        "attention_mask": mask,
        "max_new_tokens": steps,
        "do_sample": False,
        "num_beams": 1,
        "use_cache": use_cache,
        "pad_token_id": spec.inputs.pad_id,
    }
    accepted = inspect.signature(model.generate).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        kwargs = {key: value for key, value in kwargs.items() if key in accepted}  # a generate() of its own
    out = model.generate(**kwargs)
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    new = sequences[:, 1:] if facts.encoder_decoder else sequences[:, ids.shape[1] :]
    tokens = torch.full((ids.shape[0], steps), -1, dtype=torch.long)
    tokens[:, : min(steps, new.shape[1])] = new[:, :steps]
    return Decoded(tokens, None)


def _decode(
    model: torch.nn.Module, facts: ModelFacts, spec: ModelSpec, prompts: list[torch.Tensor], steps: int, *,
    batched: bool, use_cache: bool, driver: str,
) -> Decoded:  # fmt: skip
    run = _generate_rows if driver == "generate" else _greedy_rows
    groups = [prompts] if batched else [[prompt] for prompt in prompts]
    decoded = []
    for group in groups:
        width = max(len(prompt) for prompt in group)
        mask = _left_padding([len(prompt) for prompt in group], width)  # (B, P)
        if facts.encoder_decoder:  # the source is read whole by the encoder: padded on the right, as its
            mask = mask.flip(1)  # tokenizer pads it (absolute source positions then never shift)
        ids = torch.full((len(group), width), spec.inputs.pad_id, dtype=torch.long)
        for row, prompt in enumerate(group):
            ids[row, mask[row].bool()] = prompt
        decoded.append(run(model, facts, spec, ids, mask, steps, use_cache=use_cache))
    logits = None if decoded[0].logits is None else torch.cat([d.logits for d in decoded])
    return Decoded(torch.cat([d.tokens for d in decoded]), logits)


def _token_differences(
    path: str, reference: Decoded, got: Decoded, tolerance: Tolerance, *, stop_at: tuple[int, ...]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(mismatches, ties) of ``got`` against ``reference``: the first differing token of each row. A difference is a
    tie when the reference scored the other path's token within the tolerance of its own choice."""
    mismatches, ties = [], []
    for row in range(reference.tokens.shape[0]):
        for step in range(reference.tokens.shape[1]):
            expected, chosen = int(reference.tokens[row, step]), int(got.tokens[row, step])
            if expected != chosen:
                scores = reference.logits[row, step]  # (V,)
                best = float(scores[expected])
                gap = best - float(scores[chosen]) if chosen >= 0 else float("inf")
                top2 = scores.topk(2).values
                entry = {
                    "path": path,
                    "row": row,
                    "step": step,
                    "expected": expected,
                    "got": chosen,
                    "gap": gap,  # reference logit of its token minus that of the other path's token
                    "top2_margin": float(top2[0] - top2[1]),
                }
                (ties if gap <= tolerance.atol + tolerance.rtol * abs(best) else mismatches).append(entry)
                break  # the continuations differ from here on: nothing later is comparable
            if stop_at and expected in stop_at:
                break  # generate() stops a row at eos; what follows is padding
    return mismatches, ties


@register(1, needs_greedy_decoding)
def check_generation_equivalence(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Greedy decoding of a padded batch (left-padded prompts; right-padded sources of an encoder-decoder) equals decoding each prompt alone, with and without the cache, through the harness's loop and generate()."""
    facts = _facts_for_check(spec)
    tolerance = tolerance_for(options.dtype, "eager")
    model.eval()
    paths = [("batched", True, False, "loop")]
    if facts.cache_argument and facts.use_cache:
        paths += [("cached", False, True, "loop"), ("batched+cached", True, True, "loop")]
    generate_note = None
    if facts.generate and not facts.generate_processors:
        paths.append(("batched generate", True, False, "generate"))  # alone, generate() is the loop's twin
        if facts.cache_argument:
            paths.append(("batched+cached generate", True, True, "generate"))
    elif facts.generate:
        generate_note = (
            f"generate() not compared: its generation_config sets {', '.join(facts.generate_processors)}, "
            "which move greedy tokens off the plain argmax"
        )
    found: dict[str, list[dict[str, Any]]] = {"mismatches": [], "ties": []}
    smallest_margin = [math.inf]
    drift = [0.0]  # largest logit difference of a harness-loop path that chose the reference's tokens

    @torch.no_grad()
    def body(case: GenerationCase) -> float:
        generator = _generator(case.seed)
        prompts = [_token_batch(spec, 1, length, generator)[0] for length in case.prompt_lengths]
        with _quiet():
            reference = _decode(model, facts, spec, prompts, case.steps, batched=False, use_cache=False, driver="loop")
            top2 = reference.logits.topk(2, dim=-1).values  # (B, N, 2)
            smallest_margin[0] = min(smallest_margin[0], float((top2[..., 0] - top2[..., 1]).min()))
            mismatches = []
            for name, batched, use_cache, driver in paths:
                try:
                    got = _decode(model, facts, spec, prompts, case.steps, batched=batched, use_cache=use_cache,
                                  driver=driver)  # fmt: skip
                except Exception as error:  # noqa: BLE001 - a decoding path that crashes fails the check, named
                    where = traceback.extract_tb(error.__traceback__)[-1]
                    raise Violation(
                        float("inf"),
                        f"{name} decoding of prompts of lengths {list(case.prompt_lengths)} raised "
                        f"{type(error).__name__}: {error} (at {where.filename}:{where.lineno})",
                    ) from error
                stop_at = facts.eos_ids if driver == "generate" else ()
                wrong, ties = _token_differences(name, reference, got, tolerance, stop_at=stop_at)
                if got.logits is not None and not wrong and not ties:  # same tokens: how close were the logits?
                    drift[0] = max(drift[0], float((got.logits - reference.logits).abs().max()))
                mismatches += wrong
                found["ties"] += [{**tie, "prompt_lengths": list(case.prompt_lengths)} for tie in ties]
        if mismatches:
            found["mismatches"] += [{**m, "prompt_lengths": list(case.prompt_lengths)} for m in mismatches]
            first = mismatches[0]
            raise Violation(
                float(len(mismatches)),
                f"{first['path']} decoding of prompts of lengths {list(case.prompt_lengths)} chose token "
                f"{first['got']} at step {first['step']} of row {first['row']} where decoding it alone chose "
                f"{first['expected']} (reference logit gap {first['gap']:.3g}, top-2 margin {first['top2_margin']:.3g}; "
                f"{len(mismatches)} (path, row) pairs differ over {len(paths)} paths)",
            )
        return 0.0

    low, high, steps = _generation_bounds(spec)
    batch = min(3, spec.inputs.max_batch_size)
    explicit = [GenerationCase(tuple(low if row % 2 else high for row in range(batch)), steps, options.seed)]
    outcome = fuzz(_generation_cases(spec), body, explicit=explicit, max_examples=3)
    names = ", ".join(name for name, *_ in paths)
    ties = found["ties"]
    got = outcome.failure or (
        f"every path ({names}) chose the same tokens over {outcome.examples} prompt batches"
        + (f"; {len(ties)} exact near-ties (logit gap <= {tolerance.atol:g}) counted as ties" if ties else "")
    )
    return verdict(
        spec,
        "generation_equivalence",
        passed=outcome.passed,
        measured=_worst(outcome.worst) if not outcome.passed else 0.0,  # differing (path, row) pairs; inf: a crash
        threshold=0.0,
        tolerance=tolerance.as_dict(),
        expected=f"0 differing tokens against each prompt decoded alone without cache, over {names} (a token whose "
        f"reference logit is within {_tolerance_text(tolerance)} of the chosen one is a tie, not a difference)",
        got=got,
        hint="Left padding must not shift positions (derive them from the attention mask), the mask must reach "
        "cached keys, and generate() must pass the mask and positions on.",
        sample_size=outcome.examples,
        seed=options.seed,
        details={
            "paths": [name for name, *_ in paths],
            "mismatches": found["mismatches"][:5],
            "ties": ties[:5],
            "smallest_top2_margin": smallest_margin[0] if math.isfinite(smallest_margin[0]) else None,
            "max_logit_difference": drift[0],
            "generate": generate_note or ("compared" if facts.generate else "the model has no generate()"),
            "failing_example": repr(outcome.failing_example) if outcome.failing_example else None,
        },
    )


# --- attention_backend_equivalence -------------------------------------------------------------------------


def _padded_batches(
    spec: ModelSpec, facts: ModelFacts, options: CheckOptions
) -> list[tuple[str, dict[str, Any], torch.Tensor | None]]:
    """(layout, forward kwargs, mask of the outputs to compare) for each padding layout."""
    length = max(spec.inputs.min_length, min(BACKEND_LENGTH, spec.inputs.max_length))
    batch = min(3, spec.inputs.max_batch_size)
    generator = _generator(options.seed + 31)
    ids = _token_batch(spec, batch, length, generator)  # (B, T)
    decoder = _token_batch(spec, batch, length, generator) if facts.encoder_decoder else None
    pad = max(1, length // 3) if length > spec.inputs.min_length else 0
    masks = {"no padding": torch.ones_like(ids)}
    if spec.capabilities.has_attention_mask and pad:
        right = torch.ones_like(ids)
        right[1 % batch, length - pad :] = 0
        left = torch.ones_like(ids)
        left[-1, :pad] = 0
        masks["right and left padding"] = right * left
        empty = torch.ones_like(ids)
        empty[-1] = 0
        masks["a fully masked row"] = empty
    layouts = []
    for layout, mask in masks.items():
        kwargs = _kwargs(
            facts, ids=ids.masked_fill(mask == 0, spec.inputs.pad_id), mask=mask, positions=_positions(mask),
            decoder_ids=decoder, use_cache=False,
        )  # fmt: skip
        compared = None if facts.encoder_decoder else mask.clone()
        if compared is not None and layout == "a fully masked row":
            compared[-1] = 0  # its outputs are compared for finiteness only
        rows = torch.ones(batch, dtype=torch.bool)
        if facts.encoder_decoder and layout == "a fully masked row":
            rows[-1] = False
            compared = rows.unsqueeze(1).expand(batch, length).long()
        layouts.append((layout, kwargs, compared))
    return layouts


def _with_backend(model: torch.nn.Module, name: str) -> torch.nn.Module:
    model.set_attn_implementation(name)
    return model


@register(1, needs_attention_backends)
def check_attention_backend_equivalence(
    spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions
) -> CheckResult:
    """Outputs and gradients agree across the attention implementations the model accepts, over padding layouts including a fully masked row, with no NaN."""
    facts = _facts_for_check(spec)
    tolerance = tolerance_for(options.dtype, "eager")
    reference_name = "eager" if "eager" in facts.backends else facts.backends[0]
    others = [name for name in facts.backends if name != reference_name]
    layouts = _padded_batches(spec, facts, options)
    model.eval()
    worst: dict[str, float] = {}
    problems: list[str] = []
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    gradients: dict[str, dict[str, torch.Tensor]] = {}
    with _quiet():
        for name in [reference_name, *others]:
            _with_backend(model, name)
            with torch.no_grad():
                for layout, kwargs, _ in layouts:
                    outputs[name, layout] = _primary(model(**kwargs)).double()
            if not spec.capabilities.supports_training:
                continue  # a model that is not trained has no gradients to agree on
            # gradients of a fixed random projection of the outputs on the padded layout (real positions only)
            layout, kwargs, compared = layouts[1] if len(layouts) > 1 else layouts[0]
            model.zero_grad(set_to_none=True)
            out = _primary(model(**kwargs))
            weights = torch.randn(out.shape, generator=_generator(options.seed + 37))
            scored = out * weights if compared is None else _real(out * weights, compared)
            scored.sum().backward()
            gradients[name] = {
                parameter_name: parameter.grad.detach().clone()
                for parameter_name, parameter in model.named_parameters()
                if parameter.grad is not None
            }
    for name in [reference_name, *others]:
        for layout, _, _ in layouts:
            non_finite = int((~torch.isfinite(outputs[name, layout])).sum())
            if non_finite:
                problems.append(f"{name} gave {non_finite} non-finite outputs with {layout}")
    # gradients sum over the batch: both sides are divided by the largest reference gradient element, so the
    # tolerance applies at unit scale (per parameter would blow up noise: a key bias has an exactly zero gradient)
    scale = max((float(g.abs().max()) for g in gradients.get(reference_name, {}).values()), default=0.0) or 1.0
    for name in others:
        for layout, _, compared in layouts:
            comparison = compare(
                _real(outputs[name, layout], compared), _real(outputs[reference_name, layout], compared), tolerance
            )
            worst[f"{name} outputs, {layout}"] = comparison.max_abs
            if not comparison.within:
                problems.append(
                    f"{name} outputs differ from {reference_name}'s by {comparison.max_abs:.3g} with {layout}"
                )
        if not gradients:
            continue
        missing = sorted(set(gradients[reference_name]) ^ set(gradients[name]))
        if missing:
            problems.append(f"{name} leaves {len(missing)} parameters without the gradient {reference_name} gives")
        for parameter_name in sorted(set(gradients[reference_name]) & set(gradients[name])):
            reference = gradients[reference_name][parameter_name]
            # at unit scale the atol is absolute, also for a half-precision row (per RMS of one parameter: noise)
            unit = replace(tolerance, per_rms=False)
            comparison = compare(gradients[name][parameter_name] / scale, reference / scale, unit)
            key = f"{name} gradients"
            worst[key] = max(worst.get(key, 0.0), comparison.max_abs)
            if not comparison.within:
                problems.append(
                    f"{name} gradient of {parameter_name} differs from {reference_name}'s by {comparison.max_abs:.3g} "
                    "of its largest element"
                )
                break
    measured = max(worst.values(), default=0.0)
    if any("non-finite" in problem for problem in problems):
        measured = float("inf")
    compared_names = " vs ".join([reference_name, *others])
    return verdict(
        spec,
        "attention_backend_equivalence",
        passed=not problems,
        measured=measured,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"{compared_names}: finite outputs{' and gradients' if gradients else ''} within {_tolerance_text(tolerance)} over "
        f"{', '.join(layout for layout, _, _ in layouts)}",
        got="; ".join(problems[:4])
        or f"{compared_names}: max |difference| {measured:.3g} (outputs{' and gradients' if gradients else ''}), all finite",
        hint="A kernel that drops or inverts the padding mask, scales scores differently, or turns a fully masked "
        "row into NaN; compare the mask each implementation receives.",
        sample_size=len(layouts) * (1 + len(others)),
        seed=options.seed,
        details={
            "backends": [reference_name, *others],
            "worst": worst,
            "gradients_compared": bool(gradients),
            "problems": problems[:10],
        },  # fmt: skip
    )


# --- inputs_embeds_equivalence -----------------------------------------------------------------------------


def _decoder_embeddings(model: torch.nn.Module) -> torch.nn.Module | None:
    decoder = getattr(model, "get_decoder", None)
    if callable(decoder):
        found = _input_embeddings(decoder())
        if found is not None:
            return found
    return _input_embeddings(model)


@register(1, needs_inputs_embeds)
def check_inputs_embeds_equivalence(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """forward(inputs_embeds=embed(input_ids)) equals forward(input_ids), with the mask and positions."""
    facts = _facts_for_check(spec)
    tolerance = tolerance_for(options.dtype, "eager")
    length = max(spec.inputs.min_length, min(CACHE_LENGTH, spec.inputs.max_length))
    batch = min(3, spec.inputs.max_batch_size)
    generator = _generator(options.seed + 41)
    ids = _token_batch(spec, batch, length, generator)
    decoder = _token_batch(spec, batch, length, generator) if facts.encoder_decoder else None
    layouts: dict[str, torch.Tensor | None] = {"no mask": None, "no padding": torch.ones_like(ids)}
    pad = max(1, length // 4) if length > spec.inputs.min_length else 0
    if spec.capabilities.has_attention_mask and pad:
        left = torch.ones_like(ids)
        left[-1, :pad] = 0
        right = torch.ones_like(ids)
        right[0, length - pad :] = 0
        layouts["left padding"], layouts["right padding"] = left, right
    model.eval()
    embed = _input_embeddings(model)
    decoder_embed = _decoder_embeddings(model) if facts.encoder_decoder and facts.decoder_inputs_embeds else None
    worst: dict[str, float] = {}
    problems: list[str] = []
    with torch.no_grad(), _quiet():
        for layout, mask in layouts.items():
            row_ids = ids if mask is None else ids.masked_fill(mask == 0, spec.inputs.pad_id)
            positions = None if mask is None else _positions(mask)
            base = {"mask": mask, "positions": positions, "use_cache": False}
            reference = _primary(model(**_kwargs(facts, ids=row_ids, decoder_ids=decoder, **base)))
            routes = {"inputs_embeds": _kwargs(facts, embeds=embed(row_ids), decoder_ids=decoder, **base)}
            if decoder_embed is not None:
                routes["decoder_inputs_embeds"] = _kwargs(
                    facts, ids=row_ids, decoder_embeds=decoder_embed(decoder), **base
                )
            compared = None if facts.encoder_decoder or mask is None else mask
            for route, kwargs in routes.items():
                out = _primary(model(**kwargs))
                comparison = compare(_real(out, compared), _real(reference, compared), tolerance)
                worst[f"{route}, {layout}"] = comparison.max_abs
                if not comparison.within:
                    problems.append(f"{route} differs from input_ids by {comparison.max_abs:.3g} with {layout}")
    measured = max(worst.values())
    return verdict(
        spec,
        "inputs_embeds_equivalence",
        passed=not problems,
        measured=measured,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"outputs from embed(input_ids) within {_tolerance_text(tolerance)} of those from input_ids "
        f"({', '.join(layouts)})",
        got="; ".join(problems[:4]) or f"max |difference| {measured:.3g} over {len(worst)} comparisons",
        hint="The inputs_embeds branch skips something the input_ids branch does: position embeddings, embedding "
        "scaling, token-type embeddings, or the positions derived from the mask.",
        sample_size=len(worst) * batch,
        seed=options.seed,
        details={"worst": worst, "routes": sorted({key.split(",")[0] for key in worst})},
    )


# --- packed_sequences --------------------------------------------------------------------------------------


def _document_mask(documents: list[int], width: int, *, causal: bool, window: int | None = None) -> torch.Tensor:
    """(width, width) bool: query i may see key j (same document, j <= i when causal, and i - j < ``window``, the
    model's sliding attention window, when it has one); padding sees itself."""
    owner = torch.full((width,), -1, dtype=torch.long)
    start = 0
    for index, size in enumerate(documents):
        owner[start : start + size] = index
        start += size
    allowed = (owner.unsqueeze(1) == owner.unsqueeze(0)) & (owner.unsqueeze(1) >= 0)
    if causal:
        allowed &= torch.ones(width, width, dtype=torch.bool).tril()
    if window:  # a 4D mask is used as given: it must carry the window the model applies to its own 2D masks
        allowed &= torch.ones(width, width, dtype=torch.bool).triu(diagonal=-(window - 1))
    return allowed | torch.eye(width, dtype=torch.bool)


def _sliding_window(model: torch.nn.Module) -> int | None:
    """The sliding attention window of a ``transformers`` model (``config.sliding_window``), None without one."""
    window = getattr(getattr(model, "config", None), "sliding_window", None)
    return window if isinstance(window, int) and window > 0 else None


def _four_d(allowed: torch.Tensor, channel: str) -> torch.Tensor:
    """(B, 1, T, T) mask in the format of a channel: additive floats (0 or the float32 minimum), or booleans."""
    allowed = allowed.unsqueeze(1)
    if channel == "mask4d-bool":
        return allowed
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


def _packing_channels(spec: ModelSpec, model: torch.nn.Module, facts: ModelFacts) -> tuple[tuple[str, ...], str]:
    """Probe which ways of telling document boundaries the model understands."""
    tolerance = tolerance_for(next(model.parameters()).dtype, "eager")  # the probed model's own dtype
    causal = spec.capabilities.is_causal
    width = min(6, spec.inputs.max_length)
    ids = _token_batch(spec, 1, width, _generator(5))
    channels, refusals = [], []
    if spec.capabilities.has_attention_mask and width >= 3:
        # a 4D mask carrying the same information as a 2D one (causality, one padded key) must give its outputs
        mask = torch.ones_like(ids)
        mask[0, -1] = 0
        reference = _primary(model(**_kwargs(facts, ids=ids, mask=mask, positions=_positions(mask), use_cache=False)))
        allowed = _document_mask([width - 1], width, causal=causal, window=_sliding_window(model)).unsqueeze(0)
        errors = []
        for channel in ("mask4d-float", "mask4d-bool"):
            try:
                out = _primary(
                    model(**_kwargs(facts, ids=ids, mask=_four_d(allowed, channel), positions=_positions(mask),
                                    use_cache=False))
                )  # fmt: skip
            except Exception as error:  # noqa: BLE001 - a model that refuses 4D masks
                errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}")
                continue
            if tuple(out.shape) == tuple(reference.shape) and compare(out[:, :-1], reference[:, :-1], tolerance).within:
                channels.append(channel)
                break
            errors.append(f"a {channel.removeprefix('mask4d-')} 4D mask did not reproduce its own 2D mask's outputs")
        if not channels:
            refusals.append("4D (B, 1, T, T) attention masks: " + "; ".join(dict.fromkeys(errors)))
    if width >= 4:
        first = width // 2
        positions = torch.cat([torch.arange(first), torch.arange(width - first)]).unsqueeze(0)
        try:
            packed = _primary(model(**_kwargs(facts, ids=ids, positions=positions, use_cache=False)))
            alone = torch.cat(
                [
                    _primary(model(**_kwargs(facts, ids=part, use_cache=False)))
                    for part in (ids[:, :first], ids[:, first:])
                ],
                dim=1,
            )
            if compare(packed, alone, tolerance).within:
                channels.append("position_ids")
            else:
                refusals.append(
                    "position_ids that restart at 0 (without a mask) leave the documents attending to each other"
                )
        except Exception as error:  # noqa: BLE001
            refusals.append(f"position_ids that restart at 0 raised {type(error).__name__}: {error}")
    if channels:
        return tuple(channels), ""
    return (), "; ".join(refusals) or "the input space is too short to pack two documents"


@dataclass(frozen=True)
class PackingCase:
    documents: tuple[tuple[int, ...], ...]  # per row, the lengths of the documents packed into it
    padding: int  # trailing pad tokens of each row (masked; 4D channels only)
    seed: int


def _packing_cases(spec: ModelSpec) -> st.SearchStrategy[PackingCase]:
    width = min(PACKED_LENGTH, spec.inputs.max_length)
    low = max(1, spec.inputs.min_length)

    @st.composite
    def cases(draw: st.DrawFn) -> PackingCase:
        rows = draw(st.integers(1, min(2, spec.inputs.max_batch_size)))
        padding = draw(st.integers(0, 2))
        documents = []
        for _ in range(rows):
            room, row = width - padding, []
            while room >= low and (len(row) < 2 or draw(st.booleans())):
                size = draw(st.integers(low, min(room, max(low, width // 2))))
                row.append(size)
                room -= size
            documents.append(tuple(row))
        return PackingCase(tuple(documents), padding, draw(SEEDS))

    return cases().filter(lambda case: all(len(row) >= 2 for row in case.documents))


def _pack_outputs(
    spec: ModelSpec, model: torch.nn.Module, facts: ModelFacts, case: PackingCase, channel: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed outputs at document tokens, the same documents run alone), each (N, ...)."""
    generator = _generator(case.seed)
    padding = case.padding if channel != "position_ids" else 0
    width = max(sum(row) for row in case.documents) + padding
    documents = [[_token_batch(spec, 1, size, generator)[0] for size in row] for row in case.documents]
    ids = torch.full((len(documents), width), spec.inputs.pad_id, dtype=torch.long)
    positions = torch.zeros_like(ids)
    real = torch.zeros_like(ids, dtype=torch.bool)
    allowed = []
    for row, docs in enumerate(documents):
        start = 0
        for document in docs:
            ids[row, start : start + len(document)] = document
            positions[row, start : start + len(document)] = torch.arange(len(document))
            real[row, start : start + len(document)] = True
            start += len(document)
        allowed.append(
            _document_mask(
                [len(d) for d in docs], width, causal=spec.capabilities.is_causal, window=_sliding_window(model)
            )
        )
    if channel == "position_ids":  # no mask to hide padding with: each row runs alone, at its own width
        packed = torch.cat([
            _primary(model(**_kwargs(facts, ids=ids[row : row + 1, real[row]],
                                     positions=positions[row : row + 1, real[row]], use_cache=False)))[0]
            for row in range(len(documents))
        ])  # fmt: skip
    else:
        mask = _four_d(torch.stack(allowed), channel)
        packed = _primary(model(**_kwargs(facts, ids=ids, mask=mask, positions=positions, use_cache=False)))[real]
    alone = [
        _primary(model(**_kwargs(facts, ids=d.unsqueeze(0), mask=torch.ones(1, len(d), dtype=torch.long),
                                 positions=torch.arange(len(d)).unsqueeze(0), use_cache=False)))[0]
        for docs in documents
        for d in docs
    ]  # fmt: skip
    return packed, torch.cat(alone)


@register(1, needs_packing)
def check_packed_sequences(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Documents packed into one row, with positions restarting at each document and the boundaries told to the model, get the outputs they get alone."""
    facts = _facts_for_check(spec)
    tolerance = tolerance_for(options.dtype, "eager")
    model.eval()
    width = min(PACKED_LENGTH, spec.inputs.max_length)
    low = max(1, spec.inputs.min_length)
    outcomes = {}
    for channel in facts.packing:

        @torch.no_grad()
        def body(case: PackingCase, channel: str = channel) -> float:
            with _quiet():
                packed, alone = _pack_outputs(spec, model, facts, case, channel)
            comparison = compare(packed, alone, tolerance)
            if not comparison.within:
                raise Violation(
                    comparison.max_abs,
                    f"packing documents of lengths {[list(row) for row in case.documents]} "
                    f"({channel.replace('mask4d-', '4D ') + ' mask' if channel != 'position_ids' else 'position_ids resets'}"
                    f") moved their outputs by {comparison.max_abs:.3g} from the documents alone: they attend across "
                    "the boundary",
                )
            return comparison.max_abs

        padding = 2 if channel != "position_ids" and width - 2 >= 2 * low else 0
        explicit = [PackingCase(((low, width - low - padding),), padding, options.seed)]  # the longest, padded
        outcomes[channel] = fuzz(_packing_cases(spec), body, explicit=explicit, max_examples=6)
    failed = {channel: outcome for channel, outcome in outcomes.items() if not outcome.passed}
    worst = max(_worst(outcome.worst) for outcome in outcomes.values())
    examples = sum(outcome.examples for outcome in outcomes.values())
    return verdict(
        spec,
        "packed_sequences",
        passed=not failed,
        measured=worst,
        threshold=tolerance.atol,
        tolerance=tolerance.as_dict(),
        expected=f"each packed document's outputs within {_tolerance_text(tolerance)} of its outputs alone, "
        f"told the boundaries by {' and by '.join(facts.packing)}",
        got="; ".join(outcome.failure for outcome in failed.values())
        or f"max |difference| {worst:.3g} over {examples} packed batches",
        hint="The per-document mask is collapsed or ignored somewhere (a 4D mask reduced to a padding mask, or "
        "positions that restart without the attention following them).",
        sample_size=examples,
        seed=options.seed,
        details={
            "channels": list(facts.packing),
            "refused": facts.packing_refusal or None,
            "failing_examples": {c: repr(o.failing_example) for c, o in failed.items()},
        },
    )


# --- tokenizer_contract ------------------------------------------------------------------------------------

SPECIAL_TOKENS = ("pad", "bos", "eos", "unk")


@register(1, needs_tokenizer)
def check_tokenizer_contract(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Every id the tokenizer emits fits the embedding table, its special tokens agree with the model, real text round-trips, pad is not eos, and a generating model pads on the left."""
    from harness.data import reference_text

    with _quiet():
        return _tokenizer_contract(spec, model, options, reference_text())


def _tokenizer_contract(spec: ModelSpec, model: torch.nn.Module, options: CheckOptions, text: str) -> CheckResult:
    facts = model_facts(spec)
    generating = bool(facts and not facts.error and facts.vocabulary_logits and spec.capabilities.is_causal)
    tokenizer = spec.tokenizer()
    embedding = _input_embeddings(model)
    rows = int(embedding.weight.shape[0]) if embedding is not None else None
    limit, bound = (rows, "embedding rows") if rows is not None else (spec.inputs.vocab_size, "spec vocab_size")
    problems: list[str] = []
    vocabulary = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    largest = max(vocabulary.values(), default=-1)
    size = len(tokenizer) if hasattr(tokenizer, "__len__") else largest + 1
    emitted = max(largest, size - 1)
    if emitted >= limit:
        problems.append(f"the tokenizer emits ids up to {emitted} ({size} tokens) but the model has {limit} {bound}")
    if rows is not None and emitted >= spec.inputs.vocab_size:
        problems.append(f"ids up to {emitted} lie outside the spec's vocab_size={spec.inputs.vocab_size}")
    config = getattr(model, "config", None)
    special: dict[str, int | None] = {}
    for name in SPECIAL_TOKENS:
        token, token_id = getattr(tokenizer, f"{name}_token", None), getattr(tokenizer, f"{name}_token_id", None)
        special[name] = token_id
        if token is not None and token_id is None:
            problems.append(f"{name} token {token!r} has no id")
        if token_id is None:
            continue
        if not 0 <= token_id < limit:
            problems.append(f"{name}_token_id {token_id} is outside the {limit} {bound}")
        elif token is not None and tokenizer.convert_ids_to_tokens(token_id) != str(token):
            problems.append(
                f"{name}_token_id {token_id} decodes to {tokenizer.convert_ids_to_tokens(token_id)!r}, not {token!r}"
            )
        configured = getattr(config, f"{name}_token_id", None)
        if isinstance(configured, int) and configured != token_id:
            problems.append(f"{name}_token_id is {token_id} in the tokenizer but {configured} in the model config")
    if special["pad"] is None:
        problems.append("the tokenizer has no pad token: batches of different lengths cannot be padded")
    elif special["pad"] != spec.inputs.pad_id:
        problems.append(f"pad_token_id {special['pad']} differs from the spec's pad_id {spec.inputs.pad_id}")
    lost_eos = 0
    if generating:
        if special["eos"] is None:
            problems.append("a language model whose tokenizer has no eos token can never be taught to stop")
        elif special["pad"] == special["eos"] and spec.capabilities.supports_training:
            # what a collator that masks padding out of the labels does to a text that ends in eos
            texts = ["a short text", "a somewhat longer text than that"]
            rows = [tokenizer(text, add_special_tokens=False)["input_ids"] + [special["eos"]] for text in texts]
            width = max(len(row) for row in rows)
            ids = torch.tensor([[special["pad"]] * (width - len(row)) + row for row in rows])  # (2, T), left-padded
            labels = ids.masked_fill(ids == special["pad"], spec.inputs.ignore_index)  # padding masked by its id
            lost_eos = int((labels[:, -1] == spec.inputs.ignore_index).sum())  # each text's final eos
            problems.append(
                f"pad_token_id == eos_token_id == {special['eos']}: masking padding out of the labels masks all "
                f"{lost_eos} eos labels too, so the model can never learn to stop"
            )
    mismatched = 0
    texts = [p for p in text.split("\n\n") if p.strip()][:ROUND_TRIP_TEXTS] if generating else []
    first_mismatch = None
    for text in texts:
        text = text[:400]
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        decoded = tokenizer.decode(ids, clean_up_tokenization_spaces=False)
        if decoded != text:
            mismatched += 1
            first_mismatch = first_mismatch or (text[:60], decoded[:60])
        if ids and max(ids) >= limit:
            problems.append(f"real text encodes to id {max(ids)}, outside the {limit} {bound}")
            break
    if mismatched:
        problems.append(
            f"{mismatched} of {len(texts)} real paragraphs do not round-trip (e.g. {first_mismatch[0]!r} -> "
            f"{first_mismatch[1]!r})"
        )
    side = getattr(tokenizer, "padding_side", None)
    result = verdict(
        spec,
        "tokenizer_contract",
        passed=not problems,
        measured=float(len(problems)),
        threshold=0.0,
        expected=f"0 contract violations (ids < {limit} {bound}; pad/bos/eos/unk consistent with the config and the "
        f"spec's pad_id; {'decode(encode(text)) == text on real text; pad != eos; ' if generating else ''}"
        f"{'left padding for generation' if generating else 'any padding side'})",
        got="; ".join(problems[:4])
        or f"{size} tokens < {limit} {bound}; special ids {special}"
        + (f"; {len(texts)} paragraphs round-trip" if generating else ""),
        hint="Resize the embeddings after adding tokens, give the tokenizer a pad token of its own, and set "
        "tokenizer.padding_side = 'left' before batching prompts for generation.",
        sample_size=len(texts) + len(SPECIAL_TOKENS),
        seed=options.seed,
        details={
            "tokenizer_size": size,
            "limit": limit,
            "bound": bound,
            "special_ids": special,
            "padding_side": side,
            "round_trip_mismatches": mismatched,
            "eos_labels_masked": lost_eos,
            "problems": problems,
        },
    )
    if result.status is Status.PASSED and generating and side not in (None, "left"):
        return replace(
            result,
            status=Status.WARNED,
            got=f"{result.got}; but padding_side={side!r}: prompts padded by this tokenizer put padding after the "
            "prompt, so generate() continues from a pad token",
            hint="Set tokenizer.padding_side = 'left' before batching prompts for generation (right padding is fine "
            "for training and scoring).",
        )
    return result


# --- tied_weights ------------------------------------------------------------------------------------------


def _tied_pair(model: torch.nn.Module, facts: ModelFacts) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(input embedding weight, output head weight) of the tie the model has or claims."""
    inputs, outputs = _input_embeddings(model), _output_embeddings(model)
    if inputs is not None and outputs is not None:
        return inputs.weight, outputs.weight
    if facts.tie and not facts.tie[0].startswith("get_"):
        embedding = next(
            name for name in facts.tie if isinstance(model.get_submodule(name.rpartition(".")[0]), torch.nn.Embedding)
        )
        head = next(name for name in facts.tie if name != embedding)
        return model.get_parameter(embedding), model.get_parameter(head)
    return None, None


def _same_storage(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    return a is not None and b is not None and a.shape == b.shape and a.data_ptr() == b.data_ptr()


@register(1, needs_tied_embeddings)
def check_tied_weights(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Tied input and output embeddings stay tied after build, save/load and resize_token_embeddings, which keeps existing rows and does not re-initialise the head."""
    from safetensors.torch import load_model, save_model

    facts = _facts_for_check(spec)
    tolerance = tolerance_for(options.dtype, "serialized")
    problems: list[str] = []
    stages: dict[str, str] = {}
    embedding, head = _tied_pair(model, facts)
    if not _same_storage(embedding, head):
        problems.append("after build the input embedding and the output head are separate tensors")
    stages["build"] = "tied" if not problems else "untied"
    original = None if embedding is None else embedding.detach().clone()
    with tempfile.TemporaryDirectory() as folder, _quiet():
        routes = {"safetensors": None}
        if callable(getattr(model, "save_pretrained", None)) and callable(
            getattr(type(model), "from_pretrained", None)
        ):
            routes["save_pretrained"] = None
        for route in routes:
            if route == "safetensors":
                path = Path(folder) / "model.safetensors"
                save_model(model, str(path))
                loaded = spec.build_model(seed=spec.seed + 1)
                load_model(loaded, str(path), strict=False)
            else:
                model.save_pretrained(Path(folder) / "pretrained")
                loaded = type(model).from_pretrained(Path(folder) / "pretrained")
            loaded_embedding, loaded_head = _tied_pair(loaded, facts)
            if not _same_storage(loaded_embedding, loaded_head):
                problems.append(f"after the {route} round trip the embedding and the head are separate tensors")
                stages[route] = "untied"
            elif original is not None and not compare(loaded_embedding, original, tolerance).within:
                problems.append(f"after the {route} round trip the tied weight holds other values")
                stages[route] = "changed"
            else:
                stages[route] = "tied"
    if facts.resize and embedding is not None and head is not None:
        old_rows = embedding.shape[0]
        old_embedding, old_head = embedding.detach().clone(), head.detach().clone()
        with _quiet():
            model.resize_token_embeddings(old_rows + RESIZE_ROWS)
        new_embedding, new_head = _tied_pair(model, facts)
        if new_embedding is None or new_embedding.shape[0] != old_rows + RESIZE_ROWS:
            got_rows = None if new_embedding is None else new_embedding.shape[0]
            problems.append(f"resize_token_embeddings({old_rows + RESIZE_ROWS}) left {got_rows} embedding rows")
        elif new_head is None or new_head.shape[0] != old_rows + RESIZE_ROWS:
            problems.append(
                f"resize_token_embeddings left the head with {None if new_head is None else new_head.shape[0]} rows"
            )
        else:
            if not _same_storage(new_embedding, new_head):
                problems.append("after resize_token_embeddings the embedding and the head are separate tensors")
            if not torch.equal(new_embedding[:old_rows], old_embedding):
                problems.append("resize_token_embeddings changed the existing embedding rows")
            if not torch.equal(new_head[:old_rows], old_head):
                problems.append("resize_token_embeddings re-initialised the existing rows of the head")
        stages["resize"] = "tied, rows kept" if not any("resize" in p for p in problems) else "broken"
    else:
        stages["resize"] = "not tested (no resize_token_embeddings)"
    return verdict(
        spec,
        "tied_weights",
        passed=not problems,
        measured=float(len(problems)),
        threshold=0.0,
        tolerance=tolerance.as_dict(),
        expected="one shared tensor after " + ", ".join(stages) + ", with existing rows unchanged",
        got="; ".join(problems[:4]) or ", ".join(f"{stage}: {state}" for stage, state in stages.items()),
        hint="Re-tie after replacing either module (tie_weights()), resize both through the shared module, and "
        "save/load shared tensors once.",
        sample_size=len(stages),
        seed=options.seed,
        details={"stages": stages, "tie": list(facts.tie), "claimed": facts.tie_claimed, "problems": problems},
    )


__all__ = ["CACHE_ARGUMENTS", "ModelFacts", "model_facts", "position_embedding_of"]

"""What the harness needs to know about a model: how to build it, its task, input space and claims.

A :class:`ModelSpec` is the model contract of DESIGN.md. Every field is typed and documented; the
dataclasses are frozen so a spec can be shared between checks, fixtures and pytest-xdist workers
without one of them changing it under the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only, torch is imported lazily
    import torch

TASKS: dict[str, tuple[str, ...]] = {
    "causal-lm": ("vocab_size", "max_length"),
    "seq2seq-lm": ("vocab_size", "max_length"),
    "token-classification": ("vocab_size", "max_length", "num_classes"),
    "sequence-scoring": ("vocab_size", "max_length"),
    "text-embedding": ("vocab_size", "max_length", "embedding_dim"),
    "image-classification": ("image_size", "num_classes"),
}
"""Every task a ModelSpec may name, with the InputSpace fields it needs: the built-in adapters' ``required_inputs``
(copied here so this module imports without torch; a test keeps them equal), plus each task registered with
:func:`harness.adapters.register_adapter`."""


def register_task(task: str, required_inputs: tuple[str, ...] = ()) -> None:
    """Let ModelSpecs name ``task``, requiring the given InputSpace fields (``register_adapter`` calls this)."""
    unknown = [name for name in required_inputs if name not in {f.name for f in dataclasses.fields(InputSpace)}]
    if not task or unknown:
        raise SpecError(f"register_task needs a task name and InputSpace fields; got {task!r}, {required_inputs!r}")
    TASKS[task] = tuple(required_inputs)


class SpecError(ValueError):
    """A ModelSpec (or one of its parts) holds an invalid value."""


class MissingExtraError(ImportError):
    """A model needs an optional extra that is not installed; its checks skip, naming the extra."""


@dataclass(frozen=True)
class InputSpace:
    """The inputs a model accepts; strategies and checks never step outside it."""

    vocab_size: int | None = None  # token ids are drawn from [0, vocab_size)
    min_length: int = 1  # shortest sequence the model accepts
    max_length: int | None = None  # longest sequence (the model's context window)
    pad_id: int = 0  # token id used for padding positions (masked out by attention_mask)
    ignore_index: int = -100  # label value excluded from the loss
    image_size: tuple[int, int, int] | None = None  # (channels, height, width) for vision models
    num_classes: int | None = None  # classes of a classifier's output (per token for token classification)
    embedding_dim: int | None = None  # width of the vector a text-embedding model returns
    max_batch_size: int = 8  # largest batch the fuzzed checks generate

    def __post_init__(self) -> None:
        for name, least in (("vocab_size", 2), ("max_length", 1), ("num_classes", 2), ("embedding_dim", 1)):
            value = getattr(self, name)  # sizes no model can have are refused here, not blamed on the model later
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise SpecError(f"InputSpace.{name} must be an integer >= {least} or None, got {name}={value!r}")
        size = self.image_size
        if size is not None and (
            not isinstance(size, tuple) or len(size) != 3 or not all(isinstance(n, int) and n >= 1 for n in size)
        ):
            raise SpecError(f"InputSpace.image_size must be (channels, height, width) of integers >= 1, got {size!r}")
        if self.min_length < 1:
            raise SpecError(f"InputSpace.min_length must be >= 1, got {self.min_length}")
        if self.max_length is not None and self.max_length < self.min_length:
            raise SpecError(f"InputSpace.max_length ({self.max_length}) must be >= min_length ({self.min_length})")
        if self.vocab_size is not None and not 0 <= self.pad_id < self.vocab_size:
            raise SpecError(f"InputSpace.pad_id must be in [0, {self.vocab_size}), got {self.pad_id}")
        if self.max_batch_size < 2:
            raise SpecError(f"InputSpace.max_batch_size must be >= 2, got {self.max_batch_size}")


@dataclass(frozen=True)
class Capabilities:
    """Claims a model makes about itself. Checks verify them, in both directions where they can."""

    is_causal: bool = False  # outputs at position t depend only on inputs at positions <= t
    has_attention_mask: bool = False  # forward accepts attention_mask and masked positions do not leak
    supports_training: bool = True  # parameters require grad and a loss can be back-propagated
    exportable: bool = True  # can be traced/exported (Tier 4)
    has_memory: bool = False  # carries an external memory (Tier 2 memory checks)
    pretrained: bool = False  # build() loads trained weights: initialisation checks do not apply
    returns_attentions: bool = False  # forward(..., output_attentions=True) returns .attentions (Tier 2)
    padded_batches: bool | None = None  # the model is run on padded batches (None: yes for every sequence task);
    #   then padding must not move its real-token outputs, with or without an attention mask (padding_invariance)


@dataclass(frozen=True)
class InitExpectation:
    """A stated claim about the fresh values of the parameters matching ``pattern`` (every one must match)."""

    pattern: (
        str  # fnmatch pattern over parameter names, tied aliases included (named_parameters(remove_duplicate=False))
    )
    mean: float | None = None  # the mean each matching tensor must have (None: not stated)
    std: float | None = None  # the std each matching tensor must have (None: not stated)
    atol: float = 0.01  # allowed |measured - stated| of the mean and of the std

    def __post_init__(self) -> None:
        if not self.pattern or (self.mean is None and self.std is None) or self.atol < 0:
            raise SpecError(f"InitExpectation needs a pattern, a mean or a std, and atol >= 0; got {self!r}")


@dataclass(frozen=True)
class InitSpec:
    """What a freshly built model's parameters must look like."""

    std_bounds: tuple[float, float] = (1e-3, 2.0)  # allowed std of every non-constant weight tensor
    constant_ok: tuple[str, ...] = ("*bias",)  # fnmatch patterns of parameters allowed to be constant
    frozen_ok: tuple[str, ...] = ()  # fnmatch patterns of parameters built with requires_grad=False on purpose
    expectations: tuple[InitExpectation, ...] = ()  # stated per-pattern initial means and stds (initialization)
    tied: tuple[tuple[str, str], ...] = ()  # pairs of parameter names that must be one tensor (tied weights)

    def __post_init__(self) -> None:
        low, high = self.std_bounds
        if not 0 <= low < high:
            raise SpecError(f"InitSpec.std_bounds must satisfy 0 <= low < high, got {self.std_bounds}")
        if any(len(pair) != 2 or pair[0] == pair[1] for pair in self.tied):
            raise SpecError(f"InitSpec.tied must hold pairs of two different parameter names, got {self.tied!r}")


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and what it claims; the unit every check and suite is parametrized over."""

    name: str  # unique, used in test ids and report rows
    task: str  # one of TASKS (registered with harness.adapters.register_adapter), selects the adapter
    build: Callable[[], torch.nn.Module]  # returns a fresh model; called after torch.manual_seed(seed)
    inputs: InputSpace = field(default_factory=InputSpace)
    capabilities: Capabilities = field(default_factory=Capabilities)
    init: InitSpec = field(default_factory=InitSpec)
    tokenizer: Callable[[], Any] | None = None  # returns the model's tokenizer, if it has one
    real_data: Callable[[], Mapping[str, torch.Tensor]] | None = None  # returns real labelled examples as one batch
    #   (every tensor (N, ...)), e.g. harness.data.digit_examples; text tasks read real text through `tokenizer`
    recipe: Any = None  # a harness.training TrainingRecipe: the user's optimizer, freeze, scheduler, loss (Tier 3)
    memory: Callable[[Any], Any] | None = None  # model -> its external memory's public interface (Tier 2)
    intervention: Any = None  # a harness.interventions.Intervention: hooks or an adapter attached to the model (Tier 2)
    metrics: Mapping[str, Callable[..., float]] = field(default_factory=dict)  # the user's metric functions, by what
    #   they compute (perplexity, accuracy, loss): fn(outputs, batches, spec) -> float (harness.evaluation, Tier 5)
    expected_failures: Mapping[str, str] = field(default_factory=dict)  # {check name: reason}
    seed: int = 0  # seed for building the model
    description: str = ""  # one line for `harness models` and the README

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise SpecError(f"ModelSpec.name must be a non-empty word, got {self.name!r}")
        if self.task not in TASKS:
            raise SpecError(f"ModelSpec.task must be one of {', '.join(TASKS)}; got {self.task!r}")
        if not callable(self.build):
            raise SpecError(f"ModelSpec.build must be callable, got {type(self.build).__name__}")
        missing = [name for name in TASKS[self.task] if getattr(self.inputs, name) is None]
        if missing:
            raise SpecError(f"ModelSpec {self.name!r} (task {self.task}) needs InputSpace.{', '.join(missing)}")

    def build_model(self, *, seed: int | None = None) -> torch.nn.Module:
        """Build the model under a fixed seed (``self.seed`` unless ``seed`` is given), in eval mode."""
        import torch

        torch.manual_seed(self.seed if seed is None else seed)
        model = self.build()
        if not isinstance(model, torch.nn.Module):
            raise SpecError(f"ModelSpec {self.name!r}: build() returned {type(model).__name__}, not a torch.nn.Module")
        return model.eval()

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy of this spec with some fields changed."""
        return dataclasses.replace(self, **changes)

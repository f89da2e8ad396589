"""The adapter contract shared by every task, and the helpers every adapter uses on outputs and batches."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch

from harness.adapters.scoring import TokenScores, class_features, classification_scores
from harness.spec import ModelSpec

Batch = dict[str, torch.Tensor]
"""Model inputs plus ``labels``; every tensor has the batch on dimension 0."""


OutputKind = Literal["classes", "embedding", "score"]
EvaluationKind = Literal["tokens", "examples"]
RealText = Literal["labelled", "unlabelled"]


class Adapter:
    """Everything the harness knows about one task; the only place that knows it. Implementations are stateless.

    Checks, export, evaluation, monitoring, training data and the mutation injectors ask the adapter and never
    the task name. A new task subclasses this class (or :class:`harness.adapters.sequence.SequenceAdapter` for
    token sequences), overrides what differs and is registered with :func:`harness.adapters.register_adapter`.
    The abstract five (``make_batch``, ``forward``, ``model_loss``, ``reference_loss``, ``output_shape``) every
    task implements; the rest have defaults for a classifier of fixed-size inputs.
    """

    task: str = ""  # the ModelSpec.task this adapter serves
    convention: str = ""  # the task's calling convention in one line, for usage errors
    required_inputs: tuple[str, ...] = ()  # InputSpace fields a spec of this task must set
    sequence: bool = False  # inputs have a length dimension (token sequences)
    per_token_outputs: bool = False  # outputs have a length dimension aligned with the inputs
    output_kind: OutputKind = "classes"  # forward returns class logits, an embedding or one score per example
    has_loss: bool = True  # the model takes labels and returns a loss (an embedding model does not)
    label_shift: int = 0  # output t is scored against label t + label_shift (1: next-token prediction)
    evaluation: EvaluationKind | None = None  # what evaluate() scores: per token (perplexity), per example, nothing
    export_keys: tuple[str, ...] = ()  # batch keys that are the exported graph's positional inputs, in order
    real_text: RealText | None = None  # real text makes this task's batches: with its labels, or it needs none
    real_batch_size: int = 8  # real examples the real-input accuracy check (Tier 4 int8) scores at once
    trains_on_text: bool = False  # training reads text (TrainingConfig.data) through spec.tokenizer

    # Batches, outputs and losses.

    def make_batch(self, spec: ModelSpec, *, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        """Random valid inputs with labels, no padding."""
        raise NotImplementedError

    def forward(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The model's primary output (logits, embedding, score) for the batch's inputs; labels are not passed."""
        raise NotImplementedError

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The loss the model computes itself when given labels."""
        raise NotImplementedError

    def takes_plain_inputs(self, model: torch.nn.Module) -> bool:
        """Whether ``model`` is a plain module for this task: called positionally, returning its primary output
        (logits) and no loss of its own."""
        return False

    def raw_output(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch, **extra: Any) -> Any:
        """The model's own output object for the batch's inputs (no labels), with ``extra`` keywords such as
        ``output_attentions=True``; :meth:`forward` reads the task's output from the same call."""
        raise NotImplementedError

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """An independent computation of the task's loss from the outputs."""
        raise NotImplementedError

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        """The shape ``forward`` must return for this batch."""
        raise NotImplementedError

    def convention_error(self, spec: ModelSpec, model: torch.nn.Module) -> str | None:
        """Why ``model`` does not follow this task's calling convention, in one line, or None when it does.

        One forward of a two-row batch from the spec's input space must run and return the task's output shape:
        a model that fails this would fail every check the same way, so callers report it once, up front.
        """
        length = max(spec.inputs.min_length, min(4, spec.inputs.max_length or 4))
        batch = self.make_batch(spec, batch_size=2, length=length, generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                output = self.forward(spec, model, batch)
        except Exception as error:  # noqa: BLE001 - any failure of the first call is the usage error
            lines = [line for line in str(error).splitlines() if line.strip()]
            got = f"raised {type(error).__name__}: {lines[0][:200] if lines else ''}"
        else:
            expected = self.output_shape(spec, batch)
            if isinstance(output, torch.Tensor) and tuple(output.shape) == expected:
                return None
            got = f"returned {tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__}, not {expected}"
        return f"{spec.name} does not follow the {self.task} calling convention, {self.convention}: one call {got}"

    # Export (Tier 4).

    def dynamic_axes(self, key: str) -> dict[int, str]:
        """The axes of export input ``key`` that vary between calls."""
        return {0: "batch"}

    def agreement(self, reference: torch.Tensor, got: torch.Tensor) -> torch.Tensor:
        """Per prediction (flat), how far an exported output says what eager says: 1.0 when the top-1 class agrees."""
        return (reference.argmax(-1) == got.argmax(-1)).double().flatten()

    def pooled_agreement(self, values: torch.Tensor) -> float:
        """The agreement of many predictions: the share that agree."""
        return float(values.mean())

    def correct(self, spec: ModelSpec, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Flat bool: whether each scored prediction's top class is its label (teacher forcing, ignored labels out)."""
        labels = batch["labels"]
        if self.label_shift:  # output t predicts label t + shift
            outputs, labels = outputs[:, : -self.label_shift], labels[:, self.label_shift :]
        keep = labels != spec.inputs.ignore_index
        return (outputs.argmax(-1) == labels)[keep].flatten()

    def scored_labels(self, spec: ModelSpec, batch: Batch) -> int:
        """How many labels of a batch a loss scores: per-token labels after the shift, ignored ones out; else one
        per row. Accumulated micro-batches are weighted by this, so their sum is the token-weighted loss."""
        labels = batch["labels"]
        if labels.dim() > 1:
            labels = labels[:, self.label_shift :]
        return int((labels != spec.inputs.ignore_index).sum())

    # Evaluation (Tier 5).

    def example_scores(self, spec: ModelSpec, outputs: torch.Tensor, batch: Batch) -> TokenScores:
        """Per-example summed NLL, scored count and correct count: one scored label per example."""
        nll, correct = classification_scores(outputs, batch["labels"])
        return TokenScores(nll=nll, tokens=np.ones_like(nll, dtype=np.int64), correct=correct)

    # Real data.

    def no_real_data_because(self, spec: ModelSpec) -> str | None:
        """Why the harness has no real labelled examples for ``spec`` (None: it has)."""
        return None if spec.real_data is not None else "the spec declares no real data (ModelSpec.real_data)"

    def real_batch(self, spec: ModelSpec, *, batch_size: int, length: int) -> Batch | None:
        """The first ``batch_size`` real examples (``ModelSpec.real_data``), or None when there are none."""
        if spec.real_data is None:
            return None
        return select_rows(dict(spec.real_data()), slice(0, batch_size))

    def text_example(self, spec: ModelSpec, ids: list[int], *, limit: int) -> TextExample | None:
        """One example made from a text's token ids; tasks without token inputs have none."""
        raise TypeError(f"{spec.name}: task {spec.task} takes no token sequences, so there are no text examples")

    def text_batch(self, spec: ModelSpec, examples: list[TextExample]) -> Batch:
        """A right-padded, labelled batch of text examples."""
        raise TypeError(f"{spec.name}: task {spec.task} takes no token sequences, so there are no text batches")

    # Reference profiles (Tier 5 drift).

    def profile_features(
        self, spec: ModelSpec, model: torch.nn.Module, batch: Batch, *, own_embedding: bool
    ) -> dict[str, list[Any]]:
        """Per-example profile features of a batch (see :mod:`harness.monitoring.profile`); ``own_embedding``
        adds ``embedding``, the model's own representation of each example."""
        outputs = self.forward(spec, model, batch)
        features = class_features(outputs, torch.ones(outputs.shape[0])) if self.output_kind == "classes" else {}
        if own_embedding:
            features["embedding"] = outputs.double().reshape(outputs.shape[0], -1).tolist()
        return features


TextExample = tuple[list[int], "list[int] | None"]
"""A text example: its source token ids and, for tasks whose labels are text (seq2seq), the target's."""


def _output_field(output: Any, name: str) -> torch.Tensor:
    """Field ``name`` of a forward's output: the output itself when it is a tensor, ``[name]`` of a mapping,
    ``.name`` of an object, or a tuple's first item."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, Mapping):
        return output[name]
    if hasattr(output, name):
        return getattr(output, name)
    if isinstance(output, (tuple, list)):
        return output[0]
    raise TypeError(f"cannot find {name} in a forward output of type {type(output).__name__}")


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a forward's output: a tensor, a tuple (first item), a mapping or an object."""
    return _output_field(output, "logits")


def hidden_states_of(output: Any) -> torch.Tensor:
    """The last hidden states of an encoder's output (``last_hidden_state``), found as :func:`logits_of` finds logits."""
    return _output_field(output, "last_hidden_state")


def loss_of(output: Any) -> torch.Tensor:
    """The loss of a forward's output given labels: ``.loss``, ``["loss"]`` or a tuple's second item."""
    if isinstance(output, Mapping):
        loss = output.get("loss")
    elif hasattr(output, "loss"):
        loss = output.loss
    elif isinstance(output, (tuple, list)) and len(output) > 1:
        loss = output[1]
    else:
        loss = None
    if loss is None:
        raise TypeError("the model returned no loss when given labels (expected `.loss` or `['loss']`)")
    return loss


def accepts(model: torch.nn.Module, argument: str) -> bool:
    """Whether ``model.forward`` takes a parameter of that name (or ``**kwargs``); a scripted model's by its schema."""
    schema = getattr(model.forward, "schema", None)  # a torch.jit.ScriptMethod has no Python signature
    if schema is not None:
        return argument in {parameter.name for parameter in schema.arguments}
    parameters = inspect.signature(model.forward).parameters
    return argument in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def batch_size_of(batch: Batch) -> int:
    return next(iter(batch.values())).shape[0]


def select_rows(batch: Batch, rows: torch.Tensor | list[int] | slice) -> Batch:
    """The sub-batch of the given rows (dimension 0 of every tensor)."""
    return {key: value[rows] for key, value in batch.items()}

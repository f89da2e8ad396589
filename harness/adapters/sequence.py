"""Shared machinery of adapters whose inputs are token sequences with an attention mask.

Subclasses name the task, the labels a batch carries, the output shape and the reference loss; and where
their task differs, how real text becomes examples and labels (:meth:`SequenceAdapter.text_example`,
:meth:`SequenceAdapter.text_labels`) and what their outputs are (:meth:`SequenceAdapter.outputs_of`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from harness.adapters.base import Adapter, Batch, TextExample, accepts, logits_of, loss_of
from harness.adapters.scoring import TokenScores, class_features, token_scores
from harness.spec import ModelSpec

PaddingSide = Literal["left", "right"]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, H) over positions where ``mask`` (B, T) is 1; rows with no token give 0."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)  # (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, H)


class SequenceAdapter(Adapter):
    """Inputs ``input_ids`` (B, T) and ``attention_mask`` (B, T); labels defined by the subclass."""

    sequence = True
    per_token_outputs = True  # outputs have a length dimension aligned with the inputs
    export_keys = ("input_ids", "attention_mask")
    causal_key = "input_ids"  # the stream the per-token outputs follow, and that a causal claim is about
    causal_shift = 0  # token t of the causal stream first reaches output t + causal_shift
    bidirectional_key: str | None = None  # a stream that must be read bidirectionally whatever the claim
    positions_from_mask = False  # pass position_ids counting real tokens only (causal LMs: generation's positions)
    windows_per_example = 1  # consecutive text windows one example of a real batch is made of

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The labels of a batch of (unpadded) inputs."""
        raise NotImplementedError

    def label_padding(self, spec: ModelSpec) -> int | float | None:
        """The label value at padded positions, or None when labels have no length dimension."""
        return spec.inputs.ignore_index

    def make_batch(self, spec: ModelSpec, *, batch_size: int, length: int, generator: torch.Generator) -> Batch:
        input_ids = torch.randint(0, spec.inputs.vocab_size, (batch_size, length), generator=generator)
        return {
            "input_ids": input_ids,  # (B, T)
            "attention_mask": torch.ones_like(input_ids),  # (B, T)
            "labels": self.labels(spec, input_ids, generator),
        }

    def model_inputs(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The keyword arguments of an encoder's (or a decoder-only model's) forward call.

        With an attention mask, :attr:`positions_from_mask` and a model that accepts ``position_ids``, positions
        count real tokens only (``cumsum(mask) - 1``), as generation does, so left padding does not shift them.
        Other models count positions themselves: an encoder's may start elsewhere (RoBERTa's at pad_id + 1).
        """
        inputs = {"input_ids": batch["input_ids"]}
        if spec.capabilities.has_attention_mask:
            mask = batch["attention_mask"]
            inputs["attention_mask"] = mask
            if self.positions_from_mask and accepts(model, "position_ids"):
                inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        return inputs

    def forward_inputs(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        """The keyword arguments of the forward call whose output :meth:`outputs_of` reads (no labels)."""
        return self.model_inputs(spec, model, batch)

    def outputs_of(self, spec: ModelSpec, output: Any, batch: Batch) -> torch.Tensor:
        """The task's primary output from the model's raw output (the logits)."""
        return logits_of(output)

    def hidden_states(self, output: Any) -> torch.Tensor | None:
        """The last hidden states (B, T, H) in a raw output called with ``output_hidden_states``, if any."""
        states = getattr(output, "hidden_states", None)
        return states[-1] if states else None

    def raw_output(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch, **extra: Any) -> Any:
        return model(**self.forward_inputs(spec, model, batch), **extra)

    def forward(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return self.outputs_of(spec, self.raw_output(spec, model, batch), batch)

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return loss_of(model(**self.model_inputs(spec, model, batch), labels=batch["labels"]))

    def bidirectional_outputs(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The outputs the ``bidirectional_key`` stream must reach from its last token to its first."""
        return self.forward(spec, model, batch)

    def pad(self, spec: ModelSpec, batch: Batch, *, amount: int, side: PaddingSide) -> Batch:
        """Add ``amount`` masked pad tokens to every row on one side; per-token labels there are ignored."""
        filler = {"input_ids": spec.inputs.pad_id, "attention_mask": 0, "labels": self.label_padding(spec)}
        padded = {}
        for key, value in batch.items():
            if value.dim() < 2 or filler.get(key) is None:
                padded[key] = value
                continue
            block = torch.full((value.shape[0], amount, *value.shape[2:]), filler[key], dtype=value.dtype)
            padded[key] = torch.cat([block, value] if side == "left" else [value, block], dim=1)
        return padded

    def real_outputs(self, outputs: torch.Tensor, *, amount: int, side: PaddingSide, length: int) -> torch.Tensor:
        """The outputs of a padded batch at its real tokens (all of them for pooled outputs)."""
        if not self.per_token_outputs:
            return outputs
        return outputs[:, amount:] if side == "left" else outputs[:, :length]

    def scored_positions(self, spec: ModelSpec, batch: Batch) -> torch.Tensor:
        """(B, L) bool: the positions of the per-token outputs that hold a real prediction."""
        return batch["attention_mask"].bool()

    # Export.

    def dynamic_axes(self, key: str) -> dict[int, str]:
        return {0: "batch", 1: "length"}

    # Evaluation.

    def example_scores(self, spec: ModelSpec, outputs: torch.Tensor, batch: Batch) -> TokenScores:
        """Teacher-forced token scores; a batch may carry ``prompt_lengths`` (B,), whose tokens are never scored."""
        return token_scores(outputs, batch["labels"], shift=bool(self.label_shift),
                            ignore_index=spec.inputs.ignore_index, prompt_lengths=batch.get("prompt_lengths"))  # fmt: skip

    # Real data: CPython's documentation through the spec's tokenizer (harness.data).

    def no_real_data_because(self, spec: ModelSpec) -> str | None:
        if self.real_text != "labelled":
            return super().no_real_data_because(spec)
        return None if spec.tokenizer is not None else "the model has no tokenizer, so there is no real text for it"

    def text_example(self, spec: ModelSpec, ids: list[int], *, limit: int) -> TextExample | None:
        """The first ``limit`` ids of a text (None below two tokens)."""
        return (ids[:limit], None) if len(ids) >= 2 else None

    def text_labels(
        self, spec: ModelSpec, input_ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        """The labels of a batch of texts (padding where ``mask`` is 0, ``targets`` padded with ignore_index)."""
        return torch.zeros(len(input_ids))  # (B,): real text carries no labels of this task

    def text_batch(self, spec: ModelSpec, examples: list[TextExample]) -> Batch:
        pad, ignore = spec.inputs.pad_id, spec.inputs.ignore_index
        width = max(len(source) for source, _ in examples)
        input_ids = torch.full((len(examples), width), pad, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(examples), width), dtype=torch.long)  # (B, T)
        for i, (source, _) in enumerate(examples):
            input_ids[i, : len(source)] = torch.tensor(source)
            mask[i, : len(source)] = 1
        targets = None
        if examples[0][1] is not None:
            targets = torch.full((len(examples), max(len(t) for _, t in examples)), ignore, dtype=torch.long)  # (B, S)
            for i, (_, target) in enumerate(examples):
                targets[i, : len(target)] = torch.tensor(target)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": self.text_labels(spec, input_ids, mask, targets),
        }

    def window_batch(self, spec: ModelSpec, windows: torch.Tensor) -> Batch:
        """A batch of consecutive equal-length windows (R, T) of a text: one example per window."""
        mask = torch.ones_like(windows)
        return {"input_ids": windows, "attention_mask": mask, "labels": self.text_labels(spec, windows, mask, None)}

    def real_batch(self, spec: ModelSpec, *, batch_size: int, length: int) -> Batch | None:
        """Consecutive ``length``-token windows of the reference text, for tasks whose batches real text makes."""
        if self.real_text is None or spec.tokenizer is None:
            return super().real_batch(spec, batch_size=batch_size, length=length)
        from harness.data import reference_token_ids

        ids = reference_token_ids(spec)
        needed = self.windows_per_example * batch_size * length
        if ids.numel() < needed:
            return None
        return self.window_batch(spec, ids[:needed].view(-1, length))  # (B * windows_per_example, T) windows

    # Reference profiles.

    def profile_features(
        self, spec: ModelSpec, model: torch.nn.Module, batch: Batch, *, own_embedding: bool
    ) -> dict[str, list[Any]]:
        """Input tokens and lengths; for class outputs, the predictive distribution over the scored positions;
        the embedding is the mean-pooled last hidden states (the logits when the model returns none)."""
        mask = batch["attention_mask"]  # (B, T)
        features: dict[str, list[Any]] = {
            "input_tokens": [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], mask, strict=True)],
            "input_length": mask.sum(1).tolist(),
        }
        classes = self.output_kind == "classes"
        if not (classes or own_embedding):
            return features
        inputs = self.forward_inputs(spec, model, batch)
        if accepts(model, "output_hidden_states"):
            inputs["output_hidden_states"] = True
        output = model(**inputs)
        if classes:
            features |= class_features(logits_of(output), self.scored_positions(spec, batch))  # (B, L, V)
        if own_embedding:
            hidden = self.hidden_states(output)
            if hidden is None:  # a model that returns no hidden states: its logits stand in
                hidden = logits_of(output)
            features["embedding"] = mean_pool(hidden.double(), mask).tolist()  # (B, H)
        return features

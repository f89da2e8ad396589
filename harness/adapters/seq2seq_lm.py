"""Adapter for encoder-decoder language models following the Hugging Face convention.

``forward(input_ids, attention_mask=None, decoder_input_ids=None, labels=None)`` returning
``.logits`` of shape (batch, target length, vocab) and, given labels, ``.loss``: the mean
cross-entropy of label t predicted at decoder position t (no shift: the decoder inputs are the
labels shifted right), labels equal to ``ignore_index`` excluded. Decoder inputs come from the
model's own ``prepare_decoder_input_ids_from_labels`` when it has one (so a bug there shows), else
from shifting the labels right behind ``pad_id``.
"""

from __future__ import annotations

from typing import Any

import torch

from harness.adapters.base import Batch, TextExample, hidden_states_of
from harness.adapters.scoring import mean_masked_nll
from harness.adapters.sequence import PaddingSide, SequenceAdapter
from harness.spec import ModelSpec


def shift_right(labels: torch.Tensor, start_id: int, ignore_index: int) -> torch.Tensor:
    """``[start, y0, y1, ...]`` with ignored labels replaced by ``start_id``."""
    shifted = torch.full_like(labels, start_id)  # (B, T)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == ignore_index, start_id)


class Seq2SeqLMAdapter(SequenceAdapter):
    task = "seq2seq-lm"
    convention = (
        "forward(input_ids, attention_mask=None, decoder_input_ids=None, labels=None) -> .logits (B, S, vocab), .loss"
    )
    required_inputs = ("vocab_size", "max_length")
    causal_key = "labels"  # the decoder stream is the causal one, and the one the outputs follow
    causal_shift = 1  # label t is decoder input t+1 (shifted right), so outputs <= t must not see it
    bidirectional_key = "input_ids"  # the encoder must see every source token
    export_keys = ("input_ids", "attention_mask", "labels")  # labels -> decoder inputs inside the graph
    evaluation = "tokens"
    real_text = "labelled"  # a text's continuation is its target
    windows_per_example = 2  # a source window and the window that follows it

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, spec.inputs.vocab_size, input_ids.shape, generator=generator)  # (B, T)

    def decoder_input_ids(self, spec: ModelSpec, model: torch.nn.Module, labels: torch.Tensor) -> torch.Tensor:
        prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
        if prepare is not None:
            return prepare(labels=labels)
        return shift_right(labels, spec.inputs.pad_id, spec.inputs.ignore_index)

    def forward_inputs(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        inputs = self.model_inputs(spec, model, batch)
        return {**inputs, "decoder_input_ids": self.decoder_input_ids(spec, model, batch["labels"])}

    def hidden_states(self, output: Any) -> torch.Tensor | None:
        """The encoder's last hidden states: a representation of the source."""
        return getattr(output, "encoder_last_hidden_state", None)

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Token-weighted mean cross-entropy of decoder position t predicting label t, ignored labels excluded."""
        return mean_masked_nll(logits, batch["labels"], spec.inputs.ignore_index)  # (B, T)

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        batch_size, target_length = batch["labels"].shape
        return (batch_size, target_length, spec.inputs.vocab_size)

    def scored_positions(self, spec: ModelSpec, batch: Batch) -> torch.Tensor:
        return batch["labels"] != spec.inputs.ignore_index  # (B, S): the decoder outputs follow the labels

    def bidirectional_outputs(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The encoder's last hidden states (B, S, H), from ``model.get_encoder()``.

        Decoder outputs would not do: cross-attention lets every decoder position see the last source
        token even when the encoder itself is (wrongly) causal.
        """
        if not hasattr(model, "get_encoder"):
            raise TypeError(f"{spec.name}: a seq2seq-lm model must expose get_encoder() (the Hugging Face convention)")
        encoder_inputs = self.model_inputs(spec, model, batch)
        return hidden_states_of(model.get_encoder()(**encoder_inputs))  # (B, S, H)

    def pad(self, spec: ModelSpec, batch: Batch, *, amount: int, side: PaddingSide) -> Batch:
        """Pad the encoder inputs only; the decoder stream (labels) is left as it is."""
        padded = super().pad(spec, {k: v for k, v in batch.items() if k != "labels"}, amount=amount, side=side)
        return {**padded, "labels": batch["labels"]}

    def real_outputs(self, outputs: torch.Tensor, *, amount: int, side: PaddingSide, length: int) -> torch.Tensor:
        """Encoder padding leaves every decoder output real."""
        return outputs

    def text_example(self, spec: ModelSpec, ids: list[int], *, limit: int) -> TextExample | None:
        """The first half of a text's first ``2 * limit`` tokens is the source, the second half the target."""
        ids = ids[: 2 * limit]
        half = len(ids) // 2
        return (ids[:half], ids[half : 2 * half]) if half >= 1 else None

    def text_labels(
        self, spec: ModelSpec, input_ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor | None
    ) -> torch.Tensor:
        return targets  # (B, S)

    def window_batch(self, spec: ModelSpec, windows: torch.Tensor) -> Batch:
        """Pairs of consecutive windows: each source window, and the window that follows it as its target."""
        source, target = windows[0::2], windows[1::2]  # (R/2, T) each
        return {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": target}

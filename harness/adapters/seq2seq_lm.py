"""Adapter for encoder-decoder language models following the Hugging Face convention.

``forward(input_ids, attention_mask=None, decoder_input_ids=None, labels=None)`` returning
``.logits`` of shape (batch, target length, vocab) and, given labels, ``.loss``: the mean
cross-entropy of label t predicted at decoder position t (no shift: the decoder inputs are the
labels shifted right), labels equal to ``ignore_index`` excluded. Decoder inputs come from the
model's own ``prepare_decoder_input_ids_from_labels`` when it has one (so a bug there shows), else
from shifting the labels right behind ``pad_id``.
"""

from __future__ import annotations

import torch

from harness.adapters.base import Batch, logits_of, loss_of
from harness.adapters.sequence import PaddingSide, SequenceAdapter
from harness.adapters.text_embedding import hidden_states_of
from harness.spec import ModelSpec


def shift_right(labels: torch.Tensor, start_id: int, ignore_index: int) -> torch.Tensor:
    """``[start, y0, y1, ...]`` with ignored labels replaced by ``start_id``."""
    shifted = torch.full_like(labels, start_id)  # (B, T)
    shifted[:, 1:] = labels[:, :-1]
    return shifted.masked_fill(shifted == ignore_index, start_id)


class Seq2SeqLMAdapter(SequenceAdapter):
    task = "seq2seq-lm"
    causal_key = "labels"  # the decoder stream is the causal one
    causal_shift = 1  # label t is decoder input t+1 (shifted right), so outputs <= t must not see it
    bidirectional_key = "input_ids"  # the encoder must see every source token

    def labels(self, spec: ModelSpec, input_ids: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(0, spec.inputs.vocab_size, input_ids.shape, generator=generator)  # (B, T)

    def decoder_input_ids(self, spec: ModelSpec, model: torch.nn.Module, labels: torch.Tensor) -> torch.Tensor:
        prepare = getattr(model, "prepare_decoder_input_ids_from_labels", None)
        if prepare is not None:
            return prepare(labels=labels)
        return shift_right(labels, spec.inputs.pad_id, spec.inputs.ignore_index)

    def forward(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        inputs = self.model_inputs(spec, model, batch)
        return logits_of(model(**inputs, decoder_input_ids=self.decoder_input_ids(spec, model, batch["labels"])))

    def model_loss(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        return loss_of(model(**self.model_inputs(spec, model, batch), labels=batch["labels"]))

    def reference_loss(self, spec: ModelSpec, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Token-weighted mean cross-entropy of decoder position t predicting label t, ignored labels excluded."""
        labels = batch["labels"]  # (B, T)
        keep = labels != spec.inputs.ignore_index  # (B, T)
        log_probs = torch.log_softmax(logits.double(), dim=-1)  # (B, T, V)
        token_nll = -log_probs.gather(-1, labels.masked_fill(~keep, 0).unsqueeze(-1)).squeeze(-1)  # (B, T)
        return (token_nll * keep).sum() / keep.sum()

    def output_shape(self, spec: ModelSpec, batch: Batch) -> tuple[int, ...]:
        batch_size, target_length = batch["labels"].shape
        return (batch_size, target_length, spec.inputs.vocab_size)

    def bidirectional_outputs(self, spec: ModelSpec, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """The encoder's last hidden states (B, S, H), from ``model.get_encoder()``.

        Decoder outputs would not do: cross-attention lets every decoder position see the last source
        token even when the encoder itself is (wrongly) causal.
        """
        if not hasattr(model, "get_encoder"):
            raise TypeError(f"{spec.name}: a seq2seq-lm model must expose get_encoder() (the Hugging Face convention)")
        encoder_inputs = self.model_inputs(spec, model, batch)
        return hidden_states_of(model.get_encoder()(**encoder_inputs))

    def pad(self, spec: ModelSpec, batch: Batch, *, amount: int, side: PaddingSide) -> Batch:
        """Pad the encoder inputs only; the decoder stream (labels) is left as it is."""
        padded = super().pad(spec, {k: v for k, v in batch.items() if k != "labels"}, amount=amount, side=side)
        return {**padded, "labels": batch["labels"]}

    def real_outputs(self, outputs: torch.Tensor, *, amount: int, side: PaddingSide, length: int) -> torch.Tensor:
        """Encoder padding leaves every decoder output real."""
        return outputs

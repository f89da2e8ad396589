"""A small causal LM written by hand, the way a user would bring their own model to the harness.

It follows the Hugging Face causal-LM convention with no harness code: ``forward(input_ids,
attention_mask=None, labels=None, position_ids=None)`` returns an object with ``.logits`` of shape
(batch, length, vocab) and, given labels, ``.loss`` (next-token cross-entropy, ``-100`` ignored).
Attention is causal and masked keys (padding) are excluded; positions default to
``cumsum(attention_mask) - 1`` so left padding does not shift them.

Exposes every selector shape ``--model module:attr`` accepts: ``SPEC`` (a ModelSpec), ``SPECS`` (a
list of two), ``build`` (a callable returning a spec) and ``build_list`` (a callable returning a
list), plus specs with planted defects for the failure-path tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.spec import Capabilities, InputSpace, ModelSpec

VOCAB_SIZE = 32
CONTEXT = 8
PAD_ID = 0


@dataclass
class LMOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # scalar, when labels were given


class TinyCausalLM(nn.Module):
    """Token + position embeddings -> one single-head self-attention block -> LayerNorm -> LM head."""

    def __init__(self, dim: int = 16, *, causal: bool = True, eval_dropout: float = 0.0) -> None:
        super().__init__()
        self.causal = causal  # False plants a defect: attention sees future tokens
        self.eval_dropout = eval_dropout  # > 0 plants a defect: dropout stays on in eval mode
        self.token_embedding = nn.Embedding(VOCAB_SIZE, dim)
        self.position_embedding = nn.Embedding(CONTEXT, dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, VOCAB_SIZE)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> LMOutput:
        batch_size, length = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        hidden = self.token_embedding(input_ids) + self.position_embedding(position_ids)  # (B, T, D)
        q, k, v = self.query(hidden), self.key(hidden), self.value(hidden)  # (B, T, D) each
        scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])  # (B, T, T)
        allowed = attention_mask.bool()[:, None, :].expand(batch_size, length, length)  # keys that are real
        if self.causal:
            allowed = allowed & torch.ones(length, length, dtype=torch.bool).tril()
        # a finite fill (not -inf): fully masked rows (queries on left padding) stay finite
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1)
        if self.eval_dropout:
            weights = F.dropout(weights, p=self.eval_dropout, training=True)
        hidden = hidden + self.output(weights @ v)
        logits = self.lm_head(self.norm(hidden))  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB_SIZE), labels[:, 1:].reshape(-1), ignore_index=-100)
        return LMOutput(logits=logits, loss=loss)


def _spec(name: str, dim: int = 16, *, causal: bool = True, eval_dropout: float = 0.0, **changes) -> ModelSpec:
    return ModelSpec(
        name=name,
        task="causal-lm",
        build=lambda: TinyCausalLM(dim, causal=causal, eval_dropout=eval_dropout),
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
        description=f"hand-written single-block causal LM, {dim} dims",
        **changes,
    )


SPEC = _spec("custom-lm")
SPECS = [_spec("custom-lm-small", 8), _spec("custom-lm-wide", 32)]


def build() -> ModelSpec:
    return _spec("custom-lm-built", 12)


def build_list() -> list[ModelSpec]:
    return [_spec("custom-lm-listed-a", 8), _spec("custom-lm-listed-b", 24)]


# Planted defects. LEAKY claims causality but attends to future tokens; the causality check fails.
LEAKY = _spec("custom-lm-leaky", causal=False)
# The same defect, declared: the failure becomes a strict xfail.
LEAKY_DECLARED = _spec("custom-lm-leaky-declared", causal=False, expected_failures={"causality": "known future leak"})
# A wrong declaration: the check passes, so strict xfail turns it into XPASS(strict), a failed test.
WRONGLY_DECLARED = _spec("custom-lm-wrongly-declared", expected_failures={"causality": "no leak really"})
# Dropout left on in eval mode: eval_determinism fails.
DROPOUT_IN_EVAL = _spec("custom-lm-dropout", eval_dropout=0.5)


def _broken_build() -> nn.Module:
    raise RuntimeError("weights file custom-lm-broken.bin is missing")


# A model whose build raises: every test errors before its check runs.
BROKEN = ModelSpec(
    name="custom-lm-broken",
    task="causal-lm",
    build=_broken_build,
    inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID),
    capabilities=Capabilities(is_causal=True, has_attention_mask=True),
)

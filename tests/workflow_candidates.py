"""Candidates for tests/test_workflows.py, selected as ``tests.workflow_candidates:WORSE``: gpt2-tiny with
a planted regression, the kind of pull request the regression gate must block."""

from __future__ import annotations

import torch
from torch import nn

from harness.loading import resolve_models

BIAS_SCALE = 0.5  # the SD of the fixed logit bias: it raises the NLL by about BIAS_SCALE**2 / 2 nats per token


class BiasedLogits(nn.Module):
    """gpt2-tiny (the same weights) with a fixed seeded bias on its logits: every prediction a little
    off, so its loss is worse than gpt2-tiny's by a few times the gate's margin (0.05 nats)."""

    def __init__(self, base, scale: float = BIAS_SCALE) -> None:
        super().__init__()
        self.inner = base.build()
        vocab = base.inputs.vocab_size
        self.register_buffer("bias", scale * torch.randn(vocab, generator=torch.Generator().manual_seed(0)))

    def forward(self, input_ids, attention_mask=None, labels=None, position_ids=None):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        return {"logits": logits + self.bias}  # (B, T, V)


def _worse():
    (base,) = resolve_models(["gpt2-tiny"])
    return base.replace(name="gpt2-tiny-worse", build=lambda: BiasedLogits(base))


WORSE = _worse()

"""Tiny hand-written models with planted defects, for proving that every Tier 1 check can fail.

Two model families follow the Hugging Face conventions the harness adapters expect:

- :class:`TinyCausalLM`: a nanoGPT-style decoder (vocab 32, 16 dims, 2 heads, 2 layers, context 16)
  with attention written out by hand (``softmax`` over masked scores), so a defect is one line.
  ``forward(input_ids, attention_mask=None, labels=None, position_ids=None)`` returns
  ``{"logits": (B, T, V)}`` plus ``"loss"`` given labels: the mean cross-entropy of position t
  predicting label t+1, labels equal to -100 ignored.
- :class:`TinyImageClassifier`: conv -> batch norm -> ReLU -> 2x2 average pool -> linear over
  1x8x8 images and 5 classes. ``forward(pixel_values, labels=None)`` returns ``{"logits": (B, K)}``
  plus the mean cross-entropy ``"loss"`` given labels.

Each class takes ``defect``: ``None`` builds the clean model, which passes every applicable Tier 1
check; one of ``CAUSAL_DEFECTS`` / ``IMAGE_DEFECTS`` plants exactly that defect. The spec helpers
:func:`causal_spec` and :func:`image_spec` wrap a model in a :class:`~harness.spec.ModelSpec`
whose ``build`` is a :func:`functools.partial` of the class.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import digit_examples
from harness.spec import Capabilities, InputSpace, ModelSpec

VOCAB_SIZE = 32
DIM = 16
HEADS = 2
LAYERS = 2
CONTEXT = 16  # max_length of the causal LM
PAD_ID = 0
IGNORE_INDEX = -100

IMAGE_SIZE = (1, 8, 8)  # channels, height, width
NUM_CLASSES = 5
CHANNELS = 4

CAUSAL_DEFECTS: dict[str, str] = {
    "batch_norm_across_batch": "subtracts the mean over the batch dimension from the hidden states in eval",
    "divides_by_batch_size": "divides the logits by the batch size (rows stay independent at a fixed batch size)",
    "no_causal_mask": "attention has no causal triangle: every position sees the future",
    "ignores_attention_mask": "attention ignores attention_mask, so real tokens attend to padding",
    "detached_submodule": "block 0's MLP output is detached: blocks.0.ln2 and blocks.0.mlp get no gradient",
    "dropout_in_eval": "F.dropout(training=True) on the embeddings, active in eval mode",
    "counter_in_forward": "a plain int attribute `forward_calls` incremented by every forward",
    "counter_buffer_in_forward": "a persistent buffer `forward_calls` incremented in place by every forward",
    "cache_in_forward": "every forward appends its input to a plain list attribute `seen_inputs` (a growing cache)",
    "unshifted_loss": "the loss compares position t with label t instead of label t+1",
    "ignore_index_not_honoured": "labels of -100 are clamped to token 0 and scored",
    "ignored_labels_in_denominator": "the mean divides by every label, ignored ones included",
    "constant_init": "lm_head.weight is filled with the constant 0.02",
    "norm_not_one": "ln_f.weight is initialised to 0.5",
    "state_outside_state_dict": "a random offset added in forward lives in a non-persistent buffer",
    "wrong_shape_at_max_length": "at the maximum length the last position's logits are dropped",
    "nan_at_length_one": "a length-1 input gives NaN logits",
}

IMAGE_DEFECTS: dict[str, str] = {
    "batch_stats_in_eval": "batch norm normalises with the batch's statistics in eval mode",
    "divides_by_batch_size": "divides the logits by the batch size",
    "detached_features": "the convolution's output is detached: conv gets no gradient",
    "dropout_in_eval": "F.dropout(training=True) on the features, active in eval mode",
    "sum_loss": "the loss is the sum of the per-image cross-entropies, not their mean",
    "constant_init": "head.weight is filled with the constant 0.01",
    "norm_not_one": "bn.weight is initialised to 0.5",
    "state_outside_state_dict": "a random per-class bias added in forward is a plain tensor attribute",
}


def _check_defect(defect: str | None, known: dict[str, str], model: str) -> None:
    if defect is not None and defect not in known:
        raise ValueError(f"{model}: unknown defect={defect!r}; known: {', '.join(known)}")


class SelfAttention(nn.Module):
    """Multi-head self-attention with the mask applied by hand to the scores."""

    def __init__(self, dim: int, heads: int, *, causal: bool, use_mask: bool) -> None:
        super().__init__()
        self.heads = heads
        self.causal = causal
        self.use_mask = use_mask
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        batch, length, dim = x.shape
        head_dim = dim // self.heads
        q, k, v = self.qkv(x).split(dim, dim=-1)  # 3 x (B, T, C)
        q, k, v = (t.view(batch, length, self.heads, head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim)  # (B, H, T, T)
        allowed = torch.ones(length, length, dtype=torch.bool, device=x.device)  # (T, T): query x key
        if self.causal:
            allowed = allowed.tril()
        allowed = allowed.view(1, 1, length, length)
        if attention_mask is not None and self.use_mask:
            allowed = allowed & attention_mask.bool().view(batch, 1, 1, length)  # padded keys are never seen
        # A finite fill: a fully masked row (a pad query) softmaxes to a uniform row instead of NaN,
        # and exp(min - real score) is exactly 0, so masked keys contribute nothing to real queries.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)  # (B, H, T, T)
        out = (weights @ v).transpose(1, 2).reshape(batch, length, dim)  # (B, T, C)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, dim: int, heads: int, *, causal: bool, use_mask: bool, detach_mlp: bool) -> None:
        super().__init__()
        self.detach_mlp = detach_mlp
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, causal=causal, use_mask=use_mask)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), attention_mask)
        update = self.mlp(self.ln2(x))
        if self.detach_mlp:
            update = update.detach()
        return x + update


class TinyCausalLM(nn.Module):
    """A nanoGPT-style causal LM; ``defect`` plants one of ``CAUSAL_DEFECTS``."""

    def __init__(
        self,
        vocab_size: int = VOCAB_SIZE,
        dim: int = DIM,
        heads: int = HEADS,
        layers: int = LAYERS,
        context: int = CONTEXT,
        defect: str | None = None,
        min_length: int = 1,
    ) -> None:
        super().__init__()
        _check_defect(defect, CAUSAL_DEFECTS, type(self).__name__)
        self.defect = defect
        self.context = context
        self.min_length = min_length  # shorter inputs are refused, as a model with a fixed prefix would
        self.tok_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(context, dim)
        self.blocks = nn.ModuleList(
            Block(
                dim,
                heads,
                causal=defect != "no_causal_mask",
                use_mask=defect != "ignores_attention_mask",
                detach_mlp=defect == "detached_submodule" and index == 0,
            )
            for index in range(layers)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        if defect == "constant_init":
            nn.init.constant_(self.lm_head.weight, 0.02)
        if defect == "norm_not_one":
            nn.init.constant_(self.ln_f.weight, 0.5)
        if defect == "counter_in_forward":
            self.forward_calls = 0
        if defect == "counter_buffer_in_forward":
            self.register_buffer("forward_calls", torch.zeros((), dtype=torch.long))
        if defect == "cache_in_forward":
            self.seen_inputs: list[torch.Tensor] = []
        if defect == "state_outside_state_dict":
            self.register_buffer("offset", torch.randn(dim), persistent=False)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        defect = self.defect
        batch, length = input_ids.shape
        if not self.min_length <= length <= self.context:
            raise ValueError(f"input length {length} outside [{self.min_length}, {self.context}]")
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).expand(batch, length)  # (B, T)
        x = self.tok_emb(input_ids) + self.pos_emb(position_ids)  # (B, T, C)
        if defect == "state_outside_state_dict":
            x = x + self.offset
        if defect == "dropout_in_eval":
            x = F.dropout(x, p=0.1, training=True)
        if defect == "counter_in_forward":
            self.forward_calls += 1
        if defect == "counter_buffer_in_forward":
            self.forward_calls += 1
        if defect == "cache_in_forward":
            self.seen_inputs.append(input_ids)
        for block in self.blocks:
            x = block(x, attention_mask)
        if defect == "batch_norm_across_batch":
            x = x - x.mean(dim=0, keepdim=True)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if defect == "divides_by_batch_size":
            logits = logits / batch
        if defect == "wrong_shape_at_max_length" and length == self.context:
            logits = logits[:, :-1]
        if defect == "nan_at_length_one" and length == 1:
            logits = logits * float("nan")
        output = {"logits": logits}
        if labels is not None:
            if defect == "unshifted_loss":
                scored_logits, targets = logits, labels
            else:
                scored_logits, targets = logits[:, :-1], labels[:, 1:]
            if defect == "ignore_index_not_honoured":
                targets = targets.clamp(min=0)
            flat_logits, flat_targets = scored_logits.reshape(-1, scored_logits.shape[-1]), targets.reshape(-1)
            if defect == "ignored_labels_in_denominator":
                summed = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX, reduction="sum")
                output["loss"] = summed / flat_targets.numel()
            else:
                output["loss"] = F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE_INDEX)
        return output


class TinyImageClassifier(nn.Module):
    """conv(3x3) -> BatchNorm2d -> ReLU -> avgpool(2) -> linear; ``defect`` plants one of ``IMAGE_DEFECTS``."""

    def __init__(
        self,
        image_size: tuple[int, int, int] = IMAGE_SIZE,
        num_classes: int = NUM_CLASSES,
        channels: int = CHANNELS,
        defect: str | None = None,
    ) -> None:
        super().__init__()
        _check_defect(defect, IMAGE_DEFECTS, type(self).__name__)
        self.defect = defect
        in_channels, height, width = image_size
        self.conv = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.head = nn.Linear(channels * (height // 2) * (width // 2), num_classes)
        if defect == "constant_init":
            nn.init.constant_(self.head.weight, 0.01)
        if defect == "norm_not_one":
            nn.init.constant_(self.bn.weight, 0.5)
        if defect == "state_outside_state_dict":
            self.class_bias = torch.randn(num_classes)  # a plain attribute: not in state_dict

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        defect = self.defect
        hidden = self.conv(pixel_values)  # (B, C, H, W)
        if defect == "detached_features":
            hidden = hidden.detach()
        if defect == "batch_stats_in_eval":
            hidden = F.batch_norm(hidden, None, None, self.bn.weight, self.bn.bias, training=True, eps=self.bn.eps)
        else:
            hidden = self.bn(hidden)
        hidden = F.avg_pool2d(F.relu(hidden), 2)  # (B, C, H/2, W/2)
        if defect == "dropout_in_eval":
            hidden = F.dropout(hidden, p=0.2, training=True)
        logits = self.head(hidden.flatten(1))  # (B, K)
        if defect == "state_outside_state_dict":
            logits = logits + self.class_bias
        if defect == "divides_by_batch_size":
            logits = logits / pixel_values.shape[0]
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = F.cross_entropy(logits, labels, reduction="sum" if defect == "sum_loss" else "mean")
        return output


def _name(base: str, defect: str | None, suffix: str = "") -> str:
    return base + (f"+{defect}" if defect else "") + suffix


def causal_spec(
    defect: str | None = None,
    *,
    is_causal: bool = True,
    has_attention_mask: bool = True,
    min_length: int = 1,
    name: str | None = None,
) -> ModelSpec:
    """A ModelSpec for :class:`TinyCausalLM` with ``defect`` planted and the given claims.

    ``min_length`` > 1 builds a model that refuses shorter inputs, and declares it in the input space.
    """
    _check_defect(defect, CAUSAL_DEFECTS, "causal_spec")
    suffix = ("" if is_causal else "+bidirectional") + ("" if min_length == 1 else f"+min_length={min_length}")
    return ModelSpec(
        name=name or _name("tiny-causal-lm", defect, suffix),
        task="causal-lm",
        build=functools.partial(TinyCausalLM, defect=defect, min_length=min_length),
        inputs=InputSpace(
            vocab_size=VOCAB_SIZE, min_length=min_length, max_length=CONTEXT, pad_id=PAD_ID, max_batch_size=4
        ),
        capabilities=Capabilities(is_causal=is_causal, has_attention_mask=has_attention_mask),
        description=f"tiny hand-written causal LM; defect: {CAUSAL_DEFECTS.get(defect, 'none')}",
    )


def image_spec(defect: str | None = None, *, name: str | None = None) -> ModelSpec:
    """A ModelSpec for :class:`TinyImageClassifier` with ``defect`` planted."""
    _check_defect(defect, IMAGE_DEFECTS, "image_spec")
    return ModelSpec(
        name=name or _name("tiny-image-classifier", defect),
        task="image-classification",
        build=functools.partial(TinyImageClassifier, defect=defect),
        inputs=InputSpace(image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, max_batch_size=4),
        real_data=digit_examples,
        description=f"tiny hand-written image classifier; defect: {IMAGE_DEFECTS.get(defect, 'none')}",
    )

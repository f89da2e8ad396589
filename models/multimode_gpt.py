"""multimode-gpt: a compact nanoGPT-style transformer, written here, with three modes.

One body (``transformer``: token and position embeddings, ``n_layer`` pre-norm blocks, a final
LayerNorm) and one head per mode, chosen by ``MultiModeGPTConfig.mode``:

- ``language-model``: causal attention. ``logits`` (B, T, V): next-token logits of the LM head, tied to
  the token embedding (``lm_head.weight is transformer.wte.weight``). ``loss``: GPT-2's shifted,
  token-weighted mean cross-entropy of position t predicting ``labels[:, t + 1]`` over labels != -100.
- ``token-classifier``: bidirectional attention. ``logits`` (B, T, K): class logits of ``head``,
  Linear(n_embd, K), at every token. ``loss``: mean cross-entropy over labels (B, T) != -100 (no shift).
- ``sequence-scorer``: bidirectional attention. ``logits`` (B,): **the scores in [0, 1] after the
  sigmoid, not pre-sigmoid logits**: ``sigmoid(head(h_cls))`` with ``h_cls`` the final hidden state of
  the CLS token and ``head`` Linear(n_embd, 1); ``score_logits`` (B,) holds ``head(h_cls)``. ``loss``:
  mean squared error of the scores against float labels (B,) in [0, 1], labels == -100 excluded. (The
  scores are strictly inside (0, 1) unless ``|score_logits|`` exceeds ~17, where float32 rounds.)

The scorer's CLS token is a learned vector (``cls_embedding``) the model itself puts in front of the
input at position 0 (inputs never contain it, so no vocabulary id is reserved); it carries no position
embedding, so the input's tokens keep positions 0..T-1 and ``block_size`` bounds T in every mode.

Masks and positions (Hugging Face conventions): ``forward(input_ids, attention_mask=None, labels=None,
position_ids=None, output_attentions=False)``; ``output_attentions=True`` adds ``attentions``, one (B, nh, L, L)
tensor of softmax weights per block (L = T, or T + 1 with the scorer's CLS). ``attention_mask`` (B, T) marks real tokens; masked keys are excluded from
attention in every mode, so padding never reaches a real token (nor the CLS). Every query may also attend
to itself, so a padded query's row is never empty and stays finite. ``position_ids`` default to
``cumsum(attention_mask) - 1`` (clamped at 0): left padding does not shift positions. One ignore index
(``config.ignore_index``, -100) in every mode.

Loss modifiers (``multimode_gpt_losses``, this model's own) are set by three config fields and wired per mode
by ``MODIFIERS_BY_MODE``; a non-zero setting for a mode it does not apply to is rejected when the config
is built (:class:`~multimode_gpt_losses.ModifierNotApplicable`, naming field and mode):

=====================  ==============================  ==============  ================  ===============
modifier               config field                    language-model  token-classifier  sequence-scorer
=====================  ==============================  ==============  ================  ===============
label smoothing        ``label_smoothing`` (eps)       yes             yes               error
entropy weighting      ``entropy_weighting`` (beta)    yes             yes               yes
mask-ratio weight      ``mask_ratio_power`` (gamma)    yes             yes               error
=====================  ==============================  ==============  ================  ===============

For the language model the mask ratio counts shifted targets: scored labels ``labels[:, 1:]`` over real
target positions ``attention_mask[:, 1:]``. Composition and normalisation: see the multimode_gpt_losses module.

Transfer learning: :meth:`MultiModeGPT.init_from_checkpoint` copies the body (``transformer.*``) from a
checkpoint of any mode and returns a :class:`TransferReport`; :meth:`~MultiModeGPT.freeze_transformer` /
:meth:`~MultiModeGPT.unfreeze_transformer`; :func:`configure_optimizers` (AdamW, groups "head" and
"body") and :func:`add_unfrozen_parameters` (after unfreezing); the head/body schedule that drives those
groups is ``multimode_gpt_schedule`` (scheduler ``"transfer-learning"``, named in the training recipe). In
language-model mode the only head is tied to ``transformer.wte``, so it belongs to the body: freezing the
transformer freezes it too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.spec import Capabilities, InputSpace, ModelSpec
from harness.training.recipe import TrainingRecipe

from . import multimode_gpt_schedule
from .multimode_gpt_losses import (
    EntropyWeighting,
    LabelSmoothing,
    LossPipeline,
    MaskRatioWeighting,
    ModifierNotApplicable,
)

MODES: tuple[str, ...] = ("language-model", "token-classifier", "sequence-scorer")
TASK_OF_MODE: dict[str, str] = {
    "language-model": "causal-lm",
    "token-classifier": "token-classification",
    "sequence-scorer": "sequence-scoring",
}
SHORT_NAME: dict[str, str] = {"language-model": "lm", "token-classifier": "tagger", "sequence-scorer": "scorer"}
MODIFIERS_BY_MODE: dict[str, tuple[str, ...]] = {
    "language-model": ("label_smoothing", "entropy_weighting", "mask_ratio"),
    "token-classifier": ("label_smoothing", "entropy_weighting", "mask_ratio"),
    "sequence-scorer": ("entropy_weighting",),
}
"""Mode -> the loss modifiers (``multimode_gpt_losses`` names) that apply to it."""
MODIFIER_FIELDS: dict[str, str] = {
    "label_smoothing": "label_smoothing",
    "entropy_weighting": "entropy_weighting",
    "mask_ratio": "mask_ratio_power",
}
"""Loss-modifier name -> the config field that sets it (0 means absent)."""
BODY_PREFIX = "transformer."  # parameters and state-dict keys of the body start with it; all others are head


@dataclass(frozen=True)
class MultiModeGPTConfig:
    """Everything that shapes a MultiModeGPT; validated on construction (errors name field and value)."""

    mode: str = "language-model"  # one of MODES: the attention direction and the head
    vocab_size: int = 256  # token ids are in [0, vocab_size); 256 fits raw bytes
    block_size: int = 64  # longest input (context window): one learned position embedding per position
    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads per block; must divide n_embd
    n_embd: int = 64  # width of the residual stream
    num_classes: int = 5  # K, classes per token (token-classifier only; the other modes ignore it)
    dropout: float = 0.0  # on embeddings, attention weights and residual branches, in training mode only
    bias: bool = True  # biases in the Linear layers and LayerNorms, as in GPT-2
    pad_id: int = 0  # token id used for padding (masked by attention_mask); the spec's InputSpace.pad_id
    ignore_index: int = -100  # label value excluded from the loss, in every mode
    label_smoothing: float = 0.0  # eps in [0, 1) of the cross-entropy; language-model and token-classifier
    entropy_weighting: float = 0.0  # beta: per-sample weight exp(beta * normalised entropy); every mode
    mask_ratio_power: float = 0.0  # gamma: per-sample weight (scored / real targets) ** gamma; not the scorer

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got mode={self.mode!r}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "num_classes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd must be divisible by n_head, got n_embd={self.n_embd}, n_head={self.n_head}")
        if self.mode == "token-classifier" and self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2 for a token classifier, got num_classes={self.num_classes}")
        if not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(f"pad_id must be in [0, {self.vocab_size}), got pad_id={self.pad_id}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got dropout={self.dropout!r}")
        for name in ("label_smoothing", "entropy_weighting", "mask_ratio_power"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {name}={value!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got label_smoothing={self.label_smoothing!r}")
        applicable = MODIFIERS_BY_MODE[self.mode]
        for modifier, name in MODIFIER_FIELDS.items():
            if getattr(self, name) != 0.0 and modifier not in applicable:
                raise ModifierNotApplicable(
                    f"{name}={getattr(self, name)!r} does not apply in mode {self.mode!r}: its loss modifiers are "
                    f"{', '.join(MODIFIER_FIELDS[m] for m in applicable)} (see MODIFIERS_BY_MODE)"
                )

    def loss_pipeline(self) -> LossPipeline:
        """The loss modifiers this config sets, identity (0) settings left out."""
        modifiers = []
        if self.label_smoothing != 0.0:
            modifiers.append(LabelSmoothing(self.label_smoothing))
        if self.entropy_weighting != 0.0:
            modifiers.append(EntropyWeighting(self.entropy_weighting))
        if self.mask_ratio_power != 0.0:
            modifiers.append(MaskRatioWeighting(self.mask_ratio_power))
        return LossPipeline(tuple(modifiers))


@dataclass
class MultiModeGPTOutput:
    """What forward returns; ``logits`` means a different thing per mode (see the module docstring)."""

    logits: torch.Tensor  # LM (B, T, V) and tagger (B, T, K) logits; scorer (B,) sigmoid scores in [0, 1]
    loss: torch.Tensor | None = None  # scalar, when labels were given
    score_logits: torch.Tensor | None = None  # scorer only: (B,) pre-sigmoid values, logits = sigmoid(score_logits)
    attentions: tuple[torch.Tensor, ...] | None = None  # given output_attentions: per block (B, nh, L, L) weights


class SelfAttention(nn.Module):
    """Multi-head self-attention over an explicit boolean mask of allowed (query, key) pairs."""

    def __init__(self, config: MultiModeGPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # a residual projection
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention output (B, L, C) and the attention weights (B, nh, L, L) after dropout."""
        B, L, C = x.shape  # batch, length, n_embd
        q, k, v = self.c_attn(x).split(C, dim=2)  # (B, L, C) each
        q = q.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, L, hs)
        k = k.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, L, hs)
        v = v.view(B, L, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, L, hs)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, L, L)
        att = att.masked_fill(~allowed, float("-inf"))  # allowed (B, 1, L, L): no row is all False
        att = self.attn_dropout(F.softmax(att, dim=-1))  # (B, nh, L, L)
        y = att @ v  # (B, nh, L, hs)
        y = y.transpose(1, 2).contiguous().view(B, L, C)  # (B, L, C)
        return self.resid_dropout(self.c_proj(y)), att


class MLP(nn.Module):
    def __init__(self, config: MultiModeGPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)  # a residual projection
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, L, C)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: MultiModeGPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = SelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The new residual stream (B, L, C) and this block's attention weights (B, nh, L, L)."""
        update, att = self.attn(self.ln_1(x), allowed)  # (B, L, C), (B, nh, L, L)
        x = x + update  # (B, L, C)
        return x + self.mlp(self.ln_2(x)), att  # (B, L, C), (B, nh, L, L)


@dataclass(frozen=True)
class TransferReport:
    """What :meth:`MultiModeGPT.init_from_checkpoint` did; every field a sorted tuple of state-dict keys."""

    loaded_keys: tuple[str, ...]  # body keys of this model copied from the checkpoint
    missing_keys: tuple[str, ...]  # keys of this model left as they were: its head, and body keys the checkpoint lacks
    unexpected_keys: tuple[
        str, ...
    ]  # checkpoint keys this model does not have (another mode's head, e.g. lm_head.weight)
    skipped_keys: tuple[str, ...] = ()  # checkpoint keys this model has but that are not body: not loaded (its head)


def read_state_dict(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict from a mapping, a ``.safetensors`` file or a ``torch.save`` file (loaded with weights_only)."""
    where = "the given mapping"
    if isinstance(source, Mapping):
        state = dict(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any reader error means an unreadable checkpoint
            raise ValueError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from error
    else:
        raise TypeError(f"source must be a path or a state dict, got {type(source).__name__}")
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ValueError(f"checkpoint {where} is not a state dict (a mapping of str to Tensor)")
    return dict(state)


class MultiModeGPT(nn.Module):
    """The model; see the module docstring for the modes, masks, outputs and losses."""

    def __init__(self, config: MultiModeGPTConfig) -> None:
        super().__init__()
        self.config = config
        self.loss_pipeline = config.loss_pipeline()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),
                "wpe": nn.Embedding(config.block_size, config.n_embd),
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                "ln_f": nn.LayerNorm(config.n_embd, bias=config.bias),
            }
        )
        if config.mode == "language-model":
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as GPT-2
        elif config.mode == "token-classifier":
            self.head = nn.Linear(config.n_embd, config.num_classes, bias=config.bias)
        else:
            self.cls_embedding = nn.Parameter(torch.zeros(config.n_embd))  # the CLS token put at position 0
            self.head = nn.Linear(config.n_embd, 1, bias=config.bias)
        self.apply(self._init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, scaled as GPT-2
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.mode == "sequence-scorer":
            nn.init.normal_(self.cls_embedding, mean=0.0, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> MultiModeGPTOutput:
        config = self.config
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T > config.block_size:
            raise ValueError(f"input length {T} exceeds block_size={config.block_size}")
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        if position_ids is None:
            position_ids = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, T): arange(T) without padding
        x = self.transformer.wte(input_ids) + self.transformer.wpe(position_ids)  # (B, T, C)
        keys = real  # (B, L): keys that may be attended to
        if config.mode == "sequence-scorer":
            cls = self.cls_embedding.expand(B, 1, -1)  # (B, 1, C)
            x = torch.cat([cls, x], dim=1)  # (B, L = T + 1, C)
            keys = torch.cat([torch.ones_like(real[:, :1]), real], dim=1)  # (B, L)
        x = self.transformer.drop(x)
        L = x.shape[1]
        allowed = keys[:, None, None, :].expand(B, 1, L, L)  # (B, 1, L, L): query i may attend key j
        if config.mode == "language-model":
            allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=x.device).tril()  # causal
        allowed = allowed | torch.eye(L, dtype=torch.bool, device=x.device)  # a query always sees itself
        attentions = []  # per block (B, nh, L, L)
        for block in self.transformer.h:
            x, att = block(x, allowed)  # (B, L, C), (B, nh, L, L)
            attentions.append(att)
        x = self.transformer.ln_f(x)  # (B, L, C)

        if config.mode == "language-model":
            logits = self.lm_head(x)  # (B, T, V)
            output = MultiModeGPTOutput(logits=logits)
            if labels is not None:
                self._check_class_labels(labels, input_ids)
                output.loss = self.loss_pipeline.class_loss(
                    logits[:, :-1, :],  # (B, T-1, V): position t predicts token t+1
                    labels[:, 1:],  # (B, T-1)
                    ignore_index=config.ignore_index,
                    real=real[:, 1:],  # (B, T-1)
                )
        elif config.mode == "token-classifier":
            logits = self.head(x)  # (B, T, K)
            output = MultiModeGPTOutput(logits=logits)
            if labels is not None:
                self._check_class_labels(labels, input_ids)
                output.loss = self.loss_pipeline.class_loss(logits, labels, ignore_index=config.ignore_index, real=real)
        else:
            score_logits = self.head(x[:, 0]).squeeze(-1)  # (B,): the CLS token's final hidden state
            scores = torch.sigmoid(score_logits)  # (B,) in [0, 1]
            output = MultiModeGPTOutput(logits=scores, score_logits=score_logits)
            if labels is not None:
                self._check_score_labels(labels, B)
                output.loss = self.loss_pipeline.score_loss(
                    scores, labels.to(scores.dtype), ignore_index=config.ignore_index
                )
        if output_attentions:
            output.attentions = tuple(attentions)
        return output

    def _check_class_labels(self, labels: torch.Tensor, input_ids: torch.Tensor) -> None:
        if labels.shape != input_ids.shape or labels.is_floating_point():
            raise ValueError(
                f"{self.config.mode} labels must be integer class ids shaped like input_ids "
                f"{tuple(input_ids.shape)}, got {labels.dtype} {tuple(labels.shape)}"
            )

    def _check_score_labels(self, labels: torch.Tensor, batch_size: int) -> None:
        if labels.shape != (batch_size,):
            raise ValueError(f"sequence-scorer labels must be (batch,) = ({batch_size},), got {tuple(labels.shape)}")
        scored = labels[labels != self.config.ignore_index].double()
        if scored.numel() and not ((scored >= 0) & (scored <= 1)).all():
            raise ValueError(
                f"sequence-scorer labels must be in [0, 1] (or ignore_index={self.config.ignore_index}), "
                f"got values in [{float(scored.min()):g}, {float(scored.max()):g}]"
            )

    # Transfer learning.

    def init_from_checkpoint(self, source: str | Path | Mapping[str, torch.Tensor]) -> TransferReport:
        """Copy the body (``transformer.*``) from a checkpoint of any mode; the head keeps its weights.

        ``source`` is a state dict, a ``.safetensors`` file or a ``torch.save`` file. A language-model
        checkpoint saved without duplicate tensors (safetensors keeps ``lm_head.weight`` of the tied pair)
        provides ``transformer.wte.weight`` through ``lm_head.weight``; the key is still reported as
        unexpected by a model that has no ``lm_head``. Body tensors of another shape raise ValueError.
        """
        state = read_state_dict(source)
        own = self.state_dict()
        sources: dict[str, str] = {}  # model key -> checkpoint key it is copied from
        for key in own:
            if not key.startswith(BODY_PREFIX):
                continue
            if key in state:
                sources[key] = key
            elif key == "transformer.wte.weight" and "lm_head.weight" in state:
                sources[key] = "lm_head.weight"
        mismatched = [
            f"{key}: checkpoint {tuple(state[source].shape)}, model {tuple(own[key].shape)}"
            for key, source in sources.items()
            if state[source].shape != own[key].shape
        ]
        if mismatched:
            raise ValueError(
                f"the checkpoint's body does not fit this model ({len(mismatched)} shape mismatches): "
                + "; ".join(mismatched[:5])
            )
        with torch.no_grad():
            for key, source in sources.items():
                own[key].copy_(state[source])
        tied = {"lm_head.weight": "transformer.wte.weight"} if self.config.mode == "language-model" else {}
        missing = [key for key in own if key not in sources and tied.get(key) not in sources]
        return TransferReport(
            loaded_keys=tuple(sorted(sources)),
            missing_keys=tuple(sorted(missing)),
            unexpected_keys=tuple(sorted(key for key in state if key not in own)),
            skipped_keys=tuple(sorted(key for key in state if key in own and not key.startswith(BODY_PREFIX))),
        )

    def body_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The body's named parameters (``transformer.*``; in language-model mode the tied head too)."""
        return [(name, p) for name, p in self.named_parameters() if name.startswith(BODY_PREFIX)]

    def head_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The mode's own named parameters (none in language-model mode: its head is tied to the body)."""
        return [(name, p) for name, p in self.named_parameters() if not name.startswith(BODY_PREFIX)]

    def freeze_transformer(self) -> None:
        """Stop gradients to the body (``requires_grad = False``); the head stays trainable."""
        for _, parameter in self.body_parameters():
            parameter.requires_grad_(False)

    def unfreeze_transformer(self) -> None:
        """Let gradients reach the body again; follow with :func:`add_unfrozen_parameters` on the optimizer."""
        for _, parameter in self.body_parameters():
            parameter.requires_grad_(True)


# Optimizers.


def _positive_real(name: str, value: Any, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {name}={value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {name}={value!r}")
    return float(value)


def configure_optimizers(
    model: nn.Module, *, lr: float, body_lr_multiplier: float = 1.0, weight_decay: float = 0.0
) -> torch.optim.AdamW:
    """AdamW over every parameter that requires grad now, in two named param groups, always both present:

    - ``{"name": "head", "lr": lr}``: parameters outside ``transformer.*``;
    - ``{"name": "body", "lr": lr * body_lr_multiplier}``: ``transformer.*`` (empty while frozen).

    Each group also records ``base_lr`` (= ``lr``) and ``lr_multiplier``. ``weight_decay`` (decoupled, AdamW)
    applies to both groups. Raises ValueError when no parameter requires grad (e.g. a language model
    with a frozen transformer, whose only head is tied to it).
    """
    lr = _positive_real("lr", lr, allow_zero=False)
    multiplier = _positive_real("body_lr_multiplier", body_lr_multiplier, allow_zero=True)
    weight_decay = _positive_real("weight_decay", weight_decay, allow_zero=True)
    head = [p for name, p in model.named_parameters() if p.requires_grad and not name.startswith(BODY_PREFIX)]
    body = [p for name, p in model.named_parameters() if p.requires_grad and name.startswith(BODY_PREFIX)]
    if not head and not body:
        raise ValueError("no parameter of the model requires grad: nothing to optimize (unfreeze it first)")
    groups = [
        {"name": "head", "params": head, "lr": lr, "base_lr": lr, "lr_multiplier": 1.0},
        {"name": "body", "params": body, "lr": lr * multiplier, "base_lr": lr, "lr_multiplier": multiplier},
    ]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def add_unfrozen_parameters(optimizer: torch.optim.Optimizer, model: nn.Module) -> tuple[str, ...]:
    """Put every parameter that requires grad but is in no param group into its group ("body" for
    ``transformer.*``, else "head"), which keeps its rate (``base_lr * lr_multiplier`` unless a scheduler
    changed it). Returns the names added. Call it after ``model.unfreeze_transformer()``.
    """
    groups = {group.get("name"): group for group in optimizer.param_groups}
    if "head" not in groups or "body" not in groups:
        raise ValueError(
            f"the optimizer needs param groups named 'head' and 'body' (configure_optimizers builds them); "
            f"it has {[group.get('name') for group in optimizer.param_groups]}"
        )
    present = {id(p) for group in optimizer.param_groups for p in group["params"]}
    added = []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad and id(parameter) not in present:
            groups["body" if name.startswith(BODY_PREFIX) else "head"]["params"].append(parameter)
            present.add(id(parameter))
            added.append(name)
    return tuple(added)


# Training recipe: the model's own optimizer and freeze/unfreeze, which Tier 3 checks exercise.


def recipe_optimizer(model: nn.Module, config: Any) -> torch.optim.AdamW:
    """:func:`configure_optimizers` at a TrainingConfig's learning rate and weight decay."""
    return configure_optimizers(model, lr=config.learning_rate, weight_decay=config.weight_decay)


def recipe_freeze(model: MultiModeGPT) -> None:
    model.freeze_transformer()


def recipe_unfreeze(model: MultiModeGPT) -> None:
    model.unfreeze_transformer()


def training_recipe(mode: str) -> TrainingRecipe:
    """The recipe of a mode; the language model has no head outside its body (it is tied to
    ``transformer.wte``), so it leaves freeze/unfreeze to the harness default."""
    own_freeze = mode != "language-model"
    return TrainingRecipe(
        configure_optimizers=recipe_optimizer,
        freeze=recipe_freeze if own_freeze else None,
        unfreeze=recipe_unfreeze if own_freeze else None,
        add_unfrozen=add_unfrozen_parameters,
        name=f"multimode-gpt {mode}",
        schedules=(multimode_gpt_schedule.CONTRACT,),  # its head/body transfer-learning schedule
    )


# Specs.


def build_spec(
    config: MultiModeGPTConfig | str = "language-model", *, name: str | None = None, **changes: Any
) -> ModelSpec:
    """A ModelSpec for a config, or for a mode name plus config fields (``build_spec("token-classifier",
    n_embd=32)``); ``changes`` replace fields of a given config. The name defaults to
    ``multimode-gpt-<lm|tagger|scorer>-<n_layer>x<n_head>x<n_embd>``. The Tier 1 loss oracle compares
    with the task's plain loss, so a config with loss modifiers fails it wherever they change the loss.
    """
    if isinstance(config, str):
        config = MultiModeGPTConfig(mode=config, **changes)
    elif changes:
        config = dataclasses.replace(config, **changes)
    mode = config.mode
    inputs = InputSpace(
        vocab_size=config.vocab_size,
        max_length=config.block_size,
        pad_id=config.pad_id,
        ignore_index=config.ignore_index,
        num_classes=config.num_classes if mode == "token-classifier" else None,
    )
    size = f"{config.n_layer}x{config.n_head}x{config.n_embd}"
    return ModelSpec(
        name=name or f"multimode-gpt-{SHORT_NAME[mode]}-{size}",
        task=TASK_OF_MODE[mode],
        build=functools.partial(MultiModeGPT, config),
        inputs=inputs,
        capabilities=Capabilities(is_causal=mode == "language-model", has_attention_mask=True, returns_attentions=True),
        recipe=training_recipe(mode),
        description=f"nanoGPT-style multi-mode transformer, {mode} mode, {size} (layers x heads x dims), "
        f"vocab {config.vocab_size}, context {config.block_size}",
    )


LM_SPEC = build_spec(MultiModeGPTConfig(mode="language-model"), name="multimode-gpt-lm")
TAGGER_SPEC = build_spec(MultiModeGPTConfig(mode="token-classifier", num_classes=5), name="multimode-gpt-tagger")
SCORER_SPEC = build_spec(MultiModeGPTConfig(mode="sequence-scorer"), name="multimode-gpt-scorer")
SPECS = [LM_SPEC, TAGGER_SPEC, SCORER_SPEC]


__all__ = [
    "BODY_PREFIX",
    "LM_SPEC",
    "MODES",
    "MODIFIERS_BY_MODE",
    "SCORER_SPEC",
    "SPECS",
    "TAGGER_SPEC",
    "MultiModeGPT",
    "MultiModeGPTConfig",
    "MultiModeGPTOutput",
    "TransferReport",
    "add_unfrozen_parameters",
    "build_spec",
    "configure_optimizers",
    "read_state_dict",
    "training_recipe",
]

"""Tiny models with one planted numerics defect each, for proving that every check of
``harness.checks.numerics`` can fail; each clean twin passes them.

- :class:`NumericsLM`: a causal LM (vocab 32, 16 dims, 2 blocks, context 16) following the Hugging Face
  convention (``forward(input_ids, attention_mask=None, labels=None)`` -> ``{"logits", "loss"}``). Attention
  uses the hidden states themselves as queries and keys, and every token embedding has the norm
  ``activation_scale * 4`` (residual updates are small), so the scale sets the attention scores: a token's score
  with itself is ``16 * scale^2 / 4``. 2.7 gives 29 (``exp`` overflows float16 above 11.1); 100 gives a raw
  ``q @ k^T`` of 1.6e5 (above float16's 65504) while the scaled score, 4e4, fits.
  Scores and softmax are submodules, so the activation hooks name them. ``gradient_checkpointing_enable``
  follows transformers' signature (``gradient_checkpointing_kwargs={"use_reentrant": ...}``, reentrant by
  default, as transformers 4 did); checkpointing runs in training mode only.
- :class:`LogPoolCNN`: an image classifier (1x8x8, 5 classes) that pools ReLU features by their mean and
  takes the log of the pooled energy ("log-energy pooling").

``lm_spec(defect)`` / ``image_spec(defect)`` build the specs; ``DEFECTS`` maps each defect to the check that
must flag it, the activation scale its model runs at and what it does. For the gradient-accumulation check (Tier 3,
harness/checks/training.py), :func:`micro_batch_mean_loss` is a user's recipe loss averaged per micro-batch, put on a
tiny multimode-gpt tagger by :func:`accumulation_spec`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.spec import Capabilities, InitSpec, InputSpace, ModelSpec

VOCAB_SIZE = 32
DIM = 16  # one head of 16 dims: the score scale is 1/4
LAYERS = 2
CONTEXT = 16
IMAGE_SIZE = (1, 8, 8)
NUM_CLASSES = 5
LOSS_SCALE = 128.0  # the static float16 loss scale of the "unscaled_loss_scale" defect

DEFECTS: dict[str, tuple[str, float, str]] = {
    "naive_softmax": (
        "half_precision_parity",
        2.7,
        "softmax as exp(s) / sum(exp(s)) without subtracting the row maximum: exp(30) overflows float16",
    ),
    "scale_after_matmul": (
        "half_precision_parity",
        100.0,
        "(q @ k^T) * d^-0.5 instead of (q * d^-0.5) @ k^T: the raw product 1.6e5 overflows float16",
    ),
    "autocast_self_cast": (
        "mixed_precision_training",
        1.0,
        "the first forward under autocast casts the model to bfloat16 (the master weights are lost)",
    ),
    "unscaled_loss_scale": (
        "mixed_precision_training",
        1.0,
        f"under autocast the loss is multiplied by a static float16 loss scale ({LOSS_SCALE:g}) never undone",
    ),
    "compile_only_branch": (
        "compile_parity",
        1.0,
        "the final LayerNorm is skipped when torch.compiler.is_compiling() (a 'fused' path that forgot it)",
    ),
    "frozen_embeddings_reentrant": (
        "gradient_checkpointing_equivalence",
        1.0,
        "frozen token embeddings: under reentrant checkpointing no block input requires grad, so the blocks get none",
    ),
    "detaching_checkpoint": (
        "gradient_checkpointing_equivalence",
        1.0,
        "the checkpoint wrapper calls the block on its input detached: nothing before a block gets gradient",
    ),
    "log_of_zero_activation": (
        "degenerate_inputs",
        1.0,
        "log of the mean ReLU feature energy with no epsilon: an all-zero (or constant) image gives log(0)",
    ),
}
LM_DEFECTS = tuple(name for name in DEFECTS if name != "log_of_zero_activation")
WARNING_DEFECTS = {
    "length_indexed_masks": "causal masks precomputed per length in a Python list: every new length recompiles"
}


def _check_defect(defect: str | None, known: tuple[str, ...]) -> None:
    if defect is not None and defect not in known:
        raise ValueError(f"unknown defect={defect!r}; known: {', '.join(known)}")


class Scores(nn.Module):
    """Scaled dot products (B, T, D) x (B, T, D) -> (B, T, T), scaled before the matmul unless ``scale_after``."""

    def __init__(self, *, scale_after: bool) -> None:
        super().__init__()
        self.scale_after = scale_after

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scale = q.shape[-1] ** -0.5
        if self.scale_after:
            return (q @ k.transpose(-2, -1)) * scale  # (B, T, T): the raw product may overflow half precision
        return (q * scale) @ k.transpose(-2, -1)  # (B, T, T)


class Softmax(nn.Module):
    """Softmax over the last dimension; ``naive`` skips the max-subtraction."""

    def __init__(self, *, naive: bool) -> None:
        super().__init__()
        self.naive = naive

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        if self.naive:
            e = torch.exp(scores)  # (B, T, T): exp(-inf) of masked keys is 0
            return e / e.sum(-1, keepdim=True)
        return torch.softmax(scores, dim=-1)


class Block(nn.Module):
    """x + softmax(scores(x, x)) @ value(x), then x + mlp(norm(x)); queries and keys are the hidden states."""

    def __init__(self, defect: str | None) -> None:
        super().__init__()
        self.scores = Scores(scale_after=defect == "scale_after_matmul")
        self.softmax = Softmax(naive=defect == "naive_softmax")
        self.value = nn.Linear(DIM, DIM)
        self.norm = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 2 * DIM), nn.GELU(), nn.Linear(2 * DIM, DIM))
        for layer in (self.value, self.mlp[0], self.mlp[2]):  # small updates: the residual keeps the embedding's scale
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        scores = self.scores(x, x).masked_fill(~allowed, float("-inf"))  # (B, T, T)
        x = x + self.softmax(scores) @ self.value(x)  # (B, T, D)
        return x + self.mlp(self.norm(x))


class NumericsLM(nn.Module):
    """The causal LM of the module docstring, with ``defect`` planted (None: clean)."""

    def __init__(self, defect: str | None = None, activation_scale: float = 1.0) -> None:
        super().__init__()
        _check_defect(defect, (*LM_DEFECTS, *WARNING_DEFECTS))
        self.defect = defect
        self.wte = nn.Embedding(VOCAB_SIZE, DIM)
        # every token's embedding has norm scale * sqrt(DIM): its own score is exactly DIM * scale^2 / 4
        with torch.no_grad():
            direction = torch.randn(VOCAB_SIZE, DIM)
            self.wte.weight.copy_(direction / direction.norm(dim=1, keepdim=True) * activation_scale * DIM**0.5)
        if defect == "frozen_embeddings_reentrant":
            self.wte.weight.requires_grad_(False)
        self.blocks = nn.ModuleList(Block(defect) for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB_SIZE)
        self.checkpointing = False
        self.use_reentrant = True
        if defect == "length_indexed_masks":
            self.masks = [torch.ones(t, t, dtype=torch.bool).tril() for t in range(CONTEXT + 1)]

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        self.checkpointing = True
        self.use_reentrant = (gradient_checkpointing_kwargs or {}).get("use_reentrant", True)

    def _block(self, block: Block, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if not (self.checkpointing and self.training):
            return block(x, allowed)
        if self.defect == "detaching_checkpoint":
            return checkpoint(lambda h, a: block(h.detach(), a), x, allowed, use_reentrant=self.use_reentrant)
        return checkpoint(block, x, allowed, use_reentrant=self.use_reentrant)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        casting = self.defect == "autocast_self_cast" and torch.is_autocast_enabled("cpu")
        if casting and self.head.weight.dtype != torch.bfloat16:
            self.to(torch.bfloat16)  # "faster": the whole model in bfloat16 from here on
        batch, length = input_ids.shape
        if self.defect == "length_indexed_masks":
            causal = self.masks[length].to(input_ids.device)  # (T, T): a Python index, a guard on the length
        else:
            causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()  # (T, T)
        allowed = causal.view(1, length, length)
        if attention_mask is not None:
            allowed = allowed & attention_mask.bool().view(batch, 1, length)  # padded keys unseen
        allowed = allowed | torch.eye(length, dtype=torch.bool, device=input_ids.device)  # a query sees itself
        x = self.wte(input_ids)  # (B, T, D)
        for block in self.blocks:
            x = self._block(block, x, allowed)
        if not (self.defect == "compile_only_branch" and torch.compiler.is_compiling()):
            x = self.ln_f(x)
        logits = self.head(x)  # (B, T, V)
        output = {"logits": logits}
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
            if self.defect == "unscaled_loss_scale" and torch.is_autocast_enabled("cpu"):
                loss = loss * LOSS_SCALE  # a float16 recipe's static loss scale, never unscaled
            output["loss"] = loss
        return output


class LogPoolCNN(nn.Module):
    """conv(1->4, no bias) -> ReLU -> mean over pixels -> log -> linear(4->5); the clean model clamps before the log."""

    def __init__(self, defect: str | None = None) -> None:
        super().__init__()
        _check_defect(defect, ("log_of_zero_activation",))
        self.defect = defect
        self.conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.head = nn.Linear(4, NUM_CLASSES)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        energy = F.relu(self.conv(pixel_values)).mean((2, 3))  # (B, 4): zero for an all-zero image
        if self.defect != "log_of_zero_activation":
            energy = energy.clamp_min(1e-6)
        logits = self.head(torch.log(energy))  # (B, K)
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = F.cross_entropy(logits, labels)
        return output


def lm_spec(defect: str | None = None, *, activation_scale: float | None = None) -> ModelSpec:
    """The spec of a NumericsLM; a defect's model runs at its own activation scale unless one is given."""
    scale = activation_scale if activation_scale is not None else DEFECTS.get(defect, (None, 1.0))[1]
    frozen = ("wte.weight",) if defect == "frozen_embeddings_reentrant" else ()
    suffix = "" if scale == 1.0 else f"-x{scale:g}"
    return ModelSpec(
        name=f"numerics-lm-{(defect or 'clean').replace('_', '-')}{suffix}",
        task="causal-lm",
        build=functools.partial(NumericsLM, defect, scale),
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=0),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
        init=InitSpec(frozen_ok=frozen),
    )


def image_spec(defect: str | None = None) -> ModelSpec:
    return ModelSpec(
        name=f"numerics-cnn-{(defect or 'clean').replace('_', '-')}",
        task="image-classification",
        build=functools.partial(LogPoolCNN, defect),
        inputs=InputSpace(image_size=IMAGE_SIZE, num_classes=NUM_CLASSES),
    )


def micro_batch_mean_loss(outputs: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A user's token-classification loss averaged over the micro-batch it is given: with accumulation, a
    micro-batch of few real tokens weighs as much as a full one (the planted gradient-accumulation defect)."""
    logits = outputs.logits  # (B, T, K)
    return F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)


def accumulation_spec(mode: str = "token-classifier", *, loss: Any = None) -> ModelSpec:
    """A tiny multimode-gpt of ``mode`` with its own recipe, the recipe's loss replaced by ``loss`` when given."""
    from harness_zoo.multimode_gpt import build_spec, training_recipe

    short = {"token-classifier": "tagger", "sequence-scorer": "scorer"}[mode]
    spec = build_spec(mode, name=f"tiny-{short}", vocab_size=64, block_size=16, n_layer=1, n_embd=16)
    if loss is None:
        return spec
    recipe = dataclasses.replace(training_recipe(mode), loss=loss)
    return spec.replace(name=f"{spec.name}-{loss.__name__.replace('_', '-')}", recipe=recipe)


def defect_spec(defect: str) -> ModelSpec:
    """The spec carrying ``defect`` (a DEFECTS or WARNING_DEFECTS name)."""
    return image_spec(defect) if defect == "log_of_zero_activation" else lm_spec(defect)


def clean_twin(defect: str) -> ModelSpec:
    """The defect's model without the defect, at the same activation scale."""
    if defect == "log_of_zero_activation":
        return image_spec()
    return lm_spec(activation_scale=DEFECTS.get(defect, (None, 1.0))[1])

"""Tiny models and memories with planted defects, for proving that every Tier 2 check can fail.

- :class:`BehaviourLM`: a nanoGPT-style decoder (vocab 32, 16 dims, 2 heads, 2 layers, context 16) with
  attention written out by hand, ``forward(input_ids, attention_mask=None, labels=None, position_ids=None,
  output_attentions=False)`` returning ``{"logits": (B, T, V)}`` plus ``"loss"`` (shifted cross-entropy)
  given labels and ``"attentions"`` (one (B, H, T, T) tensor per block) when asked. ``bidirectional=True``
  drops the causal triangle (and the spec claims no causality).
- :class:`BehaviourCNN`: conv -> ReLU -> 2x2 average pool -> linear over 1x8x8 images, 5 classes.
- Memories with the Tier 2 memory interface: :class:`BruteForceMemory` (correct) and
  :class:`CompactingMemory` (its ids go stale: removal compacts storage and renumbers the rows).

``defect=None`` builds the clean model; one of ``LM_DEFECTS`` / ``CNN_DEFECTS`` plants that defect.
"""

from __future__ import annotations

import functools
import math
import operator

import torch
import torch.nn.functional as F
from torch import nn

from harness.data import digit_examples
from harness.spec import Capabilities, InputSpace, ModelSpec

VOCAB_SIZE = 32
DIM = 16
HEADS = 2
LAYERS = 2
CONTEXT = 16
PAD_ID = 0
IMAGE_SIZE = (1, 8, 8)
NUM_CLASSES = 5
MEMORY_DIM = 4

LM_DEFECTS: dict[str, str] = {
    "attention_to_padding": "attention ignores attention_mask: real queries put weight on padding keys",
    "attention_to_future": "attention has no causal triangle although the model claims causality",
    "uniform_attention": "query weights are zero: every head attends uniformly (a warning for trained models)",
    "rounded_shortcut": "a rounded copy of the embeddings, round(2h)/2, is added: gradients miss its effect",
    "batch_cumsum": "the logits get 0.1 x their cumulative sum over the batch dimension",
    "dead_layer": "block 1's residual contribution is multiplied by zero",
    "token_hash": "the logits get 10 x one_hot(sum of the input ids mod vocab): any substitution flips them",
}

CNN_DEFECTS: dict[str, str] = {
    "pixel_hash": "the logits get 10 x one_hot(floor(1000 x pixel sum) mod classes): any noise flips them",
}

MEMORIES = ("brute-force", "compacting")


def _check(value: str | None, known: dict[str, str] | tuple[str, ...], name: str) -> None:
    if value is not None and value not in known:
        raise ValueError(f"unknown {name}={value!r}; known: {', '.join(known)}")


class Attention(nn.Module):
    """Multi-head self-attention over a boolean mask of allowed (query, key) pairs."""

    def __init__(self, *, uniform: bool) -> None:
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)
        if uniform:
            with torch.no_grad():
                self.qkv.weight[:DIM].zero_()  # queries 0: every allowed score equal
                self.qkv.bias[:DIM].zero_()

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = x.shape
        q, k, v = (
            t.view(batch, length, HEADS, DIM // HEADS).transpose(1, 2) for t in self.qkv(x).split(DIM, dim=-1)
        )  # (B, H, T, D) each
        scores = q @ k.transpose(-2, -1) / math.sqrt(DIM // HEADS)  # (B, H, T, T)
        weights = torch.softmax(scores.masked_fill(~allowed, torch.finfo(scores.dtype).min), dim=-1)  # (B, H, T, T)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, length, DIM)), weights


class Block(nn.Module):
    """Pre-norm block; ``scale`` multiplies its residual contribution (0 plants a dead layer)."""

    def __init__(self, *, uniform: bool, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.ln1 = nn.LayerNorm(DIM)
        self.attn = Attention(uniform=uniform)
        self.ln2 = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        update, weights = self.attn(self.ln1(x), allowed)  # (B, T, C), (B, H, T, T)
        update = update + self.mlp(self.ln2(x + update))  # (B, T, C)
        return x + self.scale * update, weights


class BehaviourLM(nn.Module):
    """A tiny causal (or bidirectional) LM; ``defect`` plants one of ``LM_DEFECTS``, ``memory`` adds one."""

    def __init__(self, defect: str | None = None, *, bidirectional: bool = False, memory: str | None = None) -> None:
        super().__init__()
        _check(defect, LM_DEFECTS, "defect")
        _check(memory, MEMORIES, "memory")
        self.defect = defect
        self.causal = not bidirectional and defect != "attention_to_future"
        self.tok_emb = nn.Embedding(VOCAB_SIZE, DIM)
        self.pos_emb = nn.Embedding(CONTEXT, DIM)
        self.blocks = nn.ModuleList(
            Block(uniform=defect == "uniform_attention", scale=0.0 if defect == "dead_layer" and i == 1 else 1.0)
            for i in range(LAYERS)
        )
        self.ln_f = nn.LayerNorm(DIM)
        self.lm_head = nn.Linear(DIM, VOCAB_SIZE, bias=False)
        if memory is not None:
            self.memory = (BruteForceMemory if memory == "brute-force" else CompactingMemory)(MEMORY_DIM)
            self.memory.add(torch.randn(3, MEMORY_DIM), None)  # a memory that starts non-empty

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> dict[str, torch.Tensor]:
        batch, length = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(length).expand(batch, length)  # (B, T)
        x = self.tok_emb(input_ids) + self.pos_emb(position_ids)  # (B, T, C)
        if self.defect == "rounded_shortcut":
            x = x + torch.round(2 * x) / 2  # no gradient flows through round
        allowed = torch.ones(length, length, dtype=torch.bool)  # (T, T)
        if self.causal:
            allowed = allowed.tril()
        allowed = allowed.view(1, 1, length, length)
        if attention_mask is not None and self.defect != "attention_to_padding":
            allowed = allowed & attention_mask.bool().view(batch, 1, 1, length)  # (B, 1, T, T)
        attentions = []
        for block in self.blocks:
            x, weights = block(x, allowed)
            attentions.append(weights)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if self.defect == "batch_cumsum":
            logits = logits + 0.1 * logits.cumsum(0)
        if self.defect == "token_hash":
            logits = logits + 10 * F.one_hot(input_ids.sum(-1) % VOCAB_SIZE, VOCAB_SIZE).unsqueeze(1)
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB_SIZE), labels[:, 1:].reshape(-1))
        if output_attentions:
            output["attentions"] = tuple(attentions)
        return output


class BehaviourCNN(nn.Module):
    """conv(3x3) -> ReLU -> avgpool(2) -> linear; ``defect`` plants one of ``CNN_DEFECTS``."""

    def __init__(self, defect: str | None = None) -> None:
        super().__init__()
        _check(defect, CNN_DEFECTS, "defect")
        self.defect = defect
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 4, NUM_CLASSES)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        hidden = F.avg_pool2d(F.relu(self.conv(pixel_values)), 2)  # (B, 4, 4, 4)
        logits = self.head(hidden.flatten(1))  # (B, K)
        if self.defect == "pixel_hash":
            bucket = torch.floor(1000 * pixel_values.sum((1, 2, 3))).long() % NUM_CLASSES  # (B,)
            logits = logits + 10 * F.one_hot(bucket, NUM_CLASSES)
        output = {"logits": logits}
        if labels is not None:
            output["loss"] = F.cross_entropy(logits, labels)
        return output


class BruteForceMemory:
    """A correct external memory: a dict of id -> vector, exact squared-L2 search."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.vectors: dict[int, torch.Tensor] = {}
        self.next_id = 0

    def add(self, vectors: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids is None:
            ids = torch.arange(self.next_id, self.next_id + len(vectors))
        for i, vector in zip(ids.tolist(), vectors, strict=True):
            if i in self.vectors:
                raise KeyError(f"id {i} is already stored")
            self.vectors[i] = vector.clone()
        self.next_id = max(self.next_id, int(ids.max()) + 1) if len(ids) else self.next_id
        return ids

    def remove(self, ids: torch.Tensor) -> None:
        for i in ids.tolist():
            del self.vectors[i]

    def update(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        for i, vector in zip(ids.tolist(), vectors, strict=True):
            if i not in self.vectors:
                raise KeyError(f"id {i} is not stored")
            self.vectors[i] = vector.clone()

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = torch.full((len(queries), k), -1)  # (q, k)
        distances = torch.full((len(queries), k), math.inf)  # (q, k)
        if self.vectors:
            keys = torch.tensor(sorted(self.vectors))  # (n,)
            stored = torch.stack([self.vectors[i] for i in keys.tolist()])  # (n, d)
            squared = torch.cdist(queries, stored).pow(2)  # (q, n)
            found = min(k, len(keys))
            best, order = squared.topk(found, largest=False)  # (q, found)
            ids[:, :found], distances[:, :found] = keys[order], best
        return ids, distances, ids >= 0

    def reconstruct(self, ids: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.vectors[i] for i in ids.tolist()]) if len(ids) else torch.empty(0, self.dim)

    def ids(self) -> torch.Tensor:
        return torch.tensor(sorted(self.vectors), dtype=torch.long)

    def __len__(self) -> int:
        return len(self.vectors)


class CompactingMemory(BruteForceMemory):
    """Defect: ids are row numbers of a compacted store, so removing a row renumbers every later one."""

    def add(self, vectors: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        start = len(self.vectors)
        for offset, vector in enumerate(vectors):
            self.vectors[start + offset] = vector.clone()
        return torch.arange(start, start + len(vectors))  # explicit ids are ignored

    def remove(self, ids: torch.Tensor) -> None:
        kept = [vector for i, vector in sorted(self.vectors.items()) if i not in set(ids.tolist())]
        self.vectors = dict(enumerate(kept))  # compaction: ids go stale


def lm_spec(
    defect: str | None = None, *, bidirectional: bool = False, pretrained: bool = False, memory: str | None = None
) -> ModelSpec:
    """A ModelSpec for :class:`BehaviourLM` with ``defect`` planted (and a memory, when given)."""
    _check(defect, LM_DEFECTS, "defect")
    name = "behaviour-lm" + (f"+{defect}" if defect else "") + ("+bidirectional" if bidirectional else "")
    name += (f"+{memory}-memory" if memory else "") + ("+pretrained" if pretrained else "")
    return ModelSpec(
        name=name,
        task="causal-lm",
        build=functools.partial(BehaviourLM, defect, bidirectional=bidirectional, memory=memory),
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID, max_batch_size=8),
        capabilities=Capabilities(
            is_causal=not bidirectional,
            has_attention_mask=True,
            returns_attentions=True,
            pretrained=pretrained,
            has_memory=memory is not None,
        ),
        memory=operator.attrgetter("memory") if memory else None,
        description=f"tiny behaviour LM; defect: {LM_DEFECTS.get(defect, 'none')}",
    )


def cnn_spec(defect: str | None = None) -> ModelSpec:
    """A ModelSpec for :class:`BehaviourCNN` with ``defect`` planted."""
    _check(defect, CNN_DEFECTS, "defect")
    return ModelSpec(
        name="behaviour-cnn" + (f"+{defect}" if defect else ""),
        task="image-classification",
        build=functools.partial(BehaviourCNN, defect),
        inputs=InputSpace(image_size=IMAGE_SIZE, num_classes=NUM_CLASSES, max_batch_size=8),
        real_data=digit_examples,
        description=f"tiny behaviour CNN; defect: {CNN_DEFECTS.get(defect, 'none')}",
    )

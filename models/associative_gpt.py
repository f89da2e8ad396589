"""associative-gpt: the gpt2-tiny transformer plus an external associative memory on faiss.

Forward (Hugging Face causal-LM convention)::

    forward(input_ids, attention_mask=None, labels=None, position_ids=None, write_memory=False)
        -> AssociativeLMOutput(logits (B, T, V), loss given labels, write_scores (B, T), ...)

1. ``hidden`` (B, T, D): the GPT-2 transformer's final states (after ``ln_f``); positions default to
   ``cumsum(attention_mask) - 1`` so left padding does not shift them.
2. Read: ``query = query_proj(hidden)`` (B, T, M) searches the memory for ``k + 1`` neighbours per
   position. The keys and values of the neighbours are gathered; slots without a neighbour (fewer
   stored than asked, or an approximate index that found fewer) are masked out by the validity mask
   the memory returns, so they never contribute. Attention over the valid neighbours is a softmax
   of ``-|query - key|^2 / sqrt(M)`` over all k + 1 of them, multiplied by a boundary taper:
   ``clamp((d_b - d_i) / (boundary_fraction * d_b), 0, 1)`` where ``d_b`` is the distance of the
   (k+1)-th neighbour (taper 1 when fewer than k + 1 exist), so the boundary neighbour itself gets
   weight 0 and the weights sum to at most 1. This makes the read continuous in the query: when
   two stored keys swap places at the k-th rank, the softmax is over the same k + 1 items and the
   one that leaves has faded to weight zero, so float noise (another batch size, left padding)
   cannot flip the output, and neither can a swap between the (k+1)-th and (k+2)-th neighbours.
   ``readout = out_proj(sum_i w_i * value_proj(value_i))`` (B, T, D); zero when nothing is found.
3. Fuse: ``gate = sigmoid(gate_proj([hidden, readout]))`` (B, T, D) per channel, the write score
   ``s = sigmoid(write_head(hidden))`` (B, T, 1), and ``fused = hidden + s * gate * readout``;
   ``logits = lm_head(fused)`` (the tied GPT-2 head). The write score is one "memory relevance"
   signal per position: it decides what is stored and scales how much the position draws on the
   memory, which is how it receives gradient from the LM loss.
4. Write, only when ``write_memory=True``: real positions (attention_mask 1) whose write score
   exceeds ``write_threshold`` store ``key = query``, ``value = hidden`` (both detached), after the
   read, so nothing written by a forward is visible to that same forward (no leak from later
   positions of a sequence to earlier ones; all rows of a batch see the same memory). The
   neighbours that were read with a non-zero weight at real positions are touched (LRU use), and
   if ``forget_rate > 0`` the memory forgets before the new items are added. Writing is off by
   default in eval *and* training forwards: a forward changes nothing unless asked.

Memory contents are buffers of ``self.memory`` (see ``harness_zoo.associative_memory``), so they are in
the state dict, survive a safetensors round trip (a memory of another size is resized on load) and
``copy.deepcopy``. :func:`build_model` pre-fills the memory deterministically from the seeded
model's own states on real text (``pydoc_data.topics``, gpt2-tiny's BPE tokenizer), so the Tier 1
checks exercise retrieval. The model does not claim ``exportable``: faiss runs outside the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.spec import Capabilities, InputSpace, ModelSpec

from .associative_memory import AssociativeMemory, MemoryConfig
from .gpt2_tiny import CONTEXT, PAD_ID, VOCAB_SIZE, build_tokenizer, gpt2_config, reference_text

EMBED_DIM = 64  # n_embd of the GPT-2 (gpt2-tiny's width)
IGNORE_INDEX = -100  # labels excluded from the loss


@dataclass(frozen=True)
class AssociativeGPTConfig:
    """The model around the memory; the memory's own knobs are in ``memory``."""

    memory_dim: int = 32  # width of the projected queries / stored keys
    k: int = 8  # neighbours each position attends to (k + 1 are searched for the boundary taper)
    write_threshold: float = 0.5  # write_memory=True stores real positions whose write score exceeds this
    boundary_fraction: float = 0.05  # taper width, as a fraction of the (k+1)-th neighbour's distance
    prefill_sequences: int = 8  # sequences of CONTEXT tokens of real text written into the memory by build_model
    memory: MemoryConfig = field(default_factory=lambda: MemoryConfig(dim=32, value_dim=EMBED_DIM))

    def __post_init__(self) -> None:
        if self.memory.dim != self.memory_dim:
            raise ValueError(f"memory.dim must equal memory_dim={self.memory_dim}, got memory.dim={self.memory.dim}")
        if self.memory.value_dim != EMBED_DIM:
            raise ValueError(f"memory.value_dim must be {EMBED_DIM} (the hidden width), got {self.memory.value_dim}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got k={self.k}")
        if not 0.0 <= self.write_threshold <= 1.0:
            raise ValueError(f"write_threshold must be in [0, 1], got write_threshold={self.write_threshold}")
        if not self.boundary_fraction > 0.0:
            raise ValueError(f"boundary_fraction must be > 0, got boundary_fraction={self.boundary_fraction}")
        if self.prefill_sequences < 0:
            raise ValueError(f"prefill_sequences must be >= 0, got prefill_sequences={self.prefill_sequences}")


@dataclass
class AssociativeLMOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # scalar next-token cross-entropy, when labels were given
    write_scores: torch.Tensor | None = None  # (B, T) sigmoid write score per position
    neighbour_ids: torch.Tensor | None = None  # (B, T, k+1) ids read, MISSING_ID where none
    neighbour_weights: torch.Tensor | None = None  # (B, T, k+1) attention weights, 0 where masked


class AssociativeGPT(nn.Module):
    """GPT-2 (2 layers, 2 heads, 64 dims) reading from and writing to an :class:`AssociativeMemory`."""

    def __init__(self, config: AssociativeGPTConfig | None = None) -> None:
        super().__init__()
        from transformers import GPT2LMHeadModel

        self.config = config or AssociativeGPTConfig()
        # gpt2-tiny's config; its SDPA attention (no attention weights are needed here)
        self.gpt = GPT2LMHeadModel(gpt2_config(n_embd=EMBED_DIM, attn_implementation="sdpa"))  # + tied lm_head
        memory_dim = self.config.memory_dim
        self.query_proj = nn.Linear(EMBED_DIM, memory_dim)
        self.value_proj = nn.Linear(EMBED_DIM, EMBED_DIM)
        self.out_proj = nn.Linear(EMBED_DIM, EMBED_DIM, bias=False)  # no bias: no neighbours -> zero readout
        self.gate_proj = nn.Linear(2 * EMBED_DIM, EMBED_DIM)
        self.write_head = nn.Linear(EMBED_DIM, 1)
        self.memory = AssociativeMemory(self.config.memory)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        write_memory: bool = False,
    ) -> AssociativeLMOutput:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (batch, length), got {tuple(input_ids.shape)}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, T)
        hidden = self.gpt.transformer(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        ).last_hidden_state  # (B, T, D)
        query = self.query_proj(hidden)  # (B, T, M)
        readout, neighbour_ids, weights = self._read(query)  # (B, T, D), (B, T, k+1), (B, T, k+1)
        gate = torch.sigmoid(self.gate_proj(torch.cat([hidden, readout], dim=-1)))  # (B, T, D)
        write_scores = torch.sigmoid(self.write_head(hidden)).squeeze(-1)  # (B, T)
        fused = hidden + write_scores.unsqueeze(-1) * gate * readout  # (B, T, D)
        logits = self.gpt.lm_head(fused)  # (B, T, V)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]).float(),  # (B*(T-1), V)
                labels[:, 1:].reshape(-1),  # (B*(T-1),)
                ignore_index=IGNORE_INDEX,
            )
        if write_memory:
            self._write(query, hidden, write_scores, attention_mask, neighbour_ids, weights)
        return AssociativeLMOutput(logits, loss, write_scores, neighbour_ids, weights)

    def _read(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention over the k (+1 boundary) nearest stored items of each query, invalid slots masked."""
        batch, length, memory_dim = query.shape
        slots = self.config.k + 1
        found = self.memory.search(query.detach().reshape(-1, memory_dim), slots)  # (B*T, k+1) each
        keys, values = self.memory.gather(found.ids, found.valid)  # (B*T, k+1, M), (B*T, k+1, D)
        valid = found.valid.to(query.device).reshape(batch, length, slots)  # (B, T, k+1)
        keys = keys.to(query).reshape(batch, length, slots, memory_dim).masked_fill(~valid.unsqueeze(-1), 0.0)
        values = values.to(query).reshape(batch, length, slots, -1).masked_fill(~valid.unsqueeze(-1), 0.0)
        distance = (query.unsqueeze(2) - keys).square().sum(-1)  # (B, T, k+1), differentiable in the query
        has_boundary = valid[..., -1]  # (B, T): k+1 neighbours found, the last one is the boundary
        boundary = torch.where(has_boundary, distance[..., -1], torch.ones_like(distance[..., -1]))  # (B, T)
        width = self.config.boundary_fraction * boundary.unsqueeze(-1) + 1e-6  # (B, T, 1)
        taper = ((boundary.unsqueeze(-1) - distance) / width).clamp(0.0, 1.0)  # (B, T, k+1)
        taper = torch.where(has_boundary.unsqueeze(-1), taper, torch.ones_like(taper))
        scores = torch.where(valid, -distance / math.sqrt(memory_dim), torch.full_like(distance, -math.inf))
        any_valid = valid.any(-1, keepdim=True)  # (B, T, 1)
        probabilities = torch.softmax(torch.where(any_valid, scores, torch.zeros_like(scores)), dim=-1) * any_valid
        weights = probabilities * taper  # (B, T, k+1): 0 at invalid slots and at the boundary itself
        mixed = torch.einsum("btk,btkd->btd", weights, self.value_proj(values))  # (B, T, D)
        readout = self.out_proj(mixed)  # (B, T, D)
        ids = found.ids.to(query.device).reshape(batch, length, slots)
        return readout, ids, weights

    @torch.no_grad()
    def _write(
        self,
        query: torch.Tensor,
        hidden: torch.Tensor,
        write_scores: torch.Tensor,
        attention_mask: torch.Tensor,
        neighbour_ids: torch.Tensor,
        weights: torch.Tensor,
    ) -> None:
        """Touch what was read, forget (if configured), then store the selected positions."""
        real = attention_mask.bool()  # (B, T)
        read = (weights > 0) & real.unsqueeze(-1)  # (B, T, k+1)
        if read.any():
            self.memory.touch(torch.unique(neighbour_ids[read].cpu()))
        if self.memory.config.forget_rate > 0:
            self.memory.forget()
        selected = real & (write_scores > self.config.write_threshold)  # (B, T)
        positions = selected.reshape(-1).nonzero().squeeze(-1)  # row-major (b, t) order
        capacity = self.memory.config.capacity
        if positions.numel() > capacity:  # keep the highest scores, still in (b, t) order
            best = torch.argsort(write_scores.reshape(-1)[positions], descending=True, stable=True)[:capacity]
            positions = positions[best.sort().values]
        if positions.numel():
            self.memory.add(
                query.reshape(-1, query.shape[-1])[positions].detach(),
                values=hidden.reshape(-1, hidden.shape[-1])[positions].detach(),
            )

    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> int:
        """Write ``input_ids`` (N, T) into the memory with one eval-mode forward; returns items added."""
        before, was_training = len(self.memory), self.training
        self.eval()
        self(input_ids, attention_mask=attention_mask, write_memory=True)
        self.train(was_training)
        return len(self.memory) - before


@lru_cache(maxsize=4)
def reference_token_ids(sequences: int, length: int = CONTEXT) -> torch.Tensor:
    """The first ``sequences * length`` BPE tokens of ``pydoc_data.topics``, shape (sequences, length)."""
    text = reference_text()
    needed, chars = sequences * length, 4096
    while True:
        ids = build_tokenizer()(text[:chars], verbose=False)["input_ids"]
        if len(ids) >= needed or chars >= len(text):
            break
        chars *= 2
    if len(ids) < needed:
        raise ValueError(f"the reference text has {len(ids)} tokens, fewer than {sequences}x{length}")
    return torch.tensor(ids[:needed], dtype=torch.long).reshape(sequences, length)


def build_model(config: AssociativeGPTConfig | None = None, **memory_overrides: Any) -> AssociativeGPT:
    """A seeded AssociativeGPT whose memory holds its own states on real text (``prefill_sequences``).

    ``memory_overrides`` replace fields of the memory config (e.g. ``index_type="hnsw"``).
    """
    config = config or AssociativeGPTConfig()
    if memory_overrides:
        config = replace(config, memory=replace(config.memory, **memory_overrides))
    model = AssociativeGPT(config)
    if config.prefill_sequences:
        model.prefill(reference_token_ids(config.prefill_sequences).clone())
    return model.eval()


class MemoryInterface:
    """The model's memory as the Tier 2 oracle check drives it: keys with zero values, stable ids chosen by the
    memory or by the caller, its capacity and eviction policy, ageing (``touch``) and forgetting."""

    assigns_ids = True  # add(vectors) picks fresh ids (never reused)
    accepts_ids = True  # add(vectors, ids=...) keeps the caller's

    def __init__(self, model: AssociativeGPT) -> None:
        self.memory = model.memory
        self.dim = model.memory.config.dim
        self.capacity = model.memory.config.capacity
        self.eviction = model.memory.config.eviction

    def add(self, vectors: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        values = torch.zeros(len(vectors), self.memory.config.value_dim)  # (n, value_dim)
        return self.memory.add(vectors, values, ids=ids)

    def remove(self, ids: torch.Tensor) -> None:
        self.memory.remove(ids)

    def update(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        self.memory.update(ids, vectors)

    def search(self, queries: torch.Tensor, k: int):
        return self.memory.search(queries, k)

    def reconstruct(self, ids: torch.Tensor) -> torch.Tensor:
        return self.memory.reconstruct(ids)

    def ids(self) -> torch.Tensor:
        return self.memory.ids()

    def touch(self, ids: torch.Tensor) -> None:
        self.memory.touch(ids)

    def forget(self, rate: float) -> torch.Tensor:
        """Forget ``ceil(rate * len)`` items in eviction order (the memory's own forget at that rate)."""
        config = self.memory.config
        self.memory.config = replace(config, forget_rate=rate)
        try:
            return self.memory.forget()
        finally:
            self.memory.config = config

    def __len__(self) -> int:
        return len(self.memory)


SPEC = ModelSpec(
    name="associative-gpt",
    task="causal-lm",
    build=build_model,
    inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID),
    capabilities=Capabilities(is_causal=True, has_attention_mask=True, has_memory=True, exportable=False),
    tokenizer=build_tokenizer,
    memory=MemoryInterface,
    description="gpt2-tiny + faiss associative memory (k-NN read with a learned gate, learned write head), "
    "pre-filled from real text",
)

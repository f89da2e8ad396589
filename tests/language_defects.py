"""Tiny language models in Hugging Face conventions with planted defects, for proving the language checks can fail.

:class:`TinyCacheLM` is a decoder-only transformer written by hand (vocab 512, 16 dims, 2 heads, 2 layers, context
24, learned absolute positions, LM head tied to the token embedding) that has every path the language checks
exercise, in the conventions of transformers 4.x::

    forward(input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None,
            labels=None, use_cache=None) -> {"logits": (B, T, V), "past_key_values": cache, "loss": scalar}

- ``past_key_values``: a tuple of per-layer ``(keys, values)``, each (B, H, S, D); every call returns a new tuple
  and never changes the one it was given.
- ``attention_mask``: (B, S) marks real tokens of the past and present (1 = real); or a 4D (B, 1, T, S) mask of
  allowed (query, key) pairs, additive floats (0 or a large negative) or booleans, used as it is.
- positions default to ``past_length + arange(T)``, the positions of cached decoding (pass ``position_ids`` for
  left padding, as generation does).
- ``config`` (:class:`TinyConfig`): ``vocab_size``, ``tie_word_embeddings``, ``_attn_implementation`` (``"eager"``:
  softmax written out; ``"sdpa"``: ``F.scaled_dot_product_attention``), pad/bos/eos ids.
- ``set_attn_implementation``, ``get_input_embeddings``/``get_output_embeddings``, ``resize_token_embeddings``
  (new rows appended, existing ones kept, head re-tied) and a greedy ``generate`` that passes the mask, the
  positions and the cache on.

``defect`` plants exactly one of :data:`MODEL_DEFECTS`; the clean model passes every language check. Tokenizer
defects live in the tokenizer (:data:`TOKENIZER_DEFECTS`, :func:`build_tokenizer`): a copy of gpt2-tiny's
byte-level BPE, whose round trip is exact. :func:`language_spec` wraps both in a ModelSpec.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from harness.spec import Capabilities, InputSpace, ModelSpec

VOCAB_SIZE = 512  # gpt2-tiny's tokenizer
DIM = 16
HEADS = 2
LAYERS = 2
CONTEXT = 24
EOS_ID, PAD_ID = 0, 1
NEG = torch.finfo(torch.float32).min  # additive mask value: a fully masked row softmaxes to uniform, never NaN

MODEL_DEFECTS: dict[str, str] = {
    "cache_position_off_by_one": "a forward given a non-empty cache numbers its tokens from past_length + 1",
    "cache_ignores_mask": "a forward given a cache attends to every cached key, padding included",
    "positions_restart": "default positions are arange(T) of the current call: they restart at 0 on every step",
    "cache_shared_across_calls": "a forward without a cache refills the cache object it returned last time",
    "generate_ignores_mask": "generate() drops the attention mask, so left padding is attended to",
    "sdpa_drops_mask": "the sdpa kernel applies the causal mask only, never the padding mask",
    "kernel_nan_on_masked_row": "the sdpa kernel's softmax over a fully masked row is NaN (-inf fill)",
    "inputs_embeds_skips_positions": "the inputs_embeds branch adds no position embeddings",
    "packed_mask_collapsed": "a 4D mask is reduced to a key padding mask plus the model's own causal mask",
    "resize_breaks_tie": "resize_token_embeddings builds a new, randomly initialised head that is not tied",
    "resize_reinitialises_rows": "resize_token_embeddings re-initialises every embedding row (the tie holds)",
    "tie_claimed_not_held": "config.tie_word_embeddings is true, but the head is a copy of the embedding",
}

TOKENIZER_DEFECTS: dict[str, str] = {
    "tokenizer_exceeds_vocab": "the tokenizer has 512 tokens, the embedding table 480 rows",
    "pad_is_eos": "the tokenizer pads with its eos token (pad_token_id == eos_token_id == 0)",
    "lossy_tokenizer": "the tokenizer lowercases its input, so decode(encode(text)) != text",
}


@dataclass
class TinyConfig:
    """The few config fields a Hugging Face model carries that the language checks read."""

    vocab_size: int = VOCAB_SIZE
    n_positions: int = CONTEXT
    tie_word_embeddings: bool = True
    _attn_implementation: str = "eager"
    pad_token_id: int = PAD_ID
    bos_token_id: int = EOS_ID
    eos_token_id: int = EOS_ID


class Attention(nn.Module):
    def __init__(self, config: TinyConfig, defect: str | None) -> None:
        super().__init__()
        self.config = config  # the model's own config object: set_attn_implementation switches every block
        self.defect = defect
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(
        self, x: torch.Tensor, additive: torch.Tensor, causal_only: torch.Tensor, past: tuple | None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        batch, length, _ = x.shape
        q, k, v = self.qkv(x).split(DIM, dim=-1)  # (B, T, C) each
        q, k, v = (t.view(batch, length, HEADS, DIM // HEADS).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, H, S, D)
        kernel, defect = self.config._attn_implementation, self.defect
        if kernel == "sdpa" and defect == "kernel_nan_on_masked_row":
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
            scores = scores.masked_fill(additive <= NEG / 2, float("-inf"))  # NaN where no key is allowed
            out = scores.softmax(-1) @ v
        elif kernel == "sdpa":
            mask = causal_only if defect == "sdpa_drops_mask" else additive
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, D)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + additive  # (B, H, T, S)
            out = scores.softmax(-1) @ v
        out = out.transpose(1, 2).reshape(batch, length, DIM)  # (B, T, C)
        return self.proj(out), (k, v)


class Block(nn.Module):
    def __init__(self, config: TinyConfig, defect: str | None) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(DIM)
        self.attn = Attention(config, defect)
        self.ln2 = nn.LayerNorm(DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))

    def forward(self, x, additive, causal_only, past):
        update, present = self.attn(self.ln1(x), additive, causal_only, past)
        x = x + update
        return x + self.mlp(self.ln2(x)), present


class TinyCacheLM(nn.Module):
    """A decoder-only LM with a key/value cache; ``defect`` plants one of :data:`MODEL_DEFECTS`."""

    def __init__(self, defect: str | None = None, *, vocab_size: int = VOCAB_SIZE) -> None:
        super().__init__()
        if defect is not None and defect not in MODEL_DEFECTS:
            raise ValueError(f"TinyCacheLM: unknown defect={defect!r}; known: {', '.join(MODEL_DEFECTS)}")
        self.defect = defect
        self.config = TinyConfig(vocab_size=vocab_size)
        self.wte = nn.Embedding(vocab_size, DIM)
        self.wpe = nn.Embedding(CONTEXT, DIM)
        self.blocks = nn.ModuleList(Block(self.config, defect) for _ in range(LAYERS))
        self.ln_f = nn.LayerNorm(DIM)
        self.lm_head = nn.Linear(DIM, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2
        if defect == "tie_claimed_not_held":
            self.lm_head.weight = nn.Parameter(self.wte.weight.detach().clone())
        self._shared_cache: list | None = None  # cache_shared_across_calls: the one cache object ever returned

    # Hugging Face conventions.

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_attn_implementation(self, name: str) -> None:
        if name not in ("eager", "sdpa"):
            raise ValueError(f"TinyCacheLM has no attention implementation {name!r} (eager, sdpa)")
        self.config._attn_implementation = name

    def resize_token_embeddings(self, new_size: int) -> nn.Embedding:
        old = self.wte.weight
        embedding = nn.Embedding(new_size, DIM)
        nn.init.normal_(embedding.weight, std=0.02)
        with torch.no_grad():
            keep = min(new_size, old.shape[0])
            if self.defect != "resize_reinitialises_rows":
                embedding.weight[:keep] = old[:keep]
        self.wte = embedding
        if self.defect == "resize_breaks_tie":
            self.lm_head = nn.Linear(DIM, new_size, bias=False)  # a fresh head: neither tied nor the old rows
        else:
            self.lm_head = nn.Linear(DIM, new_size, bias=False)
            self.lm_head.weight = self.wte.weight
        self.config.vocab_size = new_size
        return self.wte

    # Forward.

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: tuple | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
    ) -> dict[str, torch.Tensor | tuple | None]:
        defect = self.defect
        x = self.wte(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, C)
        batch, length = x.shape[:2]
        past = past_key_values[0][0].shape[2] if past_key_values else 0
        if length + past > CONTEXT:
            raise ValueError(f"{length + past} tokens exceed the context of {CONTEXT}")
        if position_ids is None:
            start = 0 if defect == "positions_restart" else past + (defect == "cache_position_off_by_one" and past > 0)
            position_ids = torch.arange(start, start + length).clamp(max=CONTEXT - 1).expand(batch, length)
        if not (defect == "inputs_embeds_skips_positions" and inputs_embeds is not None):
            x = x + self.wpe(position_ids)
        additive, causal_only = self._masks(attention_mask, batch, length, past)
        presents = []
        for index, block in enumerate(self.blocks):
            x, present = block(x, additive, causal_only, past_key_values[index] if past_key_values else None)
            presents.append(present)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        output: dict[str, torch.Tensor | tuple | None] = {"logits": logits}
        if use_cache:
            output["past_key_values"] = self._cache_object(presents, given=past_key_values is not None)
        if labels is not None:
            output["loss"] = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))
        return output

    def _masks(
        self, attention_mask: torch.Tensor | None, batch: int, length: int, past: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(additive (B, 1, T, S) mask of allowed pairs, additive causal-only mask) for S = past + T keys."""
        keys = past + length
        causal = torch.ones(length, keys, dtype=torch.bool).tril(diagonal=past)  # (T, S): query i is token past+i
        causal_only = torch.zeros(1, 1, length, keys).masked_fill(~causal, NEG)
        if attention_mask is not None and attention_mask.dim() == 4:
            if self.defect == "packed_mask_collapsed":
                allowed = attention_mask.bool() if attention_mask.dtype == torch.bool else attention_mask > NEG / 2
                real = allowed.any(dim=-2)[:, 0]  # (B, S): a key counts as real for every query
                return torch.zeros(batch, 1, length, keys).masked_fill(
                    ~(causal & real[:, None, None, :]), NEG
                ), causal_only
            if attention_mask.dtype == torch.bool:
                return torch.zeros(attention_mask.shape).masked_fill(~attention_mask, NEG), causal_only
            return attention_mask.float(), causal_only
        allowed = causal.expand(batch, 1, length, keys)
        ignore = self.defect == "cache_ignores_mask" and past > 0
        if attention_mask is not None and not ignore:
            allowed = allowed & attention_mask.bool()[:, None, None, :]  # (B, 1, T, S)
        return torch.zeros(batch, 1, length, keys).masked_fill(~allowed, NEG), causal_only

    def _cache_object(self, presents: list, *, given: bool) -> tuple | list:
        if self.defect != "cache_shared_across_calls":
            return tuple(presents)
        if not given or self._shared_cache is None:
            if self._shared_cache is None:
                self._shared_cache = []
            self._shared_cache[:] = presents  # refilled in place: every earlier holder of it sees the change
            return self._shared_cache
        return tuple(presents)

    # Generation.

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 8,
        do_sample: bool = False,
        num_beams: int = 1,
        use_cache: bool = True,
        pad_token_id: int | None = None,
        **_: object,
    ) -> torch.Tensor:
        """Greedy decoding; ``(B, P + max_new_tokens)`` ids. Only greedy search is implemented."""
        if do_sample or num_beams != 1:
            raise ValueError("TinyCacheLM.generate implements greedy decoding only")
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        if self.defect == "generate_ignores_mask":
            mask = torch.ones_like(input_ids)
        sequence, cache = input_ids, None
        for _ in range(max_new_tokens):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            if cache is None:
                out = self(input_ids=sequence, attention_mask=mask, position_ids=positions, use_cache=use_cache)
            else:
                out = self(input_ids=sequence[:, -1:], attention_mask=mask, position_ids=positions[:, -1:],
                           past_key_values=cache, use_cache=True)  # fmt: skip
            cache = out.get("past_key_values") if use_cache else None
            chosen = out["logits"][:, -1].argmax(-1, keepdim=True)  # (B, 1)
            sequence = torch.cat([sequence, chosen], dim=1)
            mask = torch.cat([mask, torch.ones_like(chosen)], dim=1)
        return sequence


# Tokenizers: gpt2-tiny's byte-level BPE (512 tokens, eos 0, pad 1), copied, padding on the left.


def build_tokenizer(defect: str | None = None):
    """gpt2-tiny's tokenizer, copied, padding on the left, with ``defect`` from :data:`TOKENIZER_DEFECTS` planted."""
    import copy

    from tokenizers import normalizers

    from harness_zoo.gpt2_tiny import build_tokenizer as gpt2_tiny_tokenizer

    if defect is not None and defect not in TOKENIZER_DEFECTS:
        raise ValueError(f"build_tokenizer: unknown defect={defect!r}; known: {', '.join(TOKENIZER_DEFECTS)}")
    tokenizer = copy.deepcopy(gpt2_tiny_tokenizer())
    tokenizer.padding_side = "left"
    if defect == "pad_is_eos":
        tokenizer.pad_token = tokenizer.eos_token
    if defect == "lossy_tokenizer":
        tokenizer.backend_tokenizer.normalizer = normalizers.Lowercase()
    return tokenizer


def _build(defect: str | None, vocab_size: int) -> TinyCacheLM:
    return TinyCacheLM(defect, vocab_size=vocab_size)


def language_spec(defect: str | None = None, *, name: str | None = None) -> ModelSpec:
    """A ModelSpec of :class:`TinyCacheLM` and its tokenizer with ``defect`` (a model or tokenizer defect) planted."""
    if defect is not None and defect not in MODEL_DEFECTS and defect not in TOKENIZER_DEFECTS:
        raise ValueError(f"language_spec: unknown defect={defect!r}")
    model_defect = defect if defect in MODEL_DEFECTS else None
    tokenizer_defect = defect if defect in TOKENIZER_DEFECTS else None
    vocab = 480 if defect == "tokenizer_exceeds_vocab" else VOCAB_SIZE
    pad = EOS_ID if defect == "pad_is_eos" else PAD_ID
    return ModelSpec(
        name=name or "tiny-cache-lm" + (f"+{defect}" if defect else ""),
        task="causal-lm",
        build=functools.partial(_build, model_defect, vocab),
        inputs=InputSpace(vocab_size=vocab, max_length=CONTEXT, pad_id=pad, max_batch_size=4),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
        tokenizer=functools.partial(build_tokenizer, tokenizer_defect),
        description=f"tiny hand-written cached LM; defect: {MODEL_DEFECTS.get(defect) or TOKENIZER_DEFECTS.get(defect, 'none')}",
    )

"""gpt2-tiny: a transformers GPT-2 (2 layers, 2 heads, 64 dims, random init) with a real BPE tokenizer.

The tokenizer is a byte-level BPE trained with the ``tokenizers`` library on CPython's own English
reference text (``pydoc_data.topics``), which every Python installation has; it is trained once and
cached on disk (see :func:`harness.cache.cache_dir`).
"""

from __future__ import annotations

import hashlib
import os
import time
from functools import lru_cache
from pathlib import Path

from harness.cache import cache_dir, record_use
from harness.data import reference_text
from harness.spec import Capabilities, InputSpace, ModelSpec

VOCAB_SIZE = 512  # BPE vocabulary, special tokens included
CONTEXT = 64  # n_positions: the longest sequence
SPECIAL_TOKENS = ("<|endoftext|>", "<pad>")  # ids 0 (bos/eos) and 1 (pad)
EOS_ID, PAD_ID = 0, 1


def _train_tokenizer(path: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(reference_text().split("\n\n"), trainer=trainer)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    tokenizer.save(str(temporary))
    os.replace(temporary, path)  # atomic: concurrent pytest-xdist workers never read half a file


@lru_cache(maxsize=1)
def build_tokenizer():
    """The gpt2-tiny tokenizer as a ``PreTrainedTokenizerFast``, trained on first use and cached."""
    import tokenizers
    from transformers import PreTrainedTokenizerFast

    key = hashlib.sha256(f"{VOCAB_SIZE}-{SPECIAL_TOKENS}-{tokenizers.__version__}".encode()).hexdigest()[:12]
    path = cache_dir("tokenizers") / f"gpt2-tiny-bpe-{key}.json"
    started, hit = time.perf_counter(), path.exists()
    if not hit:
        _train_tokenizer(path)
    record_use("tokenizer", key, hit=hit, seconds=time.perf_counter() - started)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        bos_token=SPECIAL_TOKENS[EOS_ID],
        eos_token=SPECIAL_TOKENS[EOS_ID],
        pad_token=SPECIAL_TOKENS[PAD_ID],
        model_max_length=CONTEXT,
    )


def gpt2_config(**overrides):
    """The GPT2Config of gpt2-tiny (2 layers, 2 heads, 64 dims, context 64), with ``overrides`` applied."""
    from transformers import GPT2Config

    settings = {
        "vocab_size": VOCAB_SIZE,
        "n_positions": CONTEXT,
        "n_embd": 64,
        "n_layer": 2,
        "n_head": 2,
        "bos_token_id": EOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "use_cache": False,
        "attn_implementation": "eager",  # explicit softmax weights: output_attentions returns them (Tier 2)
    }
    return GPT2Config(**{**settings, **overrides})


def build_model():
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel(gpt2_config())


SPEC = ModelSpec(
    name="gpt2-tiny",
    task="causal-lm",
    build=build_model,
    inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID),
    capabilities=Capabilities(is_causal=True, has_attention_mask=True, returns_attentions=True),
    tokenizer=build_tokenizer,
    description="transformers GPT-2, 2 layers x 2 heads x 64 dims, BPE tokenizer trained on pydoc_data.topics",
)

"""A second, independent family for the language checks: four ``transformers`` causal LMs from tiny configs.

Random weights, no download: each is built from its config alone, with gpt2-tiny's BPE tokenizer (512 tokens,
eos 0, pad 1; a copy that pads on the left, as generation wants). Each differs from GPT-2 where language
models break:

- ``llama-gqa``: rotary positions, RMSNorm, SwiGLU, grouped-query attention (4 query heads share 2 key/value
  heads), untied head.
- ``gpt-neox``: rotary positions on a quarter of each head (``rotary_pct``), parallel attention and MLP
  residuals, untied head.
- ``qwen2-gqa``: rotary positions, one key/value head for 4 query heads, biases on q/k/v, tied head.
- ``opt``: learned absolute positions with OPT's offset of 2, post-projection embeddings, tied head.

All start on the ``eager`` attention (the backend check switches to ``sdpa``) and keep their configs' default
``use_cache=True``.
"""

from __future__ import annotations

from harness.spec import Capabilities, InputSpace, ModelSpec
from tests.language_defects import build_tokenizer

VOCAB_SIZE = 512  # gpt2-tiny's tokenizer
CONTEXT = 64
EOS_ID, PAD_ID = 0, 1
COMMON = {
    "vocab_size": VOCAB_SIZE,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": CONTEXT,
    "bos_token_id": EOS_ID,
    "eos_token_id": EOS_ID,
    "pad_token_id": PAD_ID,
    "attn_implementation": "eager",
}


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(**COMMON, intermediate_size=64, num_key_value_heads=2, tie_word_embeddings=False)
    )


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    return GPTNeoXForCausalLM(
        GPTNeoXConfig(
            **COMMON, intermediate_size=64, rotary_pct=0.25, use_parallel_residual=True, tie_word_embeddings=False
        )
    )


def _qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(
        Qwen2Config(**COMMON, intermediate_size=64, num_key_value_heads=1, tie_word_embeddings=True)
    )


def _opt():
    from transformers import OPTConfig, OPTForCausalLM

    settings = {k: v for k, v in COMMON.items() if k != "hidden_size"}
    return OPTForCausalLM(OPTConfig(**settings, hidden_size=32, ffn_dim=64, word_embed_proj_dim=32))


BUILDERS = {"llama-gqa": _llama, "gpt-neox": _neox, "qwen2-gqa": _qwen2, "opt": _opt}


def _spec(name: str) -> ModelSpec:
    return ModelSpec(
        name=f"hf-{name}",
        task="causal-lm",
        build=BUILDERS[name],
        inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID, max_batch_size=4),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
        tokenizer=build_tokenizer,  # gpt2-tiny's, copied, padding on the left
        description=f"transformers {name} from a tiny config (2 layers, 32 dims, random init)",
    )


SPECS = [_spec(name) for name in BUILDERS]

"""t5-tiny: a transformers T5 with the Flan-T5 architecture (gated-GELU; transformers 5 ties the head), random init.

2 encoder and 2 decoder layers, 2 heads, 64 dims. It shares gpt2-tiny's BPE tokenizer (trained on
``pydoc_data.topics``); the pad token doubles as the decoder start token, as in T5.
"""

from __future__ import annotations

from harness.spec import Capabilities, InputSpace, ModelSpec

from .gpt2_tiny import CONTEXT, EOS_ID, PAD_ID, VOCAB_SIZE, build_tokenizer


def build_model():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=VOCAB_SIZE,
        d_model=64,
        d_kv=32,
        d_ff=128,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=2,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=CONTEXT,
        feed_forward_proj="gated-gelu",  # Flan-T5 (T5 v1.1)
        tie_word_embeddings=False,  # Flan-T5 unties the LM head from the embedding
        pad_token_id=PAD_ID,
        eos_token_id=EOS_ID,
        decoder_start_token_id=PAD_ID,
        use_cache=False,
        attn_implementation="eager",  # explicit softmax weights: output_attentions returns them (Tier 2)
    )
    return T5ForConditionalGeneration(config)


SPEC = ModelSpec(
    name="t5-tiny",
    task="seq2seq-lm",
    build=build_model,
    inputs=InputSpace(vocab_size=VOCAB_SIZE, max_length=CONTEXT, pad_id=PAD_ID),
    # the causal claim is about the decoder; the adapter also holds the encoder to bidirectionality
    capabilities=Capabilities(is_causal=True, has_attention_mask=True, returns_attentions=True),
    tokenizer=build_tokenizer,
    description="transformers T5 (Flan-T5 architecture), 2+2 layers x 2 heads x 64 dims, gpt2-tiny's BPE tokenizer",
)

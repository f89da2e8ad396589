"""Second, differently sized models of every zoo family, built from plain config as a user would.

Running Tier 1 on them through ``--model tests.zoo_variants:SPECS`` shows each adapter is reusable:
nothing here is the zoo's own model object, only the same conventions.
"""

from __future__ import annotations

from harness.data import digit_examples
from harness.spec import Capabilities, InputSpace, ModelSpec
from harness_zoo.cnn_digits import DigitsCNN
from harness_zoo.multimode_gpt import MultiModeGPTConfig, build_spec


def gpt2_variant():
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=300, n_positions=32, n_embd=32, n_layer=1, n_head=4, use_cache=False,
                        bos_token_id=0, eos_token_id=0, pad_token_id=1)  # fmt: skip
    return GPT2LMHeadModel(config)


def t5_variant():
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=200, d_model=32, d_kv=16, d_ff=64, num_layers=1, num_decoder_layers=3,
                      num_heads=2, feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0,
                      eos_token_id=1, decoder_start_token_id=0, use_cache=False)  # fmt: skip
    return T5ForConditionalGeneration(config)


def bert_variant():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=120, hidden_size=24, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=40)  # fmt: skip
    return BertModel(config, add_pooling_layer=False)


SPECS = [
    ModelSpec(
        name="gpt2-variant",
        task="causal-lm",
        build=gpt2_variant,
        inputs=InputSpace(vocab_size=300, max_length=32, pad_id=1),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
    ),
    ModelSpec(
        name="t5-variant",
        task="seq2seq-lm",
        build=t5_variant,
        inputs=InputSpace(vocab_size=200, max_length=24, pad_id=0),
        capabilities=Capabilities(is_causal=True, has_attention_mask=True),
        expected_failures={  # a transformers bug (5.24), not the adapter's: 1 encoder layer, 3 decoder layers
            "generation_equivalence": "transformers sizes generate()'s cache by num_layers, not num_decoder_layers: "
            "generate(use_cache=True) raises IndexError in cache_utils"
        },
    ),
    ModelSpec(
        name="bert-embedding-variant",
        task="text-embedding",
        build=bert_variant,
        inputs=InputSpace(vocab_size=120, max_length=40, pad_id=0, embedding_dim=24),
        capabilities=Capabilities(has_attention_mask=True, supports_training=False),
    ),
    ModelSpec(
        name="cnn-variant",
        task="image-classification",
        build=lambda: DigitsCNN(channels=6, num_classes=4),
        inputs=InputSpace(image_size=(1, 8, 8), num_classes=4),
        real_data=digit_examples,
    ),
    *(
        build_spec(
            MultiModeGPTConfig(mode=mode, n_layer=1, n_head=4, n_embd=32, block_size=24, vocab_size=100, **extra),
            name=f"multimode-{mode}-variant",
        )  # fmt: skip
        for mode, extra in (("language-model", {}), ("token-classifier", {"num_classes": 3}), ("sequence-scorer", {}))
    ),
]

"""Text architectures of ``transformers``, from tiny configs: decoder-only, encoder-decoder and encoder families.

Each spec says what the model is, in the README's terms: the task, the vocabulary and context, the pad id, and
the claims (causal, attention mask, attention weights). The attention kernel is the library's default, as a user
gets it; sizes are tiny (2 layers, 32 dims, 4 heads, 128 tokens, context 32) so the corpus runs on two cores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.spec import Capabilities, InputSpace, ModelSpec

VOCAB = 128  # every text model's vocabulary
CONTEXT = 32  # every text model's longest sequence
PAD = 1  # pad id unless the family fixes its own
LABELS = 5  # classes of the token classifiers
TOKENIZER_VOCAB = 512  # the causal LMs' vocabulary: gpt2-tiny's tokenizer
COMMON = {  # the config fields most families share (each family renames what it calls them)
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": CONTEXT,
    "pad_token_id": PAD,
    "bos_token_id": 0,
    "eos_token_id": 2,
}


def _build(model_class: str, config_class: str, **config: Any) -> Callable[[], Any]:
    """A build() making ``transformers.<model_class>(transformers.<config_class>(**config))``."""

    def build() -> Any:
        import transformers

        return getattr(transformers, model_class)(getattr(transformers, config_class)(**config))

    build.__qualname__ = f"build_{model_class}"
    return build


def _spec(
    name: str, task: str, build: Callable[[], Any], *, pad: int = PAD, vocab: int = VOCAB, causal: bool, **fields: Any
) -> ModelSpec:
    inputs = {key: fields.pop(key) for key in ("num_classes",) if key in fields}
    return ModelSpec(
        name=f"corpus-{name}",
        task=task,
        build=build,
        inputs=InputSpace(vocab_size=vocab, max_length=CONTEXT, pad_id=pad, max_batch_size=4, **inputs),
        capabilities=Capabilities(is_causal=causal, has_attention_mask=True, returns_attentions=True),
        description=f"transformers {name} from a tiny config (random init)",
        **fields,
    )


def _tokenizer() -> Any:
    """gpt2-tiny's byte-level BPE (512 tokens, eos 0, pad 1), a copy padding on the left as generation wants: the
    causal LMs read real text through it."""
    import copy

    from harness_zoo.gpt2_tiny import build_tokenizer

    tokenizer = copy.deepcopy(build_tokenizer())
    tokenizer.padding_side = "left"
    return tokenizer


def _causal(name: str, model: str, config: str, **settings: Any) -> ModelSpec:
    config_fields = {**COMMON, "vocab_size": TOKENIZER_VOCAB, "eos_token_id": 0, **settings}
    return _spec(name, "causal-lm", _build(model, config, **config_fields), vocab=TOKENIZER_VOCAB, causal=True,
                 tokenizer=_tokenizer)  # fmt: skip


def _seq2seq(name: str, model: str, config: str, *, pad: int = PAD, **settings: Any) -> ModelSpec:
    return _spec(name, "seq2seq-lm", _build(model, config, **settings), pad=pad, causal=True)


def _encoder(name: str, model: str, config: str, **settings: Any) -> ModelSpec:
    build = _build(model, config, **{**COMMON, "num_labels": LABELS, **settings})
    return _spec(name, "token-classification", build, causal=False, num_classes=LABELS)


BART_LIKE = {  # BART, mBART, Marian and Pegasus share these config names
    "vocab_size": VOCAB,
    "d_model": 32,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "max_position_embeddings": CONTEXT,
}

CAUSAL_SPECS = (
    _causal("gpt2", "GPT2LMHeadModel", "GPT2Config", n_embd=32, n_layer=2, n_head=4, n_positions=CONTEXT),
    _causal("llama-gqa", "LlamaForCausalLM", "LlamaConfig", num_key_value_heads=2),
    _causal("mistral-sliding", "MistralForCausalLM", "MistralConfig", num_key_value_heads=2, sliding_window=8),
    _causal("qwen2-gqa", "Qwen2ForCausalLM", "Qwen2Config", num_key_value_heads=1, tie_word_embeddings=True),
    _causal("gpt-neox", "GPTNeoXForCausalLM", "GPTNeoXConfig", rotary_pct=0.25, use_parallel_residual=True),
    _causal("bloom-alibi", "BloomForCausalLM", "BloomConfig", n_layer=2, n_head=4),
    _causal("falcon", "FalconForCausalLM", "FalconConfig", new_decoder_architecture=True, num_kv_heads=2),
    _causal("opt", "OPTForCausalLM", "OPTConfig", ffn_dim=64, word_embed_proj_dim=32),
    _causal("phi", "PhiForCausalLM", "PhiConfig", partial_rotary_factor=0.5),
    _causal("gemma", "GemmaForCausalLM", "GemmaConfig", num_key_value_heads=1, head_dim=8),
    _causal(
        "gpt-bigcode-mqa",
        "GPTBigCodeForCausalLM",
        "GPTBigCodeConfig",
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=CONTEXT,
        multi_query=True,
    ),  # fmt: skip
)

SEQ2SEQ_SPECS = (
    _seq2seq(
        "t5",
        "T5ForConditionalGeneration",
        "T5Config",
        pad=0,
        vocab_size=VOCAB,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        decoder_start_token_id=0,
    ),  # fmt: skip
    _seq2seq(
        "bart", "BartForConditionalGeneration", "BartConfig", **BART_LIKE, pad_token_id=PAD, decoder_start_token_id=2
    ),  # fmt: skip
    _seq2seq(
        "marian",
        "MarianMTModel",
        "MarianConfig",
        pad=VOCAB - 1,
        **BART_LIKE,
        pad_token_id=VOCAB - 1,
        decoder_start_token_id=VOCAB - 1,
    ),  # fmt: skip
    _seq2seq("mbart", "MBartForConditionalGeneration", "MBartConfig", **BART_LIKE, pad_token_id=PAD),
    _seq2seq(
        "pegasus",
        "PegasusForConditionalGeneration",
        "PegasusConfig",
        pad=0,
        **BART_LIKE,
        pad_token_id=0,
        decoder_start_token_id=0,
    ),  # fmt: skip
)

ENCODER_SPECS = (
    _encoder("bert", "BertForTokenClassification", "BertConfig"),
    _encoder(
        "roberta", "RobertaForTokenClassification", "RobertaConfig", max_position_embeddings=CONTEXT + 2
    ),  # fmt: skip  (positions count from pad + 1 = 2)
    _encoder(
        "distilbert",
        "DistilBertForTokenClassification",
        "DistilBertConfig",
        dim=32,
        n_layers=2,
        n_heads=4,
        hidden_dim=64,
    ),  # fmt: skip
    _encoder("albert", "AlbertForTokenClassification", "AlbertConfig", embedding_size=16),
    _encoder("electra", "ElectraForTokenClassification", "ElectraConfig", embedding_size=16),
    _encoder("deberta-v2", "DebertaV2ForTokenClassification", "DebertaV2Config"),
)

TEXT_SPECS: tuple[ModelSpec, ...] = (*CAUSAL_SPECS, *SEQ2SEQ_SPECS, *ENCODER_SPECS)

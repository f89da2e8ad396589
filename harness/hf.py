"""ModelSpecs for Hugging Face checkpoints, with no code of the user's: ``hf:PATH`` and ``hf-config:PATH``.

``hf:PATH`` names a local ``save_pretrained`` folder (``config.json``, the weights, usually the tokenizer files);
its spec builds the model from those weights (``pretrained=True``). ``hf-config:PATH`` names a ``config.json``
(or a folder holding one) and builds the same architecture with random weights, which is how a team tests an
architecture change in CI. Everything is read from local files (``local_files_only``): the hub is never asked.

What the spec says, and where each fact comes from:

- the task: the first of ``config.architectures`` looked up in the auto classes' mappings (:data:`AUTO_TASKS`);
- the capabilities: causal for decoder-only and encoder-decoder language models (the decoder is causal), an
  attention mask for every text task, attention weights only when the config asks for the eager kernel (the
  fused kernels return none), trainable unless the task has no loss;
- the input space: the vocabulary from the config, the context from the config's position limit (or the
  tokenizer's ``model_max_length``) capped at :data:`MAX_CONTEXT`, the pad id from the tokenizer, else the
  config's pad or eos token; the image size and classes of a vision config.

The description line records the rest of what the config says (encoder-decoder, tied embeddings, attention
kernel, key/value cache), which the language checks also learn from the built model.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.spec import Capabilities, InputSpace, ModelSpec

MAX_CONTEXT = 64
"""The longest sequence a checkpoint's spec lets the checks draw: the stated budget (a 100M-parameter model's
Tier 1 stays minutes long); ``--harness-max-tokens`` bounds batch x length further."""

AUTO_TASKS: tuple[tuple[str, str], ...] = (
    ("MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "causal-lm"),
    ("MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES", "seq2seq-lm"),
    ("MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "token-classification"),
    ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "image-classification"),
    ("MODEL_MAPPING_NAMES", "text-embedding"),  # a bare encoder (BertModel, ...): mean-pooled hidden states
)
"""Auto-class mappings of ``transformers.models.auto.modeling_auto`` (model type -> class name), in the order they
are tried, and the harness task of an architecture found in each."""

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model", "tokenizer.model")
POSITION_LIMITS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


CHECKPOINT_PREFIXES = ("hf:", "hf-config:")  # the --model selectors this module serves


class CheckpointError(ValueError):
    """A checkpoint folder or config cannot be made into a spec: the message says what is missing."""


def spec_from_selector(selector: str) -> ModelSpec:
    """The spec of an ``hf:PATH`` or ``hf-config:PATH`` selector."""
    kind, _, target = selector.partition(":")
    if f"{kind}:" not in CHECKPOINT_PREFIXES or not target:
        raise CheckpointError(f"--model {selector}: expected hf:PATH (a save_pretrained folder) or hf-config:PATH")
    return checkpoint_spec(Path(target), pretrained=kind == "hf")


def checkpoint_spec(path: Path, *, pretrained: bool) -> ModelSpec:
    """The spec of a ``save_pretrained`` folder (``pretrained``: load its weights) or of a config (random weights)."""
    config_file, folder = _locate(path)
    if pretrained and not _weight_files(folder):
        raise CheckpointError(
            f"{folder}: no weights ({', '.join(WEIGHT_FILES)}); for random weights use hf-config:{config_file}"
        )
    config = _config(config_file)
    architecture, task = _architecture(config, config_file)
    tokenizer = _tokenizer_factory(folder) if any((folder / name).is_file() for name in TOKENIZER_FILES) else None
    return ModelSpec(
        name=_name(path.expanduser().resolve()),
        task=task,
        build=_builder(architecture, folder if pretrained else config_file, pretrained=pretrained),
        inputs=_input_space(config, task, tokenizer),
        capabilities=_capabilities(config, task, pretrained=pretrained),
        tokenizer=tokenizer,
        description=_description(config, architecture, pretrained=pretrained),
    )


def provenance(selector: str) -> dict[str, Any]:
    """The report's record of a checkpoint selector: the SHA-256 of its config and (``hf:``) weight files."""
    kind, _, target = selector.partition(":")
    config_file, folder = _locate(Path(target))
    files = [config_file, *(_weight_files(folder) if kind == "hf" else [])]
    return {
        "selector": selector,
        "files": {str(file): _sha256(file) for file in files},
        "git_commit": None,
        "trusted_without_scan": False,  # no code of the checkpoint runs: transformers' own classes build it
    }


def _locate(path: Path) -> tuple[Path, Path]:
    """The config file a path names (itself, or the folder's config.json) and the folder holding it."""
    path = path.expanduser().resolve()
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise CheckpointError(f"{path}: no config.json there")
    return config_file, config_file.parent


def _weight_files(folder: Path) -> list[Path]:
    return [folder / name for name in WEIGHT_FILES if (folder / name).is_file()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _name(path: Path) -> str:
    """A spec name: the folder's name (a config file's folder, or a differently named config's stem), with every
    run of characters other than letters, digits, ``_.-`` made one dash."""
    name = path.name if path.is_dir() else path.parent.name if path.name == "config.json" else path.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "checkpoint"


def _config(config_file: Path) -> Any:
    from transformers import AutoConfig

    try:
        raw = json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_file}: not a readable JSON config ({error})") from None
    if "auto_map" in raw:
        raise CheckpointError(f"{config_file}: the config needs the checkpoint's own code (auto_map); it is not run")
    try:
        return AutoConfig.from_pretrained(str(config_file), local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(f"{config_file}: transformers cannot read this config: {error}") from None


def _architecture(config: Any, config_file: Path) -> tuple[str, str]:
    """The config's first architecture and its task (from the auto classes' mappings)."""
    from transformers.models.auto import modeling_auto

    architectures = list(getattr(config, "architectures", None) or [])
    if not architectures:
        raise CheckpointError(f'{config_file}: the config names no architecture; add "architectures": ["<Class>"]')
    architecture = architectures[0]
    for mapping, task in AUTO_TASKS:
        if architecture in getattr(modeling_auto, mapping).values():
            return architecture, task
    known = ", ".join(task for _, task in AUTO_TASKS)
    raise CheckpointError(f"{config_file}: architecture {architecture} is not one of the harness's tasks ({known})")


def _builder(architecture: str, source: Path, *, pretrained: bool) -> Callable[[], Any]:
    """A no-argument factory of the model: from the folder's weights, or from the config with random weights."""

    def build() -> Any:
        import transformers

        model_class = getattr(transformers, architecture)
        if pretrained:
            return model_class.from_pretrained(str(source), local_files_only=True)
        return model_class(transformers.AutoConfig.from_pretrained(str(source), local_files_only=True))

    build.__qualname__ = f"{'from_pretrained' if pretrained else 'from_config'}({source})"
    return build


def _tokenizer_factory(folder: Path) -> Callable[[], Any]:
    def tokenizer() -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)

    return tokenizer


def _input_space(config: Any, task: str, tokenizer: Callable[[], Any] | None) -> InputSpace:
    if task == "image-classification":
        size = config.image_size if isinstance(config.image_size, (tuple, list)) else (config.image_size,) * 2
        return InputSpace(image_size=(config.num_channels, *size), num_classes=config.num_labels)
    loaded = tokenizer() if tokenizer is not None else None
    limits = [getattr(config, name, None) for name in POSITION_LIMITS]
    limits.append(getattr(loaded, "model_max_length", None))
    context = min([MAX_CONTEXT, *(limit for limit in limits if isinstance(limit, int) and limit > 0)])
    vocab_size = config.vocab_size
    candidates = (getattr(loaded, "pad_token_id", None), config.pad_token_id, config.eos_token_id, 0)
    pad_id = next(c for c in candidates if isinstance(c, int) and 0 <= c < vocab_size)
    return InputSpace(
        vocab_size=vocab_size,
        max_length=context,
        pad_id=pad_id,
        num_classes=config.num_labels if task == "token-classification" else None,
        embedding_dim=config.hidden_size if task == "text-embedding" else None,
    )


def _capabilities(config: Any, task: str, *, pretrained: bool) -> Capabilities:
    return Capabilities(
        is_causal=task in ("causal-lm", "seq2seq-lm"),  # decoder-only, or an encoder-decoder's decoder
        has_attention_mask=task != "image-classification",
        supports_training=task != "text-embedding",  # an embedding has no loss
        pretrained=pretrained,
        returns_attentions=getattr(config, "_attn_implementation", None) == "eager",
    )


def _description(config: Any, architecture: str, *, pretrained: bool) -> str:
    facts = [
        architecture,
        "encoder-decoder" if getattr(config, "is_encoder_decoder", False) else "single stack",
        f"tied embeddings: {bool(getattr(config, 'tie_word_embeddings', False))}",
        f"attention: {getattr(config, '_attn_implementation', None) or 'library default'}",
        f"kv cache: {bool(getattr(config, 'use_cache', False))}",
        "weights from the folder" if pretrained else "random weights from the config",
    ]
    return ", ".join(facts)

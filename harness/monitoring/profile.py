"""Reference profiles: what a model's inputs and outputs looked like on a data set.

A profile is a JSON-able dict (``PROFILE_SCHEMA`` below) with one entry per feature:

- ``input_tokens`` (tokens): each example's token ids; ``input_length`` (continuous): real tokens per example
- ``input_intensity`` (continuous, images): mean pixel value per image
- ``embedding`` (embedding): a seeded sample of sentence embeddings: mean-pooled last hidden states of
  the model itself (the encoder's for seq2seq, the logits for models that return no hidden states), or
  MiniLM's sentence embeddings of the texts (``models/minilm.py``, when its extra is installed)
- ``output_entropy`` / ``output_max_probability`` (continuous): per example, the mean over scored
  positions of the predictive distribution's entropy (nats) and top probability
- ``predicted_class`` (tokens): each example's argmax predictions (classes or next tokens)

Per-example values are kept (not histograms) so drift tests can permute whole examples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.adapters import Batch, adapter_for
from harness.spec import ModelSpec

PROFILE_SCHEMA = 1  # version of the profile dict layout
OUTPUT_TASKS = ("causal-lm", "seq2seq-lm", "token-classification", "image-classification")
EMBEDDING_SOURCES = ("model", "minilm")


@torch.no_grad()
def build_profile(
    spec: ModelSpec,
    model: torch.nn.Module,
    batches: Sequence[Batch],
    *,
    texts: Sequence[str] | None = None,
    embedding: str = "model",
    max_embeddings: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """The profile of ``model`` on ``batches`` (``texts``: the same examples as strings, for MiniLM)."""
    if embedding not in EMBEDDING_SOURCES:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDING_SOURCES)}, got {embedding!r}")
    if not batches:
        raise ValueError(f"build_profile got no batches for {spec.name}")
    model.eval()
    adapter = adapter_for(spec)
    columns: dict[str, list[Any]] = {}
    for batch in batches:
        for name, values in _batch_features(spec, adapter, model, batch, embedding == "model").items():
            columns.setdefault(name, []).extend(values)
    if embedding == "minilm":
        if texts is None:
            raise ValueError("embedding='minilm' needs the texts of the examples")
        columns["embedding"] = minilm_embeddings(texts).tolist()
    n_examples = len(next(iter(columns.values())))
    features: dict[str, Any] = {}
    for name, values in columns.items():
        if name == "embedding":
            rows = np.asarray(values, dtype=np.float64)  # (N, H)
            keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_embeddings])
            features[name] = {"kind": "embedding", "source": embedding, "values": rows[keep].tolist()}
        elif name in ("input_tokens", "predicted_class"):
            features[name] = {"kind": "tokens", "rows": values}
        else:
            features[name] = {"kind": "continuous", "values": [float(v) for v in values]}
    return {
        "schema": PROFILE_SCHEMA,
        "model": spec.name,
        "task": spec.task,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_examples": n_examples,
        "features": features,
    }


def _batch_features(
    spec: ModelSpec, adapter: Any, model: torch.nn.Module, batch: Batch, own_embedding: bool
) -> dict[str, list[Any]]:
    features: dict[str, list[Any]] = {}
    if spec.task == "image-classification":
        pixels = batch["pixel_values"]  # (B, C, H, W)
        features["input_intensity"] = pixels.flatten(1).mean(1).tolist()
        logits = adapter.forward(spec, model, batch)  # (B, K)
        probs = torch.softmax(logits.double(), -1)  # (B, K)
        features["output_entropy"] = _entropy(probs).tolist()
        features["output_max_probability"] = probs.max(-1).values.tolist()
        features["predicted_class"] = [[int(c)] for c in logits.argmax(-1)]
        if own_embedding:
            features["embedding"] = logits.double().tolist()
        return features
    mask = batch["attention_mask"]  # (B, T)
    features["input_tokens"] = [row[m.bool()].tolist() for row, m in zip(batch["input_ids"], mask, strict=True)]
    features["input_length"] = mask.sum(1).tolist()
    output = None
    if spec.task in OUTPUT_TASKS or own_embedding:
        output = _run(spec, adapter, model, batch)
    if spec.task in OUTPUT_TASKS:
        logits = _logits(output)  # (B, L, V)
        scored = batch["labels"] != spec.inputs.ignore_index if spec.task == "seq2seq-lm" else mask.bool()  # (B, L)
        probs = torch.softmax(logits.double(), -1)  # (B, L, V)
        weights = scored.double() / scored.sum(1, keepdim=True).clamp(min=1)  # (B, L)
        features["output_entropy"] = (_entropy(probs) * weights).sum(1).tolist()
        features["output_max_probability"] = (probs.max(-1).values * weights).sum(1).tolist()
        predicted = logits.argmax(-1)  # (B, L)
        features["predicted_class"] = [row[s].tolist() for row, s in zip(predicted, scored, strict=True)]
    if own_embedding:
        features["embedding"] = _own_embedding(spec, output, mask).tolist()
    return features


def _run(spec: ModelSpec, adapter: Any, model: torch.nn.Module, batch: Batch) -> Any:
    """The model's raw output, with hidden states when it accepts ``output_hidden_states``."""
    from harness.adapters.sequence import accepts

    inputs = adapter.model_inputs(spec, model, batch)
    if spec.task == "seq2seq-lm":
        inputs["decoder_input_ids"] = adapter.decoder_input_ids(spec, model, batch["labels"])
    if accepts(model, "output_hidden_states"):
        inputs["output_hidden_states"] = True
    return model(**inputs)


def _logits(output: Any) -> torch.Tensor:
    from harness.adapters.base import logits_of

    return logits_of(output)


def _own_embedding(spec: ModelSpec, output: Any, mask: torch.Tensor) -> torch.Tensor:
    """Mean-pooled last hidden states (B, H): the encoder's for seq2seq; pooled logits as a fallback."""
    from harness.adapters.text_embedding import hidden_states_of, mean_pool

    hidden = None
    if spec.task == "seq2seq-lm":
        hidden = getattr(output, "encoder_last_hidden_state", None)
    elif spec.task == "text-embedding":
        hidden = hidden_states_of(output)
    else:
        states = getattr(output, "hidden_states", None)
        hidden = states[-1] if states else None
    if hidden is None:  # a model that returns no hidden states: its logits stand in
        hidden = _logits(output)
    return mean_pool(hidden.double(), mask)  # (B, H)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp(min=1e-300))).sum(-1)


def minilm_embeddings(texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """MiniLM (all-MiniLM-L6-v2) sentence embeddings (N, 384); MissingExtraError without its extra."""
    from harness.adapters.text_embedding import hidden_states_of, mean_pool
    from harness_zoo.minilm import SPEC

    model, tokenizer = SPEC.build_model(), SPEC.tokenizer()
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                max_length=SPEC.inputs.max_length, return_tensors="pt")  # fmt: skip
            hidden = hidden_states_of(model(**encoded))  # (B, T, 384)
            rows.append(mean_pool(hidden, encoded["attention_mask"]).double().numpy())
    return np.concatenate(rows)


def export_profile(profile: dict[str, Any], path: str | Path) -> Path:
    """Write a profile to one JSON file (atomically), the artifact a CI job keeps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    temporary.write_text(json.dumps(profile, allow_nan=False))
    os.replace(temporary, path)
    return path


def load_profile_file(path: str | Path) -> dict[str, Any]:
    """A profile from a JSON file; a clear error names the path when it is missing or not a profile."""
    path = Path(path)
    try:
        profile = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"reference profile {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"reference profile {path} is not valid JSON: {error}") from None
    validate_profile(profile, str(path))
    return profile


def validate_profile(profile: Any, where: str) -> None:
    if not isinstance(profile, dict) or "features" not in profile or "schema" not in profile:
        raise ValueError(f"{where} is not a reference profile (no 'schema' and 'features')")
    if profile["schema"] != PROFILE_SCHEMA:
        raise ValueError(f"{where} has profile schema {profile['schema']}; this harness reads {PROFILE_SCHEMA}")


def save_to_db(profile: dict[str, Any], db_path: str | Path, *, name: str) -> str:
    """Store a profile in the ExperimentDB at ``db_path``; returns its profile id."""
    from harness.store import ExperimentDB

    with ExperimentDB(db_path) as db:
        return db.save_profile(name=name, model=profile["model"], profile=profile)


def load_from_db(db_path: str | Path, profile_id: str) -> dict[str, Any]:
    """A profile stored in the ExperimentDB at ``db_path``."""
    from harness.store import ExperimentDB

    with ExperimentDB(db_path) as db:
        profile = db.load_profile(profile_id)
    validate_profile(profile, f"profile {profile_id} in {db_path}")
    return profile

"""Reference profiles: what a model's inputs and outputs looked like on a data set.

A profile is a JSON-able dict (``PROFILE_SCHEMA`` below) with one entry per feature:

- ``input_tokens`` (tokens): each example's token ids; ``input_length`` (continuous): real tokens per example
- ``input_intensity`` (continuous, images): mean pixel value per image
- ``embedding`` (embedding): a seeded sample of sentence embeddings: the model's own representation of each
  example (its adapter's: mean-pooled last hidden states, the encoder's for seq2seq, the logits for models
  that return none), or the embeddings of the texts by a text-embedding model named by selector (``minilm``,
  the pretrained all-MiniLM-L6-v2 of the zoo, when its extra is installed)
- ``output_entropy`` / ``output_max_probability`` (continuous): per example, the mean over scored
  positions of the predictive distribution's entropy (nats) and top probability
- ``predicted_class`` (tokens): each example's argmax predictions (classes or next tokens)

Per-example values are kept (not histograms) so drift tests can permute whole examples. Which features a
batch has is its task's adapter's business (:meth:`harness.adapters.base.Adapter.profile_features`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.adapters import Batch, adapter_for
from harness.spec import ModelSpec

PROFILE_SCHEMA = 1  # version of the profile dict layout


@torch.no_grad()
def build_profile(
    spec: ModelSpec,
    model: torch.nn.Module,
    batches: Sequence[Batch],
    *,
    texts: Sequence[str] | None = None,
    embedding: str | ModelSpec = "model",
    max_embeddings: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """The profile of ``model`` on ``batches``.

    ``embedding`` is ``"model"`` (the model's own representation of each example) or a text-embedding model
    (a ModelSpec or a ``--model`` selector such as ``"minilm"``) that embeds ``texts``, the same examples as
    strings.
    """
    if not batches:
        raise ValueError(f"build_profile got no batches for {spec.name}")
    model.eval()
    adapter = adapter_for(spec)
    columns: dict[str, list[Any]] = {}
    for batch in batches:
        for name, values in adapter.profile_features(spec, model, batch, own_embedding=embedding == "model").items():
            columns.setdefault(name, []).extend(values)
    if embedding != "model":
        if texts is None:
            raise ValueError(f"embedding={_source(embedding)!r} needs the texts of the examples")
        columns["embedding"] = text_embeddings(embedding, texts).tolist()
    n_examples = len(next(iter(columns.values())))
    features: dict[str, Any] = {}
    for name, values in columns.items():
        if name == "embedding":
            rows = np.asarray(values, dtype=np.float64)  # (N, H)
            keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_embeddings])
            features[name] = {"kind": "embedding", "source": _source(embedding), "values": rows[keep].tolist()}
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


def _source(embedding: str | ModelSpec) -> str:
    return embedding if isinstance(embedding, str) else embedding.name


def text_embeddings(embedder: str | ModelSpec, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """The embeddings (N, H) of ``texts`` by a text-embedding model: a ModelSpec, or a ``--model`` selector
    resolved by :func:`harness.loading.resolve_models` (``"minilm"``: MissingExtraError without its extra)."""
    if isinstance(embedder, str):
        from harness.loading import resolve_models

        (embedder,) = resolve_models([embedder])
    adapter = adapter_for(embedder)
    if adapter.output_kind != "embedding":
        raise ValueError(f"embedding model {embedder.name} is a {embedder.task} model, not a text-embedding one")
    model, tokenizer = embedder.build_model(), embedder.tokenizer()
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                max_length=embedder.inputs.max_length, return_tensors="pt")  # fmt: skip
            rows.append(adapter.outputs_of(embedder, model(**encoded), encoded).double().numpy())  # (B, H)
    return np.concatenate(rows)


def export_profile(profile: dict[str, Any], path: str | Path) -> Path:
    """Write a profile to one JSON file (atomically), the artifact a CI job keeps."""
    from harness.io import atomic_write_text

    return atomic_write_text(path, json.dumps(profile, allow_nan=False))


def load_profile_file(path: str | Path) -> dict[str, Any]:
    """A profile from a JSON file; a clear error names the path when it is missing or not a profile."""
    from harness.io import read_json_file

    profile = read_json_file(path, "reference profile")
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

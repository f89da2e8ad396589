"""Reference profiles: what a model's inputs and outputs looked like on a data set.

A profile is a JSON-able dict (``PROFILE_SCHEMA`` below) with one entry per feature:

- ``input_tokens`` (tokens): each example's token ids; ``input_length`` (continuous): real tokens per example
- ``input_intensity`` (continuous, images): mean pixel value per image
- ``embedding`` (embedding): a seeded sample of sentence embeddings, by default (``embedding="auto"``) of the
  texts by the pretrained all-MiniLM-L6-v2 of the zoo (``minilm``) when its extra is installed, pooled and
  L2-normalised as its sentence-transformers config declares (:class:`SentencePooling`); another
  text-embedding model by selector; or, opted into with ``embedding="model"``, the model's own representation
  of each example (its adapter's: mean-pooled last hidden states, the encoder's for seq2seq, the logits for
  models that return none), meaningless for an untrained model. ``profile["embedding"]`` records which was
  used and, when there is none, why
- ``output_entropy`` / ``output_max_probability`` (continuous): per example, the mean over scored
  positions of the predictive distribution's entropy (nats) and top probability
- ``predicted_class`` (tokens): each example's argmax predictions (classes or next tokens)

Per-example values are kept (not histograms) so drift tests can permute whole examples. Which features a
batch has is its task's adapter's business (:meth:`harness.adapters.base.Adapter.profile_features`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness.adapters import Batch, adapter_for
from harness.monitoring.config import MonitorConfig
from harness.spec import MissingExtraError, ModelSpec

PROFILE_SCHEMA = 2  # version of the profile dict layout (2: records its embedding)
DEFAULT_ENCODER = "minilm"  # the pretrained text encoder of embedding="auto"


@torch.no_grad()
def build_profile(
    spec: ModelSpec,
    model: torch.nn.Module,
    batches: Sequence[Batch],
    *,
    texts: Sequence[str] | None = None,
    embedding: str | ModelSpec = "auto",
    max_embeddings: int = MonitorConfig.max_embeddings,
    seed: int = 0,
) -> dict[str, Any]:
    """The profile of ``model`` on ``batches``.

    ``embedding`` is ``"auto"`` (the pretrained encoder ``minilm`` on ``texts`` when its extra is installed,
    else no embedding feature), ``"model"`` (the model's own representation of each example), ``"none"``, or
    a text-embedding model (a ModelSpec or a ``--model`` selector) that embeds ``texts``, the same examples as
    strings.
    """
    if not batches:
        raise ValueError(f"build_profile got no batches for {spec.name}")
    encoder, why = choose_embedding(embedding, texts)
    model.eval()
    adapter = adapter_for(spec)
    columns: dict[str, list[Any]] = {}
    for batch in batches:
        for name, values in adapter.profile_features(spec, model, batch, own_embedding=encoder == "model").items():
            columns.setdefault(name, []).extend(values)
    if encoder not in (None, "model"):
        try:
            columns["embedding"] = text_embeddings(encoder, texts).tolist()
        except MissingExtraError as error:
            if embedding != "auto":
                raise
            encoder, why = None, f"no embedding: {error}; embedding = 'model' opts into the model's own"
    n_examples = len(next(iter(columns.values())))
    features: dict[str, Any] = {}
    for name, values in columns.items():
        if name == "embedding":
            rows = np.asarray(values, dtype=np.float64)  # (N, H)
            keep = np.sort(np.random.default_rng(seed).permutation(len(rows))[:max_embeddings])
            features[name] = {"kind": "embedding", "source": _source(encoder), "values": rows[keep].tolist()}
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
        "embedding": {"source": None if encoder is None else _source(encoder), "why": why},
        "features": features,
    }


def choose_embedding(embedding: str | ModelSpec, texts: Sequence[str] | None) -> tuple[str | ModelSpec | None, str]:
    """``(encoder, why)``: the embedding ``build_profile`` computes (None: no embedding feature) and one sentence
    saying why. ``"auto"`` is the pretrained ``minilm`` when there are texts (``build_profile`` falls back to
    none when its extra is not installed)."""
    if embedding == "none":
        return None, "no embedding asked for (embedding = 'none')"
    if embedding == "model":
        return "model", "the model's own representation, opted into (embedding = 'model')"
    if texts is None:
        if embedding == "auto":
            return None, "no texts to embed (images); embedding = 'model' opts into the model's own representation"
        raise ValueError(f"embedding={_source(embedding)!r} needs the texts of the examples")
    if embedding == "auto":
        return (
            DEFAULT_ENCODER,
            f"the pretrained text encoder {DEFAULT_ENCODER} (the default when its extra is installed)",
        )
    return embedding, f"the text encoder {_source(embedding)}, as asked"


def _source(embedding: str | ModelSpec) -> str:
    return embedding if isinstance(embedding, str) else embedding.name


POOLING_KEYS = {  # sentence-transformers' 1_Pooling/config.json switches
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "max": "pooling_mode_max_tokens",
    "mean_sqrt_len": "pooling_mode_mean_sqrt_len_tokens",
}


@dataclass(frozen=True)
class SentencePooling:
    """How a sentence-transformers model turns hidden states into one sentence embedding, as its folder's
    ``modules.json`` (a ``Normalize`` module) and ``1_Pooling/config.json`` (the pooling mode) declare; a model
    without them is mean-pooled and not normalised (the text-embedding adapter's own pooling)."""

    mode: str = "mean"  # "mean" (over the attention mask), "cls" (the first token) or "max" (over the mask)
    normalize: bool = False  # L2-normalise each embedding

    @classmethod
    def of_folder(cls, folder: str | Path) -> SentencePooling:
        """The pooling declared in ``folder`` (a local model folder); the defaults where it declares none."""
        folder = Path(folder)
        modules_file = folder / "modules.json"
        if not modules_file.is_file():
            return cls()
        modules = json.loads(modules_file.read_text())
        normalize = any(module.get("type", "").endswith("Normalize") for module in modules)
        pooling = next((m for m in modules if m.get("type", "").endswith("Pooling")), None)
        if pooling is None:
            return cls(normalize=normalize)
        config = json.loads((folder / pooling["path"] / "config.json").read_text())
        modes = [mode for mode, key in POOLING_KEYS.items() if config.get(key)]
        if len(modes) != 1 or modes[0] not in ("mean", "cls", "max"):
            raise ValueError(f"{folder}: the harness pools with exactly one of mean, cls and max; got {modes}")
        return cls(mode=modes[0], normalize=normalize)

    def __call__(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings (B, H) of hidden states (B, T, H) under the attention mask (B, T)."""
        from harness.adapters.sequence import mean_pool

        if self.mode == "cls":
            pooled = hidden[:, 0]
        elif self.mode == "max":
            pooled = hidden.masked_fill(mask[..., None] == 0, float("-inf")).amax(1)
        else:
            pooled = mean_pool(hidden, mask)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def text_embeddings(embedder: str | ModelSpec, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """The embeddings (N, H) of ``texts`` by a text-embedding model: a ModelSpec, or a ``--model`` selector
    resolved by :func:`harness.loading.resolve_models` (``"minilm"``: MissingExtraError without its extra),
    pooled and normalised as the model's folder declares (:class:`SentencePooling`)."""
    from harness.adapters import hidden_states_of

    if isinstance(embedder, str):
        from harness.loading import resolve_models

        (embedder,) = resolve_models([embedder])
    adapter = adapter_for(embedder)
    if adapter.output_kind != "embedding":
        raise ValueError(f"embedding model {embedder.name} is a {embedder.task} model, not a text-embedding one")
    model, tokenizer = embedder.build_model(), embedder.tokenizer()
    model.eval()
    pooling = SentencePooling.of_folder(getattr(model, "name_or_path", "") or ".")
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                max_length=embedder.inputs.max_length, return_tensors="pt")  # fmt: skip
            hidden = hidden_states_of(model(**encoded))  # (B, T, H)
            rows.append(pooling(hidden, encoded["attention_mask"]).double().numpy())  # (B, H)
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

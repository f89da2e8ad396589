"""Tier 5 from a monitor config: its data set, the drift comparison, the regression gate and stored baselines.

A monitor config is a JSON or TOML file (read by :func:`harness.config.read_config_file`)::

    mode = "drift"                  # "drift": current data against a reference profile; "gate": candidate vs baseline
    model = "gpt2-tiny"             # drift: the model; gate: a baseline model built now (or give ``baseline``)
    baseline = "baseline.json"      # gate: a stored baseline file (``harness baseline``), instead of ``model``
    candidate = "pkg.models:SPEC"   # gate only: the candidate model
    reference = "profile.json"      # drift: a profile JSON file, or reference_db + reference_id (ExperimentDB)
    embedding = "minilm"            # drift: the current profile's embedding; default the reference profile's
    [data]                          # the eval / current data set
    source = "reference_text"       # "reference_text" (pydoc topics), "digits", or a path to a text file
    split = "lines"                 # a text file's examples: "lines", "paragraphs" (blank lines) or "sentences"
    min_chars = 40                  # a text file's examples shorter than this are dropped (headings, blanks)
    start = 0.5                     # fraction of the data set where the examples start
    stop = 1.0                      # fraction where they stop
    limit = 200                     # at most this many examples (seeded shuffle first when shuffle = true)
    shuffle = false
    [thresholds]                    # any MonitorConfig field (harness.monitoring.config)

A gate compares two different things: a candidate against a stored baseline file (the evaluation of
the main branch's model, kept as a CI artifact: :func:`make_baseline` writes it), or against a baseline model
named by ``model``. A gate of a model against itself cannot fail and is refused.

Every problem with a config, a model selector or a stored file is a :class:`~harness.config.ConfigError`
(``harness monitor``, ``harness baseline`` and ``harness profile`` exit 2 on it, see harness/monitoring/cli.py).
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ConfigError, from_table, read_config_file

MODES = ("drift", "gate")
CONFIG_KEYS = {"mode", "model", "baseline", "candidate", "reference", "reference_db", "reference_id", "data",
               "thresholds", "embedding"}  # fmt: skip
SPLITS = ("lines", "paragraphs", "sentences")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")  # a sentence ends at . ! or ? followed by white space
MIN_EXAMPLES = 2  # examples a data set must yield (a two-sample test needs two on each side)


@dataclass(frozen=True)
class DataConfig:
    """Which examples a monitor or profile run uses."""

    source: str = "reference_text"  # "reference_text", "digits" or a UTF-8 text file (split into examples by ``split``)
    split: str = "lines"  # a text file's examples: its lines, its paragraphs (blank lines) or its sentences
    min_chars: int = 40  # a text file's examples shorter than this (stripped) are dropped: headings, blank lines
    start: float = 0.0  # fraction of the data set where the examples start
    stop: float = 1.0  # fraction where they stop
    limit: int | None = None  # at most this many examples
    shuffle: bool = False  # seeded shuffle of the examples (paragraphs or digits) before the start/stop cut
    batch_size: int = 16  # examples per forward

    def __post_init__(self) -> None:
        if not 0.0 <= self.start < self.stop <= 1.0:
            raise ConfigError(f"data needs 0 <= start < stop <= 1, got start={self.start}, stop={self.stop}")
        if self.limit is not None and self.limit < MIN_EXAMPLES:
            raise ConfigError(f"data.limit must be >= {MIN_EXAMPLES}, got limit={self.limit}")
        if self.split not in SPLITS:
            raise ConfigError(f"data.split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.min_chars < 1:
            raise ConfigError(f"data.min_chars must be >= 1, got min_chars={self.min_chars}")


def text_file_examples(path: str | Path, *, split: str = "lines", min_chars: int = 40) -> list[str]:
    """The examples of a plain UTF-8 text file: its lines (``split="lines"``), its paragraphs (runs of lines
    between blank lines, joined by spaces) or its sentences (each line cut after ``.``, ``!`` or ``?``
    followed by white space), stripped, those shorter than ``min_chars`` characters dropped. A raw WikiText
    file, one paragraph per line with `` = Heading = `` lines, gives one example per paragraph by lines and
    one per sentence by sentences. ConfigError when the file cannot be read as text."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"data.source {str(path)!r} cannot be read as UTF-8 text: {error}") from None
    if split == "paragraphs":
        pieces = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    elif split == "sentences":
        pieces = [sentence for line in text.splitlines() for sentence in SENTENCE_END.split(line)]
    else:
        pieces = text.splitlines()
    return [piece.strip() for piece in pieces if len(piece.strip()) >= min_chars]


def load_examples(spec: Any, data: DataConfig, *, seed: int = 0) -> tuple[list[Any], list[str] | None]:
    """``(batches, texts)`` of the data set for ``spec`` (texts is None for images)."""
    from harness.evaluation import digit_batches, text_batches, text_examples

    if data.source == "digits":
        from harness.adapters import adapter_for

        if "pixel_values" not in adapter_for(spec).export_keys:
            raise ConfigError(f"data source 'digits' needs a model of images, {spec.name} is {spec.task}")
        shuffle_seed = seed if data.shuffle else None
        batches = digit_batches(start=data.start, stop=data.stop, batch_size=data.batch_size, shuffle_seed=shuffle_seed)
        if data.limit is not None:
            batches = _limit_batches(batches, data.limit)
        return batches, None
    if data.source == "reference_text":
        texts = text_examples()
    else:
        if not Path(data.source).is_file():
            raise ConfigError(f"data.source {data.source!r} is neither 'reference_text', 'digits' nor a file")
        texts = text_file_examples(data.source, split=data.split, min_chars=data.min_chars)
    if data.shuffle:
        random.Random(seed).shuffle(texts)
    texts = texts[int(data.start * len(texts)) : int(data.stop * len(texts))][: data.limit]
    if len(texts) < MIN_EXAMPLES:
        raise ConfigError(
            f"data.source {data.source!r} gives {len(texts)} example(s) between start={data.start} and "
            f"stop={data.stop} (split={data.split!r}, min_chars={data.min_chars}); the monitor needs at least "
            f"{MIN_EXAMPLES}"
        )
    if spec.tokenizer is None:
        raise ConfigError(f"data.source {data.source!r} is text, but {spec.name} has no tokenizer")
    return text_batches(spec, texts, batch_size=data.batch_size), texts


def _limit_batches(batches: list[Any], limit: int) -> list[Any]:
    kept, left = [], limit
    for batch in batches:
        if left <= 0:
            break
        kept.append({key: value[:left] for key, value in batch.items()})
        left -= len(batch["labels"])
    return kept


def read_monitor_config(path: str | Path) -> dict[str, Any]:
    """A monitor config file's table (validated when it runs: :func:`run_monitor`, :func:`make_baseline`)."""
    return read_config_file(path)


def resolve_one(selector: str) -> Any:
    """The one ModelSpec ``selector`` names; ConfigError otherwise."""
    from harness.loading import ModelSelectionError, resolve_models

    try:
        specs = resolve_models([selector])
    except ModelSelectionError as error:
        raise ConfigError(str(error)) from None
    if len(specs) != 1:
        raise ConfigError(f"{selector!r} names {len(specs)} models; the monitor takes exactly one")
    return specs[0]


def run_monitor(raw: dict[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Run a monitor config (already read from ``source``) and return its JSON-able result."""
    from harness.monitoring.drift import compare_profiles, embedding_source
    from harness.monitoring.profile import build_profile, load_from_db, load_profile_file

    mode = raw.get("mode")
    config, data = settings(raw, source=source)
    if mode == "gate":
        return _run_gate(raw, config, data, source)
    if "model" not in raw:
        raise ConfigError(f"{source}: a drift config needs 'model' (a zoo name or module:attr)")
    spec = resolve_one(raw["model"])
    try:
        if "reference" in raw:
            reference = load_profile_file(raw["reference"])
        elif "reference_db" in raw and "reference_id" in raw:
            reference = load_from_db(raw["reference_db"], raw["reference_id"])
        else:
            raise ConfigError(
                f"{source}: a drift config needs 'reference' (a profile file) or 'reference_db' + 'reference_id'"
            )
    except (KeyError, ValueError) as error:
        raise ConfigError(str(error)) from None
    batches, texts = load_examples(spec, data, seed=config.seed)
    embedding = raw.get("embedding") or embedding_source(reference) or "none"
    try:
        current = build_profile(spec, spec.build_model(), batches, texts=texts, embedding=embedding,
                                max_embeddings=config.max_embeddings, seed=config.seed)  # fmt: skip
        return compare_profiles(reference, current, config).to_dict()
    except (ImportError, ValueError) as error:  # a missing extra, profiles that cannot be compared
        raise ConfigError(f"{source}: {error}") from None


def settings(raw: dict[str, Any], *, source: str = "config") -> tuple[Any, DataConfig]:
    """The config's keys and mode checked; its thresholds (MonitorConfig) and data set, validated."""
    from harness.monitoring.config import MonitorConfig

    unknown = sorted(set(raw) - CONFIG_KEYS)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(sorted(CONFIG_KEYS))}"
        )
    if raw.get("mode") not in MODES:
        raise ConfigError(f"{source}: 'mode' must be one of {', '.join(MODES)}, got {raw.get('mode')!r}")
    thresholds = from_table(MonitorConfig, raw.get("thresholds", {}), "thresholds", source=source)
    return thresholds, from_table(DataConfig, raw.get("data", {}), "data", source=source)


def eval_set(data: DataConfig, config: Any) -> dict[str, Any]:
    """What a stored baseline records of its eval set: the data table and the shuffle seed."""
    return {**dataclasses.asdict(data), "seed": config.seed}


def _evaluate_candidate(raw: dict[str, Any], config: Any, data: DataConfig, source: str) -> tuple[Any, Any]:
    """``(spec, evaluation)`` of the gate config's candidate on its eval set."""
    from harness.evaluation import evaluate

    if "candidate" not in raw:
        raise ConfigError(f"{source}: a gate config needs 'candidate' (a zoo name or module:attr)")
    spec = resolve_one(raw["candidate"])
    batches, _ = load_examples(spec, data, seed=config.seed)
    try:
        return spec, evaluate(spec, spec.build_model(), batches)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _run_gate(raw: dict[str, Any], config: Any, data: DataConfig, source: str) -> dict[str, Any]:
    """The candidate against a stored baseline file or a baseline model built now."""
    from harness.evaluation import evaluate
    from harness.monitoring.gate import load_baseline, regression_gate

    if ("model" in raw) == ("baseline" in raw):
        raise ConfigError(
            f"{source}: a gate config needs exactly one of 'baseline' (a stored baseline file, written by harness "
            "baseline) and 'model' (a baseline model built now)"
        )
    if "candidate" in raw and raw.get("model") == raw["candidate"]:
        raise ConfigError(
            f"{source}: the gate compares {raw['candidate']!r} with itself, which cannot fail: give the candidate a "
            "stored 'baseline' file (of the main branch's model) or a different baseline 'model'"
        )
    if "baseline" in raw:
        try:
            baseline, stored_set = load_baseline(raw["baseline"])
        except ValueError as error:
            raise ConfigError(str(error)) from None
        wanted = eval_set(data, config)
        if stored_set != wanted:
            differ = sorted(key for key in set(stored_set) | set(wanted) if stored_set.get(key) != wanted.get(key))
            stored_values = {key: stored_set.get(key) for key in differ}
            wanted_values = {key: wanted.get(key) for key in differ}
            raise ConfigError(
                f"baseline {raw['baseline']} was evaluated on another eval set than this config's "
                f"(differs in {', '.join(differ)}: {stored_values} vs {wanted_values}); "
                "refresh the baseline with harness baseline"
            )
        _, candidate = _evaluate_candidate(raw, config, data, source)
        source = {"baseline_file": str(raw["baseline"])}
    else:
        if "candidate" not in raw:
            raise ConfigError(f"{source}: a gate config needs 'candidate' (a zoo name or module:attr)")
        spec, candidate_spec = resolve_one(raw["model"]), resolve_one(raw["candidate"])
        batches, _ = load_examples(spec, data, seed=config.seed)
        baseline = evaluate(spec, spec.build_model(), batches)
        candidate = evaluate(candidate_spec, candidate_spec.build_model(), batches)
        source = {"baseline_model": spec.name}
    try:
        result = regression_gate(baseline, candidate, config).to_dict()
    except ValueError as error:
        raise ConfigError(
            f"{error} (the same data config tokenized differently: the tokenizer or the data changed; "
            "refresh the baseline on purpose with harness baseline)"
        ) from None
    result["details"] |= source
    return result


def make_baseline(raw: dict[str, Any], out: str | Path, *, source: str = "config") -> dict[str, Any]:
    """Evaluate a gate config's candidate on its eval set and store it at ``out`` as the baseline later gates
    read; returns a summary (model, path and the evaluation)."""
    from harness.monitoring.gate import save_baseline

    config, data = settings(raw, source=source)
    if raw["mode"] != "gate":
        raise ConfigError(f'{source}: not a gate config (mode = "gate")')
    spec, evaluation = _evaluate_candidate(raw, config, data, source)
    path = save_baseline(evaluation, out, data=eval_set(data, config))
    return {"model": spec.name, "path": str(path), **evaluation.to_dict()}


def make_reference_profile(
    selector: str,
    data: DataConfig,
    *,
    embedding: str = "auto",
    max_embeddings: int | None = None,
    seed: int = 0,
    out: str | Path | None = None,
    db: str | Path | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Compute a model's reference profile on ``data`` (``max_embeddings`` default: MonitorConfig's); write it to
    ``out`` and/or store it in the ExperimentDB
    ``db`` (under ``name``, default the model's); returns a summary (model, examples, features, path, profile id)."""
    from harness.monitoring.config import MonitorConfig
    from harness.monitoring.profile import build_profile, export_profile, save_to_db

    if not out and not db:
        raise ConfigError("give --out FILE and/or --db PATH")
    spec = resolve_one(selector)
    batches, texts = load_examples(spec, data, seed=seed)
    try:
        profile = build_profile(spec, spec.build_model(), batches, texts=texts, embedding=embedding, seed=seed,
                                max_embeddings=max_embeddings or MonitorConfig.max_embeddings)  # fmt: skip
    except (ImportError, ValueError) as error:  # a missing extra, an embedding without texts
        raise ConfigError(str(error)) from None
    summary: dict[str, Any] = {
        "model": spec.name,
        "n_examples": profile["n_examples"],
        "embedding": profile["embedding"],
        "features": list(profile["features"]),
    }
    if out:
        summary["path"] = str(export_profile(profile, out))
    if db:
        summary["profile_id"] = save_to_db(profile, db, name=name or spec.name)
    return summary

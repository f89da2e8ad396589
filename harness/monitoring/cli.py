"""``harness monitor --config FILE [--json]`` and ``harness profile``: Tier 5 from the command line.

A monitor config is a JSON or TOML file::

    mode = "drift"                  # "drift": current data against a reference profile; "gate": candidate vs baseline
    model = "gpt2-tiny"             # drift: the model; gate: a baseline model built now (or give ``baseline``)
    baseline = "baseline.json"      # gate: a stored baseline file (``harness baseline``), instead of ``model``
    candidate = "pkg.models:SPEC"   # gate only: the candidate model
    reference = "profile.json"      # drift: a profile JSON file, or reference_db + reference_id (ExperimentDB)
    [data]                          # the eval / current data set
    source = "reference_text"       # "reference_text" (pydoc topics), "digits", or a path to a text file
    start = 0.5                     # fraction of the data set where the examples start
    stop = 1.0                      # fraction where they stop
    limit = 200                     # at most this many examples (seeded shuffle first when shuffle = true)
    shuffle = false
    [thresholds]                    # any MonitorConfig field (harness.monitoring.config)

A gate compares two different things: a candidate against a stored baseline file (the evaluation of
the main branch's model, kept as a CI artifact: ``harness baseline --config gate.toml --out FILE``
writes it), or against a baseline model named by ``model``. A gate of a model against itself cannot fail
and is refused.

Exit status: 0 for ok, warn or inconclusive; 1 for fail; 2 for a usage error (bad config, missing file,
a baseline computed on another eval set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MODES = ("drift", "gate")
CONFIG_KEYS = {"mode", "model", "baseline", "candidate", "reference", "reference_db", "reference_id", "data",
               "thresholds", "embedding"}  # fmt: skip
DATA_KEYS = {"source", "start", "stop", "limit", "shuffle", "batch_size"}


class MonitorUsageError(Exception):
    """A bad monitor config or argument: exit status 2."""


@dataclass(frozen=True)
class DataConfig:
    """Which examples a monitor or profile run uses."""

    source: str = "reference_text"  # "reference_text", "digits" or a text file (paragraphs split by blank lines)
    start: float = 0.0  # fraction of the data set where the examples start
    stop: float = 1.0  # fraction where they stop
    limit: int | None = None  # at most this many examples
    shuffle: bool = False  # seeded shuffle of the examples (paragraphs or digits) before the start/stop cut
    batch_size: int = 16  # examples per forward

    def __post_init__(self) -> None:
        if not 0.0 <= self.start < self.stop <= 1.0:
            raise MonitorUsageError(f"data needs 0 <= start < stop <= 1, got start={self.start}, stop={self.stop}")
        if self.limit is not None and self.limit < 2:
            raise MonitorUsageError(f"data.limit must be >= 2, got limit={self.limit}")


def load_examples(spec: Any, data: DataConfig, *, seed: int = 0) -> tuple[list[Any], list[str] | None]:
    """``(batches, texts)`` of the data set for ``spec`` (texts is None for images)."""
    from harness.evaluation import digit_batches, text_batches, text_examples

    if data.source == "digits":
        if spec.task != "image-classification":
            raise MonitorUsageError(f"data source 'digits' needs an image classifier, {spec.name} is {spec.task}")
        shuffle_seed = seed if data.shuffle else None
        batches = digit_batches(start=data.start, stop=data.stop, batch_size=data.batch_size, shuffle_seed=shuffle_seed)
        if data.limit is not None:
            batches = _limit_batches(batches, data.limit)
        return batches, None
    if data.source == "reference_text":
        texts = text_examples()
    else:
        path = Path(data.source)
        if not path.is_file():
            raise MonitorUsageError(f"data.source {data.source!r} is neither 'reference_text', 'digits' nor a file")
        texts = [p.strip() for p in path.read_text().split("\n\n") if p.strip()]
    if data.shuffle:
        random.Random(seed).shuffle(texts)
    texts = texts[int(data.start * len(texts)) : int(data.stop * len(texts))][: data.limit]
    return text_batches(spec, texts, batch_size=data.batch_size), texts


def _limit_batches(batches: list[Any], limit: int) -> list[Any]:
    kept, left = [], limit
    for batch in batches:
        if left <= 0:
            break
        kept.append({key: value[:left] for key, value in batch.items()})
        left -= len(batch["labels"])
    return kept


def read_config(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise MonitorUsageError(f"--config {path} does not exist")
    try:
        if file.suffix == ".toml":
            import tomllib

            return tomllib.loads(file.read_text())
        return json.loads(file.read_text())
    except ValueError as error:
        raise MonitorUsageError(f"--config {path} cannot be parsed: {error}") from None


def _resolve(selector: str) -> Any:
    from harness.loading import ModelSelectionError, resolve_models

    try:
        specs = resolve_models([selector])
    except ModelSelectionError as error:
        raise MonitorUsageError(str(error)) from None
    if len(specs) != 1:
        raise MonitorUsageError(f"{selector!r} names {len(specs)} models; the monitor takes exactly one")
    return specs[0]


def run_monitor(raw: dict[str, Any]) -> dict[str, Any]:
    """Run a monitor config (already parsed) and return its JSON-able result."""
    from harness.monitoring.drift import compare_profiles
    from harness.monitoring.profile import build_profile, load_from_db, load_profile_file

    mode = raw.get("mode")
    config, data = _settings(raw)
    if mode == "gate":
        return _run_gate(raw, config, data)
    if "model" not in raw:
        raise MonitorUsageError("config needs 'model' (a zoo name or module:attr)")
    spec = _resolve(raw["model"])
    try:
        if "reference" in raw:
            reference = load_profile_file(raw["reference"])
        elif "reference_db" in raw and "reference_id" in raw:
            reference = load_from_db(raw["reference_db"], raw["reference_id"])
        else:
            raise MonitorUsageError(
                "a drift config needs 'reference' (a profile file) or 'reference_db' + 'reference_id'"
            )
    except (KeyError, ValueError) as error:
        raise MonitorUsageError(str(error)) from None
    batches, texts = load_examples(spec, data, seed=config.seed)
    embedding = raw.get("embedding", "model")
    current = build_profile(spec, spec.build_model(), batches, texts=texts, embedding=embedding,
                            max_embeddings=config.max_embeddings, seed=config.seed)  # fmt: skip
    return compare_profiles(reference, current, config).to_dict()


def _settings(raw: dict[str, Any]) -> tuple[Any, DataConfig]:
    """The config's keys and mode checked; its thresholds and data set, validated."""
    from harness.monitoring.config import MonitorConfig

    unknown = sorted(set(raw) - CONFIG_KEYS)
    if unknown:
        raise MonitorUsageError(f"unknown config key(s) {', '.join(unknown)}; known: {', '.join(sorted(CONFIG_KEYS))}")
    if raw.get("mode") not in MODES:
        raise MonitorUsageError(f"config 'mode' must be one of {', '.join(MODES)}, got {raw.get('mode')!r}")
    bad_data = sorted(set(raw.get("data", {})) - DATA_KEYS)
    if bad_data:
        raise MonitorUsageError(f"unknown data key(s) {', '.join(bad_data)}; known: {', '.join(sorted(DATA_KEYS))}")
    try:
        return MonitorConfig.from_dict(raw.get("thresholds", {})), DataConfig(**raw.get("data", {}))
    except (TypeError, ValueError) as error:
        raise MonitorUsageError(str(error)) from None


def eval_set(data: DataConfig, config: Any) -> dict[str, Any]:
    """What a stored baseline records of its eval set: the data table and the shuffle seed."""
    return {**dataclasses.asdict(data), "seed": config.seed}


def _evaluate_candidate(raw: dict[str, Any], config: Any, data: DataConfig) -> tuple[Any, Any]:
    """``(spec, evaluation)`` of the gate config's candidate on its eval set."""
    from harness.evaluation import evaluate

    if "candidate" not in raw:
        raise MonitorUsageError("a gate config needs 'candidate' (a zoo name or module:attr)")
    spec = _resolve(raw["candidate"])
    batches, _ = load_examples(spec, data, seed=config.seed)
    try:
        return spec, evaluate(spec, spec.build_model(), batches)
    except ValueError as error:
        raise MonitorUsageError(str(error)) from None


def _run_gate(raw: dict[str, Any], config: Any, data: DataConfig) -> dict[str, Any]:
    """The candidate against a stored baseline file or a baseline model built now."""
    from harness.evaluation import evaluate
    from harness.monitoring.gate import load_baseline, regression_gate

    if ("model" in raw) == ("baseline" in raw):
        raise MonitorUsageError(
            "a gate config needs exactly one of 'baseline' (a stored baseline file, written by harness baseline) "
            "and 'model' (a baseline model built now)"
        )
    if "candidate" in raw and raw.get("model") == raw["candidate"]:
        raise MonitorUsageError(
            f"the gate compares {raw['candidate']!r} with itself, which cannot fail: give the candidate a stored "
            "'baseline' file (of the main branch's model) or a different baseline 'model'"
        )
    if "baseline" in raw:
        try:
            baseline, stored_set = load_baseline(raw["baseline"])
        except ValueError as error:
            raise MonitorUsageError(str(error)) from None
        wanted = eval_set(data, config)
        if stored_set != wanted:
            differ = sorted(key for key in set(stored_set) | set(wanted) if stored_set.get(key) != wanted.get(key))
            stored_values = {key: stored_set.get(key) for key in differ}
            wanted_values = {key: wanted.get(key) for key in differ}
            raise MonitorUsageError(
                f"baseline {raw['baseline']} was evaluated on another eval set than this config's "
                f"(differs in {', '.join(differ)}: {stored_values} vs {wanted_values}); "
                "refresh the baseline with harness baseline"
            )
        _, candidate = _evaluate_candidate(raw, config, data)
        source = {"baseline_file": str(raw["baseline"])}
    else:
        if "candidate" not in raw:
            raise MonitorUsageError("a gate config needs 'candidate' (a zoo name or module:attr)")
        spec, candidate_spec = _resolve(raw["model"]), _resolve(raw["candidate"])
        batches, _ = load_examples(spec, data, seed=config.seed)
        baseline = evaluate(spec, spec.build_model(), batches)
        candidate = evaluate(candidate_spec, candidate_spec.build_model(), batches)
        source = {"baseline_model": spec.name}
    try:
        result = regression_gate(baseline, candidate, config).to_dict()
    except ValueError as error:
        raise MonitorUsageError(
            f"{error} (the same data config tokenized differently: the tokenizer or the data changed; "
            "refresh the baseline on purpose with harness baseline)"
        ) from None
    result["details"] |= source
    return result


def command_baseline(args: argparse.Namespace) -> int:
    """Evaluate a gate config's candidate on its eval set and store it as the baseline later gates read."""
    from harness.monitoring.gate import save_baseline

    try:
        raw = read_config(args.config)
        config, data = _settings(raw)
        if raw["mode"] != "gate":
            raise MonitorUsageError(f'--config {args.config} is not a gate config (mode = "gate")')
        spec, evaluation = _evaluate_candidate(raw, config, data)
    except MonitorUsageError as error:
        print(f"harness baseline: error: {error}", file=sys.stderr)
        return 2
    path = save_baseline(evaluation, args.out, data=eval_set(data, config))
    print(json.dumps({"model": spec.name, "path": str(path), **evaluation.to_dict()}, indent=2, allow_nan=False))
    return 0


def command_monitor(args: argparse.Namespace) -> int:
    """Exit 0 for ok / warn / inconclusive, 1 for fail, 2 for a usage error."""
    try:
        result = run_monitor(read_config(args.config))
    except MonitorUsageError as error:
        print(f"harness monitor: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(format_result(result))
    return 1 if result["verdict"] == "fail" else 0


def format_result(result: dict[str, Any]) -> str:
    """A short human-readable table of a drift or gate result."""
    if result["kind"] == "gate":
        return (f"gate: {result['verdict']}: degradation {result['degradation']:.4f} "
                f"[{result['lower']:.4f}, {result['upper']:.4f}] vs margin {result['margin']:.4f}, "
                f"MDE {result['mde']:.4f}, n={result['n_examples']}")  # fmt: skip
    lines = [
        f"drift: {result['verdict']}",
        f"{'feature':26s} {'test':24s} {'effect':>8s} {'mde':>8s} {'p_adj':>8s} verdict",
    ]
    for row in result["features"]:
        mde = "-" if row["mde"] is None else f"{float(row['mde']):8.3f}"
        lines.append(f"{row['feature']:26s} {row['test']:24s} {float(row['effect_size']):8.3f} {mde:>8s} "
                     f"{float(row['adjusted_p']):8.3g} {row['verdict']}")  # fmt: skip
    return "\n".join(lines)


def command_profile(args: argparse.Namespace) -> int:
    """Compute a reference profile; write it to --out and/or store it in --db. Exit 2 on a usage error."""
    from harness.monitoring.profile import build_profile, export_profile, save_to_db

    if not args.out and not args.db:
        print("harness profile: error: give --out FILE and/or --db PATH", file=sys.stderr)
        return 2
    try:
        spec = _resolve(args.model)
        data = DataConfig(source=args.data, start=args.start, stop=args.stop, limit=args.limit, shuffle=args.shuffle)
        batches, texts = load_examples(spec, data, seed=args.seed)
    except MonitorUsageError as error:
        print(f"harness profile: error: {error}", file=sys.stderr)
        return 2
    profile = build_profile(spec, spec.build_model(), batches, texts=texts, embedding=args.embedding,
                            max_embeddings=args.max_embeddings, seed=args.seed)  # fmt: skip
    summary: dict[str, Any] = {
        "model": spec.name,
        "n_examples": profile["n_examples"],
        "features": list(profile["features"]),
    }
    if args.out:
        summary["path"] = str(export_profile(profile, args.out))
    if args.db:
        summary["profile_id"] = save_to_db(profile, args.db, name=args.name or spec.name)
    print(json.dumps(summary, indent=2))
    return 0


def add_monitor_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``harness monitor --config FILE [--json]``."""
    parser = subparsers.add_parser("monitor", help="Tier 5: drift against a reference profile, or a regression gate")
    parser.add_argument("--config", required=True, help="JSON or TOML monitor config (see harness.monitoring.cli)")
    parser.add_argument("--json", action="store_true", help="print the structured result as JSON")
    parser.set_defaults(handler=command_monitor)
    return parser


def add_baseline_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``harness baseline --config GATE --out FILE``: store the baseline a gate compares against."""
    parser = subparsers.add_parser(
        "baseline", help="evaluate a gate config's candidate and store it as the baseline of later gates"
    )
    parser.add_argument("--config", required=True, help='a gate monitor config (mode = "gate")')
    parser.add_argument("--out", required=True, help="the baseline JSON file to write (a CI artifact)")
    parser.set_defaults(handler=command_baseline)
    return parser


def add_profile_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``harness profile --model M (--out FILE | --db PATH)``: compute a reference profile."""
    parser = subparsers.add_parser("profile", help="compute a reference profile for drift monitoring")
    parser.add_argument("--model", required=True, help="zoo name or module:attribute")
    parser.add_argument("--data", default="reference_text", help="reference_text, digits or a text file")
    parser.add_argument("--start", type=float, default=0.0, help="fraction of the data where examples start")
    parser.add_argument("--stop", type=float, default=1.0, help="fraction of the data where examples stop")
    parser.add_argument("--limit", type=int, default=None, help="at most this many examples")
    parser.add_argument("--shuffle", action="store_true", help="seeded shuffle of the examples before the cut")
    parser.add_argument("--embedding", default="model", choices=("model", "minilm"), help="embedding source")
    parser.add_argument("--max-embeddings", type=int, default=500, help="embeddings kept (a seeded sample)")
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffling and sampling (default 0)")
    parser.add_argument("--out", help="write the profile to this JSON file (a CI artifact)")
    parser.add_argument("--db", help="store the profile in this ExperimentDB (SQLite file)")
    parser.add_argument("--name", help="profile name in the ExperimentDB (default: the model name)")
    parser.set_defaults(handler=command_profile)
    return parser

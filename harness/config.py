"""Config files: the one reader and the one error of every config the harness reads, and the run config.

:func:`read_config_file` reads a JSON (``.json``) or TOML (``.toml``) file into a table; every config
(the run config here, a ``harness train`` config in :mod:`harness.training.cli`, a ``harness monitor`` config in
:mod:`harness.monitoring.monitor`) is read by it and validated beside the code it configures. Every problem is
one :class:`ConfigError` in one style: ``"<where>: <key> must be <allowed>, got <value>"``, where ``<where>`` is
the file (or the dataclass field, for a config built in code). :func:`parse_tiers` reads tier selections
(``--tier`` of ``harness run``, ``--tiers`` of ``harness mutate``, a config's ``tiers``).

Run configuration files for ``harness run --config FILE``, validated with messages that name the bad key and
the allowed values.

Our shape (every key optional)::

    {"tiers": "1-5", "models": ["gpt2-tiny", "mypkg.models:build"], "workers": 2, "seed": 0,
     "report_dir": "reports", "run_id": null, "hypothesis_profile": "ci", "trust_model_code": false,
     "export": {"formats": ["onnx", "torchscript"], "quantization": "int8", "export_dir": "exports"},
     "db_path": null, "pytest_args": []}

The notebook-style shape teams migrate from is accepted too: ``tier`` (an integer or a string such as
``"4"`` or ``"1-3"``) for ``tiers`` and ``task_name`` (a zoo model) for ``models``; everything else has the
same name. Its ``eval``, ``baseline_run_id`` and ``reference_profile_id`` are refused with a message naming
where each belongs: the eval set, the regression gate's baseline and the drift monitor's reference profile
are settings of a ``harness monitor`` config (harness/monitoring/monitor.py), not of a run of the tiers.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

TIER_FORMATS = {
    "torchscript": ("torchscript_parity", "torchscript_script_parity"),
    "onnx": ("onnx_parity", "onnx_optimized_parity"),
}
QUANTIZATIONS = ("none", "int8", "dynamic")
HYPOTHESIS_PROFILES = ("dev", "ci", "nightly")  # the Hypothesis settings profiles harness.strategies registers
TIERS = range(1, 6)
KEYS = ("tiers", "models", "workers", "seed", "report_dir", "run_id", "hypothesis_profile", "trust_model_code",
        "export", "db_path", "pytest_args")  # fmt: skip
LEGACY_KEYS = {"tier": "tiers", "task_name": "models"}
EXPORT_KEYS = ("formats", "quantization", "export_dir")
# Keys of the notebook shape that no run of the tiers reads: refused, naming where the setting belongs.
MONITOR_KEYS = {
    "eval": "the eval set of the regression gate and the drift monitor is the [data] table of a harness monitor "
    "config (source, start, stop, limit, batch_size)",
    "baseline_run_id": "the regression gate's baseline is a harness monitor gate config's 'baseline' file "
    "(written by harness baseline) or baseline 'model'",
    "reference_profile_id": "the drift monitor's reference profile is a harness monitor drift config's "
    "'reference' file, or 'reference_db' + 'reference_id' for a profile stored by harness profile --db",
}


SEED_HEADROOM = 10_000  # checks add offsets up to this to the seed (a light module: the xdist controller reads it)
MAX_SEED = 2**63 - 1 - SEED_HEADROOM  # torch.Generator.manual_seed takes a signed 64-bit integer


def validate_seed(value: object) -> int:
    """The seed as an int in [0, MAX_SEED]; ValueError naming the value otherwise."""
    try:
        seed = int(str(value))
    except ValueError:
        raise ValueError(f"must be an integer, got {value!r}") from None
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"must be in [0, {MAX_SEED}], got {seed}")
    return seed


class ConfigError(ValueError):
    """A config (file, value or command-line setting) that cannot be used; the message names where, the key and
    what is allowed."""


def read_text_file(path: str | Path, what: str, *, allow_empty: bool = False) -> str:
    """The UTF-8 text of the user's file ``path``, read once; a ConfigError names ``what``, the file and the problem.

    Refused: a path that does not exist, is a folder or cannot be read, bytes that are not UTF-8 (the offset of the
    first bad byte is given), and, unless ``allow_empty``, a file holding nothing but whitespace.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder; give a file") from None
    except OSError as error:
        raise ConfigError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{what} {path} is not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start}); save it as UTF-8"
        ) from None
    if not allow_empty and not text.strip():
        raise ConfigError(f"{what} {path} is empty; give a file with text in it")
    return text


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The table a JSON (``.json``) or TOML (``.toml``) config file holds; ConfigError naming the file otherwise."""
    path = Path(path)
    text = read_text_file(path, "config file", allow_empty=True)
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as error:
        kind = "TOML" if path.suffix == ".toml" else "JSON"
        raise ConfigError(f"{path}: not valid {kind}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be an object/table at the top level, got {type(data).__name__}")
    return data


def from_table(cls: type[T], value: Any, name: str, *, source: str) -> T:
    """The frozen dataclass ``cls`` built from ``value``, the ``name`` table of the config ``source``.

    Checked before ``cls`` sees it, each one ConfigError naming ``name.key``, what is allowed and what was given:
    a value that is not a table (``data = "digits"``), an unknown key, a value whose type is not the field's
    annotation (a string where a number belongs). Then ``cls`` validates the values; its ValueError or TypeError
    becomes a ConfigError naming ``source``.
    """
    fields = [item.name for item in dataclasses.fields(cls)]  # type: ignore[arg-type]
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {name!r} must be a table (keys: {', '.join(fields)}), got {value!r}")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(f'{name}.{key}' for key in unknown)}; allowed: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(cls)
    for key, item in value.items():
        if not _has_type(item, hints[key]):
            raise ConfigError(f"{source}: '{name}.{key}' must be {_type_name(hints[key])}, got {item!r}")
    try:
        return cls(**value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: {error}") from None


def _has_type(value: Any, hint: Any) -> bool:
    """Whether a config value fits a field annotation (an int is a float; a bool is neither; lists are tuples)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, option) for option in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (tuple, list):
        return isinstance(value, list | tuple)
    return isinstance(value, origin or hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(option) for option in typing.get_args(hint))
    names = {float: "a number", int: "an integer", bool: "true or false", str: "a string", type(None): "null"}
    return names.get(hint) or {tuple: "a list", list: "a list", dict: "a table"}.get(
        typing.get_origin(hint) or hint, str(hint)
    )


def parse_tiers(text: str | None, *, option: str = "--tier") -> tuple[int, ...]:
    """``"1"``, ``"1-3"``, ``"1,4"`` or None (every tier) as sorted tier numbers; a ConfigError names ``option``."""
    if text is None:
        return tuple(TIERS)
    tiers: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high if dash else low)
        except ValueError:
            raise ConfigError(f"{option} must be tier numbers 1-5 like 1, 1-3 or 1,4; got {text!r}") from None
        if not (TIERS.start <= first <= last < TIERS.stop):
            raise ConfigError(f"{option} must be tier numbers 1-5 like 1, 1-3 or 1,4; got {text!r}")
        tiers.update(range(first, last + 1))
    return tuple(sorted(tiers))


@dataclass(frozen=True)
class ExportSettings:
    formats: tuple[str, ...] = ("torchscript", "onnx")  # export formats whose parity Tier 4 checks
    quantization: str = "int8"  # "int8"/"dynamic": also check the int8 ONNX; "none": skip it
    export_dir: str | None = None  # where exports are written (default: the run's report folder)


@dataclass(frozen=True)
class RunConfig:
    tiers: str = "1-5"  # tier numbers: "1", "1-3", "1,4"
    models: tuple[str, ...] = ()  # zoo names or selectors; empty: the whole zoo
    workers: str = "0"  # pytest-xdist workers: a number or "auto"
    seed: int = 0
    report_dir: str = "reports"
    run_id: str | None = None  # names the run's report folder (a report's run id, not an ExperimentDB run id)
    hypothesis_profile: str = "ci"
    trust_model_code: bool = False
    export: ExportSettings = field(default_factory=ExportSettings)
    db_path: str | None = None  # ExperimentDB: an SQLite file or a postgresql:// URL (default: $HARNESS_DB_URL)
    pytest_args: tuple[str, ...] = ()  # passed to pytest as they are


def load_run_config(path: str | Path) -> RunConfig:
    """Read and validate a JSON (``.json``) or TOML (``.toml``) run config."""
    return parse_run_config(read_config_file(path), source=str(path))


def parse_run_config(data: dict[str, Any], *, source: str = "config") -> RunConfig:
    data = dict(data)
    for legacy, ours in LEGACY_KEYS.items():
        if legacy in data:
            if ours in data:
                raise ConfigError(f"{source}: give either {legacy!r} or {ours!r}, not both")
            data[ours] = data.pop(legacy)
    for key in sorted(set(data) & set(MONITOR_KEYS)):
        raise ConfigError(f"{source}: {key!r} is not a setting of a run of the tiers: {MONITOR_KEYS[key]}")
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key {unknown[0]!r}; allowed keys: {', '.join(KEYS)} (or {', '.join(LEGACY_KEYS)})"
        )
    values: dict[str, Any] = {}
    if "tiers" in data:
        values["tiers"] = _tiers(data["tiers"], source)
    if "models" in data:
        models = data["models"]
        models = [models] if isinstance(models, str) else models
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise ConfigError(f"{source}: 'models' must be a model name or a list of them, got {data['models']!r}")
        values["models"] = tuple(models)
    if "workers" in data:
        workers = data["workers"]
        if not (workers == "auto" or (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0)):
            raise ConfigError(f"{source}: 'workers' must be an integer >= 0 or 'auto', got {workers!r}")
        values["workers"] = str(workers)
    for key, kind in (("seed", int), ("report_dir", str), ("run_id", str), ("db_path", str),
                      ("trust_model_code", bool)):  # fmt: skip
        if key in data and data[key] is not None:
            if not isinstance(data[key], kind) or (kind is int and isinstance(data[key], bool)):
                raise ConfigError(f"{source}: {key!r} must be {kind.__name__}, got {data[key]!r}")
            values[key] = data[key]
    if "hypothesis_profile" in data:
        if data["hypothesis_profile"] not in HYPOTHESIS_PROFILES:
            raise ConfigError(
                f"{source}: 'hypothesis_profile' must be one of {', '.join(HYPOTHESIS_PROFILES)}, "
                f"got {data['hypothesis_profile']!r}"
            )
        values["hypothesis_profile"] = data["hypothesis_profile"]
    if "pytest_args" in data:
        if not isinstance(data["pytest_args"], list) or not all(isinstance(a, str) for a in data["pytest_args"]):
            raise ConfigError(f"{source}: 'pytest_args' must be a list of strings, got {data['pytest_args']!r}")
        values["pytest_args"] = tuple(data["pytest_args"])
    if "export" in data:
        values["export"] = _export(data["export"], source)
    return RunConfig(**values)


def _tiers(value: Any, source: str) -> str:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(value, list) and all(isinstance(t, int) for t in value):
        text = ",".join(map(str, value))
    if not isinstance(text, str):
        raise ConfigError(f'{source}: \'tiers\' must be like 1, "1-3", "1,4" or [1, 4], got {value!r}')
    try:
        parse_tiers(text)
    except ConfigError:
        raise ConfigError(
            f'{source}: \'tiers\' must name tiers 1-5 like 1, "1-3", "1,4" or [1, 4], got {value!r}'
        ) from None
    return text


def _section(value: Any, name: str, keys: tuple[str, ...], legacy: dict[str, str], source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {name!r} must be an object/table, got {value!r}")
    section = {legacy.get(key, key): item for key, item in value.items()}
    unknown = sorted(set(section) - set(keys))
    if unknown:
        raise ConfigError(f"{source}: unknown key '{name}.{unknown[0]}'; allowed: {', '.join(keys)}")
    return section


def _export(value: Any, source: str) -> ExportSettings:
    section = _section(value, "export", EXPORT_KEYS, {}, source)
    formats = section.get("formats", list(ExportSettings.formats))
    formats = [formats] if isinstance(formats, str) else formats
    if not isinstance(formats, list) or not formats or not set(formats) <= set(TIER_FORMATS):
        raise ConfigError(
            f"{source}: 'export.formats' must be a non-empty subset of {', '.join(TIER_FORMATS)}, got {value.get('formats')!r}"
        )
    quantization = section.get("quantization", "int8")
    quantization = "none" if quantization in (None, False) else quantization
    if quantization not in QUANTIZATIONS:
        raise ConfigError(
            f"{source}: 'export.quantization' must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}"
        )
    export_dir = section.get("export_dir")
    if export_dir is not None and not isinstance(export_dir, str):
        raise ConfigError(f"{source}: 'export.export_dir' must be a path string, got {export_dir!r}")
    return ExportSettings(tuple(formats), quantization, export_dir)


def tier4_deselection(export: ExportSettings) -> list[str]:
    """The Tier 4 checks the export settings leave out (none when every format is asked for)."""
    skipped = [check for fmt, checks in TIER_FORMATS.items() if fmt not in export.formats for check in checks]
    if "onnx" not in export.formats or export.quantization == "none":
        skipped.extend(("onnx_int8_parity", "onnx_int8_accuracy"))
    if "onnx" not in export.formats or "torchscript" not in export.formats:
        skipped.append("latency_ratios")  # it compares both exported backends with eager
    return skipped

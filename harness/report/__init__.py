"""The JSON report: one file per run, holding a row per check with its measured value and verdict."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import secrets
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.config import ConfigError
from harness.io import atomic_write_text, check_writable
from harness.versions import package_versions

if TYPE_CHECKING:  # pragma: no cover
    from harness.cache import CacheUse

SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
SCHEMA_VERSION = "1.1"  # 1.1 adds the rows' setup_s and cache, and the shard record of a sharded run
STATUSES = ("passed", "failed", "warned", "inconclusive", "skipped", "error")
PACKAGES = ("torch", "transformers", "tokenizers", "hypothesis", "pytest", "numpy", "ml-harness")


REPORT_FILES = ("report.json", "report.html")  # what a run writes into its folder, beside pytest's JUnit file


def check_report_folder(folder: str | Path, *, junit: str | Path | None = None, remedy: str) -> None:
    """ConfigError unless a run can write its files into ``folder`` without overwriting any: checked when the
    session starts, so a bad folder costs nothing and an earlier run's ``report.json`` or JUnit file is never
    replaced (the run is refused; the message says to choose ``remedy``, e.g. "another --harness-run-id").

    Refused: ``folder`` (or a folder on its way) being a file, the nearest existing folder not being writable, and
    ``report.json``, ``report.html`` or ``junit`` (pytest's ``--junitxml`` file) existing already.
    """
    folder = Path(folder)
    check_writable(folder, "report folder")
    for target in [*(folder / name for name in REPORT_FILES), *([Path(junit)] if junit else [])]:
        if target.exists():
            raise ConfigError(f"{target} already exists; choose {remedy} (nothing was overwritten)")


def new_report_run_id() -> str:
    """The id of a run of the tiers (its report folder and the report's ``run_id``): UTC time to the second plus
    a random suffix, e.g. ``20261122-030701-0ce3``. (An ExperimentDB ``run_id`` names a training run instead.)"""
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def load_schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def environment(hypothesis_profile: str, workers: int) -> dict[str, Any]:
    """Interpreter, platform and the versions of the packages a verdict depends on."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(PACKAGES),
        "hypothesis_profile": hypothesis_profile,
        "workers": workers,
    }


def build_report(report_run_id: str, rows: list[dict[str, Any]], env: dict[str, Any]) -> dict[str, Any]:
    """The report document; rows are sorted by test id so serial and parallel runs give the same file."""
    rows = sorted(rows, key=lambda row: row["test_id"])
    counts = Counter(row["status"] for row in rows)
    summary = {"total": len(rows), **{status: counts.get(status, 0) for status in STATUSES}}
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": report_run_id,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "environment": env,
        "summary": summary,
        "rows": rows,
    }


def cache_field(uses: Iterable[CacheUse]) -> dict[str, Any] | None:
    """A row's ``cache``: the expensive artefacts its test got (exports, trained runs, tokenizers), each a hit or
    built, and ``hit``, true when every one was a hit; None when the test used no cached artefact."""
    uses = [{**asdict(use), "hit": bool(use.hit), "seconds": float(use.seconds)} for use in uses]
    return {"hit": all(use["hit"] for use in uses), "uses": uses} if uses else None


def row_seconds(row: dict[str, Any]) -> float:
    """What the row's test cost: its setup (model build, training and export fixtures) plus its check."""
    return row["duration_s"] + (row.get("setup_s") or 0.0)


def validate_report(report: dict[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` if the report does not match the schema."""
    import jsonschema

    jsonschema.validate(report, load_schema())


def write_report(report: dict[str, Any], path: Path) -> Path:
    """Validate, then write atomically (a temporary file renamed over the target)."""
    validate_report(report)
    return atomic_write_text(path, json.dumps(report, indent=2, allow_nan=False) + "\n")

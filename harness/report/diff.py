"""``harness diff OLD NEW``: which verdicts changed between two runs (report.json or JUnit XML).

The early-warning job (``.ci/latest``) runs the suite on the newest releases of every dependency and
compares it with a run on the locked versions: a new upstream release becomes this table, not a red
``main``. Rows are matched by test id; a row present on one side only is listed as added or removed.
The command exits 0 whatever changed (``--fail-on-change`` makes a change exit 1) and 2 on input it
cannot read.
"""

from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

MISSING = "absent"


class DiffInputError(Exception):
    """A run that cannot be read: one line for the user."""


@dataclass(frozen=True)
class Verdict:
    """One test's outcome in one run."""

    status: str  # passed, failed, warned, inconclusive, skipped (report rows); passed/failed/error/skipped (JUnit)
    measured: Any = None  # the check's measured value (report rows only)
    threshold: Any = None


@dataclass(frozen=True)
class Change:
    """A test whose verdict differs between the two runs."""

    test_id: str
    old: Verdict
    new: Verdict


def read_verdicts(path: str | Path) -> dict[str, Verdict]:
    """Test id -> verdict from a run folder (its report.json), a report.json or a JUnit XML file."""
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise DiffInputError(f"{path}: no such file (give a run folder, a report.json or a junit.xml)")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".xml":
        return _junit_verdicts(path, text)
    try:
        rows = json.loads(text)["rows"]
        return {row["test_id"]: Verdict(row["status"], row.get("measured"), row.get("threshold")) for row in rows}
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DiffInputError(f"{path}: not a harness report.json ({type(error).__name__}: {error})") from None


def _junit_verdicts(path: Path, text: str) -> dict[str, Verdict]:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        raise DiffInputError(f"{path}: not JUnit XML ({error})") from None
    verdicts = {}
    for case in root.iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
        verdicts[f"{case.get('classname', '')}::{case.get('name', '')}"] = Verdict(
            "failed" if outcome == "failure" else outcome
        )
    return verdicts


def changed_verdicts(old: dict[str, Verdict], new: dict[str, Verdict]) -> list[Change]:
    """Every test whose status differs, failures first, then by test id."""
    absent = Verdict(MISSING)
    pairs = [Change(test_id, old.get(test_id, absent), new.get(test_id, absent)) for test_id in old.keys() | new.keys()]
    changes = [change for change in pairs if change.old.status != change.new.status]
    return sorted(changes, key=lambda change: (change.new.status not in ("failed", "error"), change.test_id))


def _cell(verdict: Verdict) -> str:
    if verdict.measured is None:
        return verdict.status
    measured = f"{verdict.measured:.4g}" if isinstance(verdict.measured, float) else str(verdict.measured)
    return f"{verdict.status} ({measured} vs {verdict.threshold})"


def markdown_table(changes: list[Change], *, old_name: str, new_name: str) -> str:
    """The changes as a Markdown table (a GitHub job summary renders it)."""
    if not changes:
        return f"No verdict changed between `{old_name}` and `{new_name}`.\n"
    lines = [f"| test | `{old_name}` | `{new_name}` |", "| --- | --- | --- |"]
    lines += [f"| `{change.test_id}` | {_cell(change.old)} | {_cell(change.new)} |" for change in changes]
    return "\n".join(lines) + "\n"


def command_diff(args: argparse.Namespace) -> int:
    try:
        old, new = read_verdicts(args.old), read_verdicts(args.new)
    except DiffInputError as error:
        print(f"harness diff: error: {error}")
        return 2
    changes = changed_verdicts(old, new)
    if args.json:
        print(json.dumps([asdict(change) for change in changes], indent=2, default=str))
    else:
        print(markdown_table(changes, old_name=str(args.old), new_name=str(args.new)), end="")
        print(f"{len(changes)} of {len(old.keys() | new.keys())} verdicts changed")
    return 1 if changes and args.fail_on_change else 0


def add_diff_parser(commands: Any) -> None:
    diff = commands.add_parser("diff", help="which verdicts changed between two runs (report.json or junit.xml)")
    diff.add_argument("old", metavar="OLD", help="a run folder, report.json or junit.xml (the reference run)")
    diff.add_argument("new", metavar="NEW", help="the run to compare with it")
    diff.add_argument("--json", action="store_true", help="print the changes as JSON")
    diff.add_argument("--fail-on-change", action="store_true", help="exit 1 when any verdict changed")
    diff.set_defaults(handler=command_diff)

"""``harness report merge DIR...``: the reports of N shards (``--harness-shard K/N``) as the report of one run.

The merged ``report.json`` holds every shard's rows, sorted by test id and counted again, so it equals the report
of one unsharded run of the same selection row for row (timings and cache costs aside, which differ by nature);
``junit.xml`` holds every shard's test cases with the counts recomputed; ``report.html`` is rendered from it.

Shards merge only when they are the N parts of one split: the same N, each K once, the same selection and seed,
the same split (planned from the same durations), the same Hypothesis profile, Python, packages, device and
dtype, none interrupted, and no test in two shards. Anything else is one :class:`MergeError` line and nothing
is written. The functions here take reports and JUnit trees and return them; reading and writing is
:func:`read_shard` and :func:`write_merged`.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ConfigError
from harness.io import atomic_write_text
from harness.report import build_report, check_report_folder, row_seconds, write_report

SAME_ENVIRONMENT = ("python", "packages", "hypothesis_profile", "device", "dtype")  # platform may differ by runner
SAME_SHARD = ("count", "selected", "selection", "plan", "seed")
INTERRUPTED = (2, 3)  # pytest's exit statuses of an interrupted session and an internal error


class MergeError(ConfigError):
    """Reports that are not the complete shards of one run: one line, nothing written."""


@dataclass(frozen=True)
class ShardReport:
    """One shard's report folder: its report.json and, when it wrote one, its JUnit tree."""

    name: str  # the folder, as the user gave it: every message names it
    report: dict[str, Any]
    junit: ElementTree.Element | None


def read_shard(folder: str | Path) -> ShardReport:
    """The shard in ``folder`` (its report.json, and junit.xml when present), or MergeError."""
    folder = Path(folder)
    path = folder / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MergeError(f"{path} does not exist (give the report folders of the shards)") from None
    except (OSError, ValueError) as error:
        raise MergeError(f"{path} is not a readable report.json: {error}") from None
    junit = None
    if (folder / "junit.xml").is_file():
        try:
            junit = ElementTree.parse(folder / "junit.xml").getroot()
        except ElementTree.ParseError as error:
            raise MergeError(f"{folder / 'junit.xml'} is not JUnit XML: {error}") from None
    return ShardReport(str(folder), report, junit)


def check_shards(shards: list[ShardReport]) -> list[ShardReport]:
    """The shards in order of K, or MergeError saying why they are not the N parts of one split."""
    if not shards:
        raise MergeError("no shard given")
    for shard in shards:
        if not isinstance(shard.report.get("shard"), dict) or not isinstance(shard.report.get("rows"), list):
            raise MergeError(f"{shard.name}: not the report of a shard (run it with --shard K/N)")
    first = shards[0]
    for shard in shards[1:]:
        for key in SAME_SHARD:
            if shard.report["shard"].get(key) != first.report["shard"].get(key):
                raise MergeError(
                    f"{shard.name} and {first.name} are not shards of one split: their {key} differs "
                    f"({shard.report['shard'].get(key)!r} vs {first.report['shard'].get(key)!r})"
                )
        for key in SAME_ENVIRONMENT:
            if shard.report["environment"].get(key) != first.report["environment"].get(key):
                raise MergeError(f"{shard.name} and {first.name} ran in different environments: their {key} differs")
    count = first.report["shard"]["count"]
    by_index: dict[int, ShardReport] = {}
    for shard in shards:
        index = shard.report["shard"]["index"]
        if index in by_index:
            raise MergeError(f"shard {index}/{count} is given twice: {by_index[index].name} and {shard.name}")
        by_index[index] = shard
        if shard.report["shard"].get("exitstatus") in INTERRUPTED:
            raise MergeError(f"{shard.name}: shard {index}/{count} was interrupted before it finished (run it again)")
    missing = sorted(set(range(1, count + 1)) - set(by_index))
    if missing:
        raise MergeError(f"incomplete: shard(s) {', '.join(f'{k}/{count}' for k in missing)} missing")
    ordered = [by_index[index] for index in sorted(by_index)]
    if [shard.junit is None for shard in ordered].count(True) not in (0, len(ordered)):
        without = next(shard.name for shard in ordered if shard.junit is None)
        raise MergeError(f"{without} has no junit.xml while other shards do")
    return ordered


def merge_rows(shards: list[ShardReport]) -> list[dict[str, Any]]:
    """Every shard's rows; a test in two shards is a MergeError (the shards overlap)."""
    seen: dict[str, str] = {}
    rows = []
    for shard in shards:
        for row in shard.report["rows"]:
            if row["test_id"] in seen:
                raise MergeError(f"{row['test_id']} is in two shards: {seen[row['test_id']]} and {shard.name}")
            seen[row["test_id"]] = shard.name
            rows.append(row)
    return rows


def merge_reports(shards: list[ShardReport], run_id: str) -> dict[str, Any]:
    """The report of the run the shards are parts of (MergeError unless they are all of its parts)."""
    shards = check_shards(shards)
    first = shards[0].report
    report = build_report(run_id, merge_rows(shards), first["environment"])
    report["shards"] = [
        {
            **{key: shard.report["shard"][key] for key in ("index", "count", "cases", "estimated_s")},
            "run_id": shard.report["run_id"],
            "seconds": round(sum(row_seconds(row) for row in shard.report["rows"]), 3),
        }
        for shard in shards
    ]
    sources = {name: record for shard in shards for name, record in (shard.report.get("model_sources") or {}).items()}
    if sources:
        report["model_sources"] = sources
    warnings = list(dict.fromkeys(w for shard in shards for w in shard.report.get("scan_warnings") or []))
    if warnings:
        report["scan_warnings"] = warnings
    return report


def merge_junit(roots: list[ElementTree.Element]) -> ElementTree.Element:
    """One ``<testsuites>`` of pytest's shape holding every test case of ``roots``, sorted, counts recomputed; a
    test case in two of them is a MergeError."""
    cases: dict[tuple[str, str], ElementTree.Element] = {}
    for root in roots:
        for case in root.iter("testcase"):
            key = (case.get("classname", ""), case.get("name", ""))
            if key in cases:
                raise MergeError(f"JUnit test case {'::'.join(key)} is in two shards")
            cases[key] = case
    outcomes = Counter(
        next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "") for case in cases.values()
    )
    seconds = sum(float(case.get("time") or 0.0) for case in cases.values())
    merged = ElementTree.Element("testsuites", name="pytest tests")
    suite = ElementTree.SubElement(
        merged,
        "testsuite",
        name="pytest",
        errors=str(outcomes["error"]),
        failures=str(outcomes["failure"]),
        skipped=str(outcomes["skipped"]),
        tests=str(len(cases)),
        time=f"{seconds:.3f}",
    )
    suite.extend(cases[key] for key in sorted(cases))
    return merged


def write_merged(shards: list[ShardReport], out: str | Path, run_id: str) -> dict[str, Any]:
    """Merge and write report.json, junit.xml (when the shards have JUnit files) and report.html into ``out``;
    an existing report there is refused and nothing is written."""
    from harness.report.html import write_html

    out = Path(out)
    check_report_folder(out, junit=out / "junit.xml", remedy="another --out")
    report = merge_reports(shards, run_id)
    junit = merge_junit([shard.junit for shard in shards]) if shards[0].junit is not None else None
    write_report(report, out / "report.json")
    if junit is not None:
        atomic_write_text(out / "junit.xml", ElementTree.tostring(junit, encoding="unicode", xml_declaration=True))
    write_html(out / "report.json")
    return report

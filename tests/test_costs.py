"""Costs that are visible: every report row holds its setup seconds and what its test got from the cache.

A suite of the user's own runs the Tier 1 checks on cnn-digits in a fresh pytest process, with a fixture that
stands for an expensive one (it sleeps, then records cache uses the way exports and trained runs do through
``harness.cache.record_use``): a third of the tests build an artefact, a third get one from the cache, a third use
none. A plain test before them leaves a use behind, which no harness row may count.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.checks import CHECKS
from harness.report import validate_report

TIER1_CHECKS = sorted(name for name, check in CHECKS.items() if check.tier == 1)
SETUP_S = 0.2
SUITE = f"""
import time

import pytest

from harness.cache import record_use
from harness.checks import run_check

pytestmark = pytest.mark.tier(1)
CHECKS = {TIER1_CHECKS!r}


def test_a_plain_test_leaves_a_use_behind():
    record_use("run", "stale", hit=False, seconds=9.0)


@pytest.fixture
def expensive(harness_case):
    time.sleep({SETUP_S})
    kind = CHECKS.index(harness_case.check.name) % 3
    if kind == 0:
        record_use("export:onnx", "built-" + harness_case.spec.name, hit=False, seconds=0.5)
    if kind in (0, 1):
        record_use("run", "cached", hit=True, seconds=0.01)


def test_check(harness_case, harness_model, harness_options, record_check, expensive):
    record_check(run_check(harness_case.check, harness_case.spec, harness_model, harness_options))
"""


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("costs")
    (folder / "test_costs_suite.py").write_text(SUITE)
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    env = {key: value for key, value in env.items() if not key.startswith(("PYTEST_", "HYPOTHESIS_"))}
    command = [sys.executable, "-m", "pytest", "test_costs_suite.py", "-p", "no:cacheprovider", "-p", "no:randomly"]
    command += ["--harness-model", "cnn-digits", "--junitxml", "out/junit.xml", "--hypothesis-profile", "ci"]
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((folder / "out" / "report.json").read_text())
    validate_report(report)
    return report["rows"]


def test_every_row_records_its_setup_seconds(rows):
    assert len(rows) == len(TIER1_CHECKS)
    for row in rows:
        assert row["setup_s"] >= SETUP_S and row["duration_s"] >= 0, row["test_id"]


def test_every_row_says_what_came_from_the_cache_and_nothing_else(rows):
    for row in rows:
        kind = TIER1_CHECKS.index(row["check"]) % 3
        cache = row["cache"]
        if kind == 2:
            assert cache is None, row["test_id"]  # no cached artefact
            continue
        expected = (
            [("run", "cached", True)]
            if kind == 1
            else [("export:onnx", "built-cnn-digits", False), ("run", "cached", True)]
        )
        assert [(use["kind"], use["key"], use["hit"]) for use in cache["uses"]] == expected, row["test_id"]
        assert cache["hit"] is (kind == 1)  # a hit only when every artefact came from the cache
    assert not any(use["key"] == "stale" for row in rows for use in (row["cache"] or {}).get("uses", []))

"""The harness pytest plugin, end to end: each test runs the real Tier 1 suite in a fresh pytest process.

The plugin loads through its ``pytest11`` entry point in every subprocess. The repository root is
put on PYTHONPATH so ``--model tests.user_models.custom_lm:ATTR`` imports the user's module, as it
would for a user whose model lives in their own package. ``OMP_NUM_THREADS=1`` keeps the tiny
models fast on a loaded two-core runner (torch's intra-op threads only add contention there).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from harness.checks import CHECKS
from harness.report import validate_report
from harness_zoo import cnn_digits
from tests.user_models import custom_lm

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
TIER1 = REPO / "suites" / "tier1"
SCHEMA_FILE = REPO / "harness" / "report" / "report.schema.json"
COMMON = ("-p", "no:cacheprovider", "--hypothesis-profile", "ci")
USER = "tests.user_models.custom_lm"
WRONG = "tests.user_models.wrong_types"  # imports no torch: cheap usage-error runs
TIER1_CHECKS = sorted(name for name, check in CHECKS.items() if check.tier == 1)
TIMING_FIELDS = ("duration_s", "setup_s", "cache")


def _environment(env) -> None:
    """Set (through ``env.setenv``/``env.delenv``) what every harness subprocess runs with."""
    env.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.setenv("OMP_NUM_THREADS", "1")
    for name in ("PYTEST_ADDOPTS", "HYPOTHESIS_PROFILE", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        env.delenv(name, raising=False)


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Run pytest in a subprocess, cwd = pytester.path, on the real Tier 1 suite (or ``suite``)."""
    _environment(monkeypatch)

    def run(*args: str, suite: Path = TIER1) -> pytest.RunResult:
        return pytester.runpytest_subprocess(str(suite), *COMMON, *args, timeout=300)

    return run


def _report(path: Path) -> dict:
    report = json.loads(path.read_text())
    validate_report(report)
    jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text())).validate(report)
    return report


def _rows(report: dict) -> dict[str, dict]:
    return {row["check"]: row for row in report["rows"]}


def _without_timing(row: dict) -> dict:
    row = {key: value for key, value in row.items() if key not in TIMING_FIELDS}
    row["details"] = {key: value for key, value in row.get("details", {}).items() if key not in TIMING_FIELDS}
    return row


def _expected_statuses(spec) -> dict[str, str]:
    """Tier 1 check -> "passed", or "skipped" where the check does not apply to the spec."""
    return {name: "skipped" if CHECKS[name].not_applicable_because(spec) else "passed" for name in TIER1_CHECKS}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# 1. Usage errors: exit code 4, a message, no tests and no report.

USAGE_ERRORS = [
    (["--model", "nope"], ["unknown model 'nope'", "cnn-digits", "gpt2-tiny"]),
    (["--model", "nopkg_harness_xyz.mod:build"], ["cannot import 'nopkg_harness_xyz.mod'", "ModuleNotFoundError"]),
    (["--model", f"{USER}:missing_attr"], [f"module '{USER}' has no attribute 'missing_attr'", "SPEC"]),
    (["--model", f"{WRONG}:NOT_A_SPEC"], [f"{WRONG}:NOT_A_SPEC must be a ModelSpec", "got int"]),
    (["--model", "cnn-digits", "--harness-seed", "abc"], ["--harness-seed must be an integer, got 'abc'"]),
    (["--model", "cnn-digits", "--harness-run-id", "../escape"], ["--harness-run-id may hold letters", "'../escape'"]),
]


@pytest.mark.parametrize(("args", "messages"), USAGE_ERRORS, ids=[" ".join(args[-2:]) for args, _ in USAGE_ERRORS])
def test_usage_errors_exit_4_and_never_run_silently(run, pytester, args, messages):
    result = run(*args, "--harness-report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    for message in messages:
        assert message in err
    assert "passed" not in result.stdout.str() and "collected" not in result.stdout.str()
    assert not (pytester.path / "out").exists()


@pytest.mark.parametrize("beside_junit", [False, True], ids=["report-dir", "junitxml"])
def test_an_existing_report_is_a_usage_error_and_is_left_untouched(run, pytester, beside_junit):
    folder = pytester.path / "out" / "R1"
    folder.mkdir(parents=True)
    existing = folder / "report.json"
    content = b'{"earlier": "run", "rows": []}\n'
    existing.write_bytes(content)
    location = ["--junitxml", str(folder / "junit.xml")] if beside_junit else ["--harness-report-dir", "out"]
    result = run("--model", "cnn-digits", "--harness-run-id", "R1", *location)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    shown = existing if beside_junit else existing.relative_to(pytester.path)  # as the option gave it
    assert f"{shown} already exists" in result.stderr.str()
    assert "nothing was overwritten" in result.stderr.str()
    assert existing.read_bytes() == content
    assert sorted(p.name for p in folder.iterdir()) == ["report.json"]


def test_an_existing_report_beside_junitxml_points_at_junitxml(run, pytester):
    (pytester.path / "out").mkdir()
    (pytester.path / "out" / "report.json").write_text("{}\n")
    result = run("--model", "cnn-digits", "--junitxml", "out/junit.xml", "--harness-run-id", "a-fresh-id")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # a new run id does not avoid the clash
    assert "--junitxml" in result.stderr.str()


def test_an_out_of_range_seed_is_a_usage_error(run, pytester):
    result = run(
        "--model", "cnn-digits", "--harness-seed", str(2**64), "-k", "batch_independence", "--harness-report-dir", "out"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()
    assert "--harness-seed" in result.stderr.str()


# 2. Bring your own model.


def test_user_models_run_tier1_from_every_selector_shape(run, pytester):
    models = [
        "custom-lm",
        "custom-lm-small",
        "custom-lm-wide",
        "custom-lm-built",
        "custom-lm-listed-a",
        "custom-lm-listed-b",
    ]
    selectors = [f"{USER}:SPEC", f"{USER}:SPECS", f"{USER}:build", f"{USER}:build_list"]
    result = run(
        *(arg for s in selectors for arg in ("--model", s)),
        "--harness-report-dir",
        "out",
        "--harness-run-id",
        "byo",
        "-v",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    expected = _expected_statuses(custom_lm.SPEC)  # the same for every spec of the module
    applicable = [check for check, status in expected.items() if status == "passed"]
    assert {"causality", "padding_invariance", "loss_oracle", "gradient_flow"} <= set(applicable)
    result.assert_outcomes(
        passed=len(models) * len(applicable), skipped=len(models) * (len(expected) - len(applicable))
    )
    for check in applicable:
        result.stdout.fnmatch_lines([f"*test_tier1.py::test_tier1[[]custom-lm-{check}[]] PASSED*"])
    report = _report(pytester.path / "out" / "byo" / "report.json")
    pairs = sorted((row["model"], row["check"]) for row in report["rows"])
    assert pairs == sorted((model, check) for model in models for check in TIER1_CHECKS)
    for row in report["rows"]:
        assert row["status"] == expected[row["check"]], row["message"]
        assert row["test_id"] == f"suites/tier1/test_tier1.py::test_tier1[{row['model']}-{row['check']}]"
        assert row["message"].startswith(f"{row['model']}: {row['check']}: ")
        if row["status"] == "passed":
            assert _is_number(row["measured"])
    assert report["summary"]["total"] == len(models) * len(TIER1_CHECKS)
    assert report["summary"]["passed"] == len(models) * len(applicable)


def test_check_model_runs_without_pytest():
    import torch

    import harness
    from harness.result import CheckResult, Status

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = harness.check_model(custom_lm.SPEC)
        leaky = harness.check_model(custom_lm.LEAKY)
    finally:
        torch.set_num_threads(threads)
    assert all(isinstance(result, CheckResult) for result in results)
    assert sorted(result.check for result in results) == TIER1_CHECKS
    assert {result.model for result in results} == {"custom-lm"}
    assert {r.check: r.status.value for r in results} == _expected_statuses(custom_lm.SPEC), [
        r.message for r in results
    ]
    assert all(result.ok for result in results)
    failed = [result for result in leaky if not result.ok]
    assert [result.check for result in failed] == ["causality"]
    assert failed[0].status is Status.FAILED


# 3. Reports: serial and parallel, JUnit properties, failures, expected failures, the report hook.


def _pytest_subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = pytest.MonkeyPatch()
    try:
        _environment(env)
        return subprocess.run(
            [sys.executable, "-m", "pytest", str(TIER1), *COMMON, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        env.undo()


@pytest.fixture(scope="module")
def cnn_runs(tmp_path_factory):
    """One serial run (with --junitxml) and one ``-n 2`` run (with a report dir) of cnn-digits, shared."""
    cwd = tmp_path_factory.mktemp("cnn-runs")
    serial = _pytest_subprocess(
        "--model", "cnn-digits", "--junitxml", "serial/junit.xml", "--harness-run-id", "ser", cwd=cwd
    )
    parallel = _pytest_subprocess(
        "--model", "cnn-digits", "-n", "2", "--harness-report-dir", "par", "--harness-run-id", "p1", cwd=cwd
    )
    return cwd, serial, parallel


def test_serial_report_lands_beside_junitxml(cnn_runs):
    cwd, serial, _ = cnn_runs
    assert serial.returncode == 0, serial.stdout + serial.stderr
    assert sorted(p.name for p in (cwd / "serial").iterdir()) == ["junit.xml", "report.html", "report.json"]
    assert not (cwd / "reports").exists()  # the report dir is not used when --junitxml is given
    report = _report(cwd / "serial" / "report.json")
    assert report["run_id"] == "ser" and report["environment"]["workers"] == 0
    assert {check: row["status"] for check, row in _rows(report).items()} == _expected_statuses(cnn_digits.SPEC)
    assert f"report: {Path('serial') / 'report.json'}" in serial.stdout


def test_parallel_report_lands_under_report_dir_run_id(cnn_runs):
    cwd, _, parallel = cnn_runs
    assert parallel.returncode == 0, parallel.stdout + parallel.stderr
    assert "2 workers" in parallel.stdout
    assert sorted(p.name for p in (cwd / "par").iterdir()) == ["p1"]
    assert sorted(p.name for p in (cwd / "par" / "p1").iterdir()) == ["report.html", "report.json"]
    report = _report(cwd / "par" / "p1" / "report.json")
    assert report["run_id"] == "p1" and report["environment"]["workers"] == 2


def test_serial_and_parallel_reports_have_the_same_rows(cnn_runs):
    cwd = cnn_runs[0]
    serial, parallel = _report(cwd / "serial" / "report.json"), _report(cwd / "par" / "p1" / "report.json")
    assert [row["test_id"] for row in serial["rows"]] == sorted(row["test_id"] for row in serial["rows"])
    assert [_without_timing(row) for row in serial["rows"]] == [_without_timing(row) for row in parallel["rows"]]
    assert serial["summary"] == parallel["summary"]
    assert len(serial["rows"]) == len(TIER1_CHECKS)


def test_report_rows_are_complete(cnn_runs):
    report = _report(cnn_runs[0] / "serial" / "report.json")
    counted = {
        status: sum(row["status"] == status for row in report["rows"])
        for status in report["summary"]
        if status != "total"
    }
    assert report["summary"] == {"total": len(report["rows"]), **counted}
    for row in report["rows"]:
        assert (row["tier"], row["model"], row["seed"]) == (1, "cnn-digits", 0)
        assert row["duration_s"] >= 0
        if row["status"] in ("passed", "failed"):
            assert _is_number(row["measured"]), row
            assert _is_number(row["threshold"]), row
            assert row["sample_size"] > 0
        else:
            assert row["measured"] is None and row["got"], row  # a skip says why


def test_junit_holds_the_harness_properties_per_testcase(cnn_runs):
    cwd = cnn_runs[0]
    rows = {row["test_id"].rsplit("::", 1)[1]: row for row in _report(cwd / "serial" / "report.json")["rows"]}
    cases = ET.parse(cwd / "serial" / "junit.xml").getroot().iter("testcase")
    seen = set()
    for case in cases:
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        row = rows[case.get("name")]
        seen.add(case.get("name"))
        assert properties["harness.status"] == row["status"]
        assert properties["harness.seed"] == "0"
        assert properties["harness.sample_size"] == str(row["sample_size"])
        if row["measured"] is None:
            assert properties["harness.measured"] == "None"
        else:
            assert float(properties["harness.measured"]) == row["measured"]
        assert (case.find("skipped") is not None) == (row["status"] == "skipped")
    assert seen == set(rows)


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory):
    """One run of every failure path, shared: planted defects, a build that raises, an XPASS(strict)."""
    cwd = tmp_path_factory.mktemp("failing-run")
    models = [f"{USER}:LEAKY", f"{USER}:DROPOUT_IN_EVAL", f"{USER}:BROKEN", f"{USER}:WRONGLY_DECLARED"]
    done = _pytest_subprocess(
        *(arg for m in models for arg in ("--model", m)), "--junitxml", "out/junit.xml", "-rfE", cwd=cwd
    )
    report = _report(cwd / "out" / "report.json")
    rows = {(row["model"], row["check"]): row for row in report["rows"]}
    return done, pytest.LineMatcher(done.stdout.splitlines()), report, rows, cwd


def test_the_failing_run_exits_1_and_counts_every_outcome(failing_run):
    done, stdout, report, rows, _ = failing_run
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert len(rows) == 4 * len(TIER1_CHECKS)
    count = {status: sum(row["status"] == status for row in report["rows"]) for status in report["summary"]}
    assert report["summary"] == {**count, "total": len(rows)}
    assert count["error"] == len(TIER1_CHECKS)  # the broken build
    outcomes = pytest.RunResult.parse_summary_nouns(stdout.lines)
    # pytest's failures: the defects' failed checks plus the XPASS(strict) (a passed row, a failed test)
    expected = {"failed": count["failed"] + 1, "passed": count["passed"] - 1, "errors": count["error"]}
    if count["skipped"]:
        expected["skipped"] = count["skipped"]
    assert outcomes == expected


def test_a_planted_defect_fails_with_a_readable_message(failing_run):
    done, stdout, _, rows, cwd = failing_run
    # A non-causal model that claims causality fails exactly the causality check, and says so.
    leaky = {check: row["status"] for (model, check), row in rows.items() if model == "custom-lm-leaky"}
    assert leaky == {**_expected_statuses(custom_lm.LEAKY), "causality": "failed"}
    message = rows["custom-lm-leaky", "causality"]["message"]
    assert message.startswith("custom-lm-leaky: causality: ")
    assert re.search(r"\. Expected .+, got .+", message), message
    stdout.re_match_lines([re.escape(message) + "$"])  # the whole message is the failure's text
    stdout.fnmatch_lines(["FAILED *test_tier1[[]custom-lm-leaky-causality[]]*"])
    junit = ET.parse(cwd / "out" / "junit.xml").getroot()
    (case,) = [c for c in junit.iter("testcase") if c.get("name") == "test_tier1[custom-lm-leaky-causality]"]
    assert message in case.find("failure").get("message")
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["harness.status"] == "failed"


def test_dropout_in_eval_mode_fails_eval_determinism(failing_run):
    row = failing_run[3]["custom-lm-dropout", "eval_determinism"]
    assert row["status"] == "failed"
    assert "repeated outputs differ" in row["got"] and "Dropout" in row["message"]
    assert _is_number(row["measured"]) and row["measured"] > row["threshold"] == 0.0


def test_a_build_that_raises_gives_an_error_row_per_check(failing_run):
    _, stdout, _, rows, _ = failing_run
    for check in TIER1_CHECKS:
        row = rows["custom-lm-broken", check]
        assert row["status"] == "error" and row["measured"] is None
        assert "RuntimeError: weights file custom-lm-broken.bin is missing" in row["message"]
    stdout.fnmatch_lines(["ERROR *test_tier1[[]custom-lm-broken-causality[]]*"])


def test_an_expected_failure_that_passes_fails_the_run(failing_run):
    _, stdout, _, rows, _ = failing_run
    stdout.fnmatch_lines(["FAILED *test_tier1[[]custom-lm-wrongly-declared-causality[]]*"])
    stdout.fnmatch_lines(["*XPASS(strict)*no leak really*"])
    wrongly = {check: row["status"] for (model, check), row in rows.items() if model == "custom-lm-wrongly-declared"}
    assert wrongly == _expected_statuses(custom_lm.WRONGLY_DECLARED)  # the check itself passed


def test_an_expected_failure_is_a_strict_xfail(run, pytester):
    result = run("--model", f"{USER}:LEAKY_DECLARED", "--harness-report-dir", "out", "--harness-run-id", "xf", "-rx")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    skipped = list(_expected_statuses(custom_lm.LEAKY_DECLARED).values()).count("skipped")
    result.assert_outcomes(passed=len(TIER1_CHECKS) - skipped - 1, skipped=skipped, xfailed=1)
    result.stdout.fnmatch_lines(["XFAIL *test_tier1[[]custom-lm-leaky-declared-causality[]]*known future leak*"])
    rows = _rows(_report(pytester.path / "out" / "xf" / "report.json"))
    assert rows["causality"]["status"] == "failed"  # the report keeps the check's own verdict


HOOK_CONFTEST = """
def pytest_harness_report(report, config):
    report["pipeline"] = {"name": "nightly", "rows_seen": len(report["rows"])}
    for row in report["rows"]:
        row.setdefault("details", {})["annotated_by"] = "conftest"
"""


def test_the_report_hook_extends_the_report(run, pytester):
    suite = pytester.path / "suites" / "tier1"
    suite.mkdir(parents=True)
    shutil.copy(TIER1 / "test_tier1.py", suite / "test_tier1.py")
    pytester.makeconftest(HOOK_CONFTEST)
    # a copy of the suite outside the harness's suites/: the option is spelled --harness-model there
    result = run("--harness-model", f"{USER}:SPEC", "--harness-report-dir", "out", suite=suite)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    (path,) = (pytester.path / "out").glob("*/report.json")  # no --harness-run-id: a generated one
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", path.parent.name)
    report = _report(path)
    assert report["run_id"] == path.parent.name
    assert report["pipeline"] == {"name": "nightly", "rows_seen": len(TIER1_CHECKS)}
    assert {row["details"]["annotated_by"] for row in report["rows"]} == {"conftest"}


def test_rows_are_also_recorded_in_the_experiment_db(run, pytester):
    from harness.store import ExperimentDB

    result = run("--model", "cnn-digits", "-k", "initialization or batch_independence", "--harness-run-id", "db-run",
                 "--harness-report-dir", "out", "--harness-db", "runs.db")  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    with ExperimentDB(pytester.path / "runs.db") as db:
        rows = db.check_results(None)
    assert sorted(row["check"] for row in rows) == ["batch_independence", "initialization"]
    assert {row["report_run_id"] for row in rows} == {"db-run"} and all("measured" in row for row in rows)

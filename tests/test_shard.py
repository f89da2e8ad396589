"""Shards and merge: ``--harness-shard K/N`` splits the cases deterministically and balanced, and ``harness report
merge`` joins the N reports into the report of one run.

The equality test runs the zoo's Tier 1 once unsharded and as 3 shards (balanced by the unsharded run's
durations, as CI does with the last merged report), merges the shards, and compares row for row. Every field
counts except :data:`COST_FIELDS`, which measure the run rather than the model.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from harness.cli import build_parser, main, pytest_arguments
from harness.report import build_report, environment, validate_report, write_report
from harness.report.merge import MergeError, ShardReport, merge_junit, merge_reports
from harness.shard import (
    DEFAULT_WEIGHT_S,
    NO_DURATIONS,
    Shard,
    ShardCase,
    durations_from_rows,
    load_durations,
    partition,
    plan,
)

REPO = Path(__file__).resolve().parents[1]
TIER1 = REPO / "suites" / "tier1"
SHARDS = 3
# Excluded from the row-for-row comparison: wall-clock seconds (duration_s and setup_s, and a check's own timer in
# details.duration_s) differ between any two runs, and cache (hit or built) depends on which run came first: the
# unsharded run builds what the shards then reuse.
COST_FIELDS = ("duration_s", "setup_s", "cache")


def _cases(models: int = 4, checks: int = 5, tiers: tuple[int, ...] = (1, 3)) -> list[ShardCase]:
    return [
        ShardCase(f"suites/tier{tier}/t.py::test[m{m}-c{c}]", tier, f"m{m}", f"c{c}")
        for tier in tiers
        for m in range(models)
        for c in range(checks)
    ]


# The split.


@pytest.mark.parametrize("text, shard", [("1/1", Shard(1, 1)), ("2/3", Shard(2, 3)), ("10/10", Shard(10, 10))])
def test_a_shard_parses_k_of_n(text, shard):
    assert Shard.parse(text) == shard and str(shard) == text


@pytest.mark.parametrize("text", ["0/3", "4/3", "3", "a/b", "1/0", "-1/3", "1/3/5", "", " 1/3"])
def test_a_bad_shard_is_one_line_naming_the_value(text):
    with pytest.raises(ValueError, match=r"takes K/N with integers 1 <= K <= N \(like 2/3\), got") as error:
        Shard.parse(text)
    assert repr(text) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 11, 40, 50])
def test_every_case_is_in_exactly_one_shard(count):
    cases = _cases()
    split = plan(cases, count)
    ids = [test_id for shard in split.shards for test_id in shard]
    assert sorted(ids) == sorted(case.test_id for case in cases)  # every case, none twice
    assert split.selected == len(cases) and len(split.shards) == count


def test_the_split_is_the_same_whatever_order_the_cases_come_in():
    cases = _cases()
    durations = durations_from_rows(
        [{"test_id": case.test_id, "check": case.check, "duration_s": 0.1 * i} for i, case in enumerate(cases)]
    )
    reference = plan(cases, 3, durations)
    for seed in range(5):
        shuffled = random.Random(seed).sample(cases, len(cases))
        assert plan(shuffled, 3, durations) == reference


def test_one_models_tier_3_and_4_cases_share_a_shard_and_tier_1_cases_spread():
    split = plan(_cases(tiers=(1, 3, 4)), 3)
    shard_of = {test_id: index for index, shard in enumerate(split.shards) for test_id in shard}
    for tier in (3, 4):
        for m in range(4):
            assert len({shard_of[f"suites/tier{tier}/t.py::test[m{m}-c{c}]"] for c in range(5)}) == 1
    assert {shard_of[test_id] for test_id in shard_of if test_id.startswith("suites/tier1/")} == {0, 1, 2}


def _best_makespan(weights: list[float], count: int) -> float:
    return min(
        max(sum(w for w, s in zip(weights, assignment, strict=True) if s == k) for k in range(count))
        for assignment in itertools.product(range(count), repeat=len(weights))
    )


@pytest.mark.parametrize("seed", range(6))
def test_longest_processing_time_stays_within_its_bound_of_the_best_split(seed):
    """Graham's bound: LPT's heaviest shard is at most (4/3 - 1/(3N)) times the best possible (found by search)."""
    rng = random.Random(seed)
    count = rng.choice([2, 3])
    weights = {f"g{i}": round(rng.uniform(0.1, 10.0), 3) for i in range(8)}
    shards = partition(weights, count)
    makespan = max(sum(weights[name] for name in names) for names in shards)
    best = _best_makespan(list(weights.values()), count)
    assert makespan <= (4 / 3 - 1 / (3 * count)) * best + 1e-9, (makespan, best)
    assert sorted(name for names in shards for name in names) == sorted(weights)


def test_the_slowest_case_gets_a_shard_of_its_own_when_durations_say_so():
    cases = _cases(models=1, checks=6, tiers=(1,))
    rows = [{"test_id": case.test_id, "check": case.check, "duration_s": 1.0, "setup_s": 0.5} for case in cases]
    rows[0]["duration_s"] = 20.0
    split = plan(cases, 2, durations_from_rows(rows))
    assert split.shards[0] == (cases[0].test_id,)
    assert split.estimated_s == (20.5, 7.5)  # setup + call seconds


def test_durations_estimate_unrecorded_cases_by_their_check_then_by_the_mean_then_one_second():
    rows = [
        {"test_id": "a", "check": "c1", "duration_s": 2.0},
        {"test_id": "b", "check": "c1", "duration_s": 4.0, "setup_s": 2.0},
        {"test_id": "c", "check": "c2", "duration_s": 1.0},
    ]
    durations = durations_from_rows(rows)
    assert durations.weight(ShardCase("b", 1, "m", "c1")) == 6.0
    assert durations.weight(ShardCase("new", 1, "m", "c1")) == 4.0  # the mean of c1's cases
    assert durations.weight(ShardCase("new", 1, "m", "c9")) == 3.0  # the mean of every recorded case
    assert NO_DURATIONS.weight(ShardCase("new", 1, "m", "c9")) == DEFAULT_WEIGHT_S


def test_durations_are_read_from_a_report_json_and_a_bad_file_is_one_line(tmp_path):
    rows = [_row("suites/t::a", duration_s=3.0, setup_s=1.0)]
    path = write_report(build_report("r", rows, environment("ci", 0)), tmp_path / "report.json")
    assert load_durations(path).by_test == {"suites/t::a": 4.0}
    (tmp_path / "bad.json").write_text('{"rows": [{"test_id": "x"}]}')
    for path, words in ((tmp_path / "none.json", "cannot read"), (tmp_path / "bad.json", "not a harness report")):
        with pytest.raises(ValueError, match=words) as error:
            load_durations(path)
        assert "\n" not in str(error.value)


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "HYPOTHESIS_"))}
    env |= {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pytest", str(TIER1), "-p", "no:cacheprovider", "--hypothesis-profile", "ci"]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize(
    "args, words",
    [
        (("--harness-shard", "0/3"), "--harness-shard takes K/N with integers 1 <= K <= N (like 2/3), got '0/3'"),
        (("--harness-shard", "2"), "--harness-shard takes K/N"),
        (("--harness-durations", "d.json"), "--harness-durations balances --harness-shard K/N"),
        (("--harness-shard", "1/2", "--harness-durations", "none.json"), "--harness-durations: cannot read"),
    ],
    ids=["zero", "no-count", "durations-alone", "no-durations-file"],
)
def test_bad_shard_options_are_a_usage_error_before_any_check_runs(tmp_path, args, words):
    result = _pytest("--harness-model", "tests.user_models.wrong_types:EMPTY_LIST", *args, cwd=tmp_path)
    assert result.returncode == 4, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert "Traceback" not in result.stderr and list(tmp_path.iterdir()) == []


def test_harness_run_passes_shard_and_durations_and_refuses_a_bad_shard(tmp_path, capsys):
    argv = ["run", "--tier", "1", "--report-dir", str(tmp_path), "--run-id", "s", "--shard", "2/3"]
    command = pytest_arguments(build_parser().parse_args([*argv, "--durations", "last/report.json"]))
    assert command[command.index("--harness-shard") + 1] == "2/3"
    assert command[command.index("--harness-durations") + 1] == "last/report.json"
    with pytest.raises(SystemExit) as exit_:
        main([*argv[:-1], "3/2"])
    assert exit_.value.code == 2
    assert "--shard: takes K/N" in capsys.readouterr().err


def test_a_shard_on_xdist_workers_runs_and_records_the_same_split_as_a_serial_one(tmp_path):
    """The controller collects nothing under pytest-xdist: its report learns the split from the workers."""
    reports = {}
    for name, workers in (("serial", ()), ("parallel", ("-n", "2"))):
        args = ("--harness-model", "cnn-digits", "--harness-shard", "2/3", "--junitxml", f"{name}/junit.xml")
        result = _pytest(*args, *workers, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        reports[name] = json.loads((tmp_path / name / "report.json").read_text())
    serial, parallel = reports["serial"], reports["parallel"]
    assert parallel["shard"] == serial["shard"] and serial["shard"]["cases"] == len(serial["rows"])
    assert [row["test_id"] for row in parallel["rows"]] == [row["test_id"] for row in serial["rows"]]
    assert parallel["environment"]["workers"] == 2


# The merge, on reports made here.


def _row(test_id: str, status: str = "passed", **changes) -> dict:
    return {
        "test_id": test_id, "tier": 1, "model": "m", "check": test_id.rsplit(":", 1)[-1], "status": status,
        "rule": "r", "measured": 0.0, "threshold": 1.0, "tolerance": None, "sample_size": 2, "seed": 0,
        "duration_s": 0.5, "setup_s": 0.25, "cache": None, "message": "m: c: r.", **changes,
    }  # fmt: skip


def shard_reports(count: int = 3, failed: str | None = None, prefix: str = "s") -> list[ShardReport]:
    """The ``count`` shards of a run of six cases (the case named ``failed`` failing), as the plugin writes them,
    named ``{prefix}{K}``."""
    cases = [ShardCase(f"t::c{i}", 1, "m", f"c{i}") for i in range(6)]
    split = plan(cases, count)
    shards = []
    for index in range(1, count + 1):
        rows = [_row(test_id, "failed" if test_id == failed else "passed") for test_id in split.shards[index - 1]]
        report = build_report(f"shard-{index}", rows, environment("ci", 0))
        report["shard"] = {**split.record(Shard(index, count)), "seed": 0, "exitstatus": 0}
        validate_report(report)
        shards.append(ShardReport(f"{prefix}{index}", report, _junit(rows)))
    return shards


def _junit(rows: list[dict]) -> ElementTree.Element:
    root = ElementTree.Element("testsuites")
    suite = ElementTree.SubElement(root, "testsuite", tests=str(len(rows)))
    for row in rows:
        case = ElementTree.SubElement(suite, "testcase", classname="t", name=row["check"], time="0.5")
        if row["status"] == "failed":
            ElementTree.SubElement(case, "failure", message="m")
    return root


def test_merged_shards_hold_every_row_sorted_with_the_summary_and_junit_counted_again():
    shards = shard_reports(failed="t::c4")
    merged = merge_reports(list(reversed(shards)), "merged")
    validate_report(merged)
    assert [row["test_id"] for row in merged["rows"]] == [f"t::c{i}" for i in range(6)]
    assert merged["summary"]["total"] == 6 and merged["summary"]["failed"] == 1 and merged["summary"]["passed"] == 5
    assert [shard["index"] for shard in merged["shards"]] == [1, 2, 3] and "shard" not in merged
    assert sum(shard["seconds"] for shard in merged["shards"]) == pytest.approx(6 * 0.75)
    junit = merge_junit([shard.junit for shard in shards])
    suite = junit.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"), suite.get("skipped")) == (
        "6",
        "1",
        "0",
        "0",
    )
    assert [case.get("name") for case in suite.iter("testcase")] == [f"c{i}" for i in range(6)]


def _change(shards: list[ShardReport], index: int, change) -> list[ShardReport]:
    change(shards[index].report)
    return shards


@pytest.mark.parametrize(
    "shards, words",
    [
        (lambda: shard_reports()[:2], "incomplete: shard(s) 3/3 missing"),
        (lambda: [*shard_reports(), shard_reports()[1]], "shard 2/3 is given twice: s2 and s2"),
        (lambda: _change(shard_reports(), 1, lambda r: r["shard"].update(selection="x")), "their selection differs"),
        (lambda: _change(shard_reports(), 1, lambda r: r["shard"].update(plan="x")), "their plan differs"),
        (lambda: _change(shard_reports(), 2, lambda r: r["shard"].update(seed=7)), "their seed differs"),
        (lambda: [*shard_reports(2)[:1], *shard_reports(3)[1:]], "their count differs"),
        (lambda: _change(shard_reports(), 1, lambda r: r["environment"]["packages"].update(torch="0.1")), "packages"),
        (lambda: _change(shard_reports(), 0, lambda r: r.pop("shard")), "s1: not the report of a shard"),
        (lambda: _change(shard_reports(), 0, lambda r: r["shard"].update(exitstatus=2)), "s1: shard 1/3 was interrupted"),
        (lambda: _change(shard_reports(), 1, lambda r: r["rows"].append(_row("t::c0"))), "t::c0 is in two shards"),
        (lambda: [], "no shard given"),
    ],
    ids=["missing", "duplicate", "selection", "plan", "seed", "count", "packages", "not-a-shard", "interrupted",
         "overlap", "none"],
)  # fmt: skip
def test_shards_that_are_not_one_complete_split_are_refused_in_one_line(shards, words):
    with pytest.raises(MergeError) as error:
        merge_reports(shards(), "merged")
    assert words in str(error.value) and "\n" not in str(error.value)


def test_a_test_case_in_two_junit_files_is_refused():
    shards = shard_reports()
    with pytest.raises(MergeError, match="JUnit test case t::c0 is in two shards"):
        merge_junit([shards[0].junit, *[shard.junit for shard in shards]])


def write_shards(shards: list[ShardReport], folder: Path) -> list[str]:
    for shard in shards:
        write_report(shard.report, folder / shard.name / "report.json")
        (folder / shard.name / "junit.xml").write_bytes(ElementTree.tostring(shard.junit))
    return [str(folder / shard.name) for shard in shards]


def test_harness_report_merge_writes_json_junit_and_html_and_exits_1_on_a_failed_row(tmp_path, capsys):
    clean = write_shards(shard_reports(), tmp_path / "clean")
    assert main(["report", "merge", *clean, "--out", str(tmp_path / "merged"), "--run-id", "m1"]) == 0
    assert sorted(p.name for p in (tmp_path / "merged").iterdir()) == ["junit.xml", "report.html", "report.json"]
    assert json.loads((tmp_path / "merged" / "report.json").read_text())["run_id"] == "m1"
    assert "merged 3 shards: 6 checks (6 passed)" in capsys.readouterr().out
    failing = write_shards(shard_reports(failed="t::c2"), tmp_path / "failing")
    assert main(["report", "merge", *failing, "--out", str(tmp_path / "failed")]) == 1
    assert json.loads((tmp_path / "failed" / "report.json").read_text())["summary"]["failed"] == 1


def test_harness_report_merge_refuses_bad_input_in_one_line_and_overwrites_nothing(tmp_path, capsys):
    folders = write_shards(shard_reports(), tmp_path)
    out = tmp_path / "merged"
    out.mkdir()
    (out / "report.json").write_text("earlier\n")
    cases = [
        ([*folders, "--out", str(out)], "already exists; choose another --out (nothing was overwritten)"),
        ([*folders[:2], "--out", str(tmp_path / "new")], "incomplete: shard(s) 3/3 missing"),
        ([*folders, str(tmp_path / "nowhere"), "--out", str(tmp_path / "new")], "does not exist"),
        (["--out", str(tmp_path / "new")], "merge takes the report folders of the shards"),
    ]
    for argv, words in cases:
        assert main(["report", "merge", *argv]) == 2
        error = capsys.readouterr().err
        assert words in error and error.count("\n") == 1, error
    assert (out / "report.json").read_text() == "earlier\n" and not (tmp_path / "new").exists()
    (tmp_path / "s2" / "junit.xml").unlink()
    assert main(["report", "merge", *folders, "--out", str(tmp_path / "new")]) == 2
    assert "s2 has no junit.xml while other shards do" in capsys.readouterr().err


# The zoo's Tier 1: unsharded, then 3 shards balanced by its durations, merged.


@pytest.fixture(scope="module")
def zoo_tier1(tmp_path_factory):
    """One unsharded run and its 3 shards (each run once for the module), and their merge."""
    cwd = tmp_path_factory.mktemp("zoo-tier1")
    whole = _pytest("--junitxml", "whole/junit.xml", "--harness-run-id", "whole", cwd=cwd)
    assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
    durations = str(cwd / "whole" / "report.json")
    for index in range(1, SHARDS + 1):
        shard = _pytest(
            "--junitxml", f"shard{index}/junit.xml", "--harness-shard", f"{index}/{SHARDS}",
            "--harness-durations", durations, cwd=cwd,
        )  # fmt: skip
        assert shard.returncode == 0, shard.stdout[-3000:] + shard.stderr[-3000:]
    folders = [str(cwd / f"shard{index}") for index in range(1, SHARDS + 1)]
    assert main(["report", "merge", *folders, "--out", str(cwd / "merged"), "--run-id", "merged"]) == 0
    return cwd


def _without_costs(row: dict) -> dict:
    row = {key: value for key, value in row.items() if key not in COST_FIELDS}
    return {**row, "details": {key: value for key, value in row["details"].items() if key not in COST_FIELDS}}


def _report(path: Path) -> dict:
    report = json.loads(path.read_text())
    validate_report(report)
    return report


def test_merged_shards_equal_the_unsharded_run_row_for_row(zoo_tier1):
    whole, merged = _report(zoo_tier1 / "whole" / "report.json"), _report(zoo_tier1 / "merged" / "report.json")
    assert [row["test_id"] for row in merged["rows"]] == [row["test_id"] for row in whole["rows"]]
    for got, expected in zip(merged["rows"], whole["rows"], strict=True):
        assert _without_costs(got) == _without_costs(expected), got["test_id"]
    assert merged["summary"] == whole["summary"] and len(whole["rows"]) > 100  # the whole zoo's Tier 1


def test_each_shard_records_its_part_of_the_selection(zoo_tier1):
    shards = [_report(zoo_tier1 / f"shard{index}" / "report.json")["shard"] for index in range(1, SHARDS + 1)]
    whole = _report(zoo_tier1 / "whole" / "report.json")
    assert [shard["index"] for shard in shards] == [1, 2, 3] and {shard["count"] for shard in shards} == {3}
    assert {shard["selected"] for shard in shards} == {len(whole["rows"])}
    assert sum(shard["cases"] for shard in shards) == len(whole["rows"])
    assert sum(shard["estimated_s"] for shard in shards) == pytest.approx(
        sum(row["duration_s"] + row["setup_s"] for row in whole["rows"]), abs=0.01
    )


def _junit_cases(path: Path) -> dict[tuple[str, str], str]:
    cases = ElementTree.parse(path).getroot().iter("testcase")
    return {
        (case.get("classname"), case.get("name")): next((c.tag for c in case if c.tag != "properties"), "passed")
        for case in cases
    }


def test_merged_junit_holds_the_unsharded_runs_test_cases(zoo_tier1):
    merged, whole = _junit_cases(zoo_tier1 / "merged" / "junit.xml"), _junit_cases(zoo_tier1 / "whole" / "junit.xml")
    assert merged == whole
    suite = ElementTree.parse(zoo_tier1 / "merged" / "junit.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) == len(whole)
    assert int(suite.get("skipped")) == sum(outcome == "skipped" for outcome in whole.values())


def test_the_merged_html_page_renders_with_every_check_and_the_slowest(zoo_tier1):
    page = (zoo_tier1 / "merged" / "report.html").read_text()
    rows = _report(zoo_tier1 / "merged" / "report.json")["rows"]
    assert page.startswith("<!DOCTYPE html>") and f"{len(rows)} checks" in page
    assert "Ten slowest checks" in page and page.count("<tr>") >= len(rows) + 10

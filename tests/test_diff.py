"""``harness diff``: the verdicts that changed between two runs, from report.json or JUnit XML."""

from __future__ import annotations

import json

import pytest

from harness.cli import main
from harness.report.diff import Verdict, changed_verdicts, read_verdicts


def _report(path, rows):
    path.mkdir(parents=True, exist_ok=True)
    body = [{"test_id": test_id, "status": status, "measured": measured, "threshold": 0.3}
            for test_id, status, measured in rows]  # fmt: skip
    (path / "report.json").write_text(json.dumps({"schema_version": 1, "rows": body}))
    return path


def _junit(path, cases):
    failure = '<failure message="x"/>'
    body = "".join(
        f'<testcase classname="tests.test_x" name="{name}">{failure if failed else ""}</testcase>'
        for name, failed in cases
    )
    path.write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest">{body}</testsuite></testsuites>')
    return path


def test_changed_verdicts_lists_status_changes_failures_first_and_added_or_removed_rows():
    old = {"a": Verdict("passed", 0.1, 0.3), "b": Verdict("passed"), "c": Verdict("failed"), "gone": Verdict("passed")}
    new = {"a": Verdict("passed", 0.2, 0.3), "b": Verdict("failed"), "c": Verdict("passed"), "new": Verdict("skipped")}
    changes = changed_verdicts(old, new)
    assert [change.test_id for change in changes] == ["b", "c", "gone", "new"]  # a moved but kept its verdict
    assert changes[2].new.status == "absent" and changes[3].old.status == "absent"


def test_cli_compares_run_folders_and_junit_files(tmp_path, capsys):
    old = _report(tmp_path / "old", [("t[m-onnx_int8_parity]", "passed", 0.98), ("t[m-x]", "passed", 1.0)])
    new = _report(tmp_path / "new", [("t[m-onnx_int8_parity]", "failed", 7.5), ("t[m-x]", "passed", 1.0)])
    assert main(["diff", str(old), str(new)]) == 0  # a report, not a gate
    out = capsys.readouterr().out
    assert "| `t[m-onnx_int8_parity]` | passed (0.98 vs 0.3) | failed (7.5 vs 0.3) |" in out
    assert "1 of 2 verdicts changed" in out
    assert main(["diff", str(old), str(new), "--fail-on-change"]) == 1
    assert main(["diff", str(old), str(old), "--fail-on-change"]) == 0

    junit_old = _junit(tmp_path / "old.xml", [("test_a", False), ("test_b", False)])
    junit_new = _junit(tmp_path / "new.xml", [("test_a", True), ("test_b", False)])
    assert read_verdicts(junit_new)["tests.test_x::test_a"].status == "failed"
    capsys.readouterr()
    assert main(["diff", str(junit_old), str(junit_new), "--json"]) == 0
    changes = json.loads(capsys.readouterr().out)
    assert [(c["test_id"], c["old"]["status"], c["new"]["status"]) for c in changes] == [
        ("tests.test_x::test_a", "passed", "failed")
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), ("not json", "not a harness report.json"), ('{"rows": [{"x": 1}]}', "not a harness")],
)
def test_unreadable_run_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    good = _report(tmp_path / "good", [("t", "passed", 1.0)])
    bad = tmp_path / "bad" / "report.json"
    if content is not None:
        bad.parent.mkdir()
        bad.write_text(content)
    assert main(["diff", str(good), str(bad)]) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and message in out and out.startswith("harness diff: error:")

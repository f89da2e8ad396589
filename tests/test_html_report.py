"""The HTML report, loaded in a real headless browser: no script errors and every plot visible.

The browser is Debian's chromium (`.ci/run` installs it); without it these tests skip, saying so.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.cli import main
from harness.report import build_report, environment, write_report
from harness.report.html import plots, render_html, write_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


def row(check: str, status: str = "passed", **details) -> dict:
    return {
        "test_id": f"suites/t::test[{check}]", "tier": 4, "model": "m", "check": check, "status": status,
        "rule": "r", "measured": 0.5, "threshold": 1.0, "tolerance": None, "sample_size": 3, "seed": 0,
        "duration_s": 0.1, "expected": "x", "got": "y", "hint": "h", "message": f"m: {check}: r. Expected x, got y.",
        "details": details,
    }  # fmt: skip


def full_report() -> dict:
    rows = [
        row("onnx_parity", shapes=[{"max_abs": 1e-7}, {"max_abs": 3e-6}], format="onnx"),
        row("latency_ratios", p50_ratio={"torchscript": 0.8, "onnxruntime": 0.4}),
        row("overfit_one_batch", history={"step": [0, 1, 2], "loss": [3.0, 2.0, 0.5]}),
        row("embedding_drift", "failed", distributions={"length": {"reference": [1, 2, 3, 2], "current": [5, 6, 7]}}),
        row("attention_patterns", attention_map=[[1.0, 0.0], [0.4, 0.6]]),
    ]
    return build_report("run-1", rows, environment("ci", 0))


def dom_after_load(page: Path, tmp_path: Path) -> str:
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout


def body_attributes(dom: str) -> dict[str, str]:
    body = re.search(r"<body([^>]*)>", dom).group(1)
    return dict(re.findall(r'data-([\w-]+)="([^"]*)"', body))


@needs_browser
def test_page_loads_without_errors_and_every_plot_is_visible(tmp_path):
    report_path = write_report(full_report(), tmp_path / "report.json")
    page = write_html(report_path)
    attributes = body_attributes(dom_after_load(page, tmp_path))
    assert attributes.get("loaded") == "yes"
    assert "errors" not in attributes, attributes["errors"]
    assert attributes["plots"] == "5"  # parity, latency, training curve, one drift feature, attention
    assert attributes["plots-visible"] == attributes["plots"]


@needs_browser
def test_the_browser_check_sees_a_broken_plot_and_a_script_error(tmp_path):
    page = tmp_path / "report.html"
    broken = render_html(full_report()).replace("base64,", "base64,@@not-png@@", 1)
    page.write_text(broken.replace("</body>", "<script>undefinedFunction();</script></body>"))
    attributes = body_attributes(dom_after_load(page, tmp_path))
    assert int(attributes["plots-visible"]) == int(attributes["plots"]) - 1
    assert "undefinedFunction" in attributes.get("errors", "")


def timed_report(count: int = 12) -> dict:
    """``count`` rows whose costs (setup + call seconds) are all different: check ``c{i}`` costs ``i + 0.5`` s."""
    cached = {"hit": True, "uses": [{"kind": "run", "key": "k", "hit": True, "seconds": 0.1}]}
    built = {"hit": False, "uses": [{**cached["uses"][0], "hit": False}, {"kind": "tokenizer", "key": "t", "hit": True, "seconds": 0.2}]}  # fmt: skip
    rows = []
    for i in random.Random(0).sample(range(count), count):
        rows.append({**row(f"c{i}"), "duration_s": float(i), "setup_s": 0.5, "cache": [None, cached, built][i % 3]})
    return build_report("timed", rows, environment("ci", 0))


def slowest_rows(page: str) -> list[list[str]]:
    """The cells of the "Ten slowest checks" table (the page as written or as the browser holds it)."""
    table = re.search(r"<table id=['\"]slowest-checks['\"]>(.*?)</table>", page, re.S).group(1)
    return [re.findall(r"<td>(.*?)</td>", line) for line in re.findall(r"<tr>(.*?)</tr>", table, re.S)[1:]]


def test_the_ten_slowest_checks_are_listed_slowest_first_with_their_seconds_and_cache():
    cells = slowest_rows(render_html(timed_report()))
    assert [cell[2] for cell in cells] == [f"c{i}" for i in range(11, 1, -1)]  # the two fastest are left out
    assert cells[0] == ["suites/t::test[c11]", "m", "c11", "11.50", "0.50", "11.00", "built 1 of 2"]
    assert [cell[6] for cell in cells[:3]] == ["built 1 of 2", "hit", "no cached artefact"]  # c11, c10, c9


def test_a_run_of_fewer_than_ten_checks_lists_them_all_and_an_old_report_renders():
    report = timed_report(4)
    assert [cell[2] for cell in slowest_rows(render_html(report))] == ["c3", "c2", "c1", "c0"]
    for old in report["rows"]:
        del old["setup_s"], old["cache"]  # a schema 1.0 report
    assert [cell[3] for cell in slowest_rows(render_html(report))] == ["3.00", "2.00", "1.00", "0.00"]


@needs_browser
def test_the_browser_shows_the_slowest_checks_table(tmp_path):
    page = write_html(write_report(timed_report(), tmp_path / "report.json"))
    dom = dom_after_load(page, tmp_path)
    assert "errors" not in body_attributes(dom)
    cells = slowest_rows(dom)
    assert len(cells) == 10 and cells[0][2] == "c11" and cells[-1][2] == "c2"


def test_every_failure_and_its_message_is_on_the_page():
    page = render_html(full_report())
    assert "Failures (1)" in page and "m: embedding_drift: r. Expected x, got y." in page
    assert len(plots(full_report()["rows"])) == 5


def test_text_from_rows_is_escaped():
    report = full_report()
    report["rows"][0]["got"] = "<script>alert(1)</script>"
    assert "<script>alert(1)</script>" not in render_html(report)


def test_harness_report_renders_a_run_folder_and_rejects_bad_input(tmp_path, capsys):
    write_report(full_report(), tmp_path / "report.json")
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "report.json").write_text("{not json")
    assert main(["report", str(tmp_path / "bad")]) == 2
    assert "not a readable report.json" in capsys.readouterr().err
    assert json.loads((tmp_path / "report.json").read_text())["run_id"] == "run-1"  # nothing lost

"""harness.report: building, validating and writing report.json (unit tests, no pytest runs)."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import jsonschema
import pytest

from harness.cache import CacheUse
from harness.report import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    STATUSES,
    build_report,
    cache_field,
    environment,
    load_schema,
    row_seconds,
    validate_report,
    write_report,
)
from harness.result import CheckResult, Status

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = REPO / "harness" / "report" / "report.schema.json"


def _row(test_id: str, status: Status = Status.PASSED, **changes) -> dict:
    fields = {"measured": 0.0, "threshold": 1e-5, "tolerance": {"rtol": 1e-5, "atol": 1e-5}, "sample_size": 4}
    result = CheckResult("batch_independence", "unit-model", 1, status, "Rows are independent", **{**fields, **changes})
    return {"test_id": test_id, **result.to_dict(), "duration_s": 0.01}


def _env() -> dict:
    return environment("ci", 0)


def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))


def test_the_schema_file_is_the_packaged_one_and_a_valid_2020_12_schema():
    assert SCHEMA_PATH.resolve() == SCHEMA_FILE
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert set(schema["$defs"]["row"]["properties"]["status"]["enum"]) == set(STATUSES)


def test_environment_names_interpreter_packages_profile_and_workers():
    env = environment("nightly", 3)
    assert env["hypothesis_profile"] == "nightly" and env["workers"] == 3
    assert isinstance(env["python"], str) and env["python"].count(".") == 2
    import torch

    assert env["packages"]["torch"] == torch.__version__
    assert env["packages"]["pytest"] == pytest.__version__
    assert env["packages"]["ml-harness"] is not None


def test_build_report_sorts_rows_and_counts_every_status():
    rows = [
        _row("t::c"),
        _row("t::a", Status.FAILED, measured=3.0),
        _row("t::b", Status.SKIPPED, measured=None, threshold=None, tolerance=None),
        _row("t::e", Status.WARNED),
        _row("t::d"),
    ]
    report = build_report("run-7", rows, _env())
    assert [row["test_id"] for row in report["rows"]] == ["t::a", "t::b", "t::c", "t::d", "t::e"]
    assert report["summary"] == {
        "total": 5,
        "passed": 2,
        "failed": 1,
        "warned": 1,
        "inconclusive": 0,
        "skipped": 1,
        "error": 0,
    }
    assert (report["schema_version"], report["run_id"]) == (SCHEMA_VERSION, "run-7") and SCHEMA_VERSION == "1.1"
    created = _dt.datetime.fromisoformat(report["created"])
    assert created.utcoffset() == _dt.timedelta(0)
    assert abs((_dt.datetime.now(_dt.UTC) - created).total_seconds()) < 60
    validate_report(report)
    _validator().validate(report)


def test_build_report_does_not_reorder_the_callers_list():
    rows = [_row("t::b"), _row("t::a")]
    build_report("r", rows, _env())
    assert [row["test_id"] for row in rows] == ["t::b", "t::a"]


def test_an_empty_report_is_valid():
    report = build_report("r", [], _env())
    assert report["summary"]["total"] == 0 and report["rows"] == []
    validate_report(report)


def test_write_report_writes_the_validated_json_atomically(tmp_path):
    report = build_report("r1", [_row("t::a"), _row("t::b", Status.FAILED, measured=2.0)], _env())
    path = tmp_path / "nested" / "r1" / "report.json"
    assert write_report(report, path) == path
    assert _strict_json(path.read_text()) == report
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda report: report["rows"][0].update(status="exploded"),
        lambda report: report["rows"][0].pop("message"),
        lambda report: report["rows"][0].update(tier=9),
        lambda report: report["rows"][0].update(measured="large"),
        lambda report: report["rows"][0].update(tolerance={"rtol": -1.0, "atol": 0.0}),
        lambda report: report["summary"].pop("failed"),
        lambda report: report.update(run_id=""),
        lambda report: report.update(schema_version="2.0"),
        lambda report: report["environment"].update(workers=-1),
    ],
    ids=[
        "status",
        "no-message",
        "tier",
        "measured-text",
        "negative-rtol",
        "no-failed-count",
        "empty-run-id",
        "schema-version",
        "workers",
    ],
)
def test_write_report_refuses_an_invalid_report_and_keeps_the_existing_file(tmp_path, corrupt):
    path = tmp_path / "report.json"
    path.write_bytes(b'{"previous": "run"}\n')
    report = build_report("r", [_row("t::a")], _env())
    corrupt(report)
    with pytest.raises(jsonschema.ValidationError):
        write_report(report, path)
    with pytest.raises(jsonschema.ValidationError):
        _validator().validate(report)
    assert path.read_bytes() == b'{"previous": "run"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_passed_or_failed_row_with_a_threshold_needs_a_measured_value():
    for status in (Status.PASSED, Status.FAILED):
        report = build_report("r", [_row("t::a", status, measured=None)], _env())
        with pytest.raises(jsonschema.ValidationError):
            validate_report(report)
    skipped = build_report("r", [_row("t::a", Status.SKIPPED, measured=None)], _env())
    validate_report(skipped)


@pytest.mark.parametrize(("value", "text"), [(float("inf"), "inf"), (float("-inf"), "-inf"), (float("nan"), "nan")])
def test_non_finite_measured_values_are_strings_and_valid(tmp_path, value, text):
    row = _row("t::a", Status.FAILED, measured=value, details={"worst": value, "per_row": [1.0, value]})
    assert row["measured"] == text
    assert row["details"] == {"worst": text, "per_row": [1.0, text]}
    report = build_report("r", [row], _env())
    validate_report(report)
    _validator().validate(report)
    path = write_report(report, tmp_path / "report.json")
    written = _strict_json(path.read_text())
    assert written["rows"][0]["measured"] == text
    assert written["rows"][0]["details"]["per_row"] == [1.0, text]


def test_a_raw_non_finite_float_is_never_written_as_non_standard_json(tmp_path):
    path = tmp_path / "report.json"
    path.write_text("old\n")
    report = build_report("r", [_row("t::a")], _env())
    report["rows"][0]["details"] = {"worst": float("nan")}  # bypassed CheckResult.to_dict
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_report(report, path)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_schema_1_0_report_without_the_cost_fields_is_still_valid():
    report = build_report("r", [_row("t::a")], _env())
    report["schema_version"] = "1.0"
    assert "setup_s" not in report["rows"][0] and "cache" not in report["rows"][0]
    validate_report(report)


def test_the_cache_field_says_hit_only_when_every_artefact_came_from_the_cache():
    built = CacheUse("export:onnx", "k1", hit=False, seconds=2.5)
    cached = CacheUse("run", "k2", hit=True, seconds=0.01)
    assert cache_field([]) is None  # the test used no cached artefact
    assert cache_field([cached]) == {"hit": True, "uses": [{"kind": "run", "key": "k2", "hit": True, "seconds": 0.01}]}
    mixed = cache_field([cached, built])
    assert mixed["hit"] is False and [use["kind"] for use in mixed["uses"]] == ["run", "export:onnx"]
    for cache in (None, mixed):
        report = build_report("r", [{**_row("t::a"), "setup_s": 1.5, "cache": cache}], _env())
        validate_report(report)
        assert row_seconds(report["rows"][0]) == pytest.approx(1.51)


@pytest.mark.parametrize(
    "cost",
    [
        {"setup_s": -1.0},
        {"cache": {"hit": "yes", "uses": []}},
        {"cache": {"hit": True, "uses": []}},
        {"cache": {"hit": True, "uses": [{"kind": "run", "key": "k", "hit": True}]}},
        {"cache": True},
    ],
    ids=["negative-setup", "hit-text", "no-uses", "use-without-seconds", "bare-bool"],
)
def test_malformed_cost_fields_are_refused(cost):
    report = build_report("r", [{**_row("t::a"), **cost}], _env())
    with pytest.raises(jsonschema.ValidationError):
        validate_report(report)


def test_the_plugins_error_row_is_valid():
    from harness.plugin import _error_row

    case = {"tier": 1, "model": "unit-model", "check": "causality"}
    row = _error_row("t::a", case, "setup: Traceback ...\nRuntimeError: weights missing", seed=5)
    assert row["status"] == "error" and row["seed"] == 5
    assert row["cache"] is None and row["setup_s"] == 0.0
    assert row["got"] == "RuntimeError: weights missing"
    assert row["message"].startswith("unit-model: causality: error before the check ran")
    report = build_report("r", [row], _env())
    assert report["summary"]["error"] == 1
    validate_report(report)


def test_torch_is_recorded_with_its_build_label(monkeypatch):
    """PyPI's CUDA wheels say 2.14.1 in their metadata and 2.14.1+cu130 in torch.__version__: the report keeps
    the build (found by .ci/latest on torch 2.14.1)."""
    import sys
    import types

    from harness.versions import package_version

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="2.14.1+cu130"))
    assert package_version("torch") == "2.14.1+cu130"
    assert environment("ci", 0)["packages"]["torch"] == "2.14.1+cu130"

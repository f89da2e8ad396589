"""Reproducibility bundles: every member written and listed with its SHA-256, the environment snapshot,
report files, atomic writes that never overwrite, and a tampered or malformed bundle refused by name.
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from pathlib import Path

import pytest
import torch

from harness.store import Bundle, BundleError, ExperimentDB, MetricRow, environment_snapshot, read_bundle, write_bundle
from harness.store import bundle as bundle_module

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # not a real plot, bytes are bytes


@pytest.fixture
def db(tmp_path: Path):
    with ExperimentDB(tmp_path / "experiments.db") as store:
        yield store


@pytest.fixture
def run_id(db: ExperimentDB) -> str:
    run = db.start_run(name="bundle-me", config={"lr": 0.01, "seed": 11, "epochs": 2}, model="tiny-gpt", seed=11)
    db.log_metrics(run, 0, {"train_loss": 3.0, "lr": 0.0})
    db.log_metrics(run, 1, {"train_loss": 2.5, "grad_norm": math.nan})
    db.record_check(run_id=run, row={"check": "overfit_one_batch", "status": "passed", "measured": 0.95})
    db.finish_run(run, summary={"val_loss": 2.25, "best": math.inf}, checkpoint="/ckpt/last.ckpt")
    return run


@pytest.fixture
def report_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "reports" / "20261122-031042-64dd"
    (directory / "plots").mkdir(parents=True)
    (directory / "report.json").write_text('{"rows": []}\n')
    (directory / "junit.xml").write_text("<testsuites/>\n")
    (directory / "index.html").write_text("<html></html>\n")
    (directory / "plots" / "loss.png").write_bytes(PNG)
    (directory / "scratch.tmp").write_text("not a report file")
    return directory


def _rewrite(source: Path, target: Path, change) -> None:
    """Copy the zip ``source`` to ``target``, passing each (name, bytes) through ``change`` (None drops it)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            member = change(info.filename, archive.read(info))
            if member is not None:
                out.writestr(*member)


def test_a_bundle_holds_config_environment_metrics_summary_checks_and_reports(db, run_id, report_dir, tmp_path):
    checkpoint = tmp_path / "last.ckpt"
    checkpoint.write_bytes(b"weights")
    path = write_bundle(db, run_id, tmp_path / "out" / "run.zip", report_dir=report_dir, extra_files=[checkpoint])
    bundle = read_bundle(path)
    assert isinstance(bundle, Bundle) and bundle.path == path
    assert sorted(bundle.files) == [
        "checks.json",
        "config.json",
        "environment.json",
        "files/last.ckpt",
        "metrics.csv",
        "report/index.html",
        "report/junit.xml",
        "report/plots/loss.png",
        "report/report.json",
        "summary.json",
    ]
    assert bundle.config == {"lr": 0.01, "seed": 11, "epochs": 2}
    expected = db.metrics(run_id)
    assert [(row.step, row.name) for row in bundle.metrics] == [(row.step, row.name) for row in expected]
    assert all(
        a.value == b.value or (math.isnan(a.value) and math.isnan(b.value))
        for a, b in zip(bundle.metrics, expected, strict=True)
    )
    assert isinstance(bundle.metrics[0], MetricRow)
    summary = bundle.summary
    assert (summary["run_id"], summary["status"], summary["model"], summary["checkpoint"]) == (
        run_id,
        "finished",
        "tiny-gpt",
        "/ckpt/last.ckpt",
    )
    assert summary["summary"] == {"val_loss": 2.25, "best": "inf"}  # standard JSON: non-finite floats as strings
    assert "config" not in summary
    assert bundle.json("checks.json") == db.check_results(run_id)
    assert bundle.files["report/plots/loss.png"] == PNG and bundle.files["files/last.ckpt"] == b"weights"

    members = bundle.manifest["members"]
    assert set(members) == set(bundle.files)
    for name, data in bundle.files.items():
        assert members[name] == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    assert (bundle.manifest["format"], bundle.manifest["version"], bundle.manifest["run_id"]) == (
        "ml-harness-bundle",
        1,
        run_id,
    )
    with pytest.raises(KeyError, match="nothing.json"):
        bundle.json("nothing.json")


def test_the_environment_names_packages_hardware_seeds_and_determinism_flags(db, run_id, tmp_path):
    environment = read_bundle(write_bundle(db, run_id, tmp_path / "env.zip")).environment
    for package in ("torch", "transformers", "numpy", "lightning"):
        assert environment["packages"][package], package
    assert environment["packages"]["torch"] == torch.__version__
    assert environment["python"] and environment["platform"]
    hardware = environment["hardware"]
    assert hardware["cpu_count"] >= 1 and hardware["cuda_available"] == torch.cuda.is_available()
    assert len(hardware["cuda_devices"]) == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert environment["seeds"]["run_seed"] == 11 and environment["seeds"]["config_seed"] == 11
    determinism = environment["determinism"]
    assert determinism["deterministic_algorithms"] == torch.are_deterministic_algorithms_enabled()
    assert determinism["cudnn_deterministic"] == torch.backends.cudnn.deterministic
    assert determinism["cudnn_benchmark"] == torch.backends.cudnn.benchmark


def test_the_determinism_flags_follow_torch_state():
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(True)
        assert environment_snapshot()["determinism"]["deterministic_algorithms"] is True
        torch.use_deterministic_algorithms(False)
        assert environment_snapshot()["determinism"]["deterministic_algorithms"] is False
    finally:
        torch.use_deterministic_algorithms(before)
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False):
        flags = environment_snapshot()["determinism"]
        assert (flags["cudnn_benchmark"], flags["cudnn_deterministic"]) == (True, False)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True):
        flags = environment_snapshot()["determinism"]
        assert (flags["cudnn_benchmark"], flags["cudnn_deterministic"]) == (False, True)


def test_an_existing_bundle_is_never_overwritten(db, run_id, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "run.zip").write_bytes(b"someone else's file")
    with pytest.raises(FileExistsError, match="run.zip already exists"):
        write_bundle(db, run_id, out / "run.zip")
    assert (out / "run.zip").read_bytes() == b"someone else's file"
    write_bundle(db, run_id, out / "second.zip")
    first = (out / "second.zip").read_bytes()
    with pytest.raises(FileExistsError, match="second.zip"):
        write_bundle(db, run_id, out / "second.zip")
    assert (out / "second.zip").read_bytes() == first
    assert sorted(path.name for path in out.iterdir()) == ["run.zip", "second.zip"]  # no temporary file left


def test_a_failed_write_leaves_neither_bundle_nor_temporary_file(db, run_id, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()

    def refuse(temporary: Path, path: Path) -> None:
        assert temporary.exists() and temporary.parent == path.parent
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module, "_publish", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_bundle(db, run_id, out / "run.zip")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda db, run, tmp: write_bundle(db, "nope-42", tmp / "b.zip"), KeyError, "nope-42"),
        (
            lambda db, run, tmp: write_bundle(db, run, tmp / "b.zip", report_dir=tmp / "absent"),
            FileNotFoundError,
            "report_dir.*absent",
        ),
        (
            lambda db, run, tmp: write_bundle(db, run, tmp / "b.zip", extra_files=[tmp / "gone.ckpt"]),
            FileNotFoundError,
            "gone.ckpt",
        ),
        (
            lambda db, run, tmp: write_bundle(db, run, tmp / "b.zip", extra_files=[tmp / "experiments.db"] * 2),
            ValueError,
            "experiments.db",
        ),
    ],
)
def test_bad_arguments_write_nothing(db, run_id, tmp_path, call, error, names):
    with pytest.raises(error, match=names):
        call(db, run_id, tmp_path)
    assert not (tmp_path / "b.zip").exists() and not list(tmp_path.glob(".b.zip*"))


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (
            lambda name, data: (name, data.replace(b"0.01", b"0.02")) if name == "config.json" else (name, data),
            "'config.json' has SHA-256",
        ),
        (lambda name, data: None if name == "metrics.csv" else (name, data), r"missing \['metrics.csv'\]"),
        (
            lambda name, data: (name, data) if name != "summary.json" else ("summary2.json", data),
            r"not in the manifest \['summary2.json'\]",
        ),
        (lambda name, data: None if name == "MANIFEST.json" else (name, data), "no MANIFEST.json"),
        (
            lambda name, data: (name, b"{not json") if name == "MANIFEST.json" else (name, data),
            "MANIFEST.json is not valid JSON",
        ),
        (
            lambda name, data: (
                (name, json.dumps({**json.loads(data), "version": 99}).encode())
                if name == "MANIFEST.json"
                else (name, data)
            ),
            "version 99",
        ),
    ],
    ids=["tampered", "missing", "unlisted", "no-manifest", "bad-manifest", "newer-version"],
)
def test_a_bundle_that_does_not_match_its_manifest_is_refused_by_name(db, run_id, tmp_path, change, names):
    good = write_bundle(db, run_id, tmp_path / "good.zip")
    bad = tmp_path / "bad.zip"
    _rewrite(good, bad, change)
    with pytest.raises(BundleError, match=names):
        read_bundle(bad)


def test_a_file_that_is_not_a_zip_is_refused_naming_it(tmp_path):
    path = tmp_path / "fake.zip"
    path.write_bytes(b"PK but not really a zip")
    with pytest.raises(BundleError, match="fake.zip is not a readable zip"):
        read_bundle(path)
    with pytest.raises(FileNotFoundError, match="absent.zip"):
        read_bundle(tmp_path / "absent.zip")

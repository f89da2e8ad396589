"""Reproducibility bundles: one zip holding what is needed to understand and repeat a run.

Members: ``config.json`` (the run's config), ``environment.json`` (package versions, interpreter, platform,
hardware, seeds, torch determinism flags, captured when the bundle is written), ``metrics.csv`` (step, name,
value), ``summary.json`` (the run record without its config), ``checks.json`` (the report rows recorded for the
run), the run's report files under ``report/`` (report.json, junit.xml, HTML, plots) when a report directory is
given, extra files under ``files/``, and ``MANIFEST.json`` listing every other member with its size and SHA-256.
:func:`read_bundle` verifies the manifest and refuses a bundle that does not match it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import math
import os
import platform
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.io import atomic_path
from harness.store.db import ExperimentDB, MetricRow, StoreError
from harness.versions import package_versions

BUNDLE_FORMAT = "ml-harness-bundle"  # MANIFEST.json "format"
BUNDLE_VERSION = 1  # MANIFEST.json "version"; bumped when the member layout changes
MANIFEST = "MANIFEST.json"
REPORT_SUFFIXES = (".json", ".xml", ".html", ".png", ".svg", ".csv")  # report files taken from report_dir
PACKAGES = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "numpy",
    "lightning",
    "torchmetrics",
    "datasets",
    "scipy",
    "scikit-learn",
    "onnx",
    "onnxruntime",
    "faiss-cpu",
    "hypothesis",
    "pytest",
    "ml-harness",
)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: a member's bytes depend on its content only


class BundleError(StoreError):
    """A bundle is unreadable or does not match its manifest."""


@dataclass(frozen=True)
class Bundle:
    """A verified bundle, read into memory."""

    path: Path  # the zip file read
    manifest: dict[str, Any]  # MANIFEST.json
    files: dict[str, bytes]  # member name -> bytes, every member but MANIFEST.json

    def json(self, name: str) -> Any:
        """The JSON member ``name`` parsed; KeyError naming it if the bundle has no such member."""
        if name not in self.files:
            raise KeyError(f"bundle {self.path} has no member {name!r}; members: {sorted(self.files)}")
        return json.loads(self.files[name])

    @property
    def config(self) -> dict[str, Any]:
        return self.json("config.json")

    @property
    def environment(self) -> dict[str, Any]:
        return self.json("environment.json")

    @property
    def summary(self) -> dict[str, Any]:
        return self.json("summary.json")

    @property
    def metrics(self) -> list[MetricRow]:
        """metrics.csv parsed back into rows (NaN where NaN was logged)."""
        reader = csv.DictReader(io.StringIO(self.files["metrics.csv"].decode()))
        return [MetricRow(int(row["step"]), row["name"], float(row["value"])) for row in reader]


def _strict(value: Any) -> Any:
    """``value`` with non-finite floats as strings, so the JSON written is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(item) for item in value]
    return value


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(_strict(value), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()


def environment_snapshot(seeds: dict[str, Any] | None = None) -> dict[str, Any]:
    """Package versions, interpreter, platform, CPU/CUDA hardware and torch determinism flags of this process."""
    import torch

    cuda = torch.cuda.is_available()
    cudnn = torch.backends.cudnn
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "captured": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": package_versions(PACKAGES),
        "hardware": {
            "cpu_count": os.cpu_count(),
            "cpu_affinity": affinity,  # CPUs this process may run on
            "torch_threads": torch.get_num_threads(),
            "cuda_available": cuda,
            "cuda_version": torch.version.cuda,
            "cuda_devices": [torch.cuda.get_device_name(index) for index in range(torch.cuda.device_count())]
            if cuda
            else [],
        },
        "seeds": {**(seeds or {}), "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED")},
        "determinism": {
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "cudnn_enabled": cudnn.enabled,
            "cudnn_deterministic": cudnn.deterministic,
            "cudnn_benchmark": cudnn.benchmark,
            "cudnn_version": cudnn.version() if cudnn.is_available() else None,
            "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        },
    }


def _metrics_csv(rows: list[MetricRow]) -> bytes:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["step", "name", "value"])
    writer.writerows([row.step, row.name, repr(row.value)] for row in rows)
    return text.getvalue().encode()


def _report_members(report_dir: Path) -> dict[str, bytes]:
    if not report_dir.is_dir():
        raise FileNotFoundError(f"report_dir {report_dir} is not a directory")
    return {
        "report/" + file.relative_to(report_dir).as_posix(): file.read_bytes()
        for file in sorted(report_dir.rglob("*"))
        if file.is_file() and file.suffix.lower() in REPORT_SUFFIXES
    }


def _extra_members(extra_files: Iterable[str | Path]) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for entry in extra_files:
        file = Path(entry)
        if not file.is_file():
            raise FileNotFoundError(f"extra_files entry {file} is not a file")
        name = f"files/{file.name}"
        if name in members:
            raise ValueError(f"extra_files has two files named {file.name!r}; bundle member names must be unique")
        members[name] = file.read_bytes()
    return members


def write_bundle(
    db: ExperimentDB,
    run_id: str,
    path: str | Path,
    *,
    report_dir: Path | None = None,
    extra_files: Iterable[str | Path] = (),
) -> Path:
    """Write the bundle of ``run_id`` to ``path`` atomically and return ``path``; an existing file is never replaced.

    ``report_dir``: a report directory whose .json/.xml/.html/.png/.svg/.csv files (recursively) go under
    ``report/``. ``extra_files``: more files (checkpoints, configs) stored under ``files/<file name>``.
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"bundle {path} already exists; refusing to overwrite it")
    run = db.get_run(run_id)
    record = asdict(run)
    config = record.pop("config")
    seeds = {"run_seed": run.seed, "config_seed": config.get("seed")}
    members = {
        "config.json": _json_bytes(config),
        "environment.json": _json_bytes(environment_snapshot(seeds)),
        "metrics.csv": _metrics_csv(db.metrics(run_id)),
        "summary.json": _json_bytes(record),
        "checks.json": _json_bytes(db.check_results(run_id)),
    }
    if report_dir is not None:
        members.update(_report_members(Path(report_dir)))
    members.update(_extra_members(extra_files))
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "run_id": run_id,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "members": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in members.items()
        },
    }
    with atomic_path(path, fsync=True, publish=_publish) as temporary:  # never replaces: _publish refuses
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in [*members.items(), (MANIFEST, _json_bytes(manifest))]:
                archive.writestr(zipfile.ZipInfo(name, _ZIP_TIME), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


def _publish(temporary: Path, path: Path) -> None:
    """Give ``temporary`` the name ``path`` unless ``path`` exists (a hard link fails rather than replace)."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise FileExistsError(f"bundle {path} already exists; refusing to overwrite it") from None
    except OSError:  # a filesystem without hard links: check, then rename
        if path.exists():
            raise FileExistsError(f"bundle {path} already exists; refusing to overwrite it") from None
        os.replace(temporary, path)


def read_bundle(path: str | Path) -> Bundle:
    """Read the bundle at ``path`` and verify every member against MANIFEST.json; BundleError on any mismatch."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bundle {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            contents = {info.filename: archive.read(info) for info in archive.infolist()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as error:
        raise BundleError(f"bundle {path} is not a readable zip file: {error}") from error
    if MANIFEST not in contents:
        raise BundleError(f"bundle {path} has no {MANIFEST}")
    try:
        manifest = json.loads(contents.pop(MANIFEST))
    except ValueError as error:
        raise BundleError(f"bundle {path}: {MANIFEST} is not valid JSON: {error}") from error
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle {path}: {MANIFEST} format must be {BUNDLE_FORMAT!r}")
    if manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"bundle {path} has version {manifest.get('version')!r}; this harness reads {BUNDLE_VERSION}")
    listed = manifest.get("members", {})
    missing = sorted(set(listed) - set(contents))
    unlisted = sorted(set(contents) - set(listed))
    if missing or unlisted:
        raise BundleError(f"bundle {path}: members missing {missing}, members not in the manifest {unlisted}")
    for name, data in contents.items():
        digest = hashlib.sha256(data).hexdigest()
        if digest != listed[name].get("sha256"):
            raise BundleError(
                f"bundle {path}: member {name!r} has SHA-256 {digest}, the manifest says {listed[name].get('sha256')}"
            )
    return Bundle(path=path, manifest=manifest, files=contents)

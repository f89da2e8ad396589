"""harness.store: the ExperimentDB (an SQLite file, or a PostgreSQL database by URL) and reproducibility bundles."""

import os
from pathlib import Path

from harness.store.bundle import Bundle, BundleError, environment_snapshot, read_bundle, write_bundle
from harness.store.db import (
    SCHEMA_VERSION,
    ExperimentDB,
    MetricRow,
    ProfileRecord,
    RunRecord,
    SchemaVersionError,
    StoreError,
    SweepRecord,
)


def default_db_path() -> Path:
    """``$HARNESS_DB``, else ``reports/experiments.db``: where runs, sweeps and profiles are recorded."""
    return Path(os.environ.get("HARNESS_DB") or Path("reports") / "experiments.db")


__all__ = [
    "default_db_path",
    "SCHEMA_VERSION",
    "Bundle",
    "BundleError",
    "ExperimentDB",
    "MetricRow",
    "ProfileRecord",
    "RunRecord",
    "SchemaVersionError",
    "StoreError",
    "SweepRecord",
    "environment_snapshot",
    "read_bundle",
    "write_bundle",
]

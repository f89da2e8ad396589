"""harness.store: the ExperimentDB (SQLite, WAL) and reproducibility bundles."""

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

__all__ = [
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

"""ExperimentDB: every method round-trips, unknown ids raise KeyError naming them, migrations upgrade in place,
newer and corrupt files are refused untouched, a SIGKILLed writer loses no committed row, and concurrent writer
processes lose no rows.

The tests taking ``db`` or ``store_target`` run on both backends, an SQLite file and a PostgreSQL database
(tests/store_targets.py: those skip without a server); tests/test_store_postgres.py has PostgreSQL's own.
"""

from __future__ import annotations

import math
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from store_targets import postgres_url, store_target  # noqa: F401  (fixtures)

from harness.result import CheckResult, Status
from harness.store import SCHEMA_VERSION, ExperimentDB, MetricRow, SchemaVersionError, StoreError, backends
from harness.store import db as db_module
from harness.store.db import MIGRATIONS, apply_migrations

WRITER = Path(__file__).with_name("store_writer.py")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(store_target: str | Path):  # noqa: F811
    with ExperimentDB(store_target) as store:
        yield store


def _writer(*arguments: object, **popen) -> subprocess.Popen:
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, str(WRITER), *map(str, arguments)], env=environment, **popen)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


# ---- round trips ----


def test_a_run_round_trips_from_start_to_finish(db: ExperimentDB):
    config = {"lr": 1e-3, "layers": [2, 4], "nested": {"scheduler": "cosine", "warmup": 0}}
    run_id = db.start_run(name="baseline", config=config, model="tiny-gpt", seed=7)
    started = db.get_run(run_id)
    assert (started.run_id, started.name, started.model, started.status) == (run_id, "baseline", "tiny-gpt", "running")
    assert (started.config, started.params, started.sweep_id, started.seed) == (config, {}, None, 7)
    assert (started.summary, started.checkpoint, started.finished) == ({}, None, None)

    db.finish_run(run_id, summary={"val_loss": 2.5, "diverged": math.inf}, checkpoint="/ckpt/last.ckpt")
    finished = db.get_run(run_id)
    assert finished.status == "finished" and finished.checkpoint == "/ckpt/last.ckpt"
    assert finished.summary == {"val_loss": 2.5, "diverged": math.inf}
    assert finished.finished is not None and finished.finished >= finished.created
    assert finished.config == config and finished.created == started.created


def test_metrics_come_back_ordered_by_step_then_name_and_a_relogged_value_replaces(db: ExperimentDB):
    run_id = db.start_run(name="m", config={}, model="tiny")
    db.log_metrics(run_id, 2, {"val_loss": 1.5, "train_loss": 1.25})
    db.log_metrics(run_id, 0, {"train_loss": 3.0})
    db.log_metrics(run_id, 1, {"train_loss": torch.tensor(2.0), "grad_norm": math.nan, "lr": 0})
    db.log_metrics(run_id, 2, {"val_loss": 1.4})
    rows = db.metrics(run_id)
    assert [(row.step, row.name) for row in rows] == [
        (0, "train_loss"),
        (1, "grad_norm"),
        (1, "lr"),
        (1, "train_loss"),
        (2, "train_loss"),
        (2, "val_loss"),
    ]
    assert math.isnan(rows[1].value)
    assert [row.value for row in rows if row.name != "grad_norm"] == [3.0, 0.0, 2.0, 1.25, 1.4]
    assert all(isinstance(row, MetricRow) and isinstance(row.value, float) for row in rows)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=12),
        st.floats(allow_nan=False, width=64),
        min_size=1,
        max_size=6,
    ),
    st.integers(0, 2**62),
)
def test_any_metric_dict_round_trips_exactly(metrics: dict[str, float], step: int):
    with tempfile.TemporaryDirectory() as directory, ExperimentDB(Path(directory) / "p.db") as store:
        run_id = store.start_run(name="p", config={"metrics": metrics}, model="m")
        store.log_metrics(run_id, step, metrics)
        assert store.metrics(run_id) == [MetricRow(step, name, metrics[name]) for name in sorted(metrics)]
        assert store.get_run(run_id).config == {"metrics": metrics}


def test_runs_filter_by_status_and_sweep_in_start_order(db: ExperimentDB):
    first = db.start_run(name="a", config={}, model="m")
    second = db.start_run(name="b", config={}, model="m")
    third = db.start_run(name="c", config={}, model="m")
    db.finish_run(second, status="failed", summary={"error": "nan loss"})
    db.finish_run(third, status="interrupted")
    assert [run.run_id for run in db.runs()] == [first, second, third]
    assert [run.run_id for run in db.runs(status="running")] == [first]
    assert [run.run_id for run in db.runs(status="failed")] == [second]
    assert db.get_run(third).status == "interrupted"


def test_a_sweep_holds_its_runs_with_their_parameters(db: ExperimentDB):
    grid = {"lr": [1e-3, 1e-2], "batch_size": [2, 4]}
    sweep_id = db.create_sweep(name="lr-x-batch", grid=grid)
    other = db.create_sweep(name="other", grid={"seed": [0]})
    db.start_run(name="outside", config={}, model="m")
    members = []
    for lr in grid["lr"]:
        for batch_size in grid["batch_size"]:
            params = {"lr": lr, "batch_size": batch_size}
            members.append(
                db.start_run(name=f"{lr}-{batch_size}", config=params, model="m", sweep_id=sweep_id, params=params)
            )
    in_sweep = db.runs(sweep_id=sweep_id)
    assert [run.run_id for run in in_sweep] == members
    assert [run.params for run in in_sweep] == [
        {"lr": lr, "batch_size": b} for lr in grid["lr"] for b in grid["batch_size"]
    ]
    assert all(run.sweep_id == sweep_id for run in in_sweep)
    assert db.runs(sweep_id=other) == []
    sweeps = db.sweeps()
    assert [(s.sweep_id, s.name, s.grid) for s in sweeps] == [
        (sweep_id, "lr-x-batch", grid),
        (other, "other", {"seed": [0]}),
    ]


def test_profiles_save_load_and_list_by_model(db: ExperimentDB):
    body = {"logits": {"mean": 0.1, "quantiles": [0.0, 0.5, 1.0]}, "n": 512}
    first = db.save_profile(name="ref-2026-11", model="tiny-gpt", profile=body)
    second = db.save_profile(name="ref-cnn", model="digits-cnn", profile={"n": 3})
    third = db.save_profile(name="ref-2026-12", model="tiny-gpt", profile={"n": 1024})
    assert db.load_profile(first) == body and db.load_profile(third) == {"n": 1024}
    assert [p.profile_id for p in db.profiles()] == [first, second, third]
    newest = db.profiles("tiny-gpt")
    assert [(p.profile_id, p.name, p.model) for p in newest] == [
        (first, "ref-2026-11", "tiny-gpt"),
        (third, "ref-2026-12", "tiny-gpt"),
    ]
    assert db.profiles("unknown-model") == []


def test_check_results_round_trip_attached_to_a_run_or_to_none(db: ExperimentDB):
    run_id = db.start_run(name="r", config={}, model="tiny")
    result = CheckResult("overfit_one_batch", "tiny", 3, Status.FAILED, "Loss falls", measured=math.nan, threshold=0.1)
    row = {"test_id": "suites/tier3/test_tier3.py::test_overfit[tiny]", **result.to_dict(), "duration_s": 0.5}
    passed = {**row, "status": "passed", "check": "resume_equivalence"}
    db.record_check(run_id=run_id, row=row)
    db.record_check(run_id=run_id, row=passed)
    db.record_check(run_id=None, row={"check": "batch_independence", "status": "skipped"})
    assert db.check_results(run_id) == [row, passed]
    assert db.check_results(None) == [{"check": "batch_independence", "status": "skipped"}]
    assert db.check_results(db.start_run(name="empty", config={}, model="tiny")) == []


def test_rows_persist_across_reopen_and_pickling_reopens_the_same_file(tmp_path: Path):
    path = tmp_path / "nested" / "dir" / "e.db"
    with ExperimentDB(path) as store:
        run_id = store.start_run(name="p", config={"a": 1}, model="m")
        store.log_metrics(run_id, 0, {"loss": 1.0})
        copy = pickle.loads(pickle.dumps(store))
        copy.log_metrics(run_id, 1, {"loss": 0.5})
        copy.close()
    with ExperimentDB(path) as store:
        assert [row.value for row in store.metrics(run_id)] == [1.0, 0.5]
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    raw.close()


def test_a_closed_store_raises_store_error_naming_the_path(tmp_path: Path):
    store = ExperimentDB(tmp_path / "c.db")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="c.db is closed"):
        store.runs()


def test_threads_sharing_one_instance_lose_no_rows(db: ExperimentDB):
    run_id = db.start_run(name="t", config={}, model="m")

    def log(offset: int) -> None:
        for step in range(offset, 200, 4):
            db.log_metrics(run_id, step, {"loss": float(step)})

    threads = [threading.Thread(target=log, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [row.step for row in db.metrics(run_id)] == list(range(200))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reopens_instead_of_reusing_the_parents_connection(db: ExperimentDB):
    run_id = db.start_run(name="f", config={}, model="m")
    pid = os.fork()
    if pid == 0:  # child: only SQLite work, then leave without running pytest's teardown
        code = 1
        try:
            db.log_metrics(run_id, 1, {"loss": 1.0})
            db.close()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    db.log_metrics(run_id, 2, {"loss": 2.0})
    assert [row.step for row in db.metrics(run_id)] == [1, 2]


# ---- errors ----


@pytest.mark.parametrize(
    "call",
    [
        lambda db: db.get_run("nope-123"),
        lambda db: db.metrics("nope-123"),
        lambda db: db.log_metrics("nope-123", 0, {"loss": 1.0}),
        lambda db: db.finish_run("nope-123"),
        lambda db: db.load_profile("nope-123"),
        lambda db: db.check_results("nope-123"),
        lambda db: db.record_check(run_id="nope-123", row={"check": "c", "status": "passed"}),
        lambda db: db.start_run(name="r", config={}, model="m", sweep_id="nope-123"),
        lambda db: db.runs(sweep_id="nope-123"),
    ],
    ids=[
        "get_run",
        "metrics",
        "log_metrics",
        "finish_run",
        "load_profile",
        "check_results",
        "record_check",
        "start_run",
        "runs",
    ],
)
def test_unknown_ids_raise_key_error_naming_the_id_and_write_nothing(db: ExperimentDB, call):
    with pytest.raises(KeyError, match="nope-123"):
        call(db)
    assert db.runs() == [] and db.check_results(None) == []


@pytest.mark.parametrize(
    ("call", "error", "names"),
    [
        (lambda db, r: db.finish_run(r, status="done"), ValueError, "status.*'done'"),
        (lambda db, r: db.runs(status="done"), ValueError, "status.*'done'"),
        (lambda db, r: db.log_metrics(r, -1, {"loss": 1.0}), ValueError, "step.*-1"),
        (lambda db, r: db.log_metrics(r, 1.5, {"loss": 1.0}), ValueError, "step.*1.5"),
        (lambda db, r: db.log_metrics(r, 0, {"loss": "low"}), TypeError, "metric 'loss'.*'low'"),
        (lambda db, r: db.log_metrics(r, 0, {"": 1.0}), ValueError, "metric name"),
        (lambda db, r: db.start_run(name="x", config={"path": Path("/a")}, model="m"), TypeError, "config.*JSON"),
        (lambda db, r: db.start_run(name="x", config=[1], model="m"), TypeError, "config must be a dict"),
        (lambda db, r: db.start_run(name="", config={}, model="m"), ValueError, "name.*''"),
        (lambda db, r: db.start_run(name="x", config={}, model="m", seed="0"), TypeError, "seed.*'0'"),
        (lambda db, r: db.create_sweep(name="s", grid={}), ValueError, "grid"),
        (lambda db, r: db.create_sweep(name="s", grid={"lr": []}), ValueError, r"grid\['lr'\]"),
        (lambda db, r: db.record_check(run_id=r, row={"status": "passed"}), ValueError, r"row\['check'\]"),
        (lambda db, r: db.save_profile(name="p", model="m", profile={"x": object()}), TypeError, "profile.*JSON"),
    ],
)
def test_bad_arguments_raise_errors_naming_the_parameter_and_value(db: ExperimentDB, call, error, names):
    run_id = db.start_run(name="r", config={}, model="m")
    with pytest.raises(error, match=names):
        call(db, run_id)
    assert db.metrics(run_id) == [] and db.check_results(run_id) == [] and len(db.runs()) == 1


# ---- schema versions, migrations, corrupt files ----


def test_each_migration_raises_user_version_by_one(tmp_path: Path):
    connection = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    for target in range(SCHEMA_VERSION + 1):
        apply_migrations(connection, target=target)
        assert connection.execute("PRAGMA user_version").fetchone()[0] == target
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 2
    connection.close()


def test_a_version_1_database_is_upgraded_in_place_with_its_rows_intact(tmp_path: Path):
    path = tmp_path / "v1.db"
    connection = sqlite3.connect(path, isolation_level=None)
    apply_migrations(connection, target=1)
    assert "checkpoint" not in {row[1] for row in connection.execute("PRAGMA table_info(runs)")}
    connection.execute(
        "INSERT INTO sweeps (sweep_id, seq, name, grid, created) VALUES ('s1', 1, 'old', '{\"lr\": [0.1]}', '2026-01-01')"
    )
    connection.execute(
        "INSERT INTO runs (run_id, seq, name, model, status, config, params, sweep_id, seed, summary, created, finished)"
        " VALUES ('r1', 1, 'old-run', 'tiny', 'finished', '{\"lr\": 0.1}', '{\"lr\": 0.1}', 's1', 3,"
        " '{\"val_loss\": 2.0}', '2026-01-01', '2026-01-02')"
    )
    connection.executemany("INSERT INTO metrics VALUES ('r1', ?, 'loss', ?)", [(0, 3.0), (1, 2.0)])
    connection.close()

    with ExperimentDB(path) as store:
        run = store.get_run("r1")
        assert (run.name, run.model, run.status, run.config, run.params, run.sweep_id, run.seed) == (
            "old-run",
            "tiny",
            "finished",
            {"lr": 0.1},
            {"lr": 0.1},
            "s1",
            3,
        )
        assert (run.summary, run.checkpoint, run.created, run.finished) == (
            {"val_loss": 2.0},
            None,
            "2026-01-01",
            "2026-01-02",
        )
        assert store.metrics("r1") == [MetricRow(0, "loss", 3.0), MetricRow(1, "loss", 2.0)]
        assert [(s.sweep_id, s.grid) for s in store.sweeps()] == [("s1", {"lr": [0.1]})]
        store.record_check(run_id="r1", row={"check": "c", "status": "passed"})  # version-2 tables work
        store.finish_run("r1", checkpoint="/ckpt/r1.ckpt")
        new_run = store.start_run(name="new", config={}, model="tiny", sweep_id="s1")
        assert [r.run_id for r in store.runs(sweep_id="s1")] == ["r1", new_run]
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    raw.close()


def test_a_database_from_a_newer_schema_is_refused_naming_both_versions(tmp_path: Path):
    path = tmp_path / "future.db"
    ExperimentDB(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    raw.close()
    before = _snapshot(tmp_path)
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 5}.*version {SCHEMA_VERSION}"):
        ExperimentDB(path)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "content",
    [b"this is a CSV, not a database\n1,2,3\n" * 40, b"SQLite format 3\x00" + bytes(range(256)) * 20],
    ids=["not-sqlite", "sqlite-header-then-garbage"],
)
def test_a_corrupt_file_raises_store_error_naming_the_path_and_is_not_modified(tmp_path: Path, content: bytes):
    path = tmp_path / "corrupt.db"
    path.write_bytes(content)
    with pytest.raises(StoreError, match="corrupt.db"):
        ExperimentDB(path)
    assert _snapshot(tmp_path) == {"corrupt.db": content}


def test_a_lock_held_too_long_is_reported_as_a_lock_not_as_corruption(tmp_path: Path, monkeypatch):
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)  # rollback-journal mode: an exclusive lock blocks readers
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE t (x)")
    monkeypatch.setattr(backends, "BUSY_TIMEOUT_MS", 50)
    try:
        with pytest.raises(StoreError, match="busy.db stayed locked by another process"):
            ExperimentDB(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with ExperimentDB(path) as store:  # once the lock is gone the (still empty) file opens and is migrated
        assert store.runs() == []


def test_a_directory_path_is_refused(tmp_path: Path):
    with pytest.raises(StoreError, match="not a file"):
        ExperimentDB(tmp_path)


# ---- crashes and concurrency ----


def test_a_sigkilled_writer_leaves_every_committed_row_readable(store_target: str | Path, tmp_path: Path):  # noqa: F811
    path, progress = store_target, tmp_path / "progress.txt"
    per_step = 25
    child = _writer("loop", path, progress, per_step, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while not progress.exists() or len(progress.read_text().splitlines()) < 40:
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the writer committed too few steps"
            time.sleep(0.01)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    lines = progress.read_text().split("\n")
    run_id = lines[0].removeprefix("run ")
    committed = int([line for line in lines[1:-1] if line][-1])  # the last complete line

    _assert_intact(path)
    with ExperimentDB(path) as store:
        rows = store.metrics(run_id)
        steps = sorted({row.step for row in rows})
        assert steps[:committed] == list(range(committed))
        assert len(steps) in (committed, committed + 1)  # a commit may land just before its progress line
        assert len(rows) == per_step * len(steps)  # no step half written
        run = store.get_run(run_id)  # its process is gone: marked interrupted on open
        assert (run.status, run.summary["interrupted"]) == ("interrupted", f"process {child.pid} on {db_module.HOST} "
                                                                           "ended before the run finished")  # fmt: skip
        store.finish_run(run_id, status="failed")  # the file takes writes again
        assert store.get_run(run_id).status == "failed"


def test_concurrent_writer_processes_lose_no_rows(store_target: str | Path, tmp_path: Path):  # noqa: F811
    path, go = store_target, tmp_path / "go"
    processes, runs, steps = 4, 5, 15
    children = [
        _writer("batch", path, go, f"w{index}", runs, steps, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for index in range(processes)
    ]
    go.touch()  # all start together on a file none has created yet: the migrations race too
    outputs = [child.communicate(timeout=120) for child in children]
    for child, (stdout, stderr) in zip(children, outputs, strict=True):
        assert child.returncode == 0 and stdout.decode().strip() == "done", stderr.decode()
    with ExperimentDB(path) as store:
        all_runs = store.runs()
        assert len(all_runs) == processes * runs
        assert sorted(run.name for run in all_runs) == sorted(
            f"w{p}-{r}" for p in range(processes) for r in range(runs)
        )
        assert all(run.status == "finished" for run in all_runs)
        assert sum(len(store.metrics(run.run_id)) for run in all_runs) == processes * runs * steps
    assert _count_metrics(path) == processes * runs * steps
    _assert_intact(path)


def _count_metrics(target: str | Path) -> int:
    """The metrics table's row count, read by the engine's own driver, not through the ExperimentDB."""
    if isinstance(target, Path):
        raw = sqlite3.connect(target)
        count = raw.execute("SELECT count(*) FROM metrics").fetchone()[0]
        raw.close()
        return count
    import psycopg

    with psycopg.connect(target) as raw:
        return raw.execute("SELECT count(*) FROM metrics").fetchone()[0]


def _assert_intact(target: str | Path) -> None:
    """SQLite's integrity check passes (a PostgreSQL server guards its own files)."""
    if isinstance(target, Path):
        raw = sqlite3.connect(target)
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        raw.close()

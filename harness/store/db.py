"""ExperimentDB: runs, configs, per-step metrics, sweeps, reference profiles and check results (SQLite, PostgreSQL).

``ExperimentDB(path)`` keeps the store in one SQLite file (the default everywhere); ``ExperimentDB(url)`` with a
``postgresql://USER@HOST[:PORT]/DBNAME`` URL keeps it in a PostgreSQL database, so many CI runners share one store
(:mod:`harness.store.backends`: the one place where the two engines differ). Both run the same migrations and
queries and behave the same; what follows is said of SQLite and holds for PostgreSQL as noted.

One file, many writers: the database runs in WAL mode with a busy timeout, and every write is its own short
``BEGIN IMMEDIATE`` transaction, so pytest-xdist workers and training processes can share a file, and a process
killed mid-way (SIGKILL included) leaves every committed row readable. ``synchronous=NORMAL`` is used (the
recommended WAL setting): a committed row survives any process crash; only an operating-system crash or power
loss can drop the last few commits. On PostgreSQL every write takes an advisory transaction lock instead
(``pg_advisory_xact_lock``), which serialises the writers of every machine the same way.

The schema is versioned with ``PRAGMA user_version`` (PostgreSQL: the ``harness_schema`` table) and built by
:data:`MIGRATIONS`, applied in order on open.
Nothing but an ExperimentDB is ever changed: the file is checked, reading only, before its journal mode is set or
a table is added, and refused untouched (:class:`StoreError`) when it is not an SQLite database, is an SQLite
database without the harness's tables (someone else's), or was written by a newer harness
(:class:`SchemaVersionError`). A path that does not exist is created by the first write, never by opening or
reading: a mistyped path given to read from is an error naming it, not a new empty database. A PostgreSQL database
is opened (checked, migrated) at once: an unreachable server, a failed login or a missing database is one
StoreError line naming the server (its password redacted) and what to do, raised before any work.

A run records the process (pid and host) that started it. On open, a run still marked "running" whose process
on this host is gone is marked "interrupted": a killed ``harness train`` never leaves a run running forever.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import secrets
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cache import process_exists
from harness.store.backends import Location, Session, location_of, session_of
from harness.store.errors import SchemaVersionError, StoreError

FINISH_STATUSES = ("finished", "failed", "interrupted")  # what finish_run accepts; a new run is "running"
RUN_STATUSES = ("running", *FINISH_STATUSES)

# One SQL script per schema version: MIGRATIONS[i] takes a database from version i to version i + 1.
# Append only: a released migration is never edited, a change is a new entry. Written in SQLite's spelling;
# harness.store.backends.postgres_spelling runs the same scripts on PostgreSQL.
MIGRATIONS: tuple[str, ...] = (
    # 1: runs with their configs, per-step metrics, grid sweeps.
    """
    CREATE TABLE sweeps (
        sweep_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        name TEXT NOT NULL,
        grid TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        name TEXT NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL,
        config TEXT NOT NULL,
        params TEXT NOT NULL,
        sweep_id TEXT REFERENCES sweeps(sweep_id),
        seed INTEGER,
        summary TEXT NOT NULL,
        created TEXT NOT NULL,
        finished TEXT
    );
    CREATE INDEX runs_by_sweep ON runs(sweep_id);
    CREATE TABLE metrics (
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        PRIMARY KEY (run_id, step, name)
    ) WITHOUT ROWID;
    """,
    # 2: run checkpoints, Tier 5 reference profiles, check results (report rows).
    """
    ALTER TABLE runs ADD COLUMN checkpoint TEXT;
    CREATE TABLE profiles (
        profile_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        name TEXT NOT NULL,
        model TEXT NOT NULL,
        profile TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX profiles_by_model ON profiles(model);
    CREATE TABLE check_results (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT REFERENCES runs(run_id),
        check_name TEXT NOT NULL,
        status TEXT NOT NULL,
        row TEXT NOT NULL,
        created TEXT NOT NULL
    );
    CREATE INDEX check_results_by_run ON check_results(run_id);
    """,
    # 3: the process that started a run, so a run whose process is gone can be marked interrupted.
    """
    ALTER TABLE runs ADD COLUMN pid INTEGER;
    ALTER TABLE runs ADD COLUMN host TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)  # the version this code writes and reads
HOST = socket.gethostname()  # recorded with each run's pid: a pid means something only on its own host


def schema_tables(version: int) -> set[str]:
    """The tables MIGRATIONS[:version] create: what a file of that schema version must hold."""
    return {name for script in MIGRATIONS[:version] for name in re.findall(r"CREATE TABLE (\w+)", script)}


def db_target(given: str | Path | None) -> str | Path | None:
    """The ExperimentDB a command records to: ``given`` (a file or URL from its command line or config), else
    ``$HARNESS_DB_URL``, else None (no store)."""
    return given or os.environ.get("HARNESS_DB_URL") or None


@dataclass(frozen=True)
class RunRecord:
    """One training (or evaluation) run."""

    run_id: str  # unique id, e.g. "20261122-031042-5f1c2a9b0d3e"
    name: str  # human-readable name given to start_run
    model: str  # ModelSpec.name of the trained model
    status: str  # one of RUN_STATUSES
    config: dict[str, Any]  # the run's full configuration (JSON)
    params: dict[str, Any]  # the sweep parameters of this run ({} outside a sweep)
    sweep_id: str | None  # the sweep this run belongs to, if any
    seed: int | None  # the run's seed, if given
    summary: dict[str, Any]  # final metrics and notes given to finish_run ({} while running)
    checkpoint: str | None  # path of the final checkpoint, if any
    created: str  # ISO 8601 UTC start time
    finished: str | None  # ISO 8601 UTC finish time (None while running)


@dataclass(frozen=True)
class MetricRow:
    """One metric value of a run at one step."""

    step: int  # the optimizer step (or epoch, as the caller logs it)
    name: str  # metric name, e.g. "train_loss"
    value: float  # the value (NaN if NaN was logged)


@dataclass(frozen=True)
class SweepRecord:
    """A grid sweep: its parameter grid; its runs carry its sweep_id."""

    sweep_id: str  # unique id
    name: str  # human-readable name
    grid: dict[str, list[Any]]  # parameter name -> values tried
    created: str  # ISO 8601 UTC creation time


@dataclass(frozen=True)
class ProfileRecord:
    """A stored reference profile (Tier 5), without its body: ``load_profile(profile_id)`` returns that."""

    profile_id: str  # unique id
    name: str  # human-readable name
    model: str  # ModelSpec.name the profile was measured on
    created: str  # ISO 8601 UTC creation time


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def _new_id() -> str:
    """UTC time to the second plus 48 random bits: sortable by eye, unique across concurrent writers."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(6)


def _dumps(value: Any, parameter: str) -> str:
    """JSON text of ``value``; NaN and infinities round-trip (the store is read back by Python)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{parameter} must be a dict, got {type(value).__name__}: {value!r}")
    try:
        return json.dumps(dict(value), sort_keys=True)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{parameter} must be JSON-serialisable: {error}") from error


def _check_name(value: Any, parameter: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{parameter} must be a non-empty string, got {value!r}")
    return value


def _check_id(value: Any, parameter: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{parameter} must be a string id, got {type(value).__name__}: {value!r}")
    return value


def apply_migrations(connection: Session | sqlite3.Connection | Any, target: int = SCHEMA_VERSION) -> int:
    """Bring ``connection``'s database up to schema version ``target`` in one write transaction.

    Safe when several processes open a fresh database at once: the version is re-read under the store's write
    lock (SQLite's immediate transaction, PostgreSQL's advisory lock), so each migration runs exactly once.
    Returns the version found before migrating. ``connection``: an sqlite3 connection in autocommit mode
    (``isolation_level=None``), a psycopg connection with ``autocommit=True``, or a Session.
    """
    if not 0 <= target <= SCHEMA_VERSION:
        raise ValueError(f"target must be in [0, {SCHEMA_VERSION}], got {target}")
    session = session_of(connection)
    session.begin_write()
    try:
        found = session.version()
        for version in range(found, target):
            for statement in MIGRATIONS[version].split(";"):
                if statement.strip():
                    session.execute(statement)
            session.set_version(version + 1)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return found


class ExperimentDB:
    """An experiment store in one SQLite file or one PostgreSQL database; open it in every process that writes,
    close it when done.

    Usable as a context manager. Safe to share a store between processes; one instance may be used from
    several threads (calls are serialised). Pickling an instance pickles its target (path or URL), so it can be
    handed to a spawned worker, which reopens the store.
    """

    def __init__(self, target: str | Path) -> None:
        self._target = target
        self._location: Location = location_of(target)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._closed = False
        self._session: Session | None = None  # None until the store exists (the first write makes a file)
        if self._location.exists():
            self._session = self._open()
        else:
            self._location.check_creatable()  # created by the first write: it must be possible

    def __reduce__(self) -> tuple[type[ExperimentDB], tuple[str | Path]]:
        return (type(self), (self._target,))

    def __repr__(self) -> str:
        return f"ExperimentDB({self.target!r})"

    @property
    def target(self) -> str:
        """The store's path, or its URL with the password redacted: what messages call it."""
        return self._location.name

    def __enter__(self) -> ExperimentDB:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; further calls raise StoreError. Closing twice is harmless."""
        with self._lock:
            if self._session is not None and self._pid == os.getpid():
                self._session.close()
            self._session = None
            self._closed = True

    # ---- connection management ----

    def _open(self) -> Session:
        session = self._location.connect()
        try:
            version = self._refuse_foreign(session)  # reading only: nothing changes before the store is ours
            session.prepare()
            if version < SCHEMA_VERSION:
                apply_migrations(session)
            self._mark_interrupted(session)
        except session.errors as error:
            session.close()
            raise StoreError(self._location.describe(error, "could not be opened (settings, migrations)")) from error
        except StoreError:
            session.close()
            raise
        return session

    def _refuse_foreign(self, session: Session) -> int:
        """The store's schema version; StoreError unless it is an ExperimentDB this code reads, or an empty database."""
        where = self._location
        try:
            version, tables = session.schema_state()
        except session.errors as error:
            raise StoreError(where.describe(error, f"is not a readable {session.engine} database")) from error
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"ExperimentDB {where.label} has schema version {version}, newer than version {SCHEMA_VERSION} "
                f"that this harness supports; upgrade ml-harness to open it (the {where.noun} was not modified)"
            )
        missing = schema_tables(version) - tables
        if (version == 0 and tables) or missing:
            found = ", ".join(sorted(tables)) or "none"
            raise StoreError(
                f"ExperimentDB {where.label} is {session.a_database} but not an ExperimentDB (schema version "
                f"{version}, tables: {found}); point at another {where.other}, the {where.noun} was not modified"
            )
        return version

    @staticmethod
    def _mark_interrupted(session: Session) -> None:
        """Mark "interrupted" every running run started on this host by a process that no longer exists."""
        rows = session.execute(
            "SELECT run_id, pid FROM runs WHERE status = 'running' AND host = ? AND pid IS NOT NULL", (HOST,)
        ).fetchall()
        gone = [(run_id, pid) for run_id, pid in rows if not process_exists(pid)]
        if not gone:
            return
        session.begin_write()
        try:
            for run_id, pid in gone:
                note = {"interrupted": f"process {pid} on {HOST} ended before the run finished"}
                session.execute(
                    "UPDATE runs SET status = 'interrupted', summary = ?, finished = ?"
                    " WHERE run_id = ? AND status = 'running'",
                    (json.dumps(note), _now(), run_id),
                )
            session.commit()
        except BaseException:
            session.rollback()
            raise

    def _conn(self, *, create: bool = False) -> Session | None:
        """The open session; None while the file does not exist, unless ``create`` (writes do, reads never)."""
        if self._closed:
            raise StoreError(f"ExperimentDB {self.target} is closed")
        if self._pid != os.getpid():  # forked: a connection must not cross fork, open our own
            self._pid = os.getpid()
            self._session = None
        if self._session is None:
            if not create and not self._location.exists():
                return None
            self._session = self._open()
        return self._session

    def _absent(self) -> str:
        """What a KeyError adds when the file does not exist: a mistyped path reads as one."""
        return "" if self._location.exists() else f": {self.target} does not exist (nothing was ever recorded there)"

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """One short transaction holding the store's write lock: committed on exit, rolled back on any error."""
        with self._lock:
            session = self._conn(create=True)
            assert session is not None
            session.begin_write()
            try:
                yield session
            except BaseException:
                session.rollback()
                raise
            session.commit()

    def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            connection = self._conn()  # a file that does not exist reads as an empty store
            return [] if connection is None else connection.execute(sql, parameters).fetchall()

    @staticmethod
    def _require(connection: Session, table: str, key: str, value: str, what: str) -> None:
        if connection.execute(f"SELECT 1 FROM {table} WHERE {key} = ?", (value,)).fetchone() is None:
            raise KeyError(f"no {what} with id {value!r}")

    def _require_read(self, table: str, key: str, value: str, what: str) -> None:
        if not self._read(f"SELECT 1 FROM {table} WHERE {key} = ?", (value,)):
            raise KeyError(f"no {what} with id {value!r}{self._absent()}")

    # ---- runs ----

    def start_run(
        self,
        *,
        name: str,
        config: dict[str, Any],
        model: str,
        sweep_id: str | None = None,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> str:
        """Record a new run with status "running" and return its id."""
        _check_name(name, "name")
        _check_name(model, "model")
        config_text = _dumps(config, "config")
        params_text = _dumps({} if params is None else params, "params")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        run_id = _new_id()
        with self._write() as connection:
            if sweep_id is not None:
                self._require(connection, "sweeps", "sweep_id", _check_id(sweep_id, "sweep_id"), "sweep")
            connection.execute(
                "INSERT INTO runs (run_id, seq, name, model, status, config, params, sweep_id, seed, summary, created,"
                " pid, host) VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM runs), ?, ?, 'running', ?, ?, ?, ?,"
                " '{}', ?, ?, ?)",
                (run_id, name, model, config_text, params_text, sweep_id, seed, _now(), os.getpid(), HOST),
            )
        return run_id

    def log_metrics(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        """Store ``metrics`` at ``step`` in one transaction; a (step, name) logged again keeps the last value."""
        _check_id(run_id, "run_id")
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics must be a dict of name -> number, got {type(metrics).__name__}")
        rows = []
        for metric, value in metrics.items():
            _check_name(metric, "metric name")
            try:
                number = float(value)
            except (TypeError, ValueError) as error:
                raise TypeError(f"metric {metric!r} must be a number, got {value!r}") from error
            rows.append((run_id, step, metric, None if math.isnan(number) else number))
        with self._write() as connection:
            self._require(connection, "runs", "run_id", run_id, "run")
            connection.executemany(
                "INSERT INTO metrics (run_id, step, name, value) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (run_id, step, name) DO UPDATE SET value = excluded.value",
                rows,
            )

    def finish_run(
        self,
        run_id: str,
        *,
        status: str = "finished",
        summary: dict[str, Any] | None = None,
        checkpoint: str | None = None,
    ) -> None:
        """Mark a run finished (or failed/interrupted) with its summary and final checkpoint path."""
        _check_id(run_id, "run_id")
        if status not in FINISH_STATUSES:
            raise ValueError(f"status must be one of {FINISH_STATUSES}, got {status!r}")
        summary_text = _dumps({} if summary is None else summary, "summary")
        if checkpoint is not None and not isinstance(checkpoint, str | os.PathLike):
            raise TypeError(f"checkpoint must be a path string or None, got {checkpoint!r}")
        with self._write() as connection:
            self._require(connection, "runs", "run_id", run_id, "run")
            connection.execute(
                "UPDATE runs SET status = ?, summary = ?, checkpoint = ?, finished = ? WHERE run_id = ?",
                (status, summary_text, None if checkpoint is None else os.fspath(checkpoint), _now(), run_id),
            )

    _RUN_COLUMNS = "run_id, name, model, status, config, params, sweep_id, seed, summary, checkpoint, created, finished"

    @staticmethod
    def _run_record(row: tuple[Any, ...]) -> RunRecord:
        run_id, name, model, status, config, params, sweep_id, seed, summary, checkpoint, created, finished = row
        return RunRecord(
            run_id=run_id,
            name=name,
            model=model,
            status=status,
            config=json.loads(config),
            params=json.loads(params),
            sweep_id=sweep_id,
            seed=seed,
            summary=json.loads(summary),
            checkpoint=checkpoint,
            created=created,
            finished=finished,
        )

    def get_run(self, run_id: str) -> RunRecord:
        """The run ``run_id``; KeyError naming it if there is none."""
        rows = self._read(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE run_id = ?", (_check_id(run_id, "run_id"),))
        if not rows:
            raise KeyError(f"no run with id {run_id!r}{self._absent()}")
        return self._run_record(rows[0])

    def metrics(self, run_id: str) -> list[MetricRow]:
        """Every metric row of ``run_id``, ordered by step then name."""
        self._require_read("runs", "run_id", _check_id(run_id, "run_id"), "run")
        rows = self._read("SELECT step, name, value FROM metrics WHERE run_id = ? ORDER BY step, name", (run_id,))
        return [MetricRow(step, name, math.nan if value is None else value) for step, name, value in rows]

    def runs(self, *, sweep_id: str | None = None, status: str | None = None) -> list[RunRecord]:
        """Runs in start order, optionally only those of one sweep and/or with one status."""
        clauses, parameters = [], []
        if sweep_id is not None:
            self._require_read("sweeps", "sweep_id", _check_id(sweep_id, "sweep_id"), "sweep")
            clauses.append("sweep_id = ?")
            parameters.append(sweep_id)
        if status is not None:
            if status not in RUN_STATUSES:
                raise ValueError(f"status must be one of {RUN_STATUSES} or None, got {status!r}")
            clauses.append("status = ?")
            parameters.append(status)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(f"SELECT {self._RUN_COLUMNS} FROM runs{where} ORDER BY seq", tuple(parameters))
        return [self._run_record(row) for row in rows]

    # ---- sweeps ----

    def create_sweep(self, *, name: str, grid: dict[str, list[Any]]) -> str:
        """Record a grid sweep (parameter name -> non-empty list of values) and return its id."""
        _check_name(name, "name")
        if not isinstance(grid, Mapping) or not grid:
            raise ValueError(f"grid must be a non-empty dict of parameter -> list of values, got {grid!r}")
        for parameter, values in grid.items():
            if not isinstance(values, list | tuple) or not values:
                raise ValueError(f"grid[{parameter!r}] must be a non-empty list of values, got {values!r}")
        grid_text = _dumps({key: list(values) for key, values in grid.items()}, "grid")
        sweep_id = _new_id()
        with self._write() as connection:
            connection.execute(
                "INSERT INTO sweeps (sweep_id, seq, name, grid, created)"
                " VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM sweeps), ?, ?, ?)",
                (sweep_id, name, grid_text, _now()),
            )
        return sweep_id

    def sweeps(self) -> list[SweepRecord]:
        """Every sweep, in creation order."""
        rows = self._read("SELECT sweep_id, name, grid, created FROM sweeps ORDER BY seq")
        return [SweepRecord(sweep_id, name, json.loads(grid), created) for sweep_id, name, grid, created in rows]

    # ---- reference profiles ----

    def save_profile(self, *, name: str, model: str, profile: dict[str, Any]) -> str:
        """Store a reference profile (Tier 5) measured on ``model`` and return its id."""
        _check_name(name, "name")
        _check_name(model, "model")
        profile_text = _dumps(profile, "profile")
        profile_id = _new_id()
        with self._write() as connection:
            connection.execute(
                "INSERT INTO profiles (profile_id, seq, name, model, profile, created)"
                " VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM profiles), ?, ?, ?, ?)",
                (profile_id, name, model, profile_text, _now()),
            )
        return profile_id

    def load_profile(self, profile_id: str) -> dict[str, Any]:
        """The profile body stored under ``profile_id``; KeyError naming it if there is none."""
        rows = self._read("SELECT profile FROM profiles WHERE profile_id = ?", (_check_id(profile_id, "profile_id"),))
        if not rows:
            raise KeyError(f"no profile with id {profile_id!r}{self._absent()}")
        return json.loads(rows[0][0])

    def profiles(self, model: str | None = None) -> list[ProfileRecord]:
        """Stored profiles in creation order (the newest last), optionally only those of ``model``."""
        where, parameters = ("", ()) if model is None else (" WHERE model = ?", (model,))
        rows = self._read(f"SELECT profile_id, name, model, created FROM profiles{where} ORDER BY seq", parameters)
        return [ProfileRecord(*row) for row in rows]

    # ---- check results ----

    def record_check(self, *, run_id: str | None, row: dict[str, Any]) -> None:
        """Store one report row (as in report.json: at least "check" and "status"), attached to a run or not."""
        if not isinstance(row, Mapping):
            raise TypeError(f"row must be a report row dict, got {type(row).__name__}")
        for key in ("check", "status"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise ValueError(f"row[{key!r}] must be a non-empty string, got {row.get(key)!r}")
        row_text = _dumps(row, "row")
        with self._write() as connection:
            if run_id is not None:
                self._require(connection, "runs", "run_id", _check_id(run_id, "run_id"), "run")
            connection.execute(
                "INSERT INTO check_results (run_id, check_name, status, row, created) VALUES (?, ?, ?, ?, ?)",
                (run_id, row["check"], row["status"], row_text, _now()),
            )

    def check_results(self, run_id: str | None) -> list[dict[str, Any]]:
        """The report rows recorded for ``run_id`` (None: those attached to no run), in recording order."""
        if run_id is None:
            rows = self._read("SELECT row FROM check_results WHERE run_id IS NULL ORDER BY seq")
        else:
            self._require_read("runs", "run_id", _check_id(run_id, "run_id"), "run")
            rows = self._read("SELECT row FROM check_results WHERE run_id = ? ORDER BY seq", (run_id,))
        return [json.loads(text) for (text,) in rows]

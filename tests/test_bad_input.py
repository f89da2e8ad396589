"""Bad input, as a careful user meets it: every case is one line on stderr naming the culprit, a non-zero exit
status (2 from the ``harness`` console script, 4 through pytest), no traceback, and no file changed (the SHA-256
of every file under the test's folder is the same before and after; a refused SQLite file keeps its tables and
its journal mode).

The console-script cases call :func:`harness.cli.main` in-process; the pytest cases run pytest in-process with
the harness's options. Also here: what the store, the run cache and the checkpoint loader promise about stored
data (nothing taken over, nothing stale, nothing unpickled, an interrupted run marked interrupted).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from harness.cli import main
from harness.store import SCHEMA_VERSION, ExperimentDB

TAGGER = "tests.training_defects:tagger_spec"  # a tiny token classifier: resolving it is fast
TRAIN = {
    "model": TAGGER,
    "max_steps": 2,
    "batch_size": 4,
    "max_rows": 16,
    "sequence_length": 8,
    "validation_batches": 1,
}
MARKER = "unpickled.marker"  # a pickled payload writes this file if anything ever unpickles it


class Payload:
    """Unpickling this runs code: it writes MARKER in the working folder."""

    def __reduce__(self):
        return (Path.write_text, (Path(MARKER), "code ran"))


# ---- the files a case starts from: name -> bytes, or a builder called with the path ----


def foreign_db(path: Path) -> None:
    """Someone else's SQLite database: one table, rollback journal."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
    connection.execute("INSERT INTO invoices (amount) VALUES (9.5)")
    connection.commit()
    connection.close()


def clashing_db(path: Path) -> None:
    """A file that claims schema version 1 but lacks the harness's tables (a clash, not an ExperimentDB)."""
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE runs (id INTEGER)")
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()


def harness_db(path: Path) -> None:
    """An ExperimentDB holding one profile and no run."""
    with ExperimentDB(path) as db:
        db.save_profile(name="p", model="m", profile={})


def newer_db(path: Path) -> None:
    """An ExperimentDB written by a newer harness."""
    harness_db(path)
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()


def truncated_db(path: Path) -> None:
    """An ExperimentDB cut after its first page."""
    with ExperimentDB(path) as db:
        db.save_profile(name="p", model="m", profile={"x": list(range(3000))})
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.execute("PRAGMA journal_mode = DELETE")
    connection.close()
    path.write_bytes(path.read_bytes()[:1500])


def folder(path: Path) -> None:
    path.mkdir()


def checkpoint(path: Path) -> None:
    torch.save({"state_dict": {"model.w": torch.zeros(2)}, "epoch": 0}, path)


def truncated_checkpoint(path: Path) -> None:
    checkpoint(path)
    path.write_bytes(path.read_bytes()[:300])


def pickled_checkpoint(path: Path) -> None:
    torch.save({"state_dict": {}, "hyper_parameters": Payload()}, path)


def plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"state_dict": Payload()}))


def weights_without_state_dict(path: Path) -> None:
    torch.save({"w": torch.zeros(2)}, path)


def train_config(**changes: object) -> bytes:
    return json.dumps({**TRAIN, **changes}).encode()


Files = dict[str, bytes | Callable[[Path], None]]  # file name -> its bytes, or a builder called with its path
NOT_UTF8 = "caf\xe9 cr\xe8me\n".encode("latin-1")


@dataclass(frozen=True)
class Case:
    """A command line, the files it starts from, and the culprit its one line must name."""

    argv: tuple[str, ...]
    named: str  # a substring the one line must hold (the file, the key or the value at fault)
    files: Files = field(default_factory=dict)


def run_db(named: str, database: bytes | Callable[[Path], None], path: str = "x.db") -> Case:
    """``harness run`` with a run config whose ``db_path`` is ``path``, holding ``database``."""
    config = json.dumps({"db_path": path}).encode()
    return Case(("run", "--tier", "1", "--config", "c.json"), named, {"c.json": config, "x.db": database})


def train(named: str, config: bytes, files: Files | None = None) -> Case:
    """``harness train --config t.json`` with ``config`` in ``t.json`` and ``files`` beside it."""
    return Case(("train", "--config", "t.json"), named, {"t.json": config, **(files or {})})


def resume(named: str, checkpoint: bytes | Callable[[Path], None] | None = None, path: str = "c.ckpt") -> Case:
    """``harness train`` resuming from ``path``, holding ``checkpoint`` (nothing there when None)."""
    return train(named, train_config(resume_from_checkpoint=path), {} if checkpoint is None else {path: checkpoint})


def monitor(named: str, config: dict[str, object], files: Files | None = None) -> Case:
    """``harness monitor --config m.json`` with ``config`` in ``m.json`` and ``files`` beside it."""
    return Case(("monitor", "--config", "m.json"), named, {"m.json": json.dumps(config).encode(), **(files or {})})


DRIFT_FROM_DB = {"mode": "drift", "model": "cnn-digits", "reference_db": "x.db", "reference_id": "p1"}

CLI_CASES: dict[str, Case] = {
    # command-line flags
    "no-command": Case((), "the following arguments are required: COMMAND"),
    "unknown-command": Case(("fly",), "invalid choice: 'fly'"),
    "unknown-flag": Case(("run", "--bogus"), "unrecognized arguments: --bogus"),
    "tier-out-of-range": Case(("run", "--tier", "9"), "--tier must be tier numbers 1-5"),
    "tier-not-a-number": Case(("run", "--tier", "1-x"), "got '1-x'"),
    "seed-not-a-number": Case(("run", "--seed", "x"), "--seed"),
    "unknown-profile": Case(("run", "--hypothesis-profile", "fast"), "invalid choice: 'fast'"),
    "workers-not-a-number": Case(("run", "--workers", "many"), "--workers"),
    "export-format": Case(("export", "--model", "cnn-digits", "--formats", "pdf"), "'pdf'"),
    "perf-batch-sizes": Case(("perf", "--model", "cnn-digits", "--batch-sizes", "0"), "--batch-sizes"),
    "perf-baseline-missing": Case(("perf", "--model", "cnn-digits", "--baseline", "none.json"), "none.json"),
    "export-out-is-a-file": Case(("export", "--model", "cnn-digits", "--out", "e/x"), "e is a file", {"e": b"x"}),
    "perf-save-under-a-file": Case(("perf", "--model", "cnn-digits", "--save", "p/x.json"), "p is a file", {"p": b"x"}),
    "perf-plot-under-a-file": Case(("perf", "--model", "cnn-digits", "--plot", "p/x.png"), "p is a file", {"p": b"x"}),
    # run configs
    "config-missing": Case(("run", "--config", "none.json"), "none.json does not exist"),
    "config-folder": Case(("run", "--config", "c.json"), "c.json is a folder", {"c.json": folder}),
    "config-not-utf8": Case(("run", "--config", "c.toml"), "c.toml is not UTF-8", {"c.toml": b"tiers = '" + NOT_UTF8}),
    "config-empty": Case(("run", "--config", "c.json"), "c.json: not valid JSON", {"c.json": b""}),
    "config-bad-toml": Case(("run", "--config", "c.toml"), "c.toml: not valid TOML", {"c.toml": b"tiers = [1,"}),
    "config-not-a-table": Case(("run", "--config", "c.json"), "object/table", {"c.json": b"[1, 2]"}),
    "config-unknown-key": Case(("run", "--config", "c.json"), "'teirs'", {"c.json": b'{"teirs": "1"}'}),
    "config-wrong-type": Case(("run", "--config", "c.json"), "'seed' must be int", {"c.json": b'{"seed": "0"}'}),
    "config-export-string": Case(("run", "--config", "c.json"), "'export' must be an", {"c.json": b'{"export": "x"}'}),
    # report and output folders: checked before pytest starts; an earlier run's files are never overwritten
    "report-dir-is-a-file": Case(("run", "--tier", "1", "--report-dir", "out"), "out is a file", {"out": b"notes\n"}),
    "export-dir-is-a-file": Case(
        ("run", "--tier", "4", "--config", "c.json"),
        "exports is a file",
        {"c.json": b'{"export": {"export_dir": "exports"}}', "exports": b"x"},
    ),
    "junit-exists": Case(
        ("run", "--tier", "1", "--report-dir", "out", "--run-id", "R1"),
        "out/R1/junit.xml already exists",
        {"out/R1/junit.xml": b"<testsuites/>\n"},
    ),
    "report-json-exists": Case(
        ("run", "--tier", "1", "--report-dir", "out", "--run-id", "R1"),
        "out/R1/report.json already exists",
        {"out/R1/report.json": b"{}\n"},
    ),
    # ExperimentDBs given to a run
    "run-db-foreign": run_db("x.db is an SQLite database but not an ExperimentDB", foreign_db),
    "run-db-text": run_db("x.db is not an SQLite database", b"run,loss\n1,0.5\n"),
    "run-db-folder": run_db("x.db exists and is not a file", folder),
    "run-db-under-a-file": run_db("runs.db cannot be made: x.db is a file", b"x", path="x.db/runs.db"),
    "run-db-newer": run_db(f"schema version {SCHEMA_VERSION + 1}", newer_db),
    "run-db-clashing": run_db("tables: runs", clashing_db),
    "run-db-truncated": run_db("x.db is not a readable SQLite database", truncated_db),
    # train configs
    "train-config-missing": Case(("train", "--config", "t.json"), "t.json does not exist"),
    "train-config-not-json": train("not valid JSON", b"{model"),
    "train-config-not-utf8": train("t.json is not UTF-8", b'{"model": "' + NOT_UTF8),
    "train-no-model": train('"model" string', b'{"max_steps": 3}'),
    "train-unknown-model": train("no-such-model", b'{"model": "no-such-model"}'),
    "train-unknown-field": train("learn_rate", train_config(learn_rate=1)),
    "train-bad-value": train("batch_size=-1", train_config(batch_size=-1)),
    "train-wrong-type": train("learning_rate='fast'", train_config(learning_rate="fast")),
    "train-bad-fraction": train("validation_fraction", train_config(validation_fraction=2)),
    "train-unknown-scheduler": train("scheduler='magic'", train_config(scheduler="magic")),
    "train-data-a-string": train("data='notes.txt'", train_config(data="notes.txt")),
    # data files: read before training starts
    "data-missing": train("none.txt does not exist", train_config(data=["none.txt"])),
    "data-empty": train("e.txt is empty", train_config(data=["e.txt"]), {"e.txt": b"\n \n"}),
    "data-not-utf8": train("d.txt is not UTF-8 text (byte 0xe9 at offset 3)", train_config(data=["d.txt"]),
                           {"d.txt": NOT_UTF8}),
    "data-folder": train("d is a folder", train_config(data=["d"]), {"d": folder}),
    # checkpoints: local, weights only, never unpickled
    "resume-url": resume("URL 'https://example.com/last.ckpt'", path="https://example.com/last.ckpt"),
    "resume-missing": resume("c.ckpt does not exist"),
    "resume-truncated": resume("c.ckpt is not a readable checkpoint", truncated_checkpoint),
    "resume-random-bytes": resume("c.ckpt is not a readable checkpoint", bytes(range(256)) * 2),
    "resume-pickled-code": resume("c.ckpt holds more than weights", pickled_checkpoint),
    "resume-plain-pickle": resume("c.ckpt is not a readable checkpoint", plain_pickle),
    "resume-no-state-dict": resume("c.ckpt is not a Lightning checkpoint", weights_without_state_dict),
    "resume-folder": resume("c.ckpt is a folder", folder),
    # ExperimentDBs given to train
    "train-db-foreign": train("x.db is an SQLite database but not an ExperimentDB", train_config(db="x.db"),
                              {"x.db": foreign_db}),
    "train-db-text": train("x.db is not an SQLite database", train_config(db="x.db"), {"x.db": b"hello"}),
    "train-db-not-a-string": train('"db" must be', train_config(db=5)),
    # monitor and profile (Tier 5) configs and their stored data
    "monitor-config-missing": Case(("monitor", "--config", "m.json"), "m.json does not exist"),
    "monitor-config-not-utf8": Case(("monitor", "--config", "m.toml"), "m.toml is not UTF-8",
                                    {"m.toml": b"mode = '" + NOT_UTF8}),
    "monitor-unknown-mode": monitor("'mode' must be one of", {**DRIFT_FROM_DB, "mode": "watch"}),
    "monitor-data-not-a-table": monitor("'data' must be a table", {**DRIFT_FROM_DB, "data": "digits"}),
    "monitor-threshold-wrong-type": monitor("'thresholds.alpha_fail' must be a number, got 'low'",
                                            {**DRIFT_FROM_DB, "thresholds": {"alpha_fail": "low"}}),
    "monitor-unknown-threshold": monitor("unknown key(s) thresholds.alpha", {**DRIFT_FROM_DB, "thresholds": {"alpha": 1}}),
    "monitor-reference-db-missing": monitor("none.db does not exist", {**DRIFT_FROM_DB, "reference_db": "none.db"}),
    "monitor-reference-db-foreign": monitor("x.db is an SQLite database but not", DRIFT_FROM_DB, {"x.db": foreign_db}),
    "monitor-reference-not-utf8": monitor("p.json is not UTF-8", {"mode": "drift", "model": "cnn-digits",
                                                                  "reference": "p.json"}, {"p.json": NOT_UTF8}),
    "profile-needs-an-output": Case(("profile", "--model", "cnn-digits"), "--out"),
    # report and bundle
    "report-missing": Case(("report", "none"), "none/report.json does not exist"),
    "report-not-json": Case(("report", "r"), "r/report.json", {"r/report.json": b"{half"}),
    "report-not-utf8": Case(("report", "r"), "r/report.json", {"r/report.json": NOT_UTF8}),
    "bundle-db-missing": Case(("bundle", "R", "--db", "none.db"), "no ExperimentDB at none.db"),
    "bundle-db-foreign": Case(("bundle", "R", "--db", "x.db"), "x.db is an SQLite database but not an ExperimentDB",
                              {"x.db": foreign_db}),
    "bundle-db-text": Case(("bundle", "R", "--db", "x.db"), "x.db is not an SQLite database", {"x.db": b"a,b\n"}),
    "bundle-out-under-a-file": Case(("bundle", "R", "--db", "x.db", "--out", "z/b.zip"), "z is a file",
                                    {"x.db": harness_db, "z": b"x"}),
    "bundle-unknown-run": Case(("bundle", "R", "--db", "x.db", "--out", "b.zip"), "unknown run 'R'", {"x.db": harness_db}),
}  # fmt: skip


def make_files(root: Path, files: Files) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content(path)


def checksums(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root``, and every folder (as "dir")."""
    found = {}
    for path in sorted(root.rglob("*")):
        found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return found


def sqlite_state(root: Path) -> dict[str, tuple[str, list[str]]]:
    """Journal mode and tables of every SQLite file under ``root`` (read through a URI that cannot write)."""
    state = {}
    for path in sorted(root.rglob("*.db")):
        header = path.read_bytes()[:20] if path.is_file() else b""
        if header[:16] == b"SQLite format 3\x00" and header[18] == 1:  # rollback journal: reading creates no file
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
                tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            except sqlite3.DatabaseError as error:  # a damaged file: its bytes are compared by checksums()
                mode, tables = str(error), []
            finally:
                connection.close()
            state[path.name] = (mode, tables)
    return state


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path.parent / f"{tmp_path.name}-cache"))
    return tmp_path


def run_main(argv: tuple[str, ...]) -> int:
    try:
        return main(list(argv))
    except SystemExit as exit_:  # argparse's usage errors
        return int(exit_.code)


@pytest.mark.parametrize("case", list(CLI_CASES.values()), ids=list(CLI_CASES))
def test_the_console_script_refuses_bad_input_in_one_line(case: Case, workdir: Path, capsys):
    make_files(workdir, case.files)
    before, databases = checksums(workdir), sqlite_state(workdir)
    status = run_main(case.argv)
    captured = capsys.readouterr()
    line = one_line(captured.err)
    assert status == 2, captured
    assert case.named in line
    assert line.startswith("harness")
    assert checksums(workdir) == before  # nothing created, nothing changed (a refused database included)
    assert sqlite_state(workdir) == databases
    assert not (workdir / MARKER).exists()  # nothing was unpickled


# ---- through pytest: exit status 4, before any check runs ----

PYTEST_CASES: dict[str, Case] = {
    "db-foreign": Case(
        ("--harness-db", "x.db"), "x.db is an SQLite database but not an ExperimentDB", {"x.db": foreign_db}
    ),
    "db-text": Case(("--harness-db", "x.db"), "x.db is not an SQLite database", {"x.db": b"not a database\n"}),
    "db-folder": Case(("--harness-db", "x.db"), "x.db exists and is not a file", {"x.db": folder}),
    "db-newer": Case(("--harness-db", "x.db"), f"schema version {SCHEMA_VERSION + 1}", {"x.db": newer_db}),
    "db-under-a-file": Case(("--harness-db", "f/x.db"), "f is a file", {"f": b"x"}),
    "report-dir-is-a-file": Case(("--harness-report-dir", "out"), "out is a file", {"out": b"x"}),
    "junit-exists": Case(("--junitxml", "out/junit.xml"), "out/junit.xml already exists", {"out/junit.xml": b"<x/>"}),
    "report-beside-junit-exists": Case(
        ("--junitxml", "out/j.xml"), "out/report.json already exists", {"out/report.json": b"{}"}
    ),
    "seed": Case(("--harness-seed", "x"), "--harness-seed"),
    "artifacts-dir-is-a-file": Case(("--harness-artifacts-dir", "a/b"), "a is a file", {"a": b"x"}),
}


@pytest.mark.parametrize("case", list(PYTEST_CASES.values()), ids=list(PYTEST_CASES))
def test_pytest_refuses_bad_harness_options_with_exit_4(case: Case, workdir: Path, capfd):
    make_files(workdir, case.files)
    (workdir / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    before, databases = checksums(workdir), sqlite_state(workdir)
    status = pytest.main(
        [
            "test_nothing.py",
            "--harness-model",
            "cnn-digits",
            "-p",
            "no:cacheprovider",
            "-q",
            "--harness-run-id",
            "R1",
            *case.argv,
        ]
    )
    captured = capfd.readouterr()
    line = one_line(captured.err)
    assert status == pytest.ExitCode.USAGE_ERROR, captured
    assert case.named in line and "passed" not in captured.out
    assert checksums(workdir) == before
    assert sqlite_state(workdir) == databases


# ---- the store takes nothing over ----


def test_a_foreign_sqlite_file_keeps_its_tables_and_journal_mode(workdir: Path):
    foreign_db(workdir / "x.db")
    before = (workdir / "x.db").read_bytes()
    with pytest.raises(ValueError, match="x.db is an SQLite database but not an ExperimentDB"):
        ExperimentDB(workdir / "x.db")
    connection = sqlite3.connect(workdir / "x.db")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert [row[0] for row in connection.execute("SELECT name FROM sqlite_master")] == ["invoices"]
    connection.close()
    assert (workdir / "x.db").read_bytes() == before


def test_reading_a_path_that_does_not_exist_creates_nothing(workdir: Path):
    db = ExperimentDB(workdir / "typo.db")
    with pytest.raises(KeyError, match="typo.db does not exist"):
        db.load_profile("p1")
    assert db.runs() == [] and db.profiles() == []
    db.close()
    assert list(workdir.iterdir()) == []
    with ExperimentDB(workdir / "new.db") as db:  # writing is asking for it: the file is created
        db.save_profile(name="p", model="m", profile={})
    assert (workdir / "new.db").is_file()


def test_a_run_whose_process_died_is_marked_interrupted_on_the_next_open(workdir: Path):
    code = (
        "import os, sys\nfrom harness.store import ExperimentDB\n"
        "db = ExperimentDB(sys.argv[1])\nrun = db.start_run(name='r', config={}, model='m')\n"
        "db.log_metrics(run, 0, {'loss': 1.0})\nprint(run, flush=True)\nos._exit(9)\n"
    )
    child = subprocess.run([sys.executable, "-c", code, str(workdir / "x.db")], capture_output=True, text=True)
    assert child.returncode == 9, child.stderr
    with ExperimentDB(workdir / "x.db") as db:
        run = db.get_run(child.stdout.strip())
        assert run.status == "interrupted" and "ended before the run finished" in run.summary["interrupted"]
        live = db.start_run(name="live", config={}, model="m")  # this process is alive: left running
    with ExperimentDB(workdir / "x.db") as db:
        assert db.get_run(live).status == "running"


# ---- the run cache: keyed by content, no orphans ----


def test_one_changed_byte_of_the_data_file_is_a_fresh_run_and_orphans_are_removed(workdir: Path):
    from harness.cache import cache_dir
    from harness.training.config import TrainingConfig
    from harness.training.runs import train
    from harness_zoo import load_zoo_spec

    spec = load_zoo_spec("gpt2-tiny")
    data = workdir / "notes.txt"
    data.write_text("The quick brown fox jumps over the lazy dog.\n" * 40)
    config = TrainingConfig(
        max_steps=1, batch_size=2, max_rows=8, sequence_length=8, validation_batches=1, data=(str(data),)
    )
    orphan = cache_dir("runs") / "0123456789abcdef.999999999.x1"  # a scratch folder of a process that is gone
    orphan.mkdir()
    first = train(spec, config)
    assert not first.cached and not orphan.exists()
    assert train(spec, config).cached
    data.write_bytes(data.read_bytes().replace(b"lazy", b"lazz", 1))  # one byte
    changed = train(spec, config)
    assert not changed.cached and changed.config_hash != first.config_hash
    assert sorted(path.name for path in cache_dir("runs").iterdir() if path.is_dir()) == sorted(
        [first.config_hash, changed.config_hash]
    )  # no scratch folder left behind


def test_a_trained_run_loads_its_weights_without_unpickling(workdir: Path):
    from harness.training.config import ConfigError
    from harness.training.runs import TrainedRun
    from tests.training_defects import tagger_spec

    pickled_checkpoint(workdir / "last.ckpt")
    run = TrainedRun("r1", workdir / "last.ckpt", [], {}, "0" * 16, "synthetic")
    with pytest.raises(ConfigError, match="last.ckpt holds more than weights"):
        run.load_model(tagger_spec())
    assert not (workdir / MARKER).exists()


# ---- messages for values no model can have ----


@pytest.mark.parametrize(
    ("field_values", "named"),
    [
        ({"vocab_size": 0}, "InputSpace.vocab_size must be an integer >= 2"),
        ({"num_classes": 1}, "InputSpace.num_classes must be an integer >= 2"),
        ({"max_length": 0, "min_length": 1}, "InputSpace.max_length must be an integer >= 1"),
        ({"image_size": (1, 0, 8)}, "InputSpace.image_size must be (channels, height, width)"),
        ({"embedding_dim": -4}, "InputSpace.embedding_dim"),
    ],
    ids=["vocab-0", "one-class", "no-length", "zero-height", "negative-width"],
)
def test_impossible_input_spaces_are_refused_naming_the_field(field_values, named):
    from harness.spec import InputSpace, SpecError

    with pytest.raises(SpecError) as raised:
        InputSpace(**field_values)
    assert named in str(raised.value) and "\n" not in str(raised.value)


# ---- config tables: a value of the wrong kind is named as such ----


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("digits", "'data' must be a table (keys: source"),
        ({"limit": 2.5}, "'data.limit' must be an integer or null, got 2.5"),
        ({"shuffle": 1}, "'data.shuffle' must be true or false, got 1"),
        ({"sorce": "x"}, "unknown key(s) data.sorce; allowed: source"),
        ({"start": "half"}, "'data.start' must be a number, got 'half'"),
    ],
    ids=["string-for-table", "float-for-int", "int-for-bool", "unknown-key", "string-for-number"],
)
def test_config_tables_name_the_key_and_the_kind_expected(value, named):
    from harness.config import ConfigError, from_table

    @dataclass(frozen=True)
    class Data:
        source: str = "reference_text"
        start: float = 0.0
        limit: int | None = None
        shuffle: bool = False

    with pytest.raises(ConfigError) as raised:
        from_table(Data, value, "data", source="m.toml")
    assert str(raised.value).startswith("m.toml: ") and named in str(raised.value)
    assert from_table(Data, {"start": 1, "limit": None}, "data", source="m.toml") == Data(start=1, limit=None)


def test_a_report_folder_that_is_not_writable_is_refused_before_the_run(workdir: Path, capsys, monkeypatch):
    """Root may write anywhere, so the permission is denied the way a read-only folder denies it: os.access."""
    (workdir / "out").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != Path("out") and real_access(path, mode))
    before = checksums(workdir)
    assert run_main(("run", "--tier", "1", "--report-dir", "out", "--run-id", "R1")) == 2
    line = one_line(capsys.readouterr().err)
    assert "report folder out/R1 cannot be written: folder out is not writable" in line
    assert checksums(workdir) == before

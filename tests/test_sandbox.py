"""Untrusted model code runs in the bubblewrap sandbox: the payload suite, the limits, the refusal.

Every route in ``tests/sandbox_payloads/`` delivers the same harmless payload (:mod:`_payload`): read a fake
``~/.ssh`` key, read a token planted in the environment, write markers outside the sandbox's scratch folder,
send both to a listener on 127.0.0.1. One sandboxed pytest session runs all of them (Tier 1,
``batch_independence`` only) beside a benign model from the same folder and the hang and memory-hog models; each
payload leaves evidence in the report folder that it ran, and the test asserts that it achieved nothing. The
same routes with ``--trust-model-code`` achieve everything, so the sandboxed assertions can fail.
"""

from __future__ import annotations

import json
import os
import py_compile
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from harness.result import CheckResult, Status
from harness.sandbox import (
    CheckLimitExceeded,
    Limits,
    SandboxedRun,
    SandboxUnavailable,
    bwrap_path,
    memory_result,
    read_stream,
    wall_clock_limit,
)

REPO = Path(__file__).resolve().parents[1]
PAYLOADS = REPO / "tests" / "sandbox_payloads"
ROUTES = sorted(
    [path.stem.removeprefix("route_") for path in PAYLOADS.glob("route_*.py")]
    + ["shadowed_module", "hidden_parent", "venv_parent"]
)
TOKEN_NAME = "AWS_SECRET_ACCESS_KEY"
TOKEN = "planted-token-4f2a"
SECRET = "fake-ssh-key-9c1e"
TIMEOUT_S = 5.0  # --harness-timeout of the payload sessions
MEMORY_LIMIT = "6G"  # --harness-memory-limit of the sandboxed payload session
CHECK = "batch_independence"  # the one check of every model; the limit models also run GRADIENT (their backward)
GRADIENT = "gradient_flow"
KEYWORDS = f"{CHECK} or " + " or ".join(f"payload-{name}-{GRADIENT}" for name in ("hang", "hog", "stubborn"))


def _unavailable() -> str | None:
    try:
        bwrap_path()
    except SandboxUnavailable as error:
        return str(error)
    return None


UNAVAILABLE = _unavailable()
needs_bwrap = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"the sandbox cannot start: {UNAVAILABLE}")


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection and the bytes it received."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(3)
                data = b""
                try:  # until the client closes, or both secrets are in: then close (an HTTP client waits for a reply)
                    while not (SECRET.encode() in data and TOKEN.encode() in data) and (chunk := connection.recv(4096)):
                        data += chunk
                except OSError:
                    pass
                self.received.append(data)

    def close(self) -> None:
        self.server.close()


def _stage(root: Path, port: int) -> dict:
    """A copy of the payload folder under ``root`` with its config, a fake home, and folders to watch."""
    folder = root / "payloads"
    shutil.copytree(PAYLOADS, folder, ignore=shutil.ignore_patterns("__pycache__"))
    py_compile.compile(str(folder / "pyc_source.txt"), cfile=str(folder / "hidden_module.pyc"), doraise=True)
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text(SECRET)
    (root / "cwd").mkdir()
    (root / "markers").mkdir()
    config = {
        "secret": str(home / ".ssh" / "id_ed25519"),
        "token_name": TOKEN_NAME,
        "port": port,
        "nonce": uuid.uuid4().hex,
        "marker_dirs": [str(root / "markers"), "/tmp"],
        "evidence": str(root / "reports" / "R" / "evidence"),
        "custom_lm": str(REPO / "tests" / "user_models" / "custom_lm.py"),
    }
    (folder / "config.json").write_text(json.dumps(config))
    return config


def _selectors(folder: Path, *, limits: tuple[str, ...]) -> list[str]:
    routes = [f"{path}:build" for path in sorted(folder.glob("route_*.py"))]
    routes += [f"{folder / '.hidden' / 'folder'}:build", f"{folder / 'venv' / 'folder'}:build"]
    return [*routes, f"{folder / 'benign.py'}:SPEC", *(f"{folder / 'limits_models.py'}:{name}" for name in limits)]


def _pytest(root: Path, selectors: list[str], *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "HYPOTHESIS_"))}
    env |= {"HOME": str(root / "home"), TOKEN_NAME: TOKEN, "OMP_NUM_THREADS": "1"}
    if path is not None:
        env["PATH"] = path
    command = [sys.executable, "-m", "pytest", str(REPO / "suites" / "tier1"), "-q", "-p", "no:cacheprovider"]
    command += ["--hypothesis-profile", "ci", "-k", KEYWORDS, "--harness-report-dir", str(root / "reports")]
    command += ["--harness-run-id", "R", *args, *(arg for s in selectors for arg in ("--model", s))]
    return subprocess.run(command, cwd=root / "cwd", env=env, capture_output=True, text=True, timeout=900)


def _session(root: Path, *args: str, limits: tuple[str, ...]) -> dict:
    """Run the payload suite once; what it left behind, as seen from the host."""
    listener = Listener()
    try:
        config = _stage(root, listener.port)
        started = time.monotonic()
        completed = _pytest(root, _selectors(root / "payloads", limits=limits), *args)
        wall_s = time.monotonic() - started
    finally:
        listener.close()
    report_file = root / "reports" / "R" / "report.json"
    evidence = {path.stem: json.loads(path.read_text()) for path in Path(config["evidence"]).glob("*.json")}
    watched = [*config["marker_dirs"], root / "home", root / "cwd", root / "payloads"]
    markers = sorted(str(p) for folder in watched for p in Path(folder).glob(f"*-{config['nonce']}.marker"))
    for marker in Path("/tmp").glob(f"*-{config['nonce']}.marker"):
        marker.unlink()  # what a trusted payload left in the shared /tmp (counted above)
    return {
        "completed": completed,
        "report": json.loads(report_file.read_text()) if report_file.is_file() else None,
        "evidence": evidence,
        "received": listener.received,
        "markers": markers,
        "wall_s": wall_s,
        "root": str(root),
    }


def _rows(session: dict, check: str = CHECK) -> dict[str, dict]:
    """The report's rows of ``check``, by model."""
    completed = session["completed"]
    assert session["report"] is not None, completed.stdout[-3000:] + completed.stderr[-3000:]
    return {row["model"]: row for row in session["report"]["rows"] if row["check"] == check}


@pytest.fixture(scope="module")
def sandboxed(tmp_path_factory):
    """The payload suite, the benign model and the hang and hog models in one sandboxed session."""
    root = tmp_path_factory.mktemp("sandboxed")
    return _session(root, "--harness-timeout", str(TIMEOUT_S), "--harness-memory-limit", MEMORY_LIMIT,
                    limits=("hang", "hog"))  # fmt: skip


@pytest.fixture(scope="module")
def trusted(tmp_path_factory):
    """The same payloads (and the hang model) imported into the pytest process: --trust-model-code."""
    root = tmp_path_factory.mktemp("trusted")
    return _session(root, "--trust-model-code", "--harness-timeout", str(TIMEOUT_S), limits=("hang",))


def test_the_payload_suite_has_a_route_for_every_category():
    assert len(ROUTES) >= 25
    categories = {
        "aliases": {"alias_module", "alias_builtin", "alias_eval"},
        "sys.modules and vars()": {"sys_modules", "vars_module"},
        "star import": {"star_import"},
        "through another module": {"through_shutil", "through_tempfile"},
        "posix and _socket": {"posix", "raw_socket"},
        "pathlib and computed-path writes": {"pathlib_write", "os_open_write", "io_fileio"},
        "pickle": {"pickle"},
        "runpy and importlib.util on non-.py files": {"runpy_text", "importlib_util"},
        "sourceless .pyc": {"sourceless_pyc"},
        "encoding cookie": {"encoding_cookie"},
        "shadowing sibling": {"shadowed_module"},
        "hidden and venv parents": {"hidden_parent", "venv_parent"},
    }
    for category, routes in categories.items():
        assert routes <= set(ROUTES), category


# The boundary holds.


@needs_bwrap
def test_every_payload_runs_in_the_sandbox_and_achieves_nothing(sandboxed):
    completed = sandboxed["completed"]
    assert "in the bubblewrap sandbox" in completed.stderr, completed.stderr[-3000:]
    assert sorted(sandboxed["evidence"]) == ROUTES, completed.stdout[-3000:] + completed.stderr[-3000:]
    for route, seen in sandboxed["evidence"].items():
        assert seen["secret"] is None, route  # the fake home's key was not readable
        assert seen["token"] is None, route  # the planted token was not in the environment
        assert seen["connected"] is not True, route
        assert not any(path.startswith(sandboxed["root"]) for path in seen["written"]), route  # scratch, private /tmp
    assert sandboxed["markers"] == []
    assert sandboxed["received"] == []  # the loopback listener saw no connection


@needs_bwrap
def test_the_benign_model_and_every_route_model_report_their_rows(sandboxed):
    rows = _rows(sandboxed)
    benign = rows["payload-benign"]
    assert benign["status"] == "passed" and benign["check"] == CHECK, benign["message"]
    assert benign["test_id"] == f"suites/tier1/test_tier1.py::test_tier1[payload-benign-{CHECK}]"
    assert benign["details"]["sandboxed"] is True
    route_models = {f"payload-{route}" for route in ROUTES} - {"payload-shadowed_module"}  # a shadow builds nothing
    assert route_models <= set(rows)
    assert all(rows[model]["status"] == "passed" for model in route_models), rows
    sources = sandboxed["report"]["model_sources"]["payload-benign"]
    assert sources["sandboxed"] is True and sources["trusted_without_scan"] is False
    assert sandboxed["report"]["sandbox"]["startup_s"] > 0
    assert any("os.system" in line for line in sandboxed["report"]["scan_warnings"])  # advice, listed
    assert "the static scan (advice, not a boundary)" in sandboxed["completed"].stdout


@needs_bwrap
def test_a_hanging_model_fails_naming_the_wall_clock_limit_in_the_sandbox(sandboxed):
    row = _rows(sandboxed, GRADIENT)["payload-hang"]
    assert row["status"] == "failed" and row["details"]["limit"] == "wall-clock", row["message"]
    assert "--harness-timeout" in row["message"] and row["threshold"] == TIMEOUT_S
    assert TIMEOUT_S <= row["measured"] <= TIMEOUT_S + 3


@needs_bwrap
def test_a_memory_hog_fails_naming_the_memory_limit(sandboxed):
    row = _rows(sandboxed, GRADIENT)["payload-hog"]
    assert row["status"] == "failed" and row["details"]["limit"] == "memory", row["message"]
    assert "--harness-memory-limit" in row["message"] and row["threshold"] == float(6 << 30)
    assert 0.9 * row["threshold"] <= row["measured"] <= row["threshold"]  # the peak address space, at the limit
    assert row["details"]["duration_s"] < 10


# The same suite, trusted: the payloads do run, so the assertions above can fail.


def test_with_trust_model_code_every_payload_succeeds(trusted):
    completed = trusted["completed"]
    assert "bubblewrap" not in completed.stderr
    assert sorted(trusted["evidence"]) == ROUTES, completed.stdout[-3000:] + completed.stderr[-3000:]
    for route, seen in trusted["evidence"].items():
        assert seen["secret"] == SECRET and seen["token"] == TOKEN, route
        assert seen["connected"] is True, (route, seen["connected"])
    assert len(trusted["markers"]) >= 2 * len(ROUTES)  # the markers folder and the home, at least
    assert len(trusted["received"]) == len(ROUTES)
    assert all(SECRET.encode() in data and TOKEN.encode() in data for data in trusted["received"])


def test_a_hanging_trusted_model_fails_naming_the_wall_clock_limit(trusted):
    rows = _rows(trusted)
    row = _rows(trusted, GRADIENT)["payload-hang"]
    assert row["status"] == "failed" and row["details"]["limit"] == "wall-clock", row["message"]
    assert TIMEOUT_S <= row["measured"] <= TIMEOUT_S + 3
    assert rows["payload-benign"]["status"] == "passed"
    assert "sandboxed" not in rows["payload-benign"]["details"]


# A hang no alarm reaches: the watchdog outside the sandbox stops the session.


@needs_bwrap
def test_a_model_that_ignores_the_alarm_is_stopped_by_the_watchdog(tmp_path):
    _stage(tmp_path, port=9)
    folder = tmp_path / "payloads"
    started = time.monotonic()
    completed = _pytest(tmp_path, [f"{folder}/benign.py:SPEC", f"{folder}/limits_models.py:stubborn"],
                        "--harness-timeout", "4")  # fmt: skip
    elapsed = time.monotonic() - started
    rows = json.loads((tmp_path / "reports" / "R" / "report.json").read_text())["rows"]
    by_case = {(row["model"], row["check"]): row for row in rows}
    assert completed.returncode == 1, completed.stdout[-3000:]
    assert by_case["payload-benign", CHECK]["status"] == "passed"
    assert by_case["payload-stubborn", CHECK]["status"] == "passed"  # its forward is fine
    stubborn = by_case["payload-stubborn", GRADIENT]
    assert stubborn["status"] == "error" and "no progress for 19 s" in stubborn["message"], stubborn["message"]
    assert "while this check ran" in stubborn["message"]
    assert elapsed < 19 + 90  # the limit plus start-up, not the model's hour-long sleep


# Where the sandbox cannot start, untrusted code is refused, in one line.


def test_without_bwrap_untrusted_code_is_refused_with_one_line(tmp_path):
    _stage(tmp_path, port=9)
    completed = _pytest(tmp_path, [f"{tmp_path / 'payloads' / 'route_at_build.py'}:build"],
                        path=str(Path(sys.executable).parent))  # fmt: skip
    assert completed.returncode == 4, completed.stdout[-2000:] + completed.stderr[-2000:]
    (line,) = [line for line in completed.stderr.splitlines() if line.startswith("ERROR:")]
    assert "bubblewrap (bwrap) is not installed" in line and "apt-get install bubblewrap" in line
    assert "--trust-model-code" in line
    assert not (tmp_path / "reports" / "R" / "evidence").exists()  # nothing of the model ran


# The pieces, without a sandbox.


def test_limits_parse_sizes_and_reject_bad_values():
    assert Limits.parse("2.5", "512M") == Limits(timeout_s=2.5, memory_bytes=512 << 20)
    assert Limits.parse("600", "8G").memory_bytes == 8 << 30
    assert Limits.parse("1", "1073741824").memory_bytes == 1 << 30
    for timeout, memory, option in (("0", "8G", "--harness-timeout"), ("soon", "8G", "--harness-timeout"),
                                    ("5", "lots", "--harness-memory-limit"), ("5", "0G", "--harness-memory-limit")):  # fmt: skip
        with pytest.raises(ValueError, match=option):
            Limits.parse(timeout, memory)


def test_the_wall_clock_limit_interrupts_python_code_and_leaves_fast_code_alone():
    with wall_clock_limit(5):
        pass
    started = time.monotonic()
    with pytest.raises(CheckLimitExceeded, match="--harness-timeout"), wall_clock_limit(0.2):
        time.sleep(30)
    assert time.monotonic() - started < 2


def test_an_allocation_failure_is_restated_as_the_memory_limit_and_other_failures_are_not():
    limits = Limits(memory_bytes=1 << 30)
    base = CheckResult(
        "c", "m", 1, Status.FAILED, "A rule.", got="RuntimeError: DefaultCPUAllocator: can't allocate memory"
    )
    restated = memory_result(base, limits)
    assert restated.details["limit"] == "memory" and "1 GiB" in restated.expected
    other = CheckResult("c", "m", 1, Status.FAILED, "A rule.", got="ValueError: shapes")
    assert memory_result(other, limits) is other


def test_streamed_rows_are_kept_only_for_their_own_cases(tmp_path):
    cases = [{"test_id": f"t[{name}]", "tier": 1, "model": name, "check": "c"} for name in ("a", "b", "c")]
    good = {"test_id": "t[a]", "tier": 1, "model": "a", "check": "c", "status": "passed", "message": "m",
            "rule": "r", "got": ""}  # fmt: skip
    forged = {**good, "test_id": "t[b]", "model": "someone-else"}  # a row claiming another case's test id
    stream = tmp_path / "stream.jsonl"
    lines = [{"cases": cases, "at": 1.0}, {"row": good}, {"row": forged}, "not json", {"row": {**good, "test_id": "x"}}]
    stream.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines))
    read_cases, rows, _, _ = read_stream(stream)
    assert read_cases == cases and list(rows) == ["t[a]"]
    run = SandboxedRun(tuple(read_cases), rows, "the sandboxed session was stopped", 1.0, {})
    pairs = run.rows_in_order(Limits(), seed=0)
    assert [row["status"] for _, row in pairs] == ["passed", "error", "error"]
    assert "while this check ran" in pairs[1][1]["got"] and "before this check ran" in pairs[2][1]["got"]


def test_harness_run_passes_the_limits_to_pytest(tmp_path):
    from harness.cli import build_parser, pytest_arguments

    argv = ["run", "--tier", "1", "--report-dir", str(tmp_path), "--timeout", "30", "--memory-limit", "2G"]
    command = pytest_arguments(build_parser().parse_args(argv))
    assert command[command.index("--harness-timeout") + 1] == "30"
    assert command[command.index("--harness-memory-limit") + 1] == "2G"
    assert "--harness-timeout" not in pytest_arguments(build_parser().parse_args(argv[:5]))

"""Untrusted model code runs in a bubblewrap sandbox; every check runs under a wall-clock limit.

The boundary is the operating system, not a reading of the code: the checks of a model named by a path
selector (without ``--trust-model-code``) run in a child pytest session inside ``bwrap`` (Debian's
``bubblewrap``), and their report rows come back into the parent's session, which replays them as its own
tests, so they land in the same ``report.json`` and JUnit file as every other model's. The child has

- no network (its own network namespace: not even the host's loopback), its own PID, IPC and UTS
  namespaces, no capabilities, and it dies with its parent (``--die-with-parent``);
- the system, the Python installation, the virtual environment, every folder on ``sys.path``, the harness
  checkout, the test paths and the model's own folder mounted read-only (never the home folder or a parent of
  it), and nothing else of the host: an empty home, a private ``/tmp``;
- an environment built from an allowlist (:data:`PASSED_ENVIRONMENT`): no tokens, no cloud credentials;
- two writable folders: a scratch folder (its home and temporary files, deleted afterwards) and the run's
  report folder (where exports go);
- limits: an address-space limit (``--harness-memory-limit``), a CPU-time limit for the whole session
  (:data:`SESSION_CPU_SECONDS`, enforced by the kernel), the per-check wall-clock limit (``--harness-timeout``)
  inside, and a watchdog outside that stops the session when it makes no progress (no output, no row) for longer
  than that limit plus :data:`WATCHDOG_GRACE_S` (a hang in native code that no signal interrupts).

The child streams its collected cases and each finished row to a file in the scratch folder, so a session that
is stopped still reports the rows it finished; the check it was running gets an error row naming what stopped it.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.result import CheckResult, Status

STREAM_ENVIRONMENT = "HARNESS_SANDBOX_STREAM"
"""Set inside the sandbox only: the file the child session streams its cases and rows to."""
PASSED_ENVIRONMENT = (
    "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED", "PYTHONPATH", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "HYPOTHESIS_PROFILE", "CI", "TOKENIZERS_PARALLELISM", "CUBLAS_WORKSPACE_CONFIG",
)  # fmt: skip
"""The only variables of the host's environment the sandbox sees (when set)."""
SYSTEM_FILES = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf",
    "/etc/hosts", "/etc/localtime", "/etc/alternatives", "/etc/ssl/certs", "/etc/os-release",
    "/sys/devices/system/cpu",
)  # fmt: skip
"""Host files outside /usr the Python runtime reads, mounted read-only (none holds a secret)."""
SESSION_CPU_SECONDS = 4 * 3600
"""CPU-time limit of one sandboxed session (all its checks): a backstop the model's code cannot raise."""
WATCHDOG_GRACE_S = 15.0
"""How much longer than ``--harness-timeout`` the sandboxed session may make no progress before it is stopped."""
STARTUP_ALLOWANCE_S = 120.0
"""Added to that while a session starts (Python, torch, importing and probing every model) and has collected
nothing yet; the in-process probe of the models while the checks are chosen gets the same allowance."""
DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MEMORY_BYTES = 8 << 30
DEFAULT_MEMORY_LIMIT = f"{DEFAULT_MEMORY_BYTES >> 30}G"
FORWARDED_OPTIONS = (
    ("keyword", "-k"), ("markexpr", "-m"), ("hypothesis_profile", "--hypothesis-profile"),
    ("harness_device", "--harness-device"), ("harness_dtype", "--harness-dtype"),
    ("harness_max_tokens", "--harness-max-tokens"),
)  # fmt: skip
"""The parent session's options (pytest dest, flag) a sandboxed session gets too, so it selects the same checks."""
INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap) and allow "
    "unprivileged user namespaces, or pass --trust-model-code to run the code unsandboxed after reading it"
)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)([KMGT]?)(?:i?B)?", re.IGNORECASE)
_ALLOCATION_FAILURES = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "std::bad_alloc")


class SandboxUnavailable(Exception):
    """bubblewrap is missing or cannot create its namespaces here; the message says why and what to do."""


class CheckLimitExceeded(BaseException):  # noqa: N818 - not an Exception: checks' `except Exception` let it through
    """A check ran past the per-check wall-clock limit (raised by the alarm of :func:`wall_clock_limit`)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        super().__init__(f"the check exceeded the per-check wall-clock limit of {seconds:g} s (--harness-timeout)")


@dataclass(frozen=True)
class Limits:
    """The resource limits of a run; ``memory_bytes`` and ``cpu_seconds`` apply inside the sandbox only."""

    timeout_s: float = DEFAULT_TIMEOUT_S  # per-check wall-clock limit, every check (--harness-timeout)
    memory_bytes: int = DEFAULT_MEMORY_BYTES  # address-space limit of the sandboxed session (--harness-memory-limit)
    cpu_seconds: int = SESSION_CPU_SECONDS  # CPU-time limit of the sandboxed session

    @classmethod
    def parse(cls, timeout: str, memory: str) -> Limits:
        """Limits from the option texts; a ValueError names the option and the accepted form."""
        try:
            timeout_s = float(timeout)
        except ValueError:
            timeout_s = 0.0
        if not timeout_s > 0:
            raise ValueError(f"--harness-timeout takes a positive number of seconds, like 600; got {timeout!r}")
        match = _SIZE.fullmatch(memory.strip())
        if not match or float(match[1]) <= 0:
            raise ValueError(f"--harness-memory-limit takes a size like 8G, 512M or 1073741824; got {memory!r}")
        scale = 1 << (10 * "KMGT".find(match[2].upper()) + 10) if match[2] else 1
        return cls(timeout_s=timeout_s, memory_bytes=int(float(match[1]) * scale))

    @property
    def memory_text(self) -> str:
        return f"{self.memory_bytes / (1 << 30):g} GiB"


@contextmanager
def wall_clock_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`CheckLimitExceeded` in the block once ``seconds`` pass (SIGALRM; main thread only, else
    the block runs unlimited). Python code is interrupted at once; native code when it returns to Python."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum: int, frame: object) -> None:
        raise CheckLimitExceeded(seconds)

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def timeout_result(identity: dict[str, Any], limits: Limits, *, seed: int, elapsed_s: float) -> CheckResult:
    """The failed result of a check stopped by the per-check wall-clock limit."""
    return CheckResult(
        identity["check"], identity["model"], identity["tier"], Status.FAILED,
        "Every check finishes within the per-check wall-clock limit.",
        measured=round(elapsed_s, 3), threshold=limits.timeout_s, seed=seed,
        expected=f"at most {limits.timeout_s:g} s (--harness-timeout)",
        got=f"still running after {elapsed_s:.1f} s, stopped",
        hint="The model hangs or is far slower than the check allows: look for a loop or a wait in its forward "
        "or build; raise --harness-timeout only if it is merely slow.",
        details={"limit": "wall-clock", "limit_s": limits.timeout_s},
    )  # fmt: skip


def memory_result(result: CheckResult, limits: Limits) -> CheckResult:
    """``result`` restated as a failure of the memory limit when the model's allocation failed under it."""
    if result.status is not Status.FAILED or not any(text in result.got for text in _ALLOCATION_FAILURES):
        return result
    peak = _peak_address_space()
    return CheckResult(
        result.check, result.model, result.tier, Status.FAILED,
        "The model stays within the sandbox's memory limit.",
        measured=float(peak), threshold=float(limits.memory_bytes), seed=result.seed, sample_size=result.sample_size,
        expected=f"allocations within {limits.memory_text} of address space (--harness-memory-limit)",
        got=f"a peak of {peak / (1 << 30):.2f} GiB, then an allocation failed: {result.got}",
        hint="The model allocates without bound or far more than its size needs; raise --harness-memory-limit "
        "only if it really needs more.",
        details={**result.details, "limit": "memory", "limit_bytes": limits.memory_bytes},
    )  # fmt: skip


def _peak_address_space() -> int:
    """This process's peak virtual memory in bytes (``VmPeak``; 0 where /proc does not say)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    match = re.search(r"^VmPeak:\s+(\d+) kB", status, re.MULTILINE)
    return int(match[1]) * 1024 if match else 0


# The sandbox itself.


def bwrap_path() -> str:
    """The ``bwrap`` executable, after a probe that it can create its namespaces here."""
    found = shutil.which("bwrap")
    if not found:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed; {INSTALL_HINT}")
    probe = [found, "--unshare-all", "--unshare-user", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        completed = subprocess.run(probe, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        raise SandboxUnavailable(f"bwrap cannot start ({error}); {INSTALL_HINT}") from None
    if completed.returncode != 0:
        why = (completed.stderr.strip().splitlines() or [f"exit status {completed.returncode}"])[-1]
        raise SandboxUnavailable(f"bwrap cannot create its namespaces here ({why}); {INSTALL_HINT}")
    return found


def _mountable(paths: list[Path]) -> list[Path]:
    """Existing paths, resolved, without the root, the home folder or its ancestors, or one inside another."""
    home = Path.home().resolve()
    kept: list[Path] = []
    for path in sorted({p.resolve() for p in paths if p.exists()}, key=lambda p: len(p.parts)):
        exposes_home = path == home or path in home.parents
        if not exposes_home and not any(path.is_relative_to(outer) for outer in kept):
            kept.append(path)
    return kept


def python_paths() -> list[Path]:
    """What the child interpreter needs to read: the installation, the environment, every import root."""
    import harness

    roots = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent]
    roots.append(Path(harness.__file__).resolve().parents[1])
    roots += [Path(entry) for entry in sys.path if entry and Path(entry).is_dir()]
    return roots


def bwrap_command(
    bwrap: str, argv: list[str], *, read_only: list[Path], writable: list[Path], scratch: Path
) -> list[str]:
    """The ``bwrap`` command line that runs ``argv`` confined as the module docstring says."""
    command = [bwrap, "--unshare-all", "--unshare-user", "--cap-drop", "ALL", "--die-with-parent", "--new-session"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            command += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            command += ["--ro-bind", top, top]
    command += ["--ro-bind", "/usr", "/usr"]
    for system in SYSTEM_FILES:
        command += ["--ro-bind-try", system, system]
    command += ["--dev", "/dev", "--tmpfs", "/dev/shm", "--proc", "/proc", "--tmpfs", "/tmp"]
    for path in _mountable(read_only):
        command += ["--ro-bind", str(path), str(path)]
    for path in writable:
        command += ["--bind", str(path), str(path)]
    environment = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
    environment |= {
        "HOME": str(scratch / "home"),
        "TMPDIR": str(scratch / "tmp"),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        STREAM_ENVIRONMENT: str(scratch / "stream.jsonl"),
    }
    command.append("--clearenv")
    for name, value in sorted(environment.items()):
        command += ["--setenv", name, value]
    return [*command, "--chdir", str(scratch), "--", *argv]


@dataclass(frozen=True)
class SandboxedRun:
    """What a sandboxed session reported: its cases in order, the rows it finished, and why it stopped early."""

    cases: tuple[dict[str, Any], ...]  # {"test_id", "tier", "model", "check", "expected_failure"}
    rows: dict[str, dict[str, Any]]  # test_id -> report row
    stopped: str | None  # None when the session ran to its end
    startup_s: float  # seconds from starting bwrap until the child had collected its cases
    model_sources: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "cases": list(self.cases)})

    @classmethod
    def from_json(cls, text: str) -> SandboxedRun:
        data = json.loads(text)
        return cls(**{**data, "cases": tuple(data["cases"])})

    def rows_in_order(self, limits: Limits, seed: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Each case with a row: the one the child finished, else a failure saying why none came back (the
        first such case was running when the session stopped)."""
        pairs, running = [], True
        for case in self.cases:
            row = self.rows.get(case["test_id"])
            if row is None:
                row = _unfinished(case, self.stopped or "the sandboxed session ended early", limits, seed, running)
                running = False
            pairs.append((case, {**row, "details": {**row.get("details", {}), "sandboxed": True}}))
        return pairs


@dataclass(frozen=True)
class SandboxedCase:
    """One parametrized test whose check ran in the sandbox: the test replays the row that came back."""

    identity: dict[str, Any]
    row: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.identity['model']}-{self.identity['check']}"


def _unfinished(case: dict[str, Any], stopped: str, limits: Limits, seed: int, running: bool) -> dict[str, Any]:
    """The error row of a case the sandboxed session did not finish (nothing was measured)."""
    identity = {key: case[key] for key in ("tier", "model", "check")}
    got = f"{stopped} {'while this check ran' if running else 'before this check ran'}"
    return {
        **identity,
        "status": "error",
        "rule": "The check runs to completion inside the sandbox's limits.",
        "measured": None,
        "threshold": None,
        "tolerance": None,
        "sample_size": 0,
        "seed": seed,
        "expected": "the sandboxed check to report a row",
        "got": got,
        "hint": "See sandbox.log in the report folder: the model hung where no alarm reaches, exhausted a limit "
        "or ended the process.",
        "message": f"{identity['model']}: {identity['check']}: the check did not finish in the sandbox: {got}.",
        "details": {"limit": "sandbox", "limit_s": limits.timeout_s + WATCHDOG_GRACE_S},
    }


_ROW_KEYS = {"status": str, "check": str, "model": str, "tier": int, "message": str, "rule": str, "got": str}
_STATUSES = {status.value for status in Status} | {"error"}


def _valid_row(row: object, case: dict[str, Any]) -> bool:
    """A streamed row is used only when it is well-formed and is the row of the case it claims to be."""
    return (
        isinstance(row, dict)
        and all(isinstance(row.get(key), kind) for key, kind in _ROW_KEYS.items())
        and row["status"] in _STATUSES
        and all(row[key] == case[key] for key in ("tier", "model", "check"))
    )


def read_stream(path: Path) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any], float]:
    """The cases, rows, model sources and collection time the child streamed (malformed lines are ignored)."""
    cases: list[dict[str, Any]] = []
    rows: dict[str, dict[str, Any]] = {}
    sources: dict[str, Any] = {}
    collected_at = 0.0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if "cases" in entry and not cases and isinstance(entry["cases"], list):
            cases = [case for case in entry["cases"] if isinstance(case, dict) and set(_ROW_KEYS) & set(case)]
            sources = entry.get("model_sources") if isinstance(entry.get("model_sources"), dict) else {}
            collected_at = float(entry.get("at", 0.0))
        by_id = {case.get("test_id"): case for case in cases}
        row = entry.get("row")
        if isinstance(row, dict) and row.get("test_id") in by_id and _valid_row(row, by_id[row["test_id"]]):
            rows[row["test_id"]] = row
    return cases, rows, sources, collected_at


def _limit_resources(limits: Limits) -> None:
    """In the forked child, before bwrap starts: limits every process of the sandbox inherits."""
    import resource  # POSIX only, as bubblewrap is

    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_sandboxed(
    argv: list[str], *, read_only: list[Path], writable: list[Path], limits: Limits, log: Path
) -> SandboxedRun:
    """Run ``argv`` (a child pytest session) in the sandbox; its output goes to ``log``."""
    bwrap = bwrap_path()
    scratch = Path(tempfile.mkdtemp(prefix="harness-sandbox-"))
    try:
        for folder in ("home", "tmp"):
            (scratch / folder).mkdir()
        argv = [*argv, "--harness-report-dir", str(scratch / "report")]
        command = bwrap_command(
            bwrap, argv, read_only=read_only + python_paths(), writable=[scratch, *writable], scratch=scratch
        )
        started = time.time()
        stopped = _watch(command, limits, log, scratch / "stream.jsonl")
        cases, rows, sources, collected_at = read_stream(scratch / "stream.jsonl")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not collected_at and stopped is None:  # it exited "cleanly" without reporting its cases: never silent
        stopped = "the sandboxed session exited on its own"
    startup = max(0.0, collected_at - started) if collected_at else 0.0
    return SandboxedRun(tuple(cases), rows, stopped, round(startup, 3), sources)


def _watch(command: list[str], limits: Limits, log: Path, stream: Path) -> str | None:
    """Run the sandbox, copying its output to ``log``; stop it when neither its output nor its ``stream`` grows
    for longer than the per-check limit plus grace (plus the start-up allowance until it has collected its
    cases). Returns why it stopped early, or None when it exited on its own."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            preexec_fn=lambda: _limit_resources(limits), start_new_session=True,
        )  # fmt: skip
        assert process.stdout is not None
        last, streamed = time.monotonic(), 0
        while True:
            ready, _, _ = select.select([process.stdout], [], [], 1.0)
            size = stream.stat().st_size if stream.is_file() else 0
            idle_limit = limits.timeout_s + WATCHDOG_GRACE_S + (0.0 if size else STARTUP_ALLOWANCE_S)
            if ready:
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                out.write(chunk)
                last = time.monotonic()
            elif size > streamed:
                last, streamed = time.monotonic(), size
            elif time.monotonic() - last > idle_limit:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return (
                    f"the sandboxed session was stopped after no progress for {idle_limit:g} s "
                    f"(--harness-timeout {limits.timeout_s:g} s plus {WATCHDOG_GRACE_S:g} s grace)"
                )
        code = process.wait()
    if code in (0, 1, 5):  # all passed, some failed, nothing collected
        return None
    if code == 128 + signal.SIGKILL or code == 128 + signal.SIGXCPU:
        return (
            f"the sandboxed session was killed (exit status {code}: its CPU-time limit of {limits.cpu_seconds} s "
            f"or its memory limit of {limits.memory_text})"
        )
    return f"the sandboxed session ended with exit status {code}"


def sandboxed_session(config: Any, selectors: list[str], limits: Limits, report_folder: Path) -> SandboxedRun:
    """Run this pytest session's harness checks of ``selectors`` (path selectors) in the sandbox."""
    here = config.invocation_params.dir
    tests = []
    for arg in config.args:
        path, sep, rest = arg.partition("::")
        tests.append(f"{(here / path).resolve()}{sep}{rest}")
    models, folders = [], []
    for selector in selectors:
        target, _, attribute = selector.rpartition(":")
        path = (here / Path(target).expanduser()).resolve()
        models += ["--harness-model", f"{path}:{attribute}"]
        folders.append(path if path.is_dir() else path.parent)
    artifacts = Path(here, config.getoption("harness_artifacts_dir") or report_folder / "exports").resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    report_folder.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pytest", *tests, *models, "--rootdir", str(config.rootpath), "-q"]
    argv += ["-p", "no:cacheprovider", "--trust-model-code", "--harness-seed", config.getoption("harness_seed")]
    argv += ["--harness-timeout", f"{limits.timeout_s:g}", "--harness-memory-limit", str(limits.memory_bytes)]
    argv += ["--harness-artifacts-dir", str(artifacts)]
    for option, flag in FORWARDED_OPTIONS:
        value = config.getoption(option, None)
        if value:
            argv += [flag, str(value)]
    read_only = [Path(config.rootpath), *folders, *(Path(t.partition("::")[0]) for t in tests)]
    writable = [
        report_folder.resolve(),
        *([artifacts] if not artifacts.is_relative_to(report_folder.resolve()) else []),
    ]
    return run_sandboxed(argv, read_only=read_only, writable=writable, limits=limits, log=report_folder / "sandbox.log")


def refusal(run: SandboxedRun, log: Path) -> str | None:
    """Why a sandboxed session that collected nothing failed (the model's import or selector was refused inside),
    or None when it ran."""
    if run.cases or run.stopped is None:
        return None
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else ""
    errors = [line for line in text.splitlines() if line.startswith(("ERROR:", "E   "))]
    detail = "\n".join(errors[-15:] or text.strip().splitlines()[-15:])
    return f"{run.stopped} before collecting any check (its output: {log}):\n{detail}"


class ChildStream:
    """Registered inside the sandbox: keeps only the harness's cases and streams them, then each row."""

    def __init__(self, path: str, session: Any) -> None:
        self.path = Path(path)
        self.session = session

    def _send(self, entry: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(entry, allow_nan=False) + "\n")

    def pytest_collection_modifyitems(self, config: Any, items: list[Any]) -> None:
        kept = [item for item in items if "harness_case" in getattr(item, "fixturenames", ())]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = kept

    def pytest_collection_finish(self, session: Any) -> None:
        from harness.loading import PROVENANCE

        cases = []
        for item in session.items:
            case = item.callspec.params["harness_case"]
            reason = case.spec.expected_failures.get(case.check.name)
            cases.append({"test_id": item.nodeid, **case.identity, "expected_failure": reason})
        self._send({"cases": cases, "model_sources": PROVENANCE, "at": time.time()})

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        row = self.session.rows.get(nodeid)
        if row is not None:
            self._send({"row": row})

"""The pytest plugin: model selection, check parametrization, report rows and the JSON report.

Registered as the ``harness`` pytest11 entry point, so it loads into every pytest session of an environment
that has ml-harness installed. It is a guest there: heavy imports (torch, the zoo) happen inside hooks and
fixtures, never at import time, every option is prefixed ``--harness-``, and nothing changes for a session that
does not use the harness. Importing the plugin only registers the Hypothesis profiles ``dev``, ``ci`` and
``nightly`` (registering selects none) and adds the options.

The harness is *active* in a session, and only then applies its settings (:func:`activate`: the Hypothesis
profile of :func:`harness.strategies.load_default_hypothesis_profile` unless ``--hypothesis-profile`` chose one,
``HF_HUB_OFFLINE=1``, ``TOKENIZERS_PARALLELISM=false`` and torch.compile's kernel cache in the harness's cache
folder unless already set, intra-op threads for the cores
actually free, shared by the run's xdist workers: :mod:`harness.threads`), when the session

1. selects the harness's suites: pytest loads ``suites/conftest.py`` exactly when a path under ``suites/`` is
   collected, and that conftest activates the harness in its ``pytest_configure`` (before any suite module is
   imported); it also defines ``--model`` there, as an alias of ``--harness-model``, so the short spelling
   works for the suites without clashing with another project's own ``--model``; or
2. asks for it: ``--harness-model`` is given; or
3. collects a test that uses the ``harness_case`` fixture anywhere else (a suite of your own): the harness
   activates while that test is parametrized (settings read at import time by modules collected before it,
   such as the hub's offline flag, may have been read already; pass ``--harness-model`` to activate first).

Flow: activation builds one :class:`HarnessSession` (options validated, ``--harness-model``
selectors resolved so a bad one is a usage error, exit code 4; path selectors, untrusted code, are never
imported here: their checks run once in the bubblewrap sandbox, :mod:`harness.sandbox`, and each of their rows
is replayed here as its own test). Every check runs under ``--harness-timeout``. ``pytest_generate_tests``
parametrizes every test that asks for ``harness_case`` over (model, check) pairs of its module's
``tier`` marker. ``record_check`` attaches the result to the test's ``user_properties`` (which
pytest-xdist carries to the controller and JUnit writes as properties) and turns a failed result
into a failed test. At session end the controller writes ``report.json`` beside ``--junitxml``
(or under ``--harness-report-dir/<run-id>/``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import harness.strategies  # registers (never loads) the profiles before Hypothesis's plugin loads one
from harness import hookspecs
from harness.sandbox import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT_S, STREAM_ENVIRONMENT, SandboxedCase
from harness.threads import ThreadPlan

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from harness.checks import Check, CheckOptions
    from harness.placement import Placement
    from harness.result import CheckResult
    from harness.sandbox import Limits, SandboxedRun
    from harness.shard import Durations, Shard
    from harness.spec import ModelSpec

SESSION_KEY = pytest.StashKey["HarnessSession"]()
THREADS_KEY = pytest.StashKey[ThreadPlan]()
ROW_PROPERTY = "harness.row"
CASE_PROPERTY = "harness.case"
SANDBOX_INPUT = "harness_sandbox"  # the workerinput key of the sandboxed session's outcome
SHARD_OUTPUT = "harness_shard"  # the workeroutput key of the shard's split (the controller collects nothing)


class HarnessWarning(UserWarning):
    """A check returned a warning verdict."""


@dataclass(frozen=True)
class CheckCase:
    """One parametrized test: a check applied to a model spec."""

    spec: ModelSpec
    check: Check

    @property
    def id(self) -> str:
        return f"{self.spec.name}-{self.check.name}"

    @property
    def identity(self) -> dict[str, Any]:
        """The case's tier, model and check, as its report row names them."""
        return {"tier": self.check.tier, "model": self.spec.name, "check": self.check.name}


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "model validation (harness)")
    group.addoption(
        "--harness-model",
        action="append",
        default=[],
        metavar="NAME|module:attr",
        help="model to validate: a zoo name (see `harness models`) or package.module:attribute naming a "
        "ModelSpec, a list of them, or a callable returning either. Repeatable. Default: the whole zoo. "
        "Inside the harness's suites/, --model is the same option.",
    )
    group.addoption(
        "--harness-report-dir",
        default="reports",
        metavar="DIR",
        help="folder for report.json when --junitxml is not given (written to DIR/RUN_ID/). Default: reports",
    )
    group.addoption(
        "--trust-model-code",
        action="store_true",
        default=False,
        help="import --harness-model path/to/file.py or folder selectors into this process instead of running them in "
        "the bubblewrap sandbox (read the code first)",
    )
    group.addoption(
        "--harness-timeout",
        default=str(DEFAULT_TIMEOUT_S),
        metavar="SECONDS",
        help=f"wall-clock limit of each check, for every model; a check past it fails. Default: {DEFAULT_TIMEOUT_S:g}",
    )
    group.addoption(
        "--harness-memory-limit",
        default=DEFAULT_MEMORY_LIMIT,
        metavar="SIZE",
        help="address-space limit of the sandboxed session that runs untrusted model code (like 8G or 512M); an "
        f"allocation past it fails its check. Default: {DEFAULT_MEMORY_LIMIT}",
    )
    group.addoption(
        "--harness-run-id",
        default=None,
        metavar="ID",
        help="id of this run of the tiers: its report folder and the report's run_id (default: UTC time + random "
        "suffix); not an ExperimentDB run id",
    )
    group.addoption(
        "--harness-seed", default="0", metavar="INT", help="seed of every generated check input. Default: 0"
    )
    group.addoption(
        "--harness-db",
        default=os.environ.get("HARNESS_DB_URL") or None,
        metavar="FILE|URL",
        help="also record every report row in this ExperimentDB, tagged with the run id: an SQLite FILE or a "
        "postgresql://USER@HOST[:PORT]/DBNAME URL. Default: $HARNESS_DB_URL, else none",
    )
    group.addoption(
        "--harness-artifacts-dir",
        default=None,
        metavar="DIR",
        help="where exports are cached, keyed by content and shared by workers and runs (default: "
        "$HARNESS_CACHE_DIR/exports, i.e. ~/.cache/ml-harness/exports)",
    )
    group.addoption(
        "--harness-device",
        default="cpu",
        metavar="cpu|cuda|cuda:N|mps",
        help="device every model of the run is built on and every check runs on. Default: cpu",
    )
    group.addoption(
        "--harness-dtype",
        default="float32",
        metavar="float32|bfloat16|float16",
        help="floating dtype every model is cast to; every check takes that dtype's tolerances, and a check with "
        "none for it skips saying why. Default: float32",
    )
    group.addoption(
        "--harness-max-tokens",
        default=None,
        metavar="INT",
        help="token budget: the checks' sequence batches hold at most this many tokens (batch x length), by "
        "capping each model's max_length at INT // max_batch_size. Default: no budget",
    )
    group.addoption(
        "--harness-shard",
        default=None,
        metavar="K/N",
        help="run only shard K of N of the harness's cases (the same split on every machine; `harness report "
        "merge` joins the N reports). Default: every case",
    )
    group.addoption(
        "--harness-durations",
        default=None,
        metavar="FILE",
        help="a report.json of an earlier run whose recorded seconds balance --harness-shard (give every shard "
        "the same file). Default: every case weighs the same",
    )


class HarnessSession:
    """Per-run state: the selected specs, built models and the collected report rows."""

    def __init__(self, config: pytest.Config) -> None:
        from harness.config import validate_seed
        from harness.loading import ModelSelectionError, needs_sandbox, validate_selectors
        from harness.report import new_report_run_id
        from harness.safety import scan_advice

        self.config = config
        self.selectors: list[str] = config.getoption("harness_model")
        try:
            self.seed = validate_seed(config.getoption("harness_seed"))
        except ValueError as error:
            raise pytest.UsageError(f"--harness-seed {error}") from None
        self.report_run_id = config.getoption("harness_run_id") or new_report_run_id()
        if not self.report_run_id.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise pytest.UsageError(
                f"--harness-run-id may hold letters, digits, '-', '_' and '.'; got {self.report_run_id!r}"
            )
        self.placement, self.max_tokens = _placement(config)
        self.sharding = _sharding(config)
        self.shard_record: dict[str, Any] | None = None  # what --harness-shard selected (this report's "shard")
        self.report_path = self._report_path()
        if self.is_controller:
            self._check_outputs()  # before any check runs: a bad folder or database costs nothing, loses nothing
        self.rows: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, str] = {}
        self._setup_s: dict[str, float] = {}  # test id -> seconds of its setup phase (model build, fixtures)
        self._specs: list[ModelSpec] | None = None
        self._models: dict[str, torch.nn.Module] = {}
        self.limits = _limits(config)
        try:
            validate_selectors(self.selectors)
            self.scan_warnings = scan_advice(self.selectors)
            untrusted = [] if config.getoption("trust_model_code") else [s for s in self.selectors if needs_sandbox(s)]
            self.local_selectors = [selector for selector in self.selectors if selector not in untrusted]
            self.sandboxed = self._sandboxed(untrusted) if untrusted else None
            if untrusted and not self.local_selectors:
                self._specs = []  # every selected model runs in the sandbox (none selects the whole zoo)
            if any(":" in selector for selector in self.local_selectors):
                self._specs = self._resolve()  # import the user's modules now: errors are usage errors
        except ModelSelectionError as error:
            raise pytest.UsageError(str(error)) from None

    @property
    def is_controller(self) -> bool:
        return not hasattr(self.config, "workerinput")

    def _sandboxed(self, selectors: list[str]) -> SandboxedRun:
        """The checks of ``selectors`` (untrusted code), run once by the controller in the sandbox; workers
        get the outcome through ``workerinput``. A sandbox that cannot start refuses the run."""
        from harness.loading import PROVENANCE
        from harness.sandbox import SandboxedRun, SandboxUnavailable, refusal, sandboxed_session

        if not self.is_controller:
            return SandboxedRun.from_json(self.config.workerinput[SANDBOX_INPUT])
        print(f"harness: running {', '.join(selectors)} in the bubblewrap sandbox ...", file=sys.stderr, flush=True)
        try:
            run = sandboxed_session(self.config, selectors, self.limits, self.report_path.parent)
        except SandboxUnavailable as error:
            raise pytest.UsageError(f"refusing to run untrusted model code ({', '.join(selectors)}): {error}") from None
        refused = refusal(run, self.report_path.parent / "sandbox.log")
        if refused:
            raise pytest.UsageError(refused)
        for name, record in run.model_sources.items():
            PROVENANCE[name] = {**record, "trusted_without_scan": False, "sandboxed": True}
        return run

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """pytest-xdist: each worker replays the sandboxed rows the controller got (it never starts a sandbox)."""
        if self.sandboxed is not None:
            node.workerinput[SANDBOX_INPUT] = self.sandboxed.to_json()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: the controller learns the shard's split from its workers (it collects nothing itself)."""
        record = getattr(node, "workeroutput", {}).get(SHARD_OUTPUT)
        if record is not None:
            self.shard_record = json.loads(record)

    def _check_outputs(self) -> None:
        """UsageError unless the report folder takes this run's files without overwriting any (an existing
        ``report.json`` or JUnit file refuses the run) and ``--harness-db`` is an ExperimentDB or can become one."""
        from harness.config import ConfigError
        from harness.io import check_writable
        from harness.report import check_report_folder
        from harness.store import ExperimentDB

        try:
            junit = self.config.getoption("xmlpath", None)
            remedy = "another --junitxml folder" if junit else "another --harness-run-id"
            check_report_folder(self.report_path.parent, junit=junit, remedy=remedy)
            if self.config.getoption("harness_artifacts_dir"):
                check_writable(self.config.getoption("harness_artifacts_dir"), "--harness-artifacts-dir folder")
            if self.config.getoption("harness_db"):
                ExperimentDB(self.config.getoption("harness_db")).close()  # validates; creates nothing yet
        except ConfigError as error:
            raise pytest.UsageError(f"{error}") from None

    def _report_path(self) -> Path:
        xml_path = self.config.getoption("xmlpath", None)
        folder = (
            Path(xml_path).parent
            if xml_path
            else Path(self.config.getoption("harness_report_dir")) / self.report_run_id
        )
        return folder / "report.json"

    def _resolve(self) -> list[ModelSpec]:
        from harness.loading import resolve_models
        from harness.placement import PlacementError, placed_spec

        specs = resolve_models(self.local_selectors, trust_code=self.config.getoption("trust_model_code"))
        try:
            return [placed_spec(spec, self.placement, max_tokens=self.max_tokens) for spec in specs]
        except PlacementError as error:
            raise pytest.UsageError(f"--harness-max-tokens: {error}") from None

    @property
    def specs(self) -> list[ModelSpec]:
        if self._specs is None:
            self._specs = self._resolve()
        return self._specs

    def model(self, spec: ModelSpec) -> torch.nn.Module:
        """The spec's model, built once per worker (checks run on private copies)."""
        if spec.name not in self._models:
            self._models[spec.name] = spec.build_model()
        return self._models[spec.name]

    def options(self) -> CheckOptions:
        from harness.checks import CheckOptions

        return CheckOptions(  # artifacts_dir None: the shared, content-keyed export cache (harness.export)
            seed=self.seed,
            artifacts_dir=self.config.getoption("harness_artifacts_dir"),
            device=self.placement.device,
            dtype=self.placement.dtype,
        )

    def cases(self, tier: int) -> list[Any]:
        from harness.checks import CHECKS, applicable_checks

        params = []
        for spec in self.specs:
            unknown = sorted(set(spec.expected_failures) - set(CHECKS))
            if unknown:
                raise pytest.UsageError(
                    f"{spec.name}: expected_failures names unknown checks {unknown}; known: {', '.join(CHECKS)}"
                )
            for check, _ in applicable_checks(spec, (tier,)):
                case = CheckCase(spec, check)
                reason = spec.expected_failures.get(check.name)
                marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                params.append(pytest.param(case, id=case.id, marks=marks))
        return params + self._sandboxed_cases(tier)

    def _sandboxed_cases(self, tier: int) -> list[Any]:
        """The replayed cases of the models that ran in the sandbox, with their declared expected failures."""
        if self.sandboxed is None:
            return []
        shared = sorted({spec.name for spec in self.specs} & {case["model"] for case in self.sandboxed.cases})
        if shared:
            raise pytest.UsageError(f"two selected models share the name {', '.join(shared)}; names must be unique")
        params = []
        for case, row in self.sandboxed.rows_in_order(self.limits, self.seed):
            if case["tier"] == tier:
                replayed = SandboxedCase({key: case[key] for key in ("tier", "model", "check")}, row)
                reason = case.get("expected_failure")
                marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
                params.append(pytest.param(replayed, id=replayed.id, marks=marks))
        return params

    # Report rows, on the controller (pytest-xdist sends every worker's reports here).

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = dict(report.user_properties)
        if CASE_PROPERTY not in properties:
            return
        if report.failed and ROW_PROPERTY not in properties:
            self._failures.setdefault(report.nodeid, f"{report.when}: {report.longreprtext[-2000:]}")
        if report.when == "setup":
            self._setup_s[report.nodeid] = round(report.duration, 4)
        if report.when == "call" and ROW_PROPERTY in properties:
            row = {"test_id": report.nodeid, **json.loads(properties[ROW_PROPERTY])}
            row.setdefault("duration_s", round(report.duration, 4))  # a replayed row has its own
            row.setdefault("setup_s", self._setup_s.get(report.nodeid, 0.0))
            self.rows[report.nodeid] = row
        if report.when == "teardown" and report.nodeid in self._failures and report.nodeid not in self.rows:
            case = json.loads(properties[CASE_PROPERTY])
            row = _error_row(report.nodeid, case, self._failures[report.nodeid], self.seed)
            self.rows[report.nodeid] = {**row, "setup_s": self._setup_s.get(report.nodeid, 0.0)}

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if not self.is_controller or not (self.rows or self.shard_record):
            return  # a shard writes its report even when it holds no case: the merge counts every shard
        from hypothesis import settings

        from harness.report import build_report, environment, write_report

        workers = int(getattr(self.config.option, "numprocesses", 0) or 0)
        report = build_report(
            self.report_run_id,
            list(self.rows.values()),
            {
                **environment(settings.get_current_profile_name(), workers),
                **self.placement.environment(),
                "threads": self.config.stash[THREADS_KEY].environment(),
            },
        )
        from harness.loading import PROVENANCE

        if PROVENANCE:
            report["model_sources"] = PROVENANCE  # SHA-256 and git commit of model code loaded from paths
        if self.scan_warnings:
            report["scan_warnings"] = self.scan_warnings  # advice only: the sandbox is the boundary
        if self.sandboxed is not None:
            report["sandbox"] = {"startup_s": self.sandboxed.startup_s, "stopped": self.sandboxed.stopped}
        if self.shard_record is not None:
            report["shard"] = {**self.shard_record, "exitstatus": int(exitstatus)}
        self.config.hook.pytest_harness_report(report=report, config=self.config)
        write_report(report, self.report_path)
        from harness.report.html import write_html

        write_html(self.report_path)
        if self.config.getoption("harness_db"):
            from harness.store import ExperimentDB

            with ExperimentDB(self.config.getoption("harness_db")) as db:
                for row in report["rows"]:
                    db.record_check(run_id=None, row={**row, "report_run_id": self.report_run_id})

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_controller and self.scan_warnings:
            terminalreporter.write_line(
                f"harness: warning: the static scan (advice, not a boundary) found {len(self.scan_warnings)} "
                "construct(s) to read before trusting this code:"
            )
            for finding in self.scan_warnings:
                terminalreporter.write_line(f"  {finding}")
        if self.is_controller and self.sandboxed is not None and self.sandboxed.stopped:
            terminalreporter.write_line(f"harness: {self.sandboxed.stopped}")
        if self.is_controller and self.rows:
            counts: dict[str, int] = {}
            for row in self.rows.values():
                counts[row["status"]] = counts.get(row["status"], 0) + 1
            summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
            terminalreporter.write_line(
                f"harness: {len(self.rows)} checks ({summary}); report: {self.report_path} "
                f"(and {self.report_path.with_name('report.html').name})"
            )


def _placement(config: pytest.Config) -> tuple[Placement, int | None]:
    """The run's :class:`harness.placement.Placement` and token budget, or a UsageError saying what is wrong."""
    from harness.placement import Placement, PlacementError

    try:
        placement = Placement(config.getoption("harness_device"), config.getoption("harness_dtype"))
    except PlacementError as error:
        raise pytest.UsageError(f"--harness-device/--harness-dtype: {error}") from None
    unavailable = placement.unavailable_because()
    if unavailable:
        raise pytest.UsageError(f"--harness-device {unavailable}")
    budget = config.getoption("harness_max_tokens")
    if budget is None:
        return placement, None
    if not str(budget).isdigit() or int(budget) < 1:
        raise pytest.UsageError(f"--harness-max-tokens must be a positive integer, got {budget!r}")
    return placement, int(budget)


def _sharding(config: pytest.Config) -> tuple[Shard, Durations] | None:
    """``--harness-shard`` and the durations that balance it, or a UsageError in one line."""
    from harness.shard import NO_DURATIONS, Shard, load_durations

    text, durations = config.getoption("harness_shard"), config.getoption("harness_durations")
    if text is None:
        if durations is not None:
            raise pytest.UsageError("--harness-durations balances --harness-shard K/N; give --harness-shard too")
        return None
    try:
        shard = Shard.parse(text)
    except ValueError as error:
        raise pytest.UsageError(f"--harness-shard {error}") from None
    try:
        return shard, load_durations(durations) if durations else NO_DURATIONS
    except ValueError as error:
        raise pytest.UsageError(f"--harness-durations: {error}") from None


def _limits(config: pytest.Config) -> Limits:
    from harness.sandbox import Limits

    try:
        return Limits.parse(config.getoption("harness_timeout"), config.getoption("harness_memory_limit"))
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None


def _error_row(test_id: str, case: dict[str, Any], failure: str, seed: int) -> dict[str, Any]:
    return {
        "test_id": test_id,
        **case,
        "status": "error",
        "rule": "the check runs",
        "measured": None,
        "threshold": None,
        "tolerance": None,
        "sample_size": 0,
        "seed": seed,
        "duration_s": 0.0,
        "setup_s": 0.0,
        "cache": None,  # what its setup got from the cache is unknown: the row was never recorded
        "expected": "the test to reach its check",
        "got": failure.splitlines()[-1] if failure else "an error",
        "hint": "The fixture or model build failed before the check ran; see the test's traceback.",
        "message": f"{case['model']}: {case['check']}: error before the check ran: {failure[-500:]}",
        "details": {"traceback": failure},
    }


def apply_settings(config: pytest.Config | None = None) -> None:
    """The process settings of a harness session (see the module docstring); each one a value already set keeps."""
    from harness.cache import cache_dir
    from harness.threads import apply_plan, plan_threads

    plan = plan_threads(_check_processes(config))  # the controller decides; its xdist workers inherit the plan
    apply_plan(plan)
    if config is not None:
        config.stash[THREADS_KEY] = plan
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline by default: nothing downloads at run time
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir("inductor")))  # torch.compile's kernels, shared
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    harness.strategies.load_default_hypothesis_profile()


def _check_processes(config: pytest.Config | None) -> int:
    """How many processes of this run check models at once: the xdist worker count, else 1."""
    if config is None:
        return 1
    worker = getattr(config, "workerinput", None)
    if worker:
        return int(worker.get("workercount", 1))
    if getattr(config.option, "dist", "no") == "no":
        return 1
    return int(getattr(config.option, "numprocesses", 0) or 1)


def activate(config: pytest.Config) -> HarnessSession:
    """Make the harness active in this session (idempotent): apply its settings, then build and register the
    one :class:`HarnessSession`. Called by ``suites/conftest.py``, for ``--harness-model``, and for the first
    ``harness_case`` test; a session that does none of these is left exactly as it would be without the plugin."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None:
        apply_settings(config)  # before HarnessSession imports torch: OpenMP reads its thread count on load
        session = HarnessSession(config)
        config.stash[SESSION_KEY] = session
        config.pluginmanager.register(session, "harness-session")
        if STREAM_ENVIRONMENT in os.environ:  # this session is the child a sandbox runs
            from harness.sandbox import ChildStream

            config.pluginmanager.register(ChildStream(os.environ[STREAM_ENVIRONMENT], session), "harness-sandbox")
    return session


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tier(n): the validation tier (1-5) of a suite module")
    if config.getoption("harness_model"):  # asked for by name
        activate(config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_case" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("tier")
    if marker is None or not marker.args or marker.args[0] not in (1, 2, 3, 4, 5):
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid} uses harness_case without a pytest.mark.tier(1..5) marker"
        )
    from harness.sandbox import STARTUP_ALLOWANCE_S, CheckLimitExceeded, wall_clock_limit

    session = activate(metafunc.config)
    try:  # some checks' applicability runs each model once (a probe): one check's limit plus the start-up allowance
        with wall_clock_limit(session.limits.timeout_s + STARTUP_ALLOWANCE_S):
            cases = session.cases(marker.args[0])
    except CheckLimitExceeded as error:
        raise pytest.UsageError(f"choosing the Tier {marker.args[0]} checks runs each model once: {error}") from None
    metafunc.parametrize("harness_case", cases, indirect=True)


def _harness_item(item: pytest.Item) -> HarnessSession | None:
    """The session, when ``item`` is one of the harness's cases."""
    if "harness_case" not in getattr(item, "fixturenames", ()):
        return None
    return item.config.stash.get(SESSION_KEY, None)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``--harness-shard K/N``: deselect every harness case outside shard K (after ``-k`` and ``-m`` deselected
    theirs); other tests are left alone. Every process computes the same split (:func:`harness.shard.plan`)."""
    session = config.stash.get(SESSION_KEY, None)
    if session is None or session.sharding is None:
        return
    from harness.shard import ShardCase, plan

    shard, durations = session.sharding
    cases = [
        ShardCase(item.nodeid, **item.callspec.params["harness_case"].identity)
        for item in items
        if _harness_item(item) and hasattr(item, "callspec")
    ]
    split = plan(cases, shard.count, durations)
    outside = {case.test_id for case in cases} - set(split.shards[shard.index - 1])
    if outside:
        config.hook.pytest_deselected(items=[item for item in items if item.nodeid in outside])
        items[:] = [item for item in items if item.nodeid not in outside]
    session.shard_record = {**split.record(shard), "seed": session.seed}
    if hasattr(config, "workeroutput"):
        config.workeroutput[SHARD_OUTPUT] = json.dumps(session.shard_record)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """Building the model counts against the per-check wall-clock limit too (a hang there is an error)."""
    session = _harness_item(item)
    if session is None:
        return (yield)
    from harness.cache import take_uses
    from harness.sandbox import wall_clock_limit

    take_uses()  # uses an earlier test left unrecorded are not this test's costs
    with wall_clock_limit(session.limits.timeout_s):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """Every check runs under ``--harness-timeout``: past it, the check fails naming the limit."""
    session = _harness_item(item)
    case = item.funcargs.get("harness_case") if session else None
    if not isinstance(case, CheckCase):
        return (yield)
    from harness.sandbox import CheckLimitExceeded, timeout_result, wall_clock_limit

    started = time.perf_counter()
    try:
        with wall_clock_limit(session.limits.timeout_s):
            return (yield)
    except CheckLimitExceeded:
        elapsed = time.perf_counter() - started
        result = timeout_result(case.identity, session.limits, seed=session.seed, elapsed_s=elapsed)
        _record_row(item, result.to_dict())


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A case that ran in the sandbox replays its row instead of running the check here."""
    case = pyfuncitem.funcargs.get("harness_case")
    if isinstance(case, SandboxedCase):
        _record_row(pyfuncitem, case.row)
        return True
    return None


@pytest.fixture
def harness_case(request: pytest.FixtureRequest) -> CheckCase | SandboxedCase:
    """The (model spec, check) pair this test runs, or the row of one that ran in the sandbox."""
    case: CheckCase | SandboxedCase = request.param
    request.node.user_properties.append((CASE_PROPERTY, json.dumps(case.identity)))
    return case


@pytest.fixture
def harness_model(request: pytest.FixtureRequest, harness_case: CheckCase) -> torch.nn.Module:
    """The case's model, built once per worker and shared read-only (checks copy it).

    A model whose optional extra is missing skips with the install command in the reason.
    """
    from harness.spec import MissingExtraError

    if isinstance(harness_case, SandboxedCase):
        return None  # its model was built in the sandbox, never here
    try:
        return activate(request.config).model(harness_case.spec)
    except MissingExtraError as error:
        pytest.skip(str(error))


@pytest.fixture
def harness_options(request: pytest.FixtureRequest) -> CheckOptions:
    """Check options from the command line (``--harness-seed``)."""
    return activate(request.config).options()


@pytest.fixture
def record_check(request: pytest.FixtureRequest):
    """Record a CheckResult as this test's report row, then fail, skip or warn as its status says."""

    def record(result: CheckResult) -> CheckResult:
        if STREAM_ENVIRONMENT in os.environ:  # inside the sandbox: an allocation refused by its limit says so
            from harness.sandbox import memory_result

            result = memory_result(result, activate(request.config).limits)
        row = result.to_dict()
        case = request.node.funcargs.get("harness_case")
        reason = case.spec.expected_failures.get(result.check) if case else None
        if reason:
            row["details"]["expected_failure"] = reason  # declared as data: the run treats it as a strict xfail
        _record_row(request.node, row)
        return result

    return record


def _record_row(node: pytest.Item, row: dict[str, Any]) -> None:
    """Attach ``row`` as the test's report row, with the artefacts its setup and check got from the cache (a row
    replayed from the sandbox keeps its own), then fail, skip or warn as its status says."""
    from harness.cache import take_uses
    from harness.report import cache_field

    uses = cache_field(take_uses())
    row = {**row, "cache": row.get("cache", uses)}
    properties = node.user_properties
    properties.append((ROW_PROPERTY, json.dumps(row, allow_nan=False)))
    for key in ("status", "measured", "threshold", "sample_size", "seed"):
        properties.append((f"harness.{key}", row[key]))
    if row.get("tolerance"):
        properties.append(("harness.tolerance", json.dumps(row["tolerance"])))
    status = row["status"]
    if status in ("failed", "error"):
        pytest.fail(row["message"], pytrace=False)
    if status == "skipped":
        pytest.skip(row["got"] or row["message"])
    if status == "inconclusive":
        pytest.skip(f"inconclusive: {row['message']}")
    if status == "warned":
        warnings.warn(HarnessWarning(row["message"]), stacklevel=3)

"""The ``harness`` console script. ``run`` is a thin layer over pytest: same checks, same results.

harness run [--tier 1|1-3|1,4] [--model NAME|module:attr ...] [--workers N] [-- PYTEST ARGS]
harness models

Bad input, whichever command meets it: :func:`main` is the one handler. Every user-input error (a
:class:`~harness.config.ConfigError`, which the store's errors and :class:`CliError` are, or a model selector
naming no model) prints one line, ``harness COMMAND: error: ...``, and exits with status 2; a bad flag does the
same through argparse. Inputs are validated before any work starts: nothing is half done when the line appears.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from harness.config import HYPOTHESIS_PROFILES, ConfigError, RunConfig, parse_tiers
from harness.io import check_writable
from harness.report import new_report_run_id


class CliError(ConfigError):
    """Bad command-line input. It and every other ConfigError print as ``harness COMMAND: error: ...``, exit 2."""


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr (with where to find the usage), exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def suites_dir() -> Path:
    """The ``suites/`` folder of the checkout the harness runs from (or of the working directory)."""
    for candidate in (Path(__file__).resolve().parent.parent / "suites", Path.cwd() / "suites"):
        if candidate.is_dir():
            return candidate
    raise CliError("cannot find the suites/ folder: run from a checkout of the harness (pip install -e .)")


def _seed(text: str) -> int:
    from harness.config import validate_seed

    try:
        return validate_seed(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _shard(text: str) -> str:
    from harness.shard import Shard

    try:
        return str(Shard.parse(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _workers(text: str) -> str:
    if text != "auto" and not text.isdigit():
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 or 'auto', got {text!r}")
    return text


def run_config(args: argparse.Namespace) -> RunConfig:
    """The run's settings: the --config file (if any), then every flag given on the command line on top."""
    from harness.config import load_run_config
    from harness.store.db import db_target

    config = load_run_config(args.config) if args.config else RunConfig()
    overrides = {
        "db_path": db_target(config.db_path),  # the config file's, else $HARNESS_DB_URL
        "tiers": args.tier,
        "models": tuple(args.model) or None,
        "workers": args.workers,
        "seed": args.seed,
        "report_dir": args.report_dir,
        "run_id": args.run_id,
        "hypothesis_profile": args.hypothesis_profile,
        "trust_model_code": args.trust_model_code or None,
        "pytest_args": tuple(args.pytest_args) or None,
    }
    return dataclasses.replace(config, **{key: value for key, value in overrides.items() if value is not None})


def check_outputs(config: RunConfig, folder: Path) -> None:
    """ConfigError unless the run's report folder takes its files without overwriting any and its ExperimentDB
    (if any) is one or can become one: checked before pytest starts, so nothing runs for a run that would fail."""
    from harness.report import check_report_folder
    from harness.store import ExperimentDB

    check_report_folder(folder, junit=folder / "junit.xml", remedy="another --run-id or --report-dir")
    if config.export.export_dir:
        check_writable(config.export.export_dir, "export folder")
    if config.db_path:
        ExperimentDB(config.db_path).close()


def pytest_arguments(args: argparse.Namespace) -> list[str]:
    """The pytest command line that ``harness run`` stands for."""
    from harness.config import tier4_deselection

    config = run_config(args)
    suites = suites_dir()
    requested = parse_tiers(config.tiers)
    paths = [str(suites / f"tier{tier}") for tier in requested if (suites / f"tier{tier}").is_dir()]
    if not paths:
        present = sorted(p.name for p in suites.glob("tier*") if p.is_dir())
        raise CliError(f"no suite for tier {config.tiers}; present: {', '.join(present)}")
    report_run_id = config.run_id or new_report_run_id()
    folder = Path(config.report_dir) / report_run_id
    check_outputs(config, folder)
    command = [*paths, "--junitxml", str(folder / "junit.xml"), "--harness-run-id", report_run_id]
    command += ["--harness-report-dir", config.report_dir, "--harness-seed", str(config.seed)]
    command += ["--hypothesis-profile", config.hypothesis_profile, "-p", "no:cacheprovider"]
    for model in config.models:
        command += ["--harness-model", model]
    for flag, value in (("device", args.device), ("dtype", args.dtype), ("max-tokens", args.max_tokens)):
        if value is not None:  # harness.placement: validated by the plugin, a bad value is a usage error
            command += [f"--harness-{flag}", str(value)]
    if config.trust_model_code:
        command.append("--trust-model-code")
    for flag, value in (("timeout", args.timeout), ("memory-limit", args.memory_limit)):
        if value is not None:  # harness.sandbox.Limits: validated by the plugin, a bad value is a usage error
            command += [f"--harness-{flag}", value]
    if config.db_path:
        command += ["--harness-db", config.db_path]
    if config.export.export_dir:
        command += ["--harness-artifacts-dir", config.export.export_dir]
    for flag, value in (("shard", args.shard), ("durations", args.durations)):
        if value is not None:  # harness.shard: --durations is read (and a bad file refused) by the plugin
            command += [f"--harness-{flag}", value]
    deselected = tier4_deselection(config.export) if 4 in requested else []
    if deselected:
        command += ["-k", "not (" + " or ".join(deselected) + ")"]
    if config.workers != "0":  # work stealing: each worker starts on a contiguous block (one model's cases of a
        # tier together: its exports and trained run are made once), an idle one takes from a busy one's tail
        command += ["-n", config.workers, "--dist", "worksteal"]
    return command + list(config.pytest_args)


def command_run(args: argparse.Namespace) -> int:
    import pytest

    command = pytest_arguments(args)
    from harness.store.backends import redact

    print("harness: pytest " + " ".join(map(redact, command)), flush=True)
    return int(pytest.main(command))


def command_models(args: argparse.Namespace) -> int:
    from harness.loading import resolve_models

    for spec in resolve_models([]):
        claims = [name for name, value in vars(spec.capabilities).items() if value is True]
        print(f"{spec.name:14s} {spec.task:22s} {', '.join(claims)}")
        if spec.description:
            print(f"{'':14s} {spec.description}")
    return 0


EXPORT_FORMATS = ("torchscript", "torchscript-script", "onnx", "onnx-int8")


def parse_formats(text: str) -> list[str]:
    formats = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [fmt for fmt in formats if fmt not in EXPORT_FORMATS]
    if unknown or not formats:
        raise CliError(f"--formats takes a comma-separated subset of {', '.join(EXPORT_FORMATS)}; got {text!r}")
    return formats


def command_export(args: argparse.Namespace) -> int:
    """Export one model to each format; a failed export is reported, and the exit status is 1."""
    import json

    from harness.export import ExportError, exports_for
    from harness.loading import resolve_models

    formats = parse_formats(args.formats)
    check_writable(args.out, "--out folder")
    specs = resolve_models([args.model])
    rows = []
    for spec in specs:
        exports = exports_for(spec, spec.build_model(), args.out)
        for fmt in formats:
            if not args.json:
                print(f"exporting {spec.name} to {fmt} ...", file=sys.stderr, flush=True)
            try:
                record = exports.record(fmt)
            except ExportError as error:
                rows.append({"model": spec.name, "format": fmt, "ok": False, "error": str(error),
                             "operator": error.operator, "opset": error.opset})  # fmt: skip
                continue
            rows.append({"model": spec.name, "format": fmt, "ok": True, "path": str(record.path),
                         "exporter": record.exporter, "opset": record.opset, "seconds": record.seconds,
                         "notes": list(record.notes)})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            outcome = (
                f"{row['exporter']} opset {row['opset']} in {row['seconds']:.1f}s -> {row['path']}"
                if row["ok"]
                else f"FAILED: {row['error']}"
            )
            print(f"{row['model']:14s} {row['format']:12s} {outcome}")
    return 0 if all(row["ok"] for row in rows) else 1


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise CliError(f"--batch-sizes takes comma-separated positive integers like 1,2,4; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise CliError(f"--batch-sizes takes comma-separated positive integers like 1,2,4; got {text!r}")
    return sizes


def command_perf(args: argparse.Namespace) -> int:
    """Measure one model's throughput and memory; with --baseline, exit 1 when a ratio crosses its limit."""
    import json
    from dataclasses import asdict

    from harness.loading import ModelSelectionError, resolve_models
    from harness.perf import compare_perf, format_table, load_perf, measure_perf, plot_perf, save_perf

    sizes = parse_batch_sizes(args.batch_sizes)
    for option, path in (("--save", args.save), ("--plot", args.plot)):
        if path:
            check_writable(path, f"{option} file", file=True)
    try:
        (spec,) = resolve_models([args.model])[:1]
        baseline = load_perf(Path(args.baseline)) if args.baseline else None
    except (ModelSelectionError, ValueError) as error:
        raise CliError(str(error)) from None
    print(f"measuring {spec.name} at batch sizes {sizes} on {args.device} ...", file=sys.stderr, flush=True)
    rows = measure_perf(spec, spec.build_model(), batch_sizes=sizes, device=args.device)
    violations = compare_perf(rows, baseline, max_slowdown=args.max_slowdown) if baseline else []
    if args.save:
        save_perf(rows, Path(args.save), model=spec.name)
    if args.plot:
        plot_perf(rows, Path(args.plot), title=f"{spec.name} on {args.device}")
    if args.json:
        print(json.dumps({"model": spec.name, "rows": [asdict(r) for r in rows],
                          "violations": [asdict(v) for v in violations]}, indent=2))  # fmt: skip
    else:
        print(format_table(rows))
        for violation in violations:
            print(f"REGRESSION {violation.mode} batch {violation.batch_size}: {violation.metric} ratio "
                  f"{violation.ratio:.2f} vs limit {violation.limit:.2f}")  # fmt: skip
    return 1 if violations else 0


def command_report(args: argparse.Namespace) -> int:
    """Render RUN_DIR/report.json to RUN_DIR/report.html, or (``report merge DIR...``) merge shards' reports."""
    from harness.report.html import write_html

    if args.run_dir[0] == "merge":
        return command_report_merge(args.run_dir[1:], args)
    if len(args.run_dir) > 1 or args.out or args.run_id:
        raise CliError("takes one RUN_DIR (or: harness report merge DIR... [--out DIR] [--run-id ID])")
    report = Path(args.run_dir[0]) / "report.json"
    if not report.is_file():
        raise CliError(f"{report} does not exist (give the folder a run wrote, e.g. reports/<run-id>)")
    try:
        print(write_html(report))
    except ValueError as error:
        raise CliError(str(error)) from None
    return 0


def command_report_merge(folders: list[str], args: argparse.Namespace) -> int:
    """Merge the shards' report folders into one report (harness.report.merge); exit 1 when it holds a failed or
    error row, so the merge is the sharded run's gate."""
    from harness.report.merge import read_shard, write_merged

    if not folders:
        raise CliError("merge takes the report folders of the shards: harness report merge DIR... [--out DIR]")
    run_id = args.run_id or new_report_run_id()
    out = Path(args.out or Path("reports") / run_id)
    summary = write_merged([read_shard(folder) for folder in folders], out, run_id)["summary"]
    counts = ", ".join(f"{n} {status}" for status, n in summary.items() if status != "total" and n)
    print(f"harness: merged {len(folders)} shards: {summary['total']} checks ({counts}); report: {out / 'report.json'}")
    return 1 if summary["failed"] or summary["error"] else 0


def command_bundle(args: argparse.Namespace) -> int:
    """Write a reproducibility bundle (zip) of one ExperimentDB run."""
    from harness.store import ExperimentDB, default_db_path, write_bundle
    from harness.store.backends import is_url, redact
    from harness.store.db import db_target

    target = db_target(args.db) or default_db_path()
    if not is_url(target) and not Path(target).is_file():
        raise CliError(f"no ExperimentDB at {target} (train something first, or pass --db)")
    out = Path(args.out or f"bundle-{args.run_id}.zip")
    check_writable(out, "--out file", file=True)
    try:
        with ExperimentDB(target) as db:
            path = write_bundle(db, args.run_id, out, report_dir=Path(args.report_dir) if args.report_dir else None)
    except KeyError as error:
        raise CliError(f"unknown run {args.run_id!r} in {redact(str(target))}: {error}") from None
    except FileExistsError as error:
        raise CliError(str(error)) from None
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="harness", description="Validate ML models with pytest suites in five tiers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run tiers on models (a thin layer over pytest)")
    run.add_argument("--config", help="a JSON or TOML run config (see harness/config.py); flags override it")
    run.add_argument("--tier", "--tiers", dest="tier", help="tiers to run: 1, 1-3 or 1,4 (default: every tier present)")
    run.add_argument(
        "--model", action="append", default=[], help="zoo name, module:attribute or path.py:attribute (repeatable)"
    )
    run.add_argument(
        "--trust-model-code",
        action="store_true",
        default=None,
        help="import path.py:attribute and folder models into this process instead of the bubblewrap sandbox",
    )
    run.add_argument("--timeout", help="wall-clock limit of each check in seconds (default: 600)")
    run.add_argument("--memory-limit", help="address-space limit of the sandbox, like 8G (default: 8G)")
    run.add_argument("--workers", type=_workers, help="pytest-xdist workers: a number or 'auto' (default: 0, serial)")
    run.add_argument("--report-dir", help="where RUN_ID/report.json, junit.xml and report.html go (default: reports)")
    run.add_argument("--run-id", help="id of this run: its report folder (default: UTC time + random suffix)")
    run.add_argument("--seed", type=_seed, help="seed of generated check inputs (default: 0)")
    run.add_argument("--hypothesis-profile", choices=HYPOTHESIS_PROFILES, help="default: ci")
    run.add_argument("--device", help="device every check runs on: cpu, cuda, cuda:N or mps (default: cpu)")
    run.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="models' dtype (default: float32)")
    run.add_argument("--max-tokens", type=int, help="token budget of the checks' batches (batch x length)")
    run.add_argument("--shard", type=_shard, help="run only shard K of N (like 2/3); `harness report merge` joins them")
    run.add_argument("--durations", help="a report.json of an earlier run that balances --shard (the same for all)")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    run.set_defaults(handler=command_run)

    export = commands.add_parser("export", help="export a model to TorchScript / ONNX / int8 ONNX")
    export.add_argument("--model", required=True, help="zoo name or module:attribute")
    export.add_argument("--formats", default="onnx,torchscript", help=f"comma-separated: {', '.join(EXPORT_FORMATS)}")
    export.add_argument("--out", default="reports/exports", help="output folder (default: reports/exports)")
    export.add_argument("--json", action="store_true", help="print the export records as JSON")
    export.set_defaults(handler=command_export)

    perf = commands.add_parser("perf", help="throughput and peak memory across batch sizes (ratios gated)")
    perf.add_argument("--model", required=True, help="zoo name or module:attribute")
    perf.add_argument("--batch-sizes", default="1,2,4,8,16,32", help="comma-separated (default 1,2,4,8,16,32)")
    perf.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    perf.add_argument("--save", help="write the measurements as JSON (a baseline for later runs)")
    perf.add_argument("--baseline", help="measurements saved by --save to gate against (ratios only)")
    perf.add_argument("--max-slowdown", type=float, default=1.5, help="allowed throughput ratio (default 1.5)")
    perf.add_argument("--plot", help="write throughput and memory plots to this PNG")
    perf.add_argument("--json", action="store_true", help="print JSON instead of a table")
    perf.set_defaults(handler=command_perf)

    report = commands.add_parser(
        "report", help="render RUN_DIR/report.json as a one-file HTML page; `report merge DIR...` joins shards"
    )
    report.add_argument(
        "run_dir",
        nargs="+",
        metavar="RUN_DIR | merge DIR...",
        help="a run folder, e.g. reports/<run-id>; or merge and the report folders of the N shards of one run",
    )
    report.add_argument("--out", help="merge: the merged report's folder, never overwritten (default: reports/RUN_ID)")
    report.add_argument("--run-id", help="merge: the merged report's run id (default: UTC time + random suffix)")
    report.set_defaults(handler=command_report)

    bundle = commands.add_parser("bundle", help="zip a run's config, environment, metrics and reports")
    bundle.add_argument("run_id", metavar="RUN_ID", help="an ExperimentDB run id (a training run, not a report's)")
    bundle.add_argument(
        "--db",
        help="the ExperimentDB: an SQLite file or a postgresql:// URL "
        "(default: $HARNESS_DB_URL, else $HARNESS_DB or reports/experiments.db)",
    )
    bundle.add_argument("--out", help="the zip to write (default: bundle-RUN_ID.zip; never overwritten)")
    bundle.add_argument("--report-dir", help="a run folder whose reports and plots go into the bundle")
    bundle.set_defaults(handler=command_bundle)

    from harness.monitoring.cli import add_baseline_parser, add_monitor_parser, add_profile_parser
    from harness.mutate.cli import add_mutate_parser
    from harness.report.diff import add_diff_parser
    from harness.training.cli import add_train_parser

    add_train_parser(commands)
    add_mutate_parser(commands)
    add_monitor_parser(commands)
    add_baseline_parser(commands)
    add_profile_parser(commands)
    add_diff_parser(commands)

    models = commands.add_parser("models", help="list the reference zoo and what each model supports")
    models.set_defaults(handler=command_models)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that mean bad input, not a bug: each is reported as one line."""
    from harness.loading import ModelSelectionError
    from harness.spec import SpecError

    return (ConfigError, ModelSelectionError, SpecError)


def one_line(error: BaseException) -> str:
    """The error's message on one line: a message of several lines keeps its first and its last."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def main(argv: Sequence[str] | None = None) -> int:
    """The ``harness`` console script: the one place bad input becomes one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except user_errors() as error:
        print(f"{parser.prog} {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

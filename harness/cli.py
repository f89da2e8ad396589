"""The ``harness`` console script. ``run`` is a thin layer over pytest: same checks, same results.

harness run [--tier 1|1-3|1,4] [--model NAME|module:attr ...] [--workers N] [-- PYTEST ARGS]
harness models
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.report import new_run_id

TIERS = range(1, 6)


class CliError(Exception):
    """Bad command-line input: printed as ``harness: error: ...`` with exit status 2."""


def suites_dir() -> Path:
    """The ``suites/`` folder of the checkout the harness runs from (or of the working directory)."""
    for candidate in (Path(__file__).resolve().parent.parent / "suites", Path.cwd() / "suites"):
        if candidate.is_dir():
            return candidate
    raise CliError("cannot find the suites/ folder: run from a checkout of the harness (pip install -e .)")


def parse_tiers(text: str | None) -> list[int]:
    """``"1"``, ``"1-3"``, ``"1,4"`` or None (every tier) into a sorted list of tier numbers."""
    if text is None:
        return list(TIERS)
    tiers: set[int] = set()
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise CliError(f"--tier must be tier numbers 1-5 like 1, 1-3 or 1,4; got {text!r}") from None
        if not (1 <= first <= last <= 5):
            raise CliError(f"--tier must be tier numbers 1-5 like 1, 1-3 or 1,4; got {text!r}")
        tiers.update(range(first, last + 1))
    return sorted(tiers)


def pytest_arguments(args: argparse.Namespace) -> list[str]:
    """The pytest command line that ``harness run`` stands for."""
    suites = suites_dir()
    requested = parse_tiers(args.tier)
    paths = [str(suites / f"tier{tier}") for tier in requested if (suites / f"tier{tier}").is_dir()]
    if not paths:
        present = sorted(p.name for p in suites.glob("tier*") if p.is_dir())
        raise CliError(f"no suite for tier {args.tier}; present: {', '.join(present)}")
    run_id = args.run_id or new_run_id()
    folder = Path(args.report_dir) / run_id
    command = [*paths, "--junitxml", str(folder / "junit.xml"), "--harness-run-id", run_id]
    command += ["--harness-report-dir", args.report_dir, "--harness-seed", str(args.seed)]
    command += ["--hypothesis-profile", args.hypothesis_profile, "-p", "no:cacheprovider"]
    for model in args.model:
        command += ["--model", model]
    if args.workers != "0":
        command += ["-n", args.workers]
    return command + list(args.pytest_args)


def command_run(args: argparse.Namespace) -> int:
    import pytest

    command = pytest_arguments(args)
    print("harness: pytest " + " ".join(command), flush=True)
    return int(pytest.main(command))


def command_models(args: argparse.Namespace) -> int:
    from harness.loading import resolve_models

    for spec in resolve_models([]):
        claims = [name for name, value in vars(spec.capabilities).items() if value is True]
        print(f"{spec.name:14s} {spec.task:22s} {', '.join(claims)}")
        if spec.description:
            print(f"{'':14s} {spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description="Validate ML models with pytest suites in five tiers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run tiers on models (a thin layer over pytest)")
    run.add_argument("--tier", default=None, help="tiers to run: 1, 1-3 or 1,4 (default: every tier present)")
    run.add_argument("--model", action="append", default=[], help="zoo name or module:attribute (repeatable)")
    run.add_argument("--workers", default="0", help="pytest-xdist workers: a number or 'auto' (default: 0, serial)")
    run.add_argument("--report-dir", default="reports", help="where RUN_ID/report.json and junit.xml go")
    run.add_argument("--run-id", default=None, help="run id (default: UTC time + random suffix)")
    run.add_argument("--seed", type=int, default=0, help="seed of generated check inputs (default: 0)")
    run.add_argument("--hypothesis-profile", default="ci", choices=("dev", "ci", "nightly"), help="default: ci")
    run.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after --")
    run.set_defaults(handler=command_run)

    models = commands.add_parser("models", help="list the reference zoo and what each model supports")
    models.set_defaults(handler=command_models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except CliError as error:
        parser.error(str(error))  # exits with status 2
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""``harness monitor``, ``harness baseline`` and ``harness profile``: Tier 5 from the command line.

These only parse arguments and print; the work (the monitor config, its data, drift, the gate, baselines and
reference profiles) is :mod:`harness.monitoring.monitor`, which documents the config file.

Exit status of ``harness monitor``: 0 for ok, warn or inconclusive; 1 for fail, or with ``--fail-on V`` for V and
every more severe verdict (ok < inconclusive < warn < fail: ``--fail-on inconclusive`` exits 1 unless the
verdict is ok, ``--fail-on warn`` on warn and fail); 2 for a usage error (a :class:`~harness.config.ConfigError`: bad config, missing or
unusable data or file, a baseline computed on another eval set).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from harness.config import ConfigError
from harness.monitoring.config import MonitorConfig
from harness.monitoring.drift import VERDICTS
from harness.monitoring.monitor import SPLITS, DataConfig


def command_baseline(args: argparse.Namespace) -> int:
    """Evaluate a gate config's candidate on its eval set and store it as the baseline later gates read."""
    from harness.monitoring.monitor import make_baseline, read_monitor_config

    try:
        summary = make_baseline(read_monitor_config(args.config), args.out, source=args.config)
    except ConfigError as error:
        print(f"harness baseline: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, allow_nan=False))
    return 0


FAIL_ON = VERDICTS[1:]  # --fail-on V: exit 1 on V and every more severe verdict


def failing_verdicts(fail_on: str) -> tuple[str, ...]:
    """The verdicts that exit 1 under ``--fail-on fail_on``: it and every more severe one."""
    return VERDICTS[VERDICTS.index(fail_on) :]


def command_monitor(args: argparse.Namespace) -> int:
    """Exit 1 for fail (and the verdicts ``--fail-on`` adds), 0 otherwise, 2 for a usage error."""
    from harness.monitoring.monitor import read_monitor_config, run_monitor

    try:
        result = run_monitor(read_monitor_config(args.config), source=args.config)
    except ConfigError as error:
        print(f"harness monitor: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, allow_nan=False))
    else:
        print(format_result(result))
    return 1 if result["verdict"] in failing_verdicts(args.fail_on) else 0


def format_result(result: dict[str, Any]) -> str:
    """A short human-readable table of a drift or gate result."""
    if result["kind"] == "gate":
        needed = f"; {result['n_needed']} examples would tell" if result["verdict"] == "inconclusive" else ""
        return (f"gate: {result['verdict']}: degradation {result['degradation']:.4f} "
                f"[{result['lower']:.4f}, {result['upper']:.4f}] ({result['details']['method']}) vs margin "
                f"{result['margin']:.4f}, MDE {result['mde']:.4f}, n={result['n_examples']}{needed}")  # fmt: skip
    lines = [
        f"drift: {result['verdict']} (embedding: {result['embedding'] or 'none'})",
        f"{'feature':26s} {'test':24s} {'effect':>8s} {'matters':>8s} {'mde':>8s} {'p_adj':>8s} verdict",
    ]
    for row in result["features"]:
        needed = f" (needs {row['n_needed']} examples per profile)" if row["verdict"] == "inconclusive" else ""
        lines.append(f"{row['feature']:26s} {row['test']:24s} {float(row['effect_size']):8.3f} "
                     f"{float(row['min_effect']):8.3f} {float(row['mde']):8.3f} {float(row['adjusted_p']):8.3g} "
                     f"{row['verdict']}{needed}")  # fmt: skip
    return "\n".join(lines)


def command_profile(args: argparse.Namespace) -> int:
    """Compute a reference profile; write it to --out and/or store it in --db. Exit 2 on a usage error."""
    from harness.monitoring.monitor import make_reference_profile

    try:
        data = DataConfig(source=args.data, split=args.split, min_chars=args.min_chars, start=args.start,
                          stop=args.stop, limit=args.limit, shuffle=args.shuffle)  # fmt: skip
        summary = make_reference_profile(args.model, data, embedding=args.embedding, max_embeddings=args.max_embeddings,
                                         seed=args.seed, out=args.out, db=args.db, name=args.name)  # fmt: skip
    except ConfigError as error:
        print(f"harness profile: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


def add_monitor_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``harness monitor --config FILE [--json]``."""
    parser = subparsers.add_parser("monitor", help="Tier 5: drift against a reference profile, or a regression gate")
    parser.add_argument("--config", required=True, help="JSON or TOML monitor config (see harness.monitoring.monitor)")
    parser.add_argument("--json", action="store_true", help="print the structured result as JSON")
    parser.add_argument("--fail-on", choices=FAIL_ON, default="fail",
                        help="exit 1 on this verdict and every more severe one (ok < inconclusive < warn < fail; "
                        "default fail; the nightly uses inconclusive: anything but ok)")  # fmt: skip
    parser.set_defaults(handler=command_monitor)
    return parser


def add_baseline_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``harness baseline --config GATE --out FILE``: store the baseline a gate compares against."""
    parser = subparsers.add_parser(
        "baseline", help="evaluate a gate config's candidate and store it as the baseline of later gates"
    )
    parser.add_argument("--config", required=True, help='a gate monitor config (mode = "gate")')
    parser.add_argument("--out", required=True, help="the baseline JSON file to write (a CI artifact)")
    parser.set_defaults(handler=command_baseline)
    return parser


def add_profile_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``harness profile --model M (--out FILE | --db PATH)``: compute a reference profile."""
    parser = subparsers.add_parser("profile", help="compute a reference profile for drift monitoring")
    parser.add_argument("--model", required=True, help="zoo name or module:attribute")
    parser.add_argument("--data", default="reference_text", help="reference_text, digits or a text file")
    parser.add_argument("--split", default=DataConfig.split, choices=SPLITS, help="a text file's examples: its lines, "
                        "paragraphs or sentences (default lines)")  # fmt: skip
    parser.add_argument("--min-chars", type=int, default=DataConfig.min_chars,
                        help="a text file's examples shorter than this are dropped (default 40)")  # fmt: skip
    parser.add_argument("--start", type=float, default=0.0, help="fraction of the data where examples start")
    parser.add_argument("--stop", type=float, default=1.0, help="fraction of the data where examples stop")
    parser.add_argument("--limit", type=int, default=None, help="at most this many examples")
    parser.add_argument("--shuffle", action="store_true", help="seeded shuffle of the examples before the cut")
    parser.add_argument("--embedding", default="auto", choices=("auto", "minilm", "model", "none"),
                        help="auto (default): the pretrained minilm when installed; model: the model's own")  # fmt: skip
    parser.add_argument("--max-embeddings", type=int, default=MonitorConfig.max_embeddings,
                        help="embeddings kept (a seeded sample)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of shuffling and sampling (default 0)")
    parser.add_argument("--out", help="write the profile to this JSON file (a CI artifact)")
    parser.add_argument("--db", help="store the profile in this ExperimentDB (SQLite file)")
    parser.add_argument("--name", help="profile name in the ExperimentDB (default: the model name)")
    parser.set_defaults(handler=command_profile)
    return parser

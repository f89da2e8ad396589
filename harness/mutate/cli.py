"""``harness mutate``: how many planted faults do the selected tiers' checks kill?

Exit status: 0 when every model's kill rate is at least ``--min-kill-rate``, 1 otherwise, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_mutate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``harness mutate`` on an argparse subparsers object."""
    parser = subparsers.add_parser("mutate", help="plant faults in a model and report how many the checks kill")
    parser.add_argument("--model", action="append", default=[], help="zoo name or module:attribute (repeatable)")
    parser.add_argument("--tiers", default="1-4", help="tiers whose checks run: 1-4, 1,3 or 2 (default 1-4)")
    parser.add_argument("--report-dir", help="folder for mutation.json and mutation.html (default: none written)")
    parser.add_argument("--min-kill-rate", type=float, default=0.9, help="lowest kill rate per model (default 0.9)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated check inputs (default 0)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of a table")
    parser.set_defaults(handler=command_mutate)
    return parser


def command_mutate(args: argparse.Namespace) -> int:
    """Run the mutation analysis; 0 when every kill rate meets the threshold, 1 if not, 2 for a usage error."""
    from harness.checks import CheckOptions
    from harness.config import parse_tiers
    from harness.loading import ModelSelectionError, resolve_models
    from harness.mutate.report import report_dict, write_mutation_report
    from harness.mutate.runner import mutate_model

    try:
        if not args.model:
            raise ValueError("--model is required (repeatable): a zoo name or module:attribute")
        if not 0.0 <= args.min_kill_rate <= 1.0:
            raise ValueError(f"--min-kill-rate must be in [0, 1], got {args.min_kill_rate}")
        tiers = parse_tiers(args.tiers, option="--tiers")
        options = CheckOptions(seed=args.seed)
        specs = resolve_models(args.model)
    except (ValueError, KeyError, ModelSelectionError) as error:
        print(f"harness mutate: error: {error}", file=sys.stderr)
        return 2
    mutations = [mutate_model(spec, tiers=tiers, options=options) for spec in specs]
    report = report_dict(mutations, min_kill_rate=args.min_kill_rate)
    if args.report_dir:
        path = write_mutation_report(mutations, Path(args.report_dir), min_kill_rate=args.min_kill_rate)
        print(f"wrote {path} and {path.with_suffix('.html')}", file=sys.stderr)
    print(json.dumps(report, indent=2, allow_nan=False) if args.json else format_table(mutations))
    return 0 if report["passed"] else 1


def format_table(mutations: list[Any]) -> str:
    """One line per model (kill rate, survivors named), then each survivor's description."""
    lines = [f"{'model':24s} {'mutants':>7s} {'killed':>6s} {'rate':>6s}  survivors"]
    for m in mutations:
        lines.append(
            f"{m.model:24s} {len(m.mutants):7d} {m.killed:6d} {m.kill_rate:6.0%}  {', '.join(m.survivors) or '-'}"
        )
        lines.extend(f"  survivor {o.mutant}: {o.description}" for o in m.mutants if not o.killed)
        if m.false_alarms:
            lines.append(f"  false alarms (fail the clean model): {', '.join(m.false_alarms)}")
    return "\n".join(lines)

"""harness mutate on every reference zoo model, Tier 1-4: mutants, kills, kill rate, survivors, seconds.

Run: ``python benchmarks/bench_mutate.py [--tiers 1-4] [--model NAME ...]``. The issue's budget is all
reference models within ten minutes on two cores; the total is printed last.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="1-4", help="tiers to run (default 1-4)")
    parser.add_argument("--model", action="append", default=[], help="zoo names (default: every one)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)

    from harness.config import parse_tiers
    from harness.mutate import mutate_model
    from harness_zoo import ZOO, load_zoo_spec

    tiers = parse_tiers(args.tiers, option="--tiers")
    print(f"{'model':22s} {'mutants':>7s} {'killed':>6s} {'rate':>6s} {'seconds':>8s}  survivors")
    started = time.perf_counter()
    for name in args.model or list(ZOO):
        result = mutate_model(load_zoo_spec(name), tiers=tiers)
        survivors = ", ".join(result.survivors) or "-"
        alarms = f"  (false alarms: {', '.join(result.false_alarms)})" if result.false_alarms else ""
        print(
            f"{name:22s} {len(result.mutants):7d} {result.killed:6d} {result.kill_rate:6.0%} "
            f"{result.seconds:8.1f}  {survivors}{alarms}",
            flush=True,
        )
    print(f"total {time.perf_counter() - started:.1f} s for tiers {args.tiers}")


if __name__ == "__main__":
    main()

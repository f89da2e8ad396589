"""Time `pytest suites/tier1` on the reference models, serially and with pytest-xdist.

    python benchmarks/bench_tier1.py [--repeats N] [--workers 2] [--model NAME ...]

Prints a table: wall seconds (median of the repeats, whole process including start-up), checks run,
checks per second, and the speed-up of the parallel run over the serial one. Each run writes its
report to a temporary folder; the check count comes from that report.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from suite_runner import run_suite


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode; the median is reported (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers of the parallel mode (default 2)")
    parser.add_argument("--model", action="append", default=[], help="zoo model (default: the whole zoo)")
    args = parser.parse_args()
    if args.repeats < 1 or args.workers < 1:
        parser.error(f"--repeats and --workers must be >= 1, got repeats={args.repeats}, workers={args.workers}")

    results: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, workers in (("serial", 0), (f"-n {args.workers}", args.workers)):
            walls, checks = [], 0
            for repeat in range(args.repeats):
                folder = Path(tmp) / f"{workers}-{repeat}"
                wall, rows = run_suite(1, models=args.model, folder=folder, workers=workers)
                checks = len(rows)
                walls.append(wall)
            results[label] = (statistics.median(walls), checks)

    serial_wall = results["serial"][0]
    print(f"{'mode':<8} {'wall s':>8} {'checks':>7} {'checks/s':>9} {'speed-up':>9}")
    for label, (wall, checks) in results.items():
        print(f"{label:<8} {wall:>8.2f} {checks:>7d} {checks / wall:>9.2f} {serial_wall / wall:>8.2f}x")


if __name__ == "__main__":
    main()

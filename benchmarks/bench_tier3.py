"""Time `pytest suites/tier3` on the reference models: cold (empty run cache), warm (cached runs), and
warm with pytest-xdist.

    python benchmarks/bench_tier3.py [--workers 2] [--model NAME ...]

Prints a table: wall seconds (whole process including start-up), checks in the report, and checks per
second. Every mode uses one fresh HARNESS_CACHE_DIR (the cold run fills it with tokenizers and trained
runs; the warm runs reuse them), so the figures never depend on the machine's own cache.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from suite_runner import run_suite


def _wall_and_count(workers: int, models: list[str], folder: Path, cache: Path) -> tuple[float, int]:
    wall, rows = run_suite(3, models=models, folder=folder, workers=workers, env={"HARNESS_CACHE_DIR": str(cache)})
    return wall, len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers of the parallel mode (default 2)")
    parser.add_argument("--model", action="append", default=[], help="zoo model (default: the whole zoo)")
    args = parser.parse_args()
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got workers={args.workers}")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        modes = (("cold", 0), ("warm", 0), (f"warm -n {args.workers}", args.workers))
        results = {
            label: _wall_and_count(workers, args.model, Path(tmp) / label.replace(" ", ""), cache)
            for label, workers in modes
        }
    print(f"{'mode':<12} {'wall s':>8} {'checks':>7} {'checks/s':>9}")
    for label, (wall, checks) in results.items():
        print(f"{label:<12} {wall:>8.2f} {checks:>7d} {checks / wall:>9.2f}")


if __name__ == "__main__":
    main()

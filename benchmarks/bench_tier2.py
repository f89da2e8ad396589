"""Time `pytest suites/tier2` on the reference models, serially, one pytest process per model and one for all.

    python benchmarks/bench_tier2.py [--model NAME ...]

Prints a table: wall seconds per model (whole process, start-up included), checks run (from each run's
report), and the slowest check of the model with its duration; then the one-process run over every model.
The issue's budget is three minutes for Tier 2 on all reference models on two cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from suite_runner import run_suite

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="zoo model (default: the whole zoo)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from harness_zoo import ZOO

    models = args.model or list(ZOO)
    print(f"{'model':<24} {'wall s':>7} {'checks':>7} {'ran':>4}  slowest check")
    with tempfile.TemporaryDirectory() as tmp:
        for index, model in enumerate(models):
            folder = Path(tmp) / str(index)
            wall, rows = run_suite(2, models=[model], folder=folder)
            ran = [row for row in rows if row["status"] != "skipped"]
            slowest = max(rows, key=lambda row: row["duration_s"])
            print(
                f"{model:<24} {wall:>7.2f} {len(rows):>7d} {len(ran):>4d}  {slowest['check']} ({slowest['duration_s']:.2f} s)"
            )
        wall, rows = run_suite(2, models=models, folder=Path(tmp) / "all")
    print(f"{'all, one process':<24} {wall:>7.2f} {len(rows):>7d}   (budget 180 s)")


if __name__ == "__main__":
    main()

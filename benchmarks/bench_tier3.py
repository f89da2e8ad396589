"""Time `pytest suites/tier3` on the reference models: cold (empty run cache), warm (cached runs), and
warm with pytest-xdist.

    python benchmarks/bench_tier3.py [--workers 2] [--model NAME ...]

Prints a table: wall seconds (whole process including start-up), checks in the report, and checks per
second. Every mode uses one fresh HARNESS_CACHE_DIR (the cold run fills it with tokenizers and trained
runs; the warm runs reuse them), so the figures never depend on the machine's own cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_tier3(workers: int, models: list[str], folder: Path, cache: Path) -> tuple[float, int]:
    """One pytest process; returns (wall seconds, rows in its report)."""
    command = [sys.executable, "-m", "pytest", str(REPO / "suites" / "tier3"), "-q", "-p", "no:cacheprovider"]
    command += ["--hypothesis-profile", "ci", "--junitxml", str(folder / "junit.xml")]
    command += [arg for model in models for arg in ("--model", model)]
    if workers:
        command += ["-n", str(workers)]
    env = {**os.environ, "HARNESS_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(
            f"tier3 run failed (exit {completed.returncode}):\n{completed.stdout[-3000:]}\n{completed.stderr[-2000:]}"
        )
    return wall, len(json.loads((folder / "report.json").read_text())["rows"])


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
            label: run_tier3(workers, args.model, Path(tmp) / label.replace(" ", ""), cache) for label, workers in modes
        }
    print(f"{'mode':<12} {'wall s':>8} {'checks':>7} {'checks/s':>9}")
    for label, (wall, checks) in results.items():
        print(f"{label:<12} {wall:>8.2f} {checks:>7d} {checks / wall:>9.2f}")


if __name__ == "__main__":
    main()

"""The speed-up of `harness run --workers N` over `--workers 0`, cold and warm caches, idle and busy machine.

    python benchmarks/bench_parallel.py [--workers 2] [--tiers 1 --tiers 1-5] [--repeats 1] [--busy 2]

Each selection runs with ``--workers 0`` and ``--workers N``, each mode on its own fresh cache folder
(``HARNESS_CACHE_DIR``): first cold (nothing cached: tokenizers trained, models trained, exports made), then
warm (the same folder again; the warm runs of the two modes alternate, ``--repeats`` times, and the median is
reported). With ``--busy K`` a last pair of warm runs of the first selection shares the machine with K other
CPU-bound processes: the CPU seconds column shows what each mode costs when the machine is not idle.

Columns: wall seconds of the whole ``harness run`` process (start-up, collection and report included), CPU
seconds of it and its workers (user + system), checks in the report, and the speed-up (serial wall / parallel
wall) of each pair measured in this one run. Every run must be green: a timing of a red run means nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed_run(tiers: str, workers: int, cache: Path, reports: Path) -> tuple[float, float, int]:
    """One ``harness run``: (wall seconds, CPU seconds of it and its children, checks in its report)."""
    run_id = f"t{tiers.replace('-', 'to')}-w{workers}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "harness.cli", "run", "--tier", tiers, "--workers", str(workers)]
    command += ["--report-dir", str(reports), "--run-id", run_id]
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**environment,
                               "HARNESS_CACHE_DIR": str(cache)})  # fmt: skip
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        sys.exit(f"harness run --tier {tiers} --workers {workers} failed (exit {completed.returncode}):\n"
                 f"{completed.stdout[-3000:]}\n{completed.stderr[-2000:]}")  # fmt: skip
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows = json.loads((reports / run_id / "report.json").read_text())["rows"]
    return wall, cpu, len(rows)


def spin(stop) -> None:
    """A CPU-bound process: what the other jobs on a shared runner look like to a run."""
    while not stop.is_set():
        sum(range(10_000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers of the parallel mode (default 2)")
    parser.add_argument("--tiers", action="append", help="a --tier selection (repeatable; default: 1 and 1-5)")
    parser.add_argument("--repeats", type=int, default=1, help="warm runs per mode; the median is reported")
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes of the busy pair (0: no busy pair)")
    args = parser.parse_args()
    if args.workers < 1 or args.repeats < 1 or args.busy < 0:
        parser.error("--workers and --repeats must be >= 1 and --busy >= 0")
    selections = args.tiers or ["1", "1-5"]
    modes = (0, args.workers)
    table = []
    with tempfile.TemporaryDirectory(prefix="bench-parallel-") as tmp:
        root = Path(tmp)
        for tiers in selections:
            caches = {workers: root / f"cache-{tiers}-{workers}" for workers in modes}
            cold = {workers: timed_run(tiers, workers, caches[workers], root / "reports") for workers in modes}
            warm_runs: dict[int, list[tuple[float, float, int]]] = {workers: [] for workers in modes}
            for _ in range(args.repeats):
                for workers in modes:
                    warm_runs[workers].append(timed_run(tiers, workers, caches[workers], root / "reports"))
            warm = {w: tuple(statistics.median(r[i] for r in runs) for i in range(3)) for w, runs in warm_runs.items()}
            table += [(tiers, "cold", cold), (tiers, "warm", warm)]
        if args.busy:
            stop = multiprocessing.Event()
            spinners = [multiprocessing.Process(target=spin, args=(stop,)) for _ in range(args.busy)]
            for process in spinners:
                process.start()
            tiers = selections[0]
            busy = {workers: timed_run(tiers, workers, root / f"cache-{tiers}-{workers}", root / "reports")
                    for workers in modes}  # fmt: skip
            stop.set()
            for process in spinners:
                process.join()
            table.append((tiers, f"warm, {args.busy} busy", busy))

    print(f"harness run --workers 0 vs --workers {args.workers} on the zoo ({os.cpu_count()} CPUs)\n")
    print(f"{'tiers':6s} {'caches':14s} {'serial s':>9s} {'cpu s':>7s} {'-n s':>7s} {'cpu s':>7s} {'checks':>6s} "
          f"{'speed-up':>8s}")  # fmt: skip
    for tiers, label, runs in table:
        (serial, serial_cpu, checks), (parallel, parallel_cpu, _) = runs[0], runs[args.workers]
        print(f"{tiers:6s} {label:14s} {serial:9.1f} {serial_cpu:7.1f} {parallel:7.1f} {parallel_cpu:7.1f} "
              f"{int(checks):6d} {serial / parallel:7.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()

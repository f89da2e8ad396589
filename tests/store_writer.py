"""A writer process for the ExperimentDB crash and concurrency tests (run as a script, not collected by pytest).

DB is an SQLite file path or a postgresql:// URL.

python tests/store_writer.py loop DB PROGRESS METRICS_PER_STEP
    start one run, then log steps 0, 1, 2, ... (METRICS_PER_STEP metrics per step, one transaction each);
    after each commit, append the number of committed steps to PROGRESS and flush. Runs until killed
    (or MAX_STEPS).
python tests/store_writer.py batch DB GO TAG RUNS STEPS
    wait until the file GO exists, open DB (possibly creating it), then write RUNS runs of STEPS steps
    (one "loss" metric each, one transaction each), finishing each run; print "done".
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from harness.store import ExperimentDB

MAX_STEPS = 100_000  # a loop writer nobody kills stops here


def loop(db_path: str, progress_path: Path, metrics_per_step: int) -> None:
    with ExperimentDB(db_path) as db, progress_path.open("a") as progress:
        run_id = db.start_run(name="killed", config={"kind": "loop"}, model="writer", seed=0)
        progress.write(f"run {run_id}\n")
        progress.flush()
        for step in range(MAX_STEPS):
            db.log_metrics(run_id, step, {f"m{index:03d}": step + index / 1000 for index in range(metrics_per_step)})
            progress.write(f"{step + 1}\n")
            progress.flush()


def batch(db_path: str, go_path: Path, tag: str, runs: int, steps: int) -> None:
    while not go_path.exists():
        time.sleep(0.005)
    with ExperimentDB(db_path) as db:
        for index in range(runs):
            run_id = db.start_run(name=f"{tag}-{index}", config={"tag": tag, "index": index}, model="writer")
            for step in range(steps):
                db.log_metrics(run_id, step, {"loss": 1.0 / (step + 1)})
            db.finish_run(run_id, summary={"steps": steps})
    print("done", flush=True)


if __name__ == "__main__":
    mode, *arguments = sys.argv[1:]
    if mode == "loop":
        loop(arguments[0], Path(arguments[1]), int(arguments[2]))
    elif mode == "batch":
        batch(arguments[0], Path(arguments[1]), arguments[2], int(arguments[3]), int(arguments[4]))
    else:
        raise SystemExit(f"mode must be 'loop' or 'batch', got {mode!r}")

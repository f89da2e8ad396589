"""The bubblewrap sandbox's start-up cost per sandboxed session, in seconds.

Runs the same pytest session (Tier 1, one check, ``tests/user_models/custom_lm.py`` as a path selector) with
``--trust-model-code`` (imported in-process) and without (a child session in the sandbox), alternating, and
prints the wall time of each, the median difference (the sandbox's cost: one more interpreter, torch and pytest
start-up, the namespaces and mounts) and the child's own start-up to its first collected case.

    python benchmarks/bench_sandbox_startup.py [REPEATS]
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(folder: Path, run_id: str, *extra: str) -> tuple[float, dict]:
    command = [sys.executable, "-m", "pytest", str(REPO / "suites" / "tier1"), "-q", "-p", "no:cacheprovider"]
    command += ["--hypothesis-profile", "ci", "-k", "batch_independence", "--model", f"{folder / 'model.py'}:SPEC"]
    command += ["--harness-report-dir", str(folder / "reports"), "--harness-run-id", run_id, *extra]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    elapsed = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(completed.stdout[-2000:] + completed.stderr[-2000:])
    return elapsed, json.loads((folder / "reports" / run_id / "report.json").read_text())


def main(repeats: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    shutil.copy(REPO / "tests" / "user_models" / "custom_lm.py", folder / "model.py")
    trusted, sandboxed, child = [], [], []
    for index in range(repeats):
        trusted.append(run(folder, f"t{index}", "--trust-model-code")[0])
        seconds, report = run(folder, f"s{index}")
        sandboxed.append(seconds)
        child.append(report["sandbox"]["startup_s"])
    shutil.rmtree(folder)
    print(f"{'run':>4} {'trusted s':>10} {'sandboxed s':>12} {'difference s':>13} {'child start-up s':>17}")
    for index in range(repeats):
        difference = sandboxed[index] - trusted[index]
        print(f"{index:>4} {trusted[index]:>10.2f} {sandboxed[index]:>12.2f} {difference:>13.2f} {child[index]:>17.2f}")
    differences = [s - t for s, t in zip(sandboxed, trusted, strict=True)]
    print(f"median sandbox cost per session: {statistics.median(differences):.2f} s on {os.cpu_count()} cores")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)

"""One timed pytest process on a tier's suite: what the suite benchmarks share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_suite(
    tier: int, *, models: list[str], folder: Path, workers: int = 0, env: dict[str, str] | None = None
) -> tuple[float, list[dict]]:
    """Run ``suites/tier{tier}`` (ci profile, report under ``folder``); return (wall seconds, report rows).

    A failing run ends the benchmark with pytest's output: a timing of a red suite means nothing.
    """
    command = [sys.executable, "-m", "pytest", str(REPO / "suites" / f"tier{tier}"), "-q", "-p", "no:cacheprovider"]
    command += ["--hypothesis-profile", "ci", "--junitxml", str(folder / "junit.xml")]
    command += [arg for model in models for arg in ("--harness-model", model)]
    if workers:
        command += ["-n", str(workers)]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(
            f"tier{tier} run failed (exit {completed.returncode}):\n"
            f"{completed.stdout[-3000:]}\n{completed.stderr[-2000:]}"
        )
    return wall, json.loads((folder / "report.json").read_text())["rows"]

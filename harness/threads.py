"""How many intra-op threads each process of a run gets: the cores actually free, shared by its workers.

A laptop or a shared CI runner is never idle. A serial run that takes every core while two other processes
also want them oversubscribes the machine, and OpenMP threads that spin at every barrier while a sibling waits
for its turn turn that into many times the CPU the work needs. So a harness session decides once, before torch
loads, from what the machine has now:

- usable cores: the CPUs this process may run on (its affinity mask), capped by a cgroup CPU quota;
- busy cores: the runnable processes besides this one (``/proc/loadavg``'s instantaneous count, the median of a
  few samples), i.e. other people's work;
- free cores: usable minus busy, at least one; each of the run's ``workers`` processes (1 when serial) gets
  ``free // workers`` threads, at least one.

The choice is exported as ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` (pytest-xdist workers inherit the controller's
environment, so all of a run's processes follow one decision), with ``OMP_WAIT_POLICY=PASSIVE``: a waiting
thread sleeps instead of spinning. A value the user set is kept.
"""

from __future__ import annotations

import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLES = 5  # readings of the runnable count, 20 ms apart: one reading catches a passing spike
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ThreadPlan:
    """The cores a run found and the intra-op threads each of its processes uses."""

    usable_cores: int
    busy_cores: int
    workers: int  # processes running checks at once (1: serial)
    threads: int  # intra-op threads per process
    source: str  # "free cores" or "OMP_NUM_THREADS" (set by the user, kept)

    def environment(self) -> dict[str, int | str]:
        """What a report records of the choice."""
        return {"usable_cores": self.usable_cores, "busy_cores": self.busy_cores, "workers": self.workers,
                "threads_per_process": self.threads, "threads_from": self.source}  # fmt: skip


def usable_cores() -> int:
    """The CPUs this process may use: its affinity mask, capped by the cgroup v2 quota (``cpu.max``) if any."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    return cores if quota == "max" else max(1, min(cores, math.ceil(int(quota) / int(period))))


def busy_cores(samples: int = SAMPLES) -> int:
    """Processes runnable right now besides this one (0 where ``/proc/loadavg`` is unavailable)."""
    readings = []
    for sample in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        readings.append(max(0, running - 1))  # the reader is runnable while it reads
        if sample + 1 < samples:
            time.sleep(0.02)
    return int(statistics.median(readings))


def plan_threads(workers: int) -> ThreadPlan:
    """The thread plan of a run with ``workers`` check processes (0 or 1: serial), from the machine as it is."""
    workers = max(1, workers)
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:  # decided already (by the user, or the xdist controller): one reading
        return ThreadPlan(usable_cores(), busy_cores(samples=1), workers, int(given), "OMP_NUM_THREADS")
    usable, busy = usable_cores(), busy_cores()
    return ThreadPlan(usable, busy, workers, max(1, max(1, usable - busy) // workers), "free cores")


def apply_plan(plan: ThreadPlan) -> None:
    """Export the plan for this process and the workers it starts (before torch loads; see the module docstring).
    Where torch is loaded already its intra-op pool is resized too."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(plan.threads))
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(plan.threads)

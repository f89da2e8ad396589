"""Thread counts come from the cores actually free, are decided once per run, and never spin."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from harness.threads import ThreadPlan, busy_cores, plan_threads, usable_cores


def spin(stop) -> None:
    while not stop.is_set():
        sum(range(10_000))


@pytest.fixture
def two_busy_processes():
    stop = multiprocessing.Event()
    spinners = [multiprocessing.Process(target=spin, args=(stop,), daemon=True) for _ in range(2)]
    for process in spinners:
        process.start()
    time.sleep(0.3)  # both are running
    yield
    stop.set()
    for process in spinners:
        process.join(timeout=10)


def test_two_cpu_bound_processes_count_as_two_busy_cores(two_busy_processes):
    assert busy_cores() >= 2  # the test run's other workers may add more, never fewer


def test_a_busy_machine_gets_fewer_threads_than_its_cores(two_busy_processes, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    plan = plan_threads(1)
    assert plan.source == "free cores"
    assert plan.threads == max(1, usable_cores() - plan.busy_cores) <= max(1, usable_cores() - 2)


@pytest.mark.parametrize(("usable", "busy", "workers", "threads"), [(2, 0, 1, 2), (2, 0, 2, 1), (8, 2, 2, 3),
                                                                     (2, 3, 1, 1), (4, 0, 8, 1)])  # fmt: skip
def test_free_cores_are_shared_by_the_workers(usable, busy, workers, threads, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("harness.threads.usable_cores", lambda: usable)
    monkeypatch.setattr("harness.threads.busy_cores", lambda: busy)
    assert plan_threads(workers) == ThreadPlan(usable, busy, workers, threads, "free cores")


def test_a_thread_count_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert plan_threads(2).threads == 3 and plan_threads(2).source == "OMP_NUM_THREADS"


def test_xdist_workers_inherit_the_controllers_plan_and_wait_passively(tmp_path):
    """A harness session with ``-n 2``: both workers run with the controller's thread count and passive waits."""
    (tmp_path / "test_probe.py").write_text(
        "import json, os, pathlib, torch\n"
        "def probe(name, worker_id):\n"
        "    seen = [worker_id, os.environ.get('OMP_NUM_THREADS'), os.environ.get('OMP_WAIT_POLICY'),\n"
        "            torch.get_num_threads()]\n"
        "    pathlib.Path(__file__).with_name(name + '.json').write_text(json.dumps(seen))\n"
        "def test_one(worker_id):\n"
        "    probe('one', worker_id)\n"
        "def test_two(worker_id):\n"
        "    probe('two', worker_id)\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                            "OMP_WAIT_POLICY")}  # fmt: skip
    command = [sys.executable, "-m", "pytest", str(tmp_path), "-n", "2", "-q", "-p", "no:cacheprovider"]
    command += ["--harness-model", "gpt2-tiny", "--harness-report-dir", str(tmp_path / "reports")]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    probes = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("one", "two")]
    threads = {probe[1] for probe in probes}
    assert len(threads) == 1 and int(threads.pop()) >= 1  # one decision, made by the controller
    assert {probe[2] for probe in probes} == {"PASSIVE"}
    assert all(probe[3] == int(probe[1]) for probe in probes)

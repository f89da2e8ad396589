"""Throughput and peak memory across batch sizes, for inference and for one training step.

Absolute numbers describe one machine on one afternoon; only ratios to a stored baseline (the rows of an
earlier run, saved by :func:`save_perf`), taken on the same kind of machine, are gated (:func:`compare_perf`).
(These are perf measurements, never called profiles: a "profile" in the harness is a Tier 5 reference profile.) Memory is the peak resident
set size above the level before the step (sampled from ``/proc/self/statm`` on Linux), or the CUDA
allocator's peak when the model runs on a GPU. Measuring walks up the batch sizes and stops at the
first out-of-memory error, which is recorded, not raised.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from harness.adapters import adapter_for
from harness.io import atomic_write_text
from harness.spec import ModelSpec

MODES = ("inference", "train-step")


@dataclass(frozen=True)
class PerfRow:
    """One (mode, batch size) measurement."""

    mode: str  # "inference" or "train-step"
    batch_size: int
    length: int  # tokens per row (1 for images)
    seconds: float  # median wall time of one call
    samples_per_s: float
    tokens_per_s: float
    peak_memory_mb: float  # peak RSS (or CUDA allocation) above the level before the call
    device: str
    out_of_memory: bool = False  # the call ran out of memory; larger batches were not tried


@dataclass(frozen=True)
class RatioViolation:
    mode: str
    batch_size: int
    metric: str  # "samples_per_s" or "peak_memory_mb"
    ratio: float  # current / baseline
    limit: float


class _PeakRSS:
    """Samples the resident set size every millisecond in a background thread."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.peak = self.start = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as statm:
                return int(statm.read().split()[1]) * self._page
        except OSError:  # not Linux: the process's lifetime peak is the best there is
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def megabytes(self) -> float:
        return (self.peak - self.start) / 2**20


def _is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


def measure_perf(
    spec: ModelSpec,
    model: torch.nn.Module,
    *,
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32),
    length: int | None = None,
    repeats: int = 3,
    device: str = "cpu",
    seed: int = 0,
) -> list[PerfRow]:
    """Measure inference and one optimizer step at each batch size, up to the first out-of-memory."""
    if not batch_sizes or any(size < 1 for size in batch_sizes):
        raise ValueError(f"batch_sizes must be positive integers, got batch_sizes={batch_sizes}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got repeats={repeats}")
    adapter = adapter_for(spec)
    length = length or (min(spec.inputs.max_length, 64) if adapter.sequence else 1)
    model = model.to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(trainable, lr=1e-6) if spec.capabilities.supports_training and trainable else None
    rows: list[PerfRow] = []
    for mode in MODES:
        if mode == "train-step" and optimizer is None:
            continue
        for batch_size in sorted(batch_sizes):
            batch = adapter.make_batch(
                spec, batch_size=batch_size, length=length, generator=torch.Generator().manual_seed(seed)
            )
            batch = {key: value.to(device) for key, value in batch.items()}

            step = _step_function(spec, model, optimizer, mode, batch)
            try:
                rows.append(_measure(step, mode, batch_size, length, repeats, device))
            except (RuntimeError, MemoryError) as error:
                if not _is_out_of_memory(error) and not isinstance(error, MemoryError):
                    raise
                rows.append(PerfRow(mode, batch_size, length, float("nan"), 0.0, 0.0, float("nan"), device, True))
                break
    model.eval()
    return rows


def _step_function(spec: ModelSpec, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, mode: str, batch):
    """One inference forward, or one training step (forward, backward, optimizer step)."""
    adapter = adapter_for(spec)

    def step() -> None:
        if mode == "inference":
            with torch.no_grad():
                adapter.forward(spec, model.eval(), batch)
        else:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            adapter.model_loss(spec, model, batch).backward()
            optimizer.step()

    return step


def _measure(step, mode: str, batch_size: int, length: int, repeats: int, device: str) -> PerfRow:
    step()  # warm-up: allocator caches and lazy initialisation are not the model's cost
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    times = []
    with _PeakRSS() as rss:
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    memory = (torch.cuda.max_memory_allocated() - baseline) / 2**20 if cuda else rss.megabytes
    return PerfRow(
        mode, batch_size, length, seconds, batch_size / seconds, batch_size * length / seconds, memory, device
    )


def compare_perf(
    current: list[PerfRow], baseline: list[PerfRow], *, max_slowdown: float = 1.5, max_memory_growth: float = 1.5
) -> list[RatioViolation]:
    """Rows whose throughput fell below ``baseline / max_slowdown`` or whose peak memory grew past
    ``baseline * max_memory_growth``; only (mode, batch size) pairs present in both are compared."""
    if max_slowdown < 1 or max_memory_growth < 1:
        raise ValueError(f"limits must be >= 1, got max_slowdown={max_slowdown}, max_memory_growth={max_memory_growth}")
    reference = {(row.mode, row.batch_size): row for row in baseline if not row.out_of_memory}
    violations = []
    for row in current:
        base = reference.get((row.mode, row.batch_size))
        if base is None:
            continue
        if row.out_of_memory:
            violations.append(RatioViolation(row.mode, row.batch_size, "samples_per_s", 0.0, 1 / max_slowdown))
            continue
        speed = row.samples_per_s / base.samples_per_s
        if speed < 1 / max_slowdown:
            violations.append(RatioViolation(row.mode, row.batch_size, "samples_per_s", speed, 1 / max_slowdown))
        memory_floor = 1.0  # MB: below this the sampled RSS delta is noise
        if max(row.peak_memory_mb, base.peak_memory_mb) > memory_floor:
            growth = max(row.peak_memory_mb, 0.0) / max(base.peak_memory_mb, memory_floor)
            if growth > max_memory_growth:
                violations.append(RatioViolation(row.mode, row.batch_size, "peak_memory_mb", growth, max_memory_growth))
    return violations


def save_perf(rows: list[PerfRow], path: Path, *, model: str) -> None:
    atomic_write_text(path, json.dumps({"model": model, "rows": [asdict(row) for row in rows]}, indent=2))


def load_perf(path: Path) -> list[PerfRow]:
    """Read the rows written by :func:`save_perf`; a corrupt file is a ValueError naming it."""
    try:
        return [PerfRow(**row) for row in json.loads(Path(path).read_text())["rows"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a harness profile: {error}") from error


def format_table(rows: list[PerfRow]) -> str:
    lines = [f"{'mode':<11} {'batch':>5} {'len':>4} {'ms':>9} {'samples/s':>10} {'tokens/s':>10} {'peak MB':>8}"]
    for row in rows:
        if row.out_of_memory:
            lines.append(f"{row.mode:<11} {row.batch_size:>5} {row.length:>4} {'out of memory':>30}")
            continue
        lines.append(
            f"{row.mode:<11} {row.batch_size:>5} {row.length:>4} {row.seconds * 1e3:>9.2f} "
            f"{row.samples_per_s:>10.1f} {row.tokens_per_s:>10.1f} {row.peak_memory_mb:>8.1f}"
        )
    return "\n".join(lines)


def plot_perf(rows: list[PerfRow], path: Path, *, title: str) -> Path:
    """Throughput and peak memory against batch size, one line per mode, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed, memory) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in MODES:
        measured = [row for row in rows if row.mode == mode and not row.out_of_memory]
        if measured:
            sizes = [row.batch_size for row in measured]
            speed.plot(sizes, [row.samples_per_s for row in measured], marker="o", label=mode)
            memory.plot(sizes, [row.peak_memory_mb for row in measured], marker="o", label=mode)
    for axis, label in ((speed, "samples / s"), (memory, "peak memory above start (MB)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("batch size")
        axis.set_ylabel(label)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path

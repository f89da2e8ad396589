"""Training runs, cached on disk by config hash, and grid sweeps recorded in an ExperimentDB.

:func:`train` trains a spec under a config and returns a :class:`TrainedRun` (run id, Lightning
checkpoint, metrics history). The run is stored under ``harness.cache.cache_dir("runs")/<hash>/``
(hash: :func:`harness.training.config.config_hash`, which covers the content of the data files, tokenizer, model
code and weights), written to a scratch folder and renamed into place, under a file lock, so a second call
(another test session, another xdist worker, another tier) reuses it instead of retraining. A scratch folder is
removed when its run fails; one left by a killed process (its pid is in the name) is removed by the next run. With
``db`` every run, cached or not, is recorded in the ExperimentDB with its metrics per step. Every file a config
names is read before any work (:func:`harness.training.config.validate_inputs`); checkpoints are loaded with
``weights_only=True``: nothing in them is unpickled.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from harness.cache import cache_dir, file_lock, process_exists, record_use
from harness.config import ConfigError
from harness.spec import ModelSpec
from harness.training.config import TrainingConfig, config_hash, load_checkpoint, validate_inputs

RUN_FILE = "run.json"
CHECKPOINT_FILE = "last.ckpt"
SCRATCH = re.compile(r"^[0-9a-f]{16}\.(\d+)\.")  # a scratch folder: "<config hash>.<pid>.<random>"


@dataclass(frozen=True)
class TrainedRun:
    """A finished run: where its checkpoint is and what it measured."""

    run_id: str  # the ExperimentDB id when a db was given, else "run-<config hash>"
    checkpoint: Path  # a Lightning checkpoint: weights, optimizer and scheduler state, loop progress
    history: list[dict[str, float]]  # one row per optimizer step (step 0: the untrained validation loss)
    metrics: dict[str, float]  # final values: train_loss, val_loss, initial_val_loss, steps
    config_hash: str
    data_source: str  # where the training rows came from (see harness.training.data)
    cached: bool = False  # True when this call reused a stored run
    model: torch.nn.Module | None = field(default=None, repr=False, compare=False)  # in memory when trained now

    def load_model(self, spec: ModelSpec) -> torch.nn.Module:
        """The spec's model with the run's trained weights, in eval mode."""
        model = spec.build_model()
        state = load_checkpoint(self.checkpoint, f"the checkpoint of run {self.run_id}")["state_dict"]
        model.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
        return model.eval()


@contextmanager
def _locked(path: Path, *, processes: int) -> Iterator[None]:
    """An exclusive file lock for a single-process run (the ranks of a multi-process run all call train(),
    and rank 0 waits for the others inside the fit: only the atomic rename guards those)."""
    if processes > 1:
        yield
        return
    with file_lock(path):
        yield


def _final_metrics(history: list[dict[str, float]], validation: float, initial: float) -> dict[str, float]:
    steps = [row for row in history if "train_loss" in row]
    return {
        "train_loss": steps[-1]["train_loss"] if steps else math.nan,
        "val_loss": validation,
        "initial_val_loss": initial,
        "steps": float(len(steps)),
    }


def _fit(spec: ModelSpec, config: TrainingConfig, folder: Path, *, progress_bar: bool) -> tuple[Any, dict, str]:
    import lightning

    from harness.training.data import loader, training_data
    from harness.training.module import HarnessModule
    from harness.training.trainer import make_trainer

    lightning.seed_everything(config.seed, workers=True, verbose=False)
    data = training_data(spec, config)
    train_loader = loader(data.train, batch_size=config.batch_size, shuffle=True, seed=config.seed)
    val_loader = loader(data.validation, batch_size=config.batch_size, shuffle=False, seed=config.seed)
    module = HarnessModule(spec, config)
    trainer = make_trainer(config, progress_bar=progress_bar, root_dir=str(folder))
    initial = trainer.validate(module, val_loader, verbose=False)[0]["val_loss"]
    trainer.fit(
        module,
        train_loader,
        val_loader if config.validate_every else None,
        ckpt_path=config.resume_from_checkpoint,
        weights_only=True,  # a checkpoint is data: nothing in it is unpickled
    )
    final = trainer.validate(module, val_loader, verbose=False)[0]["val_loss"]
    trainer.save_checkpoint(folder / CHECKPOINT_FILE)
    history = [{"step": 0, "val_loss": float(initial)}, *module.history]
    return (
        module,
        {"history": history, "metrics": _final_metrics(history, float(final), float(initial))},
        (data.source if trainer.is_global_zero else ""),
    )


def _remove_orphans(root: Path) -> None:
    """Remove the scratch folders whose process is gone (a killed run's leftovers)."""
    for entry in root.iterdir():
        match = SCRATCH.match(entry.name)
        if match and entry.is_dir() and not process_exists(int(match.group(1))):
            shutil.rmtree(entry, ignore_errors=True)


def _stored(folder: Path) -> dict[str, Any] | None:
    """The stored run in ``folder``, or None when there is none or it is incomplete (then it is removed)."""
    try:
        stored = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        stored = None
    if not isinstance(stored, dict) or not Path(stored.get("checkpoint", "")).is_file():
        shutil.rmtree(folder, ignore_errors=True)  # damaged by hand or by a disk error: train again
        return None
    return stored


def _record(db: Any, spec: ModelSpec, config: TrainingConfig, stored: dict, extra: dict[str, Any]) -> str:
    run_id = db.start_run(
        name=extra.get("name") or f"{spec.name}-{stored['config_hash']}",
        config=config.to_dict(),
        model=spec.name,
        sweep_id=extra.get("sweep_id"),
        params=extra.get("params"),
        seed=config.seed,
    )
    for row in stored["history"]:
        metrics = {key: float(value) for key, value in row.items() if key != "step" and math.isfinite(value)}
        if metrics:
            db.log_metrics(run_id, int(row["step"]), metrics)
    summary = {**stored["metrics"], "cached": extra["cached"], "config_hash": stored["config_hash"]}
    db.finish_run(run_id, summary=summary, checkpoint=stored["checkpoint"])
    return run_id


def train(
    spec: ModelSpec,
    config: TrainingConfig,
    *,
    db: Any = None,
    progress_bar: bool = False,
    sweep_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> TrainedRun:
    """Train ``spec`` under ``config`` (or reuse the stored run with the same config hash).

    ``config.task``, when set, must be the spec's task. With ``db`` the run is recorded (with
    ``sweep_id`` and ``params`` for sweeps). Only rank 0 of a multi-process run writes the cache and the db.
    """
    if config.task is not None and config.task != spec.task:
        raise ConfigError(f"TrainingConfig.task={config.task!r} but model {spec.name} is a {spec.task} model")
    validate_inputs(config)
    started = time.perf_counter()
    key = config_hash(config, spec)
    root = cache_dir("runs")
    folder = root / key
    extra = {"sweep_id": sweep_id, "params": dict(params) if params else None, "name": name}
    with _locked(root / f"{key}.lock", processes=config.devices * config.num_nodes):
        _remove_orphans(root)
        model = None
        stored = _stored(folder)
        cached = stored is not None
        if stored is None:
            scratch = Path(tempfile.mkdtemp(prefix=f"{key}.{os.getpid()}.", dir=root))
            try:
                module, result, source = _fit(spec, config, scratch, progress_bar=progress_bar)
            except BaseException:
                shutil.rmtree(scratch, ignore_errors=True)
                raise
            model = module.model
            if not module.trainer.is_global_zero:
                shutil.rmtree(scratch, ignore_errors=True)
                return TrainedRun(
                    "", folder / CHECKPOINT_FILE, result["history"], result["metrics"], key, "", model=model
                )
            stored = {
                "config_hash": key,
                "config": config.to_dict(),
                "model": spec.name,
                "checkpoint": str(folder / CHECKPOINT_FILE),
                "data_source": source,
                **result,
            }
            (scratch / RUN_FILE).write_text(json.dumps(stored, indent=1))
            try:
                os.replace(scratch, folder)
            except OSError:  # another process stored the same run first: keep theirs
                shutil.rmtree(scratch, ignore_errors=True)
    record_use("run", key, hit=cached, seconds=time.perf_counter() - started)
    run_id = _record(db, spec, config, stored, {**extra, "cached": cached}) if db is not None else f"run-{key}"
    return TrainedRun(
        run_id,
        Path(stored["checkpoint"]),
        stored["history"],
        stored["metrics"],
        key,
        stored["data_source"],
        cached=cached,
        model=model,
    )


@dataclass(frozen=True)
class SweepRun:
    """One grid point and its run."""

    params: dict[str, Any]
    run_id: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class SweepSummary:
    """A finished grid sweep: every run, the best ones by ``metric`` (lower is better), and a table."""

    sweep_id: str
    metric: str
    runs: tuple[SweepRun, ...]

    @property
    def ranked(self) -> list[SweepRun]:
        return sorted(self.runs, key=lambda run: (math.isnan(run.metrics[self.metric]), run.metrics[self.metric]))

    @property
    def best(self) -> SweepRun:
        return self.ranked[0]

    def table(self, top: int = 5) -> str:
        """The best ``top`` runs as a fixed-width text table."""
        keys = list(self.runs[0].params)
        header = ["rank", *keys, self.metric, "run_id"]
        rows = [
            [str(rank), *(str(run.params[k]) for k in keys), f"{run.metrics[self.metric]:.4f}", run.run_id]
            for rank, run in enumerate(self.ranked[:top], start=1)
        ]
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *rows]
        )


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the grid's key order; keys must be TrainingConfig fields."""
    known = {f.name for f in fields(TrainingConfig)}
    for key, values in grid.items():
        if key not in known:
            raise ConfigError(
                f"sweep grid key {key!r} is not a TrainingConfig field; known: {', '.join(sorted(known))}"
            )
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise ConfigError(f"sweep grid[{key!r}] must be a non-empty list of values, got {values!r}")
    return [dict(zip(grid, combination, strict=True)) for combination in itertools.product(*grid.values())]


def run_grid_sweep(
    spec: ModelSpec,
    base_config: TrainingConfig,
    grid: Mapping[str, Sequence[Any]],
    *,
    db: Any,
    metric: str = "val_loss",
    name: str | None = None,
) -> SweepSummary:
    """Train every grid point (``base_config`` with the point's fields replaced), each recorded in ``db``
    with the sweep id and its parameters; the summary ranks them by ``metric``."""
    points = grid_points(grid)
    configs = [base_config.replace(**point) for point in points]  # every point validated before any training
    sweep_id = db.create_sweep(name=name or f"{spec.name}-sweep", grid={k: list(v) for k, v in grid.items()})
    runs = []
    for point, config in zip(points, configs, strict=True):
        run = train(spec, config, db=db, sweep_id=sweep_id, params=point)
        if metric not in run.metrics:
            raise ConfigError(f"sweep metric {metric!r} is not a run metric; runs report {', '.join(run.metrics)}")
        runs.append(SweepRun(point, run.run_id, run.metrics))
    return SweepSummary(sweep_id, metric, tuple(runs))

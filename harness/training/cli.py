"""``harness train --config FILE``: train a model from a JSON (or TOML) config, with a progress bar.

The file holds ``TrainingConfig.to_dict()``'s keys (any subset; the rest keep their defaults) plus
``"model"``: a zoo name or ``package.module:attr``. A bad file or value prints one line and exits 2 (through the
``harness`` console script's one handler, :func:`harness.cli.main`).
Optional ``"db"``: an ExperimentDB path the run is recorded in. The file is read by the harness's one config
reader (:func:`harness.config.read_config_file`); every problem is a :class:`~harness.config.ConfigError`.
"""

from __future__ import annotations

import argparse
from typing import Any

from harness.config import ConfigError, read_config_file


def read_config(path: str) -> tuple[str, dict[str, Any], str | None]:
    """(model selector, TrainingConfig fields, db path or None) of a config file; ConfigError on any problem.

    The fields become a TrainingConfig once the model is resolved: a model module may register the scheduler
    the config names (``harness.training.schedulers.register_scheduler``).
    """
    values = read_config_file(path)
    if not isinstance(values.get("model"), str):
        raise ConfigError(f'{path}: needs a JSON object with a "model" string (a zoo name or module:attr)')
    values = dict(values)
    model = values.pop("model")
    db = values.pop("db", None)
    return model, values, db


def command_train(args: argparse.Namespace) -> int:
    """Train the config's model. Every input (the config, the model, the ExperimentDB here; the data files and the
    checkpoint to resume from in :func:`~harness.training.runs.train`) is validated before training starts; a
    problem is a ConfigError, which the ``harness`` console script prints as one line (exit status 2)."""
    from harness.loading import resolve_models
    from harness.store import ExperimentDB
    from harness.training.config import TrainingConfig
    from harness.training.runs import train

    selector, values, db_path = read_config(args.config)
    specs = resolve_models([selector])
    if len(specs) != 1:
        raise ConfigError(f'{args.config}: "model": {selector!r} names {len(specs)} models; name exactly one')
    config = TrainingConfig.from_dict(values)
    if db_path is not None and not isinstance(db_path, str):
        raise ConfigError(f'{args.config}: "db" must be an ExperimentDB path string, got {db_path!r}')
    db = ExperimentDB(db_path) if db_path else None
    try:
        run = train(specs[0], config, db=db, progress_bar=not args.quiet)
    finally:
        if db is not None:
            db.close()
    metrics = ", ".join(f"{key}={value:.4f}" for key, value in run.metrics.items())
    print(f"run {run.run_id}{' (cached)' if run.cached else ''}: {metrics}; checkpoint {run.checkpoint}")
    return 0


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``train`` on the ``harness`` CLI's subparsers; its handler is ``args.handler``."""
    parser = subparsers.add_parser("train", help='train a model from a JSON TrainingConfig (+ "model")')
    parser.add_argument("--config", required=True, help='JSON (or TOML) file: TrainingConfig fields plus "model"')
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=command_train)
    return parser

"""The training stack: config validation and hashing, trainer guardrails, data loading, cached runs,
grid sweeps in the ExperimentDB, the `harness train` CLI, and DDP on two CPU processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from harness.config import ConfigError
from harness.store import ExperimentDB
from harness.training.config import TrainingConfig, config_hash
from harness.training.data import text_rows, training_data, wikitext_files
from harness.training.presets import PRESETS, preset
from harness.training.runs import grid_points, run_grid_sweep, train
from harness.training.trainer import StrategyWarning, plan
from tests.training_defects import tagger_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = TrainingConfig(max_steps=3, batch_size=4, max_rows=32, sequence_length=16, validation_batches=1)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


# Config.


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0"),
        ({"learning_rate": float("nan")}, "learning_rate=nan"),
        ({"max_steps": None}, "exactly one of max_steps and epochs"),
        ({"epochs": 2}, "exactly one of max_steps and epochs"),
        ({"precision": "8-bit"}, "precision='8-bit'"),
        ({"strategy": "horovod"}, "strategy='horovod'"),
        ({"scheduler": "linear"}, "scheduler='linear'"),
        ({"scheduler_kwargs": {"total_steps": 3}}, "without a scheduler"),
        ({"task": "translation"}, "task='translation'"),
        ({"validation_fraction": 1.0}, "validation_fraction=1.0"),
        ({"gradient_accumulation": True}, "gradient_accumulation=True"),
        ({"data": "notes.txt"}, "data='notes.txt'"),
    ],
)
def test_config_errors_name_field_and_value(changes, named):
    with pytest.raises(ConfigError, match="TrainingConfig") as error:
        TrainingConfig(**changes)
    assert named in str(error.value)


def test_config_round_trips_through_json():
    config = TrainingConfig(scheduler="cosine-warmup", scheduler_kwargs={"total_steps": 10}, data=("a.txt",))
    assert TrainingConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ConfigError, match="unknown TrainingConfig field.*lr"):
        TrainingConfig.from_dict({"lr": 0.1})


def test_config_hash_is_stable_and_sensitive():
    spec = tagger_spec()
    assert config_hash(TINY, spec) == config_hash(TrainingConfig.from_dict(TINY.to_dict()), spec)
    assert config_hash(TINY, spec) != config_hash(TINY.replace(learning_rate=2e-3), spec)
    assert config_hash(TINY, spec) != config_hash(TINY, spec.replace(recipe=None))
    assert len(config_hash(TINY, spec)) == 16


def test_presets_return_training_task_and_eval_configs():
    for name in PRESETS:
        training, task, evaluation = preset(name)
        assert isinstance(training, TrainingConfig) and evaluation.metric == "val_loss" and task.sequence_length > 0
    assert len(grid_points(preset("ablation-sweep")[2].grid)) == 4
    with pytest.raises(ConfigError, match="unknown preset 'slow'; known: fast-dev, standard, ablation-sweep"):
        preset("slow")


# Trainer guardrails.


def test_ddp_with_one_device_falls_back_to_single_device():
    with pytest.warns(StrategyWarning, match="one visible device"):
        resolved = plan(TrainingConfig(strategy="ddp", devices=1))
    assert (resolved.strategy, resolved.devices) == ("auto", 1)


def test_ddp_on_a_gpu_machine_without_gpus_falls_back(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.warns(StrategyWarning, match="one visible device"):
        assert plan(TrainingConfig(strategy="ddp", devices=2, accelerator="gpu")).strategy == "auto"


def test_fsdp_without_cuda_devices_suggests_ddp_or_auto():
    with pytest.warns(StrategyWarning, match="strategy='ddp'.*'auto'"):
        resolved = plan(TrainingConfig(strategy="fsdp", devices=2))
    assert resolved.strategy == "ddp"


def test_ddp_with_two_cpu_processes_is_kept(recwarn):
    assert plan(TrainingConfig(strategy="ddp", devices=2)).strategy == "ddp"
    assert not [w for w in recwarn if issubclass(w.category, StrategyWarning)]


# Data.


def test_user_text_files_are_tokenised_and_chunked(tmp_path, cache):
    from harness_zoo import load_zoo_spec

    spec = load_zoo_spec("gpt2-tiny")
    notes = tmp_path / "notes.txt"
    notes.write_text("The quick brown fox jumps over the lazy dog.\n" * 200)
    data = text_rows(spec, TrainingConfig(data=(str(notes),), sequence_length=16))
    assert data.source == "text:notes.txt"
    assert data.train.rows["input_ids"].shape[1] == 16 and len(data.validation) >= 1
    with pytest.raises(ConfigError, match="not found: .*missing.txt"):
        text_rows(spec, TrainingConfig(data=(str(tmp_path / "missing.txt"),)))


def test_text_files_for_a_model_without_tokenizer_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="need a causal-lm spec with a tokenizer"):
        training_data(tagger_spec(), TrainingConfig(data=(str(tmp_path / "a.txt"),)))


@pytest.mark.skipif(wikitext_files() is None, reason="../shared/data/wikitext-2 is not present")
def test_trains_on_wikitext_when_present(cache):
    from harness_zoo import load_zoo_spec

    config = TrainingConfig(max_steps=30, batch_size=8, learning_rate=1e-2, data=wikitext_files()[-1:], max_rows=512)
    run = train(load_zoo_spec("gpt2-tiny"), config)
    assert run.data_source.startswith("text:") and run.metrics["val_loss"] < run.metrics["initial_val_loss"]


# Runs and sweeps.


def test_train_caches_by_config_hash_and_records_in_the_db(tmp_path, cache):
    spec = tagger_spec()
    with ExperimentDB(tmp_path / "runs.db") as db:
        first = train(spec, TINY, db=db)
        second = train(spec, TINY, db=db)
        assert not first.cached and second.cached
        assert first.metrics == second.metrics and first.checkpoint == second.checkpoint
        assert first.checkpoint.is_file() and len(first.history) == 1 + TINY.max_steps
        assert [r.run_id for r in db.runs()] == [first.run_id, second.run_id]
        assert {m.name for m in db.metrics(first.run_id)} >= {"train_loss", "grad_norm", "val_loss"}
        assert db.get_run(second.run_id).summary["cached"] is True
    assert train(spec, TINY).run_id == f"run-{first.config_hash}"
    model = first.load_model(spec)
    assert torch.equal(model.head.weight, first.model.head.weight)


def test_train_refuses_a_config_for_another_task(cache):
    with pytest.raises(ConfigError, match="task='causal-lm' but model tiny-tagger is a token-classification"):
        train(tagger_spec(), TINY.replace(task="causal-lm"))


def test_grid_sweep_records_every_run_and_ranks_them(tmp_path, cache):
    grid = {"learning_rate": [1e-3, 1e-2], "batch_size": [2, 4]}
    with ExperimentDB(tmp_path / "sweep.db") as db:
        summary = run_grid_sweep(tagger_spec(), TINY, grid, db=db)
        recorded = db.runs(sweep_id=summary.sweep_id)
    assert len(summary.runs) == 4 and len(recorded) == 4
    assert sorted(r.params["learning_rate"] for r in recorded) == [1e-3, 1e-3, 1e-2, 1e-2]
    assert summary.best.metrics["val_loss"] == min(r.metrics["val_loss"] for r in summary.runs)
    table = summary.table(top=2).splitlines()
    assert table[0].split() == ["rank", "learning_rate", "batch_size", "val_loss", "run_id"] and len(table) == 3
    with pytest.raises(ConfigError, match="'lr' is not a TrainingConfig field"):
        grid_points({"lr": [1]})


# CLI.


def _cli(argv: list[str]) -> int:
    from harness.cli import main

    return main(argv)


def test_cli_trains_and_prints_the_run_id(tmp_path, cache, capsys):
    config = tmp_path / "train.json"
    config.write_text(json.dumps({"model": "tests.training_defects:tagger_spec", **TINY.to_dict()}))
    assert _cli(["train", "--config", str(config), "--quiet"]) == 0
    assert capsys.readouterr().out.startswith("run run-")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"max_steps": 3}', 'needs a JSON object with a "model"'),
        ('{"model": "tests.training_defects:tagger_spec", "batch_size": -1}', "batch_size=-1"),
        ('{"model": "no-such-model"}', "no-such-model"),
    ],
)
def test_cli_bad_config_is_one_line_and_exit_2(tmp_path, capsys, content, message):
    config = tmp_path / "train.json"
    config.write_text(content)
    assert _cli(["train", "--config", str(config)]) == 2
    error = capsys.readouterr().err
    assert message in error and error.startswith("harness train: error:")


# DDP: two CPU processes with gloo end with identical weights.

DDP_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from harness.training.config import TrainingConfig
from harness.training.runs import train
from tests.training_defects import tagger_spec
config = TrainingConfig(max_steps=2, batch_size=2, max_rows=16, sequence_length=8, validation_batches=1,
                        strategy="ddp", devices=2, accelerator="cpu")
run = train(tagger_spec(), config)
torch.save(run.model.state_dict(), os.path.join({out!r}, "rank" + os.environ.get("LOCAL_RANK", "0") + ".pt"))
"""


def test_ddp_on_two_cpu_processes_ends_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(root=str(ROOT), out=str(tmp_path))))
    env = {**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys()
    assert all(torch.equal(ranks[0][key], ranks[1][key]) for key in ranks[0])
    initial = tagger_spec().build_model().state_dict()
    assert any(not torch.equal(initial[key], ranks[0][key]) for key in initial)  # it trained

"""TrainingConfig: every knob of a training run, validated on construction, with a stable hash.

The config is a frozen dataclass beside the code it configures (nanoGPT style): a comment on every
field, errors that name the field and its value. :meth:`TrainingConfig.to_dict` / :meth:`from_dict`
give the JSON shape ``harness train --config FILE.json`` reads (plus a ``"model"`` key), and
:func:`config_hash` keys the on-disk cache of trained runs by the config, the model spec and the content of every
input (:func:`input_digests`: data files, the checkpoint resumed from, tokenizer, model code, initial weights).
:func:`validate_inputs` reads those files before any work starts: a missing, empty, non-UTF-8 data file or a
checkpoint that is not a local, readable, weights-only file is a ConfigError naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import ConfigError
from harness.spec import TASKS, ModelSpec

PRECISIONS = ("32-true", "64-true", "16-mixed", "bf16-mixed")  # Lightning precision names
STRATEGIES = ("auto", "ddp", "fsdp")  # "ddp" falls back to one device when only one is visible
ACCELERATORS = ("cpu", "gpu", "auto")
CACHE_VERSION = 2  # bump to invalidate every cached run when training semantics change


def _integer(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"TrainingConfig.{name} must be an integer >= {minimum}, got {name}={value!r}")


def _real(name: str, value: Any, *, minimum: float, strict: bool) -> None:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    if not ok or value < minimum or (strict and value == minimum):
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ConfigError(f"TrainingConfig.{name} must be a finite number {bound}, got {name}={value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"TrainingConfig.{name} must be one of {', '.join(allowed)}; got {name}={value!r}")


@dataclass(frozen=True)
class TrainingConfig:
    """One training run: what to train on, how long, how, and where to resume from."""

    task: str | None = None  # the spec's task (one of harness.spec.TASKS); None: take the spec's
    max_steps: int | None = 20  # optimizer steps; exactly one of max_steps and epochs is set
    epochs: int | None = None  # passes over the training data, instead of max_steps
    batch_size: int = 8  # rows per micro-batch (per device)
    learning_rate: float = 1e-3  # peak learning rate handed to the optimizer factory
    weight_decay: float = 0.0  # decoupled weight decay of the default AdamW
    scheduler: str | None = None  # a harness.training.schedulers.SCHEDULERS name, or None for a constant rate
    scheduler_kwargs: dict[str, Any] = field(default_factory=dict)  # the scheduler factory's keyword arguments
    gradient_accumulation: int = 1  # micro-batches per optimizer step
    gradient_clip: float | None = None  # max global gradient norm; None: no clipping
    precision: str = "32-true"  # one of PRECISIONS
    strategy: str = "auto"  # one of STRATEGIES (see harness.training.trainer for the guardrails)
    accelerator: str = "cpu"  # one of ACCELERATORS
    devices: int = 1  # devices (or CPU processes) per node
    num_nodes: int = 1  # machines
    seed: int = 0  # seeds the model build, data split and shuffling
    resume_from_checkpoint: str | None = None  # a Lightning .ckpt to resume from (weights, optimizer, loops)
    data: tuple[str, ...] = ()  # local text files; empty: the harness's reference text (every machine has it)
    sequence_length: int = 32  # tokens per training row (capped at the model's max_length)
    max_rows: int | None = 2048  # cap on training rows (None: all); keeps default runs small
    validation_fraction: float = 0.1  # share of rows held out for validation, in (0, 1)
    validation_batches: int = 8  # batches the validation loss is averaged over
    validate_every: int = 0  # optimizer steps between validations; 0: only at the end

    def __post_init__(self) -> None:
        if self.task is not None:
            _choice("task", self.task, tuple(TASKS))
        if (self.max_steps is None) == (self.epochs is None):
            raise ConfigError(
                f"TrainingConfig needs exactly one of max_steps and epochs, got max_steps={self.max_steps!r}, "
                f"epochs={self.epochs!r}"
            )
        if self.max_steps is not None:
            _integer("max_steps", self.max_steps, minimum=1)
        if self.epochs is not None:
            _integer("epochs", self.epochs, minimum=1)
        for name in ("batch_size", "gradient_accumulation", "devices", "num_nodes", "sequence_length"):
            _integer(name, getattr(self, name), minimum=1)
        for name in ("seed", "validate_every"):
            _integer(name, getattr(self, name), minimum=0)
        _integer("validation_batches", self.validation_batches, minimum=1)
        if self.max_rows is not None:
            _integer("max_rows", self.max_rows, minimum=2)
        _real("learning_rate", self.learning_rate, minimum=0.0, strict=True)
        _real("weight_decay", self.weight_decay, minimum=0.0, strict=False)
        if self.gradient_clip is not None:
            _real("gradient_clip", self.gradient_clip, minimum=0.0, strict=True)
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(
                f"TrainingConfig.validation_fraction must be in (0, 1), got validation_fraction="
                f"{self.validation_fraction!r}"
            )
        _choice("precision", self.precision, PRECISIONS)
        _choice("strategy", self.strategy, STRATEGIES)
        _choice("accelerator", self.accelerator, ACCELERATORS)
        if self.scheduler is not None:
            from harness.training.schedulers import SCHEDULERS

            _choice("scheduler", self.scheduler, tuple(SCHEDULERS))
        if not isinstance(self.scheduler_kwargs, dict) or not all(isinstance(k, str) for k in self.scheduler_kwargs):
            raise ConfigError(
                f"TrainingConfig.scheduler_kwargs must be a dict of str keys, got {self.scheduler_kwargs!r}"
            )
        if self.scheduler is None and self.scheduler_kwargs:
            raise ConfigError(f"TrainingConfig.scheduler_kwargs={self.scheduler_kwargs!r} given without a scheduler")
        if isinstance(self.data, str) or not all(isinstance(path, str) for path in self.data):
            raise ConfigError(f"TrainingConfig.data must be a list of file paths, got data={self.data!r}")
        object.__setattr__(self, "data", tuple(self.data))
        if self.resume_from_checkpoint is not None and not isinstance(self.resume_from_checkpoint, str):
            raise ConfigError(
                f"TrainingConfig.resume_from_checkpoint must be a path, got {self.resume_from_checkpoint!r}"
            )
        if self.resume_from_checkpoint is not None and "://" in self.resume_from_checkpoint:
            raise ConfigError(
                f"TrainingConfig.resume_from_checkpoint must be a local file, got the URL "
                f"{self.resume_from_checkpoint!r} (nothing is downloaded: fetch it yourself and give its path)"
            )

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        row = dataclasses.asdict(self)
        row["data"] = list(self.data)
        return row

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainingConfig:
        """A config from a dict; an unknown key is a ConfigError listing the known ones."""
        if not isinstance(values, dict):
            raise ConfigError(f"a training config must be a JSON object, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown TrainingConfig field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(values)
        if "data" in values and isinstance(values["data"], list):
            values["data"] = tuple(values["data"])
        return cls(**values)


def spec_fingerprint(spec: ModelSpec) -> dict[str, Any]:
    """What identifies a spec for caching: name, task, input space, seed, build and recipe callables."""

    def qualified(value: Any) -> str | None:
        if value is None:
            return None
        target = getattr(value, "func", value)  # functools.partial
        name = f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', type(target).__name__)}"
        return f"{name}{getattr(value, 'args', '')!r}" if hasattr(value, "func") else name

    recipe = spec.recipe
    return {
        "name": spec.name,
        "task": spec.task,
        "inputs": dataclasses.asdict(spec.inputs),
        "seed": spec.seed,
        "build": qualified(spec.build),
        "recipe": None if recipe is None else recipe.fingerprint(),
    }


def validate_inputs(config: TrainingConfig) -> None:
    """Read every file the config names, before any work: each data file must be non-empty UTF-8 text, the
    checkpoint to resume from a local file that loads with ``weights_only=True`` (nothing in it is unpickled)."""
    from harness.config import read_text_file

    for path in config.data:
        read_text_file(path, "TrainingConfig.data file")
    if config.resume_from_checkpoint is not None:
        load_checkpoint(config.resume_from_checkpoint, "TrainingConfig.resume_from_checkpoint")


def load_checkpoint(path: str | Path, what: str) -> dict[str, Any]:
    """A checkpoint file's contents, loaded with ``weights_only=True``: tensors and plain containers only, nothing
    unpickled. A ConfigError names ``what`` and the file when it is missing, truncated, not a checkpoint, or holds
    objects that only a full unpickle could rebuild."""
    import pickle
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{what} {path} {'is a folder' if path.is_dir() else 'does not exist'}; give a local .ckpt file"
        )
    unreadable = f"{what} {path} is not a readable checkpoint (truncated, or not a torch checkpoint)"
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        needs = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if needs is None:
            raise ConfigError(unreadable) from None
        raise ConfigError(
            f"{what} {path} holds more than weights: objects ({needs.group(1)}) that only unpickling could rebuild, "
            "which the harness never does (save tensors and plain values only, or use safetensors)"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        reason = " ".join(str(error).split()).split(". ")[0] or type(error).__name__  # its first sentence
        raise ConfigError(f"{unreadable}: {reason}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(f"{what} {path} is not a Lightning checkpoint: it holds no 'state_dict'")
    return checkpoint


def input_digests(config: TrainingConfig, spec: ModelSpec) -> dict[str, Any]:
    """The content hash of every input a run depends on beyond its config: each data file (or the reference text
    trained on without any), the checkpoint resumed from, the tokenizer, the model's code and its initial weights."""
    import torch

    from harness.cache import code_digest, file_digest, tokenizer_digest, weights_digest

    if config.data:
        data = [file_digest(path) for path in config.data]
    else:
        from harness.data import reference_text

        data = [hashlib.sha256(reference_text().encode()).hexdigest()]
    with torch.random.fork_rng():  # building the model must not move the caller's random stream
        model = spec.build_model()
    return {
        "data": data,
        "checkpoint": file_digest(config.resume_from_checkpoint) if config.resume_from_checkpoint else None,
        "tokenizer": tokenizer_digest(spec.tokenizer),
        "code": code_digest([spec.build, model]),
        "weights": weights_digest(model.state_dict()),
    }


def config_hash(config: TrainingConfig, spec: ModelSpec) -> str:
    """A stable 16-hex-digit hash of the config, the spec's fingerprint, the content of every input
    (:func:`input_digests`) and CACHE_VERSION."""
    payload = {
        "config": config.to_dict(),
        "spec": spec_fingerprint(spec),
        "inputs": input_digests(config, spec),
        "version": CACHE_VERSION,
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]

"""Training data: local text files through the ``datasets`` text loader, the spec's own real examples
(``ModelSpec.real_data``), or seeded synthetic batches from the task's adapter.

Text: ``config.data`` names the user's files; without any, :func:`harness.data.reference_text` is written
once to a cache file and loaded the same way, so the default path is the user's path. Lines are
tokenised with the model's tokenizer, concatenated and cut into ``sequence_length`` rows; the last
``validation_fraction`` of the rows is the held-out text. Nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from harness.adapters import adapter_for
from harness.cache import cache_dir
from harness.spec import ModelSpec
from harness.training.config import ConfigError, TrainingConfig

WIKITEXT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "wikitext-2"
"""``../shared/data/wikitext-2`` relative to the repository root: CI trains on it when it exists."""


class RowsDataset(torch.utils.data.Dataset):
    """Rows of equal-shaped tensors; item ``i`` is ``{key: tensor[i]}`` (the default collate stacks them)."""

    def __init__(self, rows: dict[str, torch.Tensor]) -> None:
        self.rows = rows
        self.length = next(iter(rows.values())).shape[0]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[index] for key, value in self.rows.items()}


@dataclass(frozen=True)
class TrainingData:
    """Training and held-out rows, and where they came from."""

    train: RowsDataset
    validation: RowsDataset
    source: str  # "text:<files>", "real:<ModelSpec.real_data's name>" or "synthetic"


def wikitext_files() -> tuple[str, ...] | None:
    """The wikitext-2 files beside the checkout, or None when the folder is absent."""
    if not WIKITEXT_DIR.is_dir():
        return None
    files = tuple(str(path) for path in sorted(WIKITEXT_DIR.glob("*.txt")))
    return files or None


def default_text_file() -> Path:
    """The reference text written once to the cache (atomically, safe for concurrent workers)."""
    from harness.data import reference_text

    path = cache_dir("data") / "reference_text.txt"
    if not path.exists():
        from harness.io import atomic_write_text

        atomic_write_text(path, reference_text())
    return path


def trains_on_text(spec: ModelSpec) -> bool:
    """Whether the spec trains on tokenised text: its adapter reads text and it has a tokenizer."""
    return adapter_for(spec).trains_on_text and spec.tokenizer is not None


def has_real_data(spec: ModelSpec) -> bool:
    """Whether the harness has real data to train the spec on: tokenised text or the spec's own real examples."""
    return trains_on_text(spec) or spec.real_data is not None


@lru_cache(maxsize=8)
def _token_ids(
    tokenizer_factory: Any, vocab_size: int, files: tuple[str, ...], digests: tuple[str, ...]
) -> torch.Tensor:
    """The files' token ids; ``digests`` (their contents' SHA-256) key the cache, so an edited file is read again."""
    import datasets

    missing = [path for path in files if not Path(path).is_file()]
    if missing:
        raise ConfigError(f"TrainingConfig.data: file(s) not found: {', '.join(missing)}")
    datasets.disable_progress_bars()
    lines = datasets.load_dataset("text", data_files=list(files), split="train", cache_dir=str(cache_dir("datasets")))
    tokenizer = tokenizer_factory()
    text = "\n".join(line for line in lines["text"] if line.strip())
    ids = torch.tensor(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.long)
    return ids[ids < vocab_size]  # (N,)


def text_rows(spec: ModelSpec, config: TrainingConfig) -> TrainingData:
    """Token rows of the config's files (or the reference text), split into train and held-out rows."""
    files = config.data or (str(default_text_file()),)
    length = min(config.sequence_length, spec.inputs.max_length or config.sequence_length)
    from harness.cache import file_digest

    present = [path for path in files if Path(path).is_file()]
    ids = _token_ids(spec.tokenizer, spec.inputs.vocab_size, tuple(files), tuple(map(file_digest, present)))
    count = ids.numel() // length
    if count < 2:
        raise ConfigError(f"TrainingConfig.data: {files} hold {ids.numel()} tokens, fewer than 2 rows of {length}")
    rows = ids[: count * length].view(count, length)  # (R, T)
    held_out = max(1, int(count * config.validation_fraction))
    train, validation = rows[:-held_out], rows[-held_out:]  # the held-out text is the end of the text
    if config.max_rows is not None:
        train = train[: config.max_rows]
        validation = validation[: max(1, config.max_rows // 4)]

    def dataset(part: torch.Tensor) -> RowsDataset:
        return RowsDataset(adapter_for(spec).window_batch(spec, part))

    return TrainingData(dataset(train), dataset(validation), "text:" + ",".join(Path(f).name for f in files))


def example_rows(spec: ModelSpec, config: TrainingConfig) -> TrainingData:
    """The spec's real examples (``ModelSpec.real_data``) in a seeded shuffle, the last ``validation_fraction``
    held out."""
    examples = dict(spec.real_data())
    count = next(iter(examples.values())).shape[0]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(config.seed))
    examples = {key: value[order] for key, value in examples.items()}
    held_out = max(1, int(count * config.validation_fraction))
    return TrainingData(
        RowsDataset({key: value[:-held_out] for key, value in examples.items()}),
        RowsDataset({key: value[-held_out:] for key, value in examples.items()}),
        "real:" + getattr(spec.real_data, "__name__", "data"),
    )


def synthetic_rows(spec: ModelSpec, config: TrainingConfig) -> TrainingData:
    """Seeded random batches from the task's adapter (for tasks the harness has no real data for)."""
    adapter = adapter_for(spec)
    length = min(config.sequence_length, spec.inputs.max_length or config.sequence_length)
    rows = config.max_rows or 256
    generator = torch.Generator().manual_seed(config.seed)
    train = adapter.make_batch(spec, batch_size=rows, length=length, generator=generator)
    validation = adapter.make_batch(spec, batch_size=max(1, rows // 4), length=length, generator=generator)
    return TrainingData(RowsDataset(train), RowsDataset(validation), "synthetic")


def training_data(spec: ModelSpec, config: TrainingConfig) -> TrainingData:
    """The data a run trains on: user files or the reference text for specs that train on text (a causal LM
    with a tokenizer), the spec's real examples, synthetic batches otherwise (``config.data`` then is an error)."""
    if trains_on_text(spec):
        return text_rows(spec, config)
    if config.data:
        raise ConfigError(
            f"TrainingConfig.data={list(config.data)!r}: text files need a causal-lm spec with a tokenizer (a task "
            f"whose adapter trains on text); {spec.name} is a {spec.task} model"
            f"{'' if spec.tokenizer else ' without a tokenizer'}"
        )
    if spec.real_data is not None:
        return example_rows(spec, config)
    return synthetic_rows(spec, config)


def loader(dataset: RowsDataset, *, batch_size: int, shuffle: bool, seed: int) -> torch.utils.data.DataLoader:
    """A single-process DataLoader; shuffling is seeded, so two runs see the same order."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, drop_last=len(dataset) >= batch_size
    )

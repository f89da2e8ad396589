"""The seeded batch every check starts from: one helper, so every tier draws its inputs the same way."""

from __future__ import annotations

import torch

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.checks.base import CheckOptions
from harness.spec import ModelSpec


def seeded_generator(seed: int) -> torch.Generator:
    """A fresh CPU generator at ``seed``: every random input a check draws comes from one of these."""
    return torch.Generator().manual_seed(seed)


def fixed_batch(
    spec: ModelSpec,
    options: CheckOptions,
    *,
    batch_size: int | None = None,
    length: int | None = None,
    seed_offset: int = 0,
) -> Batch:
    """The adapter's random batch of ``batch_size`` (default ``options.batch_size``) rows of ``length`` (default
    ``options.length_for(spec)``), drawn with seed ``options.seed + seed_offset``; never more rows than the spec's
    ``max_batch_size`` nor tokens than its ``max_length`` (the input space is a hard limit)."""
    rows = min(batch_size or options.batch_size, spec.inputs.max_batch_size)
    tokens = min(length or options.length_for(spec), spec.inputs.max_length or options.length_for(spec))
    return adapter_for(spec).make_batch(
        spec, batch_size=rows, length=tokens, generator=seeded_generator(options.seed + seed_offset)
    )

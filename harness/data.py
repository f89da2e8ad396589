"""Real inputs every machine has: no download, ever. Which of them a model gets is its adapter's and its
spec's business (:meth:`harness.adapters.base.Adapter.real_batch`), never decided here.

Text: CPython's reference documentation (``pydoc_data.topics``), tokenised with the model's own
tokenizer. Images: scikit-learn's 8x8 handwritten digits (``load_digits``), for specs that declare them
(``ModelSpec(real_data=digit_examples)``).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.spec import ModelSpec


@lru_cache(maxsize=1)
def reference_text() -> str:
    """CPython's reference documentation topics, joined: about 800 kB of English prose and code."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def real_batch(spec: ModelSpec, *, batch_size: int, length: int) -> Batch | None:
    """A batch of real data for the spec, or None when the harness has none for it (its adapter decides).

    Token tasks whose batches real text makes need ``spec.tokenizer``; rows are consecutive ``length``-token
    windows of the text. Other tasks get the first ``batch_size`` examples of ``spec.real_data``, if declared.
    """
    return adapter_for(spec).real_batch(spec, batch_size=batch_size, length=length)


def reference_token_ids(spec: ModelSpec) -> torch.Tensor:
    """The first 200 000 characters of :func:`reference_text` in the spec's tokens (ids in its vocabulary): (N,)."""
    tokenizer = spec.tokenizer()
    ids = tokenizer(reference_text()[:200_000], add_special_tokens=False, verbose=False)["input_ids"]
    ids = torch.tensor(ids, dtype=torch.long)
    return ids[ids < spec.inputs.vocab_size]


@lru_cache(maxsize=1)
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as standardised (N, 1, 8, 8) float images and (N,) integer labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8), values 0..16
    return (images - images.mean()) / images.std(), torch.tensor(data.target)


def digit_examples() -> Batch:
    """The digits as one image-classification batch: ``pixel_values`` (1797, 1, 8, 8) and ``labels`` (1797,).

    A spec of 1x8x8 images declares these as its real data: ``ModelSpec(real_data=digit_examples)``.
    """
    images, labels = digits()
    return {"pixel_values": images, "labels": labels}

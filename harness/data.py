"""Real inputs every machine has, shaped as a task's batches: no download, ever.

Text: CPython's reference documentation (``pydoc_data.topics``), tokenised with the model's own
tokenizer and cut into rows. Images: scikit-learn's 8x8 handwritten digits (``load_digits``).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from harness.adapters.base import Batch
from harness.spec import ModelSpec


@lru_cache(maxsize=1)
def reference_text() -> str:
    """CPython's reference documentation topics, joined: about 800 kB of English prose and code."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def real_batch(spec: ModelSpec, *, batch_size: int, length: int) -> Batch | None:
    """A batch of real data for the spec's task, or None when the harness has none for it.

    Token tasks need ``spec.tokenizer``; rows are consecutive ``length``-token windows of the text.
    Token classification and sequence scoring get None: real text carries no such labels.
    """
    if spec.task == "image-classification" and spec.inputs.image_size == (1, 8, 8):
        return _digits_batch(batch_size)
    if spec.task not in ("causal-lm", "seq2seq-lm", "text-embedding") or spec.tokenizer is None:
        return None
    ids = _token_ids(spec)
    needed = 2 * batch_size * length if spec.task == "seq2seq-lm" else batch_size * length
    if ids.numel() < needed:
        return None
    rows = ids[:needed].view(-1, length)  # (B or 2B, T)
    if spec.task == "seq2seq-lm":  # source window -> the window that follows it
        source, target = rows[0::2], rows[1::2]
        return {"input_ids": source, "attention_mask": torch.ones_like(source), "labels": target}
    labels = torch.zeros(len(rows)) if spec.task == "text-embedding" else rows.clone()  # embeddings have none
    return {"input_ids": rows, "attention_mask": torch.ones_like(rows), "labels": labels}


def _token_ids(spec: ModelSpec) -> torch.Tensor:
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


def _digits_batch(batch_size: int) -> Batch:
    images, labels = digits()
    return {"pixel_values": images[:batch_size], "labels": labels[:batch_size]}

"""User metric functions (``fn(outputs, batches, spec) -> float``, the contract of :mod:`harness.evaluation`) with
planted defects, each one line away from the clean ones written here the way a user would (float32, torch ops).

``DEFECTS`` maps a defect name to ``(metrics, the check that must flag it, the oracle its failure must name)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _token_losses(outputs, batches, spec, *, prompts=True, padding="mask"):
    """Per row: the NLLs (float32) and correctness of its scored tokens, position t predicting label t + 1.

    ``padding``: "mask" (attention_mask 0 is padding), "pad_id_if_set" (``if pad_id:`` - pad id 0 is no padding),
    or "labels_only" (only ignore_index excluded)."""
    rows = []
    for logits, batch in zip(outputs, batches, strict=True):
        labels = batch["labels"][:, 1:].clone()  # (B, T-1)
        keep = labels != spec.inputs.ignore_index
        if padding == "mask":
            keep &= batch["attention_mask"][:, 1:].bool()
        elif padding == "pad_id_if_set" and spec.inputs.pad_id:
            keep &= labels != spec.inputs.pad_id
        if prompts:
            positions = torch.arange(1, labels.shape[1] + 1)  # (T-1,)
            keep &= positions[None, :] >= batch["prompt_lengths"][:, None]
        shifted = logits[:, :-1]  # (B, T-1, V)
        nll = F.cross_entropy(shifted.transpose(1, 2), labels.masked_fill(~keep, 0), reduction="none")  # (B, T-1)
        correct = shifted.argmax(-1) == labels
        rows += [(nll[b][keep[b]], correct[b][keep[b]]) for b in range(labels.shape[0])]
    return rows


def perplexity(outputs, batches, spec, **options):
    rows = _token_losses(outputs, batches, spec, **options)
    return math.exp(float(torch.cat([nll for nll, _ in rows]).mean()))


def accuracy(outputs, batches, spec, **options):
    rows = _token_losses(outputs, batches, spec, **options)
    return float(torch.cat([correct for _, correct in rows]).float().mean())


CLEAN = {"perplexity": perplexity, "accuracy": accuracy}


def per_row_perplexity(outputs, batches, spec):
    """The mean of per-row perplexities."""
    rows = _token_losses(outputs, batches, spec)
    return sum(math.exp(float(nll.mean())) for nll, _ in rows) / len(rows)


def prompt_counting_accuracy(outputs, batches, spec):
    return accuracy(outputs, batches, spec, prompts=False)


def pad_zero_as_real_perplexity(outputs, batches, spec):
    return perplexity(outputs, batches, spec, padding="pad_id_if_set")


def per_batch_perplexity(outputs, batches, spec):
    """The mean over batches of each batch's perplexity."""
    return sum(perplexity([o], [b], spec) for o, b in zip(outputs, batches, strict=True)) / len(batches)


def unshifted_accuracy(outputs, batches, spec):
    """Position t scored against label t (no shift)."""
    total = correct = 0
    for logits, batch in zip(outputs, batches, strict=True):
        keep = batch["attention_mask"].bool() & (batch["labels"] != spec.inputs.ignore_index)
        correct += int(((logits.argmax(-1) == batch["labels"]) & keep).sum())
        total += int(keep.sum())
    return correct / total


DEFECTS: dict[str, tuple[dict, str, str]] = {
    "per-row-perplexity": ({"perplexity": per_row_perplexity}, "metric_token_weighting", "lengths"),
    "prompt-tokens-counted": ({"accuracy": prompt_counting_accuracy}, "metric_masking", "prompt"),
    "pad-0-treated-as-real": ({"perplexity": pad_zero_as_real_perplexity}, "metric_masking", "padding_id_0"),
    "padding-counted": (
        {"perplexity": lambda o, b, s: perplexity(o, b, s, padding="labels_only")},
        "metric_masking",
        "padding_id_1",
    ),
    "per-batch-average": ({"perplexity": per_batch_perplexity}, "metric_batching", "one_row_per_batch"),
    "labels-not-shifted": ({"accuracy": unshifted_accuracy}, "metric_known_values", "perfect"),
}

"""Likelihood arithmetic every task shares: the masked negative log-likelihood, per-example scores, and the
class-distribution features of a profile. One implementation each; adapters, evaluation and profiles call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def masked_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``-log softmax(logits)[label]`` in float64 at every label, 0 where the label is ``ignore_index``, and the
    mask of labels kept. ``logits`` (..., K), ``labels`` (...) of class ids; returns two tensors shaped like labels.
    """
    keep = labels != ignore_index  # (...)
    log_probs = torch.log_softmax(logits.double(), dim=-1)  # (..., K)
    targets = labels.long().masked_fill(~keep, 0)  # (...)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * keep  # (...)
    return nll, keep


def mean_masked_nll(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """The token-weighted mean of :func:`masked_nll` over the labels kept (float64): a reference cross-entropy."""
    nll, keep = masked_nll(logits, labels, ignore_index)
    return nll.sum() / keep.sum()


@dataclass(frozen=True)
class TokenScores:
    """Per-example sums over the scored tokens of a batch (numpy arrays of shape (B,))."""

    nll: np.ndarray  # summed negative log-likelihood (nats) of the scored tokens
    tokens: np.ndarray  # number of scored tokens (1 per example for classifiers)
    correct: np.ndarray  # scored tokens whose argmax equals the label


def token_scores(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    shift: bool,
    ignore_index: int = -100,
    prompt_lengths: torch.Tensor | None = None,
) -> TokenScores:
    """Teacher-forced token scores; ``shift`` for causal LMs (position t predicts label t + 1).

    A label at a position below ``prompt_lengths[b]`` (a prompt token) is never scored, nor is one
    equal to ``ignore_index``.
    """
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]  # (B, T-1, V), (B, T-1)
        first_position = 1
    else:
        first_position = 0
    if prompt_lengths is not None:
        positions = torch.arange(labels.shape[1]) + first_position  # (L,): position of each label in the row
        prompt = positions[None, :] < prompt_lengths.reshape(-1, 1)  # (B, L)
        labels = labels.masked_fill(prompt, ignore_index)  # prompt tokens are never scored
    nll, keep = masked_nll(logits, labels, ignore_index)  # (B, L), (B, L)
    correct = (logits.argmax(-1) == labels.masked_fill(~keep, 0)) & keep  # (B, L)
    return TokenScores(nll=nll.sum(1).detach().numpy(), tokens=keep.sum(1).numpy(), correct=correct.sum(1).numpy())


def classification_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-example cross-entropy (B,) and correctness (B,) of a classifier's logits (B, K)."""
    nll, _ = masked_nll(logits, labels, ignore_index=-100)  # (B,)
    return nll.detach().numpy(), (logits.argmax(-1) == labels).numpy()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """The entropy (nats) of each distribution on the last dimension."""
    return -(probs * torch.log(probs.clamp(min=1e-300))).sum(-1)


def class_features(logits: torch.Tensor, scored: torch.Tensor) -> dict[str, list]:
    """Profile features of class logits (B, L, K) (or (B, K): one position) over the ``scored`` (B, L) positions:
    the mean entropy and top probability of the predictive distribution, and the predicted classes."""
    if logits.dim() == 2:
        logits, scored = logits[:, None], scored.reshape(-1, 1)  # (B, 1, K), (B, 1)
    probs = torch.softmax(logits.double(), -1)  # (B, L, K)
    weights = scored.double() / scored.sum(1, keepdim=True).clamp(min=1)  # (B, L)
    predicted = logits.argmax(-1)  # (B, L)
    return {
        "output_entropy": (entropy(probs) * weights).sum(1).tolist(),
        "output_max_probability": (probs.max(-1).values * weights).sum(1).tolist(),
        "predicted_class": [row[s].tolist() for row, s in zip(predicted, scored.bool(), strict=True)],
    }

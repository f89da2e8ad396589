"""Evaluation on an eval set with per-example values kept (the paired statistics of Tier 5 need them).

Perplexity is token-weighted: ``exp(sum of token NLLs / number of scored tokens)``, never a mean of
per-example perplexities (which over-weights short examples and is inflated by Jensen's inequality).
Token accuracy uses teacher forcing and never scores a prompt token. Seq2seq text metrics come from
maintained libraries: BLEU from sacrebleu, ROUGE from rouge-score.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.adapters import Batch, adapter_for
from harness.spec import ModelSpec

TOKEN_TASKS = ("causal-lm", "seq2seq-lm", "token-classification")  # tasks scored per token
EVALUATED_TASKS = (*TOKEN_TASKS, "image-classification")


@dataclass(frozen=True)
class TokenScores:
    """Per-example sums over the scored tokens of a batch (numpy arrays of shape (B,))."""

    nll: np.ndarray  # summed negative log-likelihood (nats) of the scored tokens
    tokens: np.ndarray  # number of scored tokens
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
    keep = labels != ignore_index  # (B, L)
    if prompt_lengths is not None:
        positions = torch.arange(labels.shape[1]) + first_position  # (L,): position of each label in the row
        keep &= positions[None, :] >= prompt_lengths.reshape(-1, 1)  # (B, L)
    log_probs = torch.log_softmax(logits.double(), dim=-1)  # (B, L, V)
    targets = labels.masked_fill(~keep, 0)  # (B, L)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * keep  # (B, L)
    correct = (logits.argmax(-1) == targets) & keep  # (B, L)
    return TokenScores(nll=nll.sum(1).detach().numpy(), tokens=keep.sum(1).numpy(), correct=correct.sum(1).numpy())


def perplexity(nll_sums: Sequence[float] | np.ndarray, token_counts: Sequence[int] | np.ndarray) -> float:
    """``exp(sum(nll_sums) / sum(token_counts))``: the token-weighted perplexity."""
    total = float(np.sum(token_counts))
    if total <= 0:
        raise ValueError(f"token_counts must sum to a positive number of scored tokens, got {total}")
    return math.exp(float(np.sum(nll_sums)) / total)


def classification_scores(logits: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-example cross-entropy (B,) and correctness (B,) of a classifier's logits (B, K)."""
    log_probs = torch.log_softmax(logits.double(), dim=-1)  # (B, K)
    nll = -log_probs.gather(-1, labels.long().unsqueeze(-1)).squeeze(-1)  # (B,)
    return nll.detach().numpy(), (logits.argmax(-1) == labels).numpy()


@dataclass(frozen=True)
class Evaluation:
    """A model on an eval set: corpus-level metrics and the per-example values behind them."""

    model: str  # ModelSpec.name
    task: str
    loss: float  # token-weighted mean NLL (token tasks) or mean cross-entropy (classifiers)
    perplexity: float | None  # exp(loss) for token tasks, None for classifiers
    accuracy: float  # token accuracy (teacher forcing, prompts excluded) or classification accuracy
    n_examples: int
    n_tokens: int  # scored tokens (examples for classifiers)
    data_hash: str  # fingerprint of the eval set's inputs and labels (paired comparisons need the same one)
    example_loss: tuple[float, ...] = field(repr=False)  # per-example mean NLL over its scored tokens
    example_tokens: tuple[int, ...] = field(repr=False)  # per-example scored tokens (1 for classifiers)
    example_correct: tuple[float, ...] = field(repr=False)  # per-example share of correct tokens / 0 or 1

    def to_dict(self, *, per_example: bool = False) -> dict[str, Any]:
        row: dict[str, Any] = {
            "model": self.model,
            "task": self.task,
            "loss": self.loss,
            "perplexity": self.perplexity,
            "accuracy": self.accuracy,
            "n_examples": self.n_examples,
            "n_tokens": self.n_tokens,
            "data_hash": self.data_hash,
        }
        if per_example:
            row |= {"example_loss": list(self.example_loss), "example_tokens": list(self.example_tokens)}
            row["example_correct"] = list(self.example_correct)
        return row


@torch.no_grad()
def evaluate(spec: ModelSpec, model: torch.nn.Module, batches: Iterable[Batch]) -> Evaluation:
    """Evaluate ``model`` in eval mode; a batch may carry ``prompt_lengths`` (B,) for causal LMs."""
    if spec.task not in EVALUATED_TASKS:
        raise ValueError(f"evaluate supports tasks {', '.join(EVALUATED_TASKS)}; got {spec.task!r} for {spec.name}")
    adapter = adapter_for(spec)
    model.eval()
    nll, tokens, correct = [], [], []
    fingerprint = hashlib.sha256()
    for batch in batches:
        for key in sorted(batch):
            fingerprint.update(key.encode() + batch[key].detach().cpu().contiguous().numpy().tobytes())
        inputs = {key: value for key, value in batch.items() if key != "prompt_lengths"}
        logits = adapter.forward(spec, model, inputs)
        if spec.task == "image-classification":
            example_nll, example_correct = classification_scores(logits, batch["labels"])
            nll.append(example_nll)
            tokens.append(np.ones_like(example_nll, dtype=np.int64))
            correct.append(example_correct.astype(np.float64))
            continue
        scores = token_scores(
            logits,
            batch["labels"],
            shift=spec.task == "causal-lm",
            ignore_index=spec.inputs.ignore_index,
            prompt_lengths=batch.get("prompt_lengths"),
        )
        nll.append(scores.nll)
        tokens.append(scores.tokens)
        correct.append(scores.correct.astype(np.float64))
    if not nll:
        raise ValueError(f"evaluate got no batches for {spec.name}")
    nll_all, tokens_all, correct_all = np.concatenate(nll), np.concatenate(tokens), np.concatenate(correct)
    scored = tokens_all > 0
    if not scored.any():
        raise ValueError(f"no scored tokens in the eval set of {spec.name} (all labels ignored or prompt)")
    nll_all, tokens_all, correct_all = nll_all[scored], tokens_all[scored], correct_all[scored]
    n_tokens = int(tokens_all.sum())
    loss = float(nll_all.sum() / n_tokens)
    return Evaluation(
        model=spec.name,
        task=spec.task,
        loss=loss,
        perplexity=math.exp(loss) if spec.task in TOKEN_TASKS else None,
        accuracy=float(correct_all.sum() / n_tokens),
        n_examples=int(scored.sum()),
        n_tokens=n_tokens,
        data_hash=fingerprint.hexdigest()[:16],
        example_loss=tuple((nll_all / tokens_all).tolist()),
        example_tokens=tuple(tokens_all.astype(int).tolist()),
        example_correct=tuple((correct_all / tokens_all).tolist()),
    )


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, list[float]]:
    """Corpus BLEU (sacrebleu, 0-100) and each example's sentence BLEU."""
    import sacrebleu

    _check_texts(hypotheses, references)
    corpus = sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score
    sentences = [sacrebleu.sentence_bleu(h, [r]).score for h, r in zip(hypotheses, references, strict=True)]
    return float(corpus), sentences


def rouge(
    hypotheses: Sequence[str], references: Sequence[str], *, types: Sequence[str] = ("rouge1", "rouge2", "rougeL")
) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Mean ROUGE F-measures (rouge-score, with stemming) and each example's F-measures."""
    from rouge_score import rouge_scorer

    _check_texts(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(types), use_stemmer=True)
    rows = []
    for hypothesis, reference in zip(hypotheses, references, strict=True):
        scores = scorer.score(reference, hypothesis)
        rows.append({name: float(scores[name].fmeasure) for name in types})
    means = {name: float(np.mean([row[name] for row in rows])) for name in types}
    return means, rows


def _check_texts(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(
            f"hypotheses and references must be paired and non-empty, got {len(hypotheses)} and {len(references)}"
        )


def text_examples(*, start: float = 0.0, stop: float = 1.0, min_chars: int = 80) -> list[str]:
    """Paragraphs of :func:`harness.data.reference_text` between the ``start`` and ``stop`` fractions."""
    from harness.data import reference_text

    if not 0.0 <= start < stop <= 1.0:
        raise ValueError(f"need 0 <= start < stop <= 1, got start={start}, stop={stop}")
    paragraphs = [p.strip() for p in reference_text().split("\n\n") if len(p.strip()) >= min_chars]
    return paragraphs[int(start * len(paragraphs)) : int(stop * len(paragraphs))]


def text_batches(
    spec: ModelSpec, texts: Sequence[str], *, batch_size: int = 16, max_length: int | None = None
) -> list[Batch]:
    """Texts tokenized with the spec's tokenizer, truncated, right-padded and labelled for the task.

    Causal LM: labels are the ids (padding ignored). Seq2seq: the first half of a text's tokens is
    the source, the second half the target. Text embedding: the ids only.
    """
    if spec.tokenizer is None:
        raise ValueError(f"{spec.name} has no tokenizer: text batches need ModelSpec.tokenizer")
    tokenizer = spec.tokenizer()
    limit = min(max_length or spec.inputs.max_length, spec.inputs.max_length)
    rows = []
    for text in texts:
        ids = [
            i
            for i in tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            if i < spec.inputs.vocab_size
        ]
        if spec.task == "seq2seq-lm":
            ids = ids[: 2 * limit]
            half = len(ids) // 2
            if half >= 1:
                rows.append((ids[:half], ids[half : 2 * half]))
        elif len(ids) >= 2:
            rows.append((ids[:limit], None))
    if not rows:
        raise ValueError(f"no text long enough to make a batch for {spec.name}")
    return [_collate(spec, rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]


def _collate(spec: ModelSpec, rows: list[tuple[list[int], list[int] | None]]) -> Batch:
    pad, ignore = spec.inputs.pad_id, spec.inputs.ignore_index
    width = max(len(source) for source, _ in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    for i, (source, _) in enumerate(rows):
        input_ids[i, : len(source)] = torch.tensor(source)
        mask[i, : len(source)] = 1
    if spec.task == "seq2seq-lm":
        target_width = max(len(target) for _, target in rows)
        labels = torch.full((len(rows), target_width), ignore, dtype=torch.long)  # (B, S)
        for i, (_, target) in enumerate(rows):
            labels[i, : len(target)] = torch.tensor(target)
    elif spec.task == "causal-lm":
        labels = input_ids.masked_fill(mask == 0, ignore)  # (B, T)
    else:
        labels = torch.zeros(len(rows))  # (B,): unused
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def digit_batches(
    *, start: float = 0.0, stop: float = 1.0, batch_size: int = 64, shuffle_seed: int | None = None
) -> list[Batch]:
    """The scikit-learn digits between the ``start`` and ``stop`` fractions, as image batches.

    The data set is ordered by writer groups; ``shuffle_seed`` permutes it first (seeded) so that
    two ranges are draws of one distribution.
    """
    from harness.data import digits

    images, labels = digits()
    if shuffle_seed is not None:
        order = torch.from_numpy(np.random.default_rng(shuffle_seed).permutation(len(images)))
        images, labels = images[order], labels[order]
    first, last = int(start * len(images)), int(stop * len(images))
    return [
        {"pixel_values": images[i : min(i + batch_size, last)], "labels": labels[i : min(i + batch_size, last)]}
        for i in range(first, last, batch_size)
    ]

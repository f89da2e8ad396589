"""Evaluation on an eval set with per-example values kept (the paired statistics of Tier 5 need them).

Perplexity is token-weighted: ``exp(sum of token NLLs / number of scored tokens)``, never a mean of
per-example perplexities (which over-weights short examples and is inflated by Jensen's inequality).
Token accuracy uses teacher forcing and never scores a prompt token. Seq2seq text metrics come from
maintained libraries: BLEU from sacrebleu, ROUGE from rouge-score.

A metric function (``ModelSpec.metrics``, held to known values by :mod:`harness.checks.metrics`) has the signature
``metric(outputs, batches, spec) -> float``: ``outputs[i]`` is the model's logits (B, T, K) for ``batches[i]``, whose
``labels`` (B, T) follow the task's convention (a causal LM's are its input ids: position t predicts label t + 1).
A label is scored unless it equals ``spec.inputs.ignore_index``, its ``attention_mask`` is 0 (padding, whatever
id it holds: labels may carry ``spec.inputs.pad_id`` there, and 0 is a pad id like any other), or it lies within
the row's first ``prompt_lengths[b]`` tokens (a batch may carry ``prompt_lengths`` (B,)). The value is one number
for the whole set, independent of how it is cut into batches. :data:`TOKEN_METRICS` are the harness's own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from harness.adapters import Batch, adapter_for
from harness.adapters.scoring import TokenScores, classification_scores, token_scores
from harness.spec import ModelSpec

__all__ = [  # TokenScores, token_scores and classification_scores live with the adapters that use them
    "TOKEN_METRICS",
    "Evaluation",
    "TokenScores",
    "bleu",
    "classification_scores",
    "digit_batches",
    "evaluate",
    "evaluate_outputs",
    "perplexity",
    "rouge",
    "text_batches",
    "text_examples",
    "token_scores",
]


def perplexity(nll_sums: Sequence[float] | np.ndarray, token_counts: Sequence[int] | np.ndarray) -> float:
    """``exp(sum(nll_sums) / sum(token_counts))``: the token-weighted perplexity."""
    total = float(np.sum(token_counts))
    if total <= 0:
        raise ValueError(f"token_counts must sum to a positive number of scored tokens, got {total}")
    return math.exp(float(np.sum(nll_sums)) / total)


@dataclass(frozen=True)
class Evaluation:
    """A model on an eval set: corpus-level metrics and the per-example values behind them."""

    model: str  # ModelSpec.name
    task: str
    loss: float  # token-weighted mean NLL (tasks scored per token) or mean cross-entropy (per example)
    perplexity: float | None  # exp(loss) for tasks scored per token, None for those scored per example
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
    """Evaluate ``model`` in eval mode; a batch may carry ``prompt_lengths`` (B,) for token tasks."""
    adapter = adapter_for(spec)
    model.eval()

    def outputs() -> Iterator[tuple[torch.Tensor, Batch]]:
        for batch in batches:
            inputs = {key: value for key, value in batch.items() if key != "prompt_lengths"}
            yield adapter.forward(spec, model, inputs), batch

    return _evaluation(spec, outputs())


def evaluate_outputs(spec: ModelSpec, outputs: Sequence[torch.Tensor], batches: Sequence[Batch]) -> Evaluation:
    """:func:`evaluate` of outputs already computed: ``outputs[i]`` is the model's output for ``batches[i]``."""
    if len(outputs) != len(batches):
        raise ValueError(f"evaluate_outputs needs one output per batch, got {len(outputs)} and {len(batches)}")
    return _evaluation(spec, zip(outputs, batches, strict=True))


def _evaluation(spec: ModelSpec, pairs: Iterable[tuple[torch.Tensor, Batch]]) -> Evaluation:
    adapter = adapter_for(spec)
    if adapter.evaluation is None:
        raise ValueError(f"evaluate needs a task scored per token or per example; {spec.name} is {spec.task}")
    nll, tokens, correct = [], [], []
    fingerprint = hashlib.sha256()
    for output, batch in pairs:
        for key in sorted(batch):
            fingerprint.update(key.encode() + batch[key].detach().cpu().contiguous().numpy().tobytes())
        scores = adapter.example_scores(spec, output.detach(), _padding_ignored(spec, batch))
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
        perplexity=math.exp(loss) if adapter.evaluation == "tokens" else None,
        accuracy=float(correct_all.sum() / n_tokens),
        n_examples=int(scored.sum()),
        n_tokens=n_tokens,
        data_hash=fingerprint.hexdigest()[:16],
        example_loss=tuple((nll_all / tokens_all).tolist()),
        example_tokens=tuple(tokens_all.astype(int).tolist()),
        example_correct=tuple((correct_all / tokens_all).tolist()),
    )


def _padding_ignored(spec: ModelSpec, batch: Batch) -> Batch:
    """The batch with ``ignore_index`` at every label whose ``attention_mask`` is 0, where the labels follow the
    masked input stream (same shape); padding is never scored, whatever id it holds."""
    labels, mask = batch.get("labels"), batch.get("attention_mask")
    if labels is None or mask is None or labels.shape != mask.shape:
        return batch
    if getattr(adapter_for(spec), "causal_key", None) != "input_ids":  # seq2seq: labels follow the decoder stream
        return batch
    return {**batch, "labels": labels.masked_fill(mask == 0, spec.inputs.ignore_index)}


def _perplexity_metric(outputs: Sequence[torch.Tensor], batches: Sequence[Batch], spec: ModelSpec) -> float:
    """Token-weighted perplexity: ``exp`` of the mean NLL over every scored label of the set."""
    return float(evaluate_outputs(spec, outputs, batches).perplexity)


def _accuracy_metric(outputs: Sequence[torch.Tensor], batches: Sequence[Batch], spec: ModelSpec) -> float:
    """Token accuracy: the share of scored labels that are the argmax of their (teacher-forced) logits."""
    return evaluate_outputs(spec, outputs, batches).accuracy


def _loss_metric(outputs: Sequence[torch.Tensor], batches: Sequence[Batch], spec: ModelSpec) -> float:
    """The token-weighted mean NLL (nats) over every scored label of the set."""
    return evaluate_outputs(spec, outputs, batches).loss


TOKEN_METRICS: dict[str, Callable[[Sequence[torch.Tensor], Sequence[Batch], ModelSpec], float]] = {
    "perplexity": _perplexity_metric,
    "accuracy": _accuracy_metric,
    "loss": _loss_metric,
}
"""The harness's own evaluation as metric functions (``ModelSpec(metrics=TOKEN_METRICS)`` holds them to the oracle)."""


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
    """Texts tokenized with the spec's tokenizer, truncated, right-padded and labelled by the task's adapter.

    Causal LM: labels are the ids (padding ignored). Seq2seq: the first half of a text's tokens is
    the source, the second half the target. Text embedding: the ids only.
    """
    if spec.tokenizer is None:
        raise ValueError(f"{spec.name} has no tokenizer: text batches need ModelSpec.tokenizer")
    adapter = adapter_for(spec)
    tokenizer = spec.tokenizer()
    limit = min(max_length or spec.inputs.max_length, spec.inputs.max_length)
    examples = []
    for text in texts:
        ids = [
            i
            for i in tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
            if i < spec.inputs.vocab_size
        ]
        example = adapter.text_example(spec, ids, limit=limit)
        if example is not None:
            examples.append(example)
    if not examples:
        raise ValueError(f"no text long enough to make a batch for {spec.name}")
    return [adapter.text_batch(spec, examples[i : i + batch_size]) for i in range(0, len(examples), batch_size)]


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

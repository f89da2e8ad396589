"""Tier 5, metric oracles: the user's own metric functions (``ModelSpec.metrics``) on inputs whose true value is
known.

A metric is ``fn(outputs, batches, spec) -> float`` (the contract is in :mod:`harness.evaluation`); its name says
what it computes: ``perplexity`` (exp of the token-weighted mean NLL), ``loss`` (that mean, in nats) or
``accuracy`` (the share of scored tokens whose argmax is the label). Any other name is held to the batching oracle
only. The oracle "models" are logits written down directly, so the truth is known without a model: all
probability on the right token (perplexity 1, loss 0, accuracy 1), a uniform model (perplexity = vocabulary
size), and, counted by a brute-force loop over the scored positions, rows of very different lengths, prompt and
padding positions (pad id 1, then pad id 0) that must not count, and one set cut into different batchings and
orders. Values are compared with the float32 ``eager`` tolerance (a metric computed in float32 is within it).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from harness.adapters import adapter_for
from harness.adapters.base import Batch
from harness.checks.base import CheckOptions, register, skipped, verdict
from harness.checks.inputs import seeded_generator
from harness.result import CheckResult
from harness.spec import ModelSpec
from harness.tolerances import Tolerance, tolerance_for

KINDS = ("perplexity", "loss", "accuracy")  # metric names whose true value the oracles know
LENGTH = 32  # tokens of a full oracle row (at most the spec's max_length)
NOISE = 3.0  # std of the logits at positions no metric may score (prompt, padding, the last position)
ORACLE_TOLERANCE = tolerance_for("float32", "eager")  # in any dtype: the oracles' logits are float32, not the model's


def needs_metrics(spec: ModelSpec) -> str | None:
    if not spec.metrics:
        return "the spec declares no metric functions (ModelSpec.metrics)"
    adapter = adapter_for(spec)
    if adapter.evaluation != "tokens" or adapter.label_shift != 1 or getattr(adapter, "causal_key", "") != "input_ids":
        return (
            f"the metric oracles are built for next-token language models (labels are the input ids), not {spec.task}"
        )
    if spec.inputs.max_length < 8 or spec.inputs.vocab_size < 4:
        return "the metric oracles need max_length >= 8 and vocab_size >= 4 (ids 0 and 1 are their pad ids)"
    return None


@dataclass(frozen=True)
class Row:
    """One oracle example: its tokens and the logits the oracle model gives at each position."""

    labels: (
        torch.Tensor
    )  # (n,) token ids, >= 2 (ids 0 and 1 are the oracles' pad ids); a causal LM's labels are its inputs
    logits: torch.Tensor  # (n, V) float32: position t's logits predict label t + 1
    prompt: int = 0  # leading tokens that are prompt: labels at positions < prompt are never scored

    def scored(self) -> range:
        """Logit positions t whose label t + 1 is scored."""
        return range(max(self.prompt, 1) - 1, len(self.labels) - 1)


@dataclass(frozen=True)
class Oracle:
    """Inputs for the metric functions and the values they must return."""

    name: str
    meaning: str  # what the oracle tests, in words
    outputs: list[torch.Tensor]  # logits (B, T, V) per batch
    batches: list[Batch]
    spec: ModelSpec  # the spec the metrics are called with (its pad id is the batches')
    truth: dict[str, float]  # kind -> true value (a kind absent is not held to a value here)


def _row(vocab: int, n: int, generator: torch.Generator, *, prompt: int = 0, margin: float, wrong: float) -> Row:
    """A row whose scored positions give the label ``margin`` more logit than noise, and a share ``wrong`` of them
    a distractor above the label (a wrong argmax); every other position is noise."""
    labels = torch.randint(2, vocab, (n,), generator=generator)  # (n,)
    logits = NOISE * torch.randn(n, vocab, generator=generator)  # (n, V)
    for t in range(max(prompt, 1) - 1, n - 1):
        target = int(labels[t + 1])
        logits[t] = 0.5 * torch.randn(vocab, generator=generator)
        logits[t, target] += margin
        if float(torch.rand((), generator=generator)) < wrong:
            other = (target + 1 + int(torch.randint(vocab - 1, (), generator=generator))) % vocab  # != target
            logits[t, other] = logits[t, target] + 1.0
    return Row(labels, logits, prompt)


def _set_logits(row: Row, value: Callable[[int], torch.Tensor]) -> Row:
    """``row`` with the logits at its scored positions replaced by ``value(label)``."""
    logits = row.logits.clone()
    for t in row.scored():
        logits[t] = value(int(row.labels[t + 1]))
    return dataclasses.replace(row, logits=logits)


def _truth(rows: Sequence[Row]) -> dict[str, float]:
    """Perplexity, loss and accuracy of the rows, by a brute-force loop over every scored position (float64)."""
    nll, correct, count = 0.0, 0, 0
    for row in rows:
        log_probs = torch.log_softmax(row.logits.double(), -1)  # (n, V)
        for t in row.scored():
            label = int(row.labels[t + 1])
            nll -= float(log_probs[t, label])
            correct += int(int(row.logits[t].argmax()) == label)
            count += 1
    return {"perplexity": math.exp(nll / count), "loss": nll / count, "accuracy": correct / count}


def _batch(
    rows: Sequence[Row], *, pad_id: int, pad_label: int, generator: torch.Generator
) -> tuple[torch.Tensor, Batch]:
    """Rows right-padded to the longest: ``pad_id`` in the inputs, ``pad_label`` in the labels, attention mask 0
    and noise logits there."""
    width, vocab = max(len(row.labels) for row in rows), rows[0].logits.shape[-1]
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(rows), width), pad_label, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T)
    logits = NOISE * torch.randn(len(rows), width, vocab, generator=generator)  # (B, T, V)
    for i, row in enumerate(rows):
        n = len(row.labels)
        input_ids[i, :n], labels[i, :n], mask[i, :n], logits[i, :n] = row.labels, row.labels, 1, row.logits
    prompts = torch.tensor([row.prompt for row in rows], dtype=torch.long)  # (B,)
    return logits, {"input_ids": input_ids, "attention_mask": mask, "labels": labels, "prompt_lengths": prompts}


def _oracle(spec: ModelSpec, name: str, meaning: str, batchings: Sequence[Sequence[Row]], generator: torch.Generator,
            *, pad_id: int = 1, pad_label: str = "ignore", truth: dict[str, float] | None = None) -> Oracle:  # fmt: skip
    """The oracle of rows cut into the given batches; ``pad_label`` "ignore" (ignore_index) or "pad" (the pad id)."""
    label = spec.inputs.ignore_index if pad_label == "ignore" else pad_id
    pairs = [_batch(rows, pad_id=pad_id, pad_label=label, generator=generator) for rows in batchings]
    rows = [row for rows in batchings for row in rows]
    called = spec.replace(inputs=dataclasses.replace(spec.inputs, pad_id=pad_id))
    return Oracle(name, meaning, [p[0] for p in pairs], [p[1] for p in pairs], called, truth or _truth(rows))


def _length(spec: ModelSpec) -> int:
    return min(LENGTH, spec.inputs.max_length)


def known_value_oracles(spec: ModelSpec, seed: int) -> list[Oracle]:
    """All probability on the right token, and a uniform model, on three unpadded rows."""
    vocab, generator = spec.inputs.vocab_size, seeded_generator(seed)
    rows = [_row(vocab, _length(spec), generator, margin=1.0, wrong=0.0) for _ in range(3)]

    def certain(label: int) -> torch.Tensor:
        logits = torch.full((vocab,), -1e4)
        logits[label] = 0.0
        return logits

    perfect = [_set_logits(row, certain) for row in rows]
    uniform = [dataclasses.replace(row, logits=torch.zeros_like(row.logits)) for row in rows]
    return [
        _oracle(spec, "perfect", "all probability on the right token (perplexity 1, loss 0, accuracy 1)", [perfect],
                generator, truth={"perplexity": 1.0, "loss": 0.0, "accuracy": 1.0}),
        _oracle(spec, "uniform", f"a uniform model (perplexity = vocabulary size {vocab}, loss = ln {vocab})",
                [uniform], generator, truth={"perplexity": float(vocab), "loss": math.log(vocab)}),
    ]  # fmt: skip


def _uneven_rows(spec: ModelSpec, generator: torch.Generator, *, prompts: bool = False) -> list[Row]:
    """Rows of 1, 2, most and all of a full row's scored tokens: short rows near-certain and right, long rows
    unsure and often wrong, so weighting rows instead of tokens moves every metric."""
    vocab, full = spec.inputs.vocab_size, _length(spec)
    shapes = [(2, 8.0, 0.0), (3, 8.0, 0.0), (full - 6, 0.5, 0.6), (full, 1.0, 0.5)]  # (length, margin, wrong share)
    return [_row(vocab, n, generator, margin=margin, wrong=wrong, prompt=(n // 3 if prompts and n > 3 else 0))
            for n, margin, wrong in shapes]  # fmt: skip


def token_weighting_oracles(spec: ModelSpec, seed: int) -> list[Oracle]:
    """Rows of 1 to 31 scored tokens in one batch (padding ignored and masked)."""
    generator = seeded_generator(seed + 1)
    rows = _uneven_rows(spec, generator)
    counts = [len(row.scored()) for row in rows]
    meaning = f"rows of {min(counts)} to {max(counts)} scored tokens, weighted by token, not by row"
    return [_oracle(spec, "lengths", meaning, [rows], generator)]


def masking_oracles(spec: ModelSpec, seed: int) -> list[Oracle]:
    """One row each (so row weighting cannot matter): a prompt, padding labelled with pad id 1, then with 0."""
    vocab, full, generator = spec.inputs.vocab_size, _length(spec), seeded_generator(seed + 2)
    prompted = _row(vocab, full, generator, prompt=full // 3, margin=1.0, wrong=0.3)
    short = _row(vocab, full - full // 3, generator, margin=1.0, wrong=0.3)

    def padding(pad_id: int) -> Oracle:
        meaning = (f"{full // 3} right-padding positions holding pad id {pad_id} in the inputs and the labels, "
                   f"attention_mask 0 (only {len(short.scored())} tokens count)")  # fmt: skip
        oracle = _oracle(spec, f"padding_id_{pad_id}", meaning, [[short]], generator, pad_id=pad_id, pad_label="pad")
        return _widened(oracle, full, pad_id)

    return [
        _oracle(spec, "prompt", f"a row whose first {prompted.prompt} tokens are prompt (prompt_lengths), never scored",
                [[prompted]], generator),
        padding(1),
        padding(0),
    ]  # fmt: skip


def _widened(oracle: Oracle, width: int, pad_id: int) -> Oracle:
    """The oracle's single batch padded on the right to ``width`` (labels and inputs ``pad_id``, mask 0, noise)."""
    (logits,), (batch,) = oracle.outputs, oracle.batches
    extra = width - logits.shape[1]
    if extra <= 0:
        return oracle
    generator = seeded_generator(width)
    grown = {key: torch.cat([value, torch.full((value.shape[0], extra), pad_id if key != "attention_mask" else 0)], 1)
             if value.dim() == 2 else value for key, value in batch.items()}  # fmt: skip
    noise = NOISE * torch.randn(logits.shape[0], extra, logits.shape[2], generator=generator)
    return dataclasses.replace(oracle, outputs=[torch.cat([logits, noise], 1)], batches=[grown])


def batching_oracles(spec: ModelSpec, seed: int) -> list[Oracle]:
    """Six rows with prompts in one batch, one per batch, uneven cuts, reversed and shuffled."""
    generator = seeded_generator(seed + 3)
    rows = _uneven_rows(spec, generator, prompts=True) + _uneven_rows(spec, generator, prompts=True)[2:]
    order = torch.randperm(len(rows), generator=generator).tolist()
    shuffled = [rows[i] for i in order]
    cuts = {
        "one_batch": [rows],
        "one_row_per_batch": [[row] for row in rows],
        "uneven_batches": [rows[:1], rows[1:4], rows[4:]],
        "reversed_rows": [rows[::-1]],
        "shuffled_pairs": [shuffled[i : i + 2] for i in range(0, len(shuffled), 2)],
    }
    return [_oracle(spec, name, f"the same {len(rows)} rows as {name.replace('_', ' ')}", batching, generator)
            for name, batching in cuts.items()]  # fmt: skip


def _value(metric: Callable[..., float], oracle: Oracle) -> tuple[float, str | None]:
    """The metric on private copies of the oracle's inputs, or NaN and why it raised."""
    outputs = [logits.clone() for logits in oracle.outputs]
    batches = [{key: value.clone() for key, value in batch.items()} for batch in oracle.batches]
    try:
        return float(metric(outputs, batches, oracle.spec)), None
    except Exception as error:  # noqa: BLE001 - a metric that raises on a valid input fails its oracle
        return math.nan, f"raised {type(error).__name__}: {error}"


def _entry(metric: str, oracle: Oracle, expected: float, got: float, error: str | None, tolerance: Tolerance) -> dict:
    off = abs(got - expected)
    bound = tolerance.atol + tolerance.rtol * abs(expected)
    ratio = off / bound if math.isfinite(off) else math.inf
    return {"metric": metric, "oracle": oracle.name, "meaning": oracle.meaning, "expected": expected, "got": got,
            "off_by": off, "relative": off / abs(expected) if expected else off, "tolerance_units": ratio,
            "error": error}  # fmt: skip


def _describe(entry: dict) -> str:
    got = entry["error"] or f"got {entry['got']:.6g}, off by {entry['off_by']:.3g} ({entry['relative']:.1%})"
    return (
        f"{entry['metric']} on oracle '{entry['oracle']}' ({entry['meaning']}): expected {entry['expected']:.6g}, {got}"
    )


def _held(spec: ModelSpec, check: str, entries: list[dict], tolerance: Tolerance, oracles: list[Oracle], *,
          expected: str, hint: str, seed: int) -> CheckResult:  # fmt: skip
    wrong = [entry for entry in entries if not entry["tolerance_units"] <= 1.0]
    worst = max((entry["tolerance_units"] for entry in entries), default=0.0)
    tokens = sum(int((batch["attention_mask"] * (batch["labels"] != spec.inputs.ignore_index)).sum())
                 for oracle in oracles for batch in oracle.batches)  # fmt: skip
    metrics = sorted({entry["metric"] for entry in entries})
    return verdict(
        spec, check, passed=not wrong, measured=worst if math.isfinite(worst) else math.inf, threshold=1.0,
        tolerance=tolerance.as_dict(), expected=expected,
        got="; ".join(_describe(entry) for entry in wrong) if wrong else f"{', '.join(metrics)} right on "
        f"{len(oracles)} oracle(s): {', '.join(o.name for o in oracles)}; worst {worst:.3g} of the tolerance",
        hint=hint, sample_size=tokens, seed=seed, details={"values": entries},
    )  # fmt: skip


def _against_truth(
    spec: ModelSpec, check: str, oracles: list[Oracle], options: CheckOptions, *, hint: str
) -> CheckResult:
    tolerance = ORACLE_TOLERANCE
    known = {name: fn for name, fn in spec.metrics.items() if name in KINDS}
    if not known:
        return skipped(spec, check, f"no metric is named {', '.join(KINDS)} (the oracles know only their values); "
                       f"the spec's: {', '.join(spec.metrics)}", seed=options.seed)  # fmt: skip
    entries = []
    for oracle in oracles:
        for name, metric in known.items():
            if name in oracle.truth:
                got, error = _value(metric, oracle)
                entries.append(_entry(name, oracle, oracle.truth[name], got, error, tolerance))
    expected = (f"each metric within atol={tolerance.atol:g} + rtol={tolerance.rtol:g} * |truth| of the true value "
                "(measured in units of that bound: <= 1)")  # fmt: skip
    return _held(spec, check, entries, tolerance, oracles, expected=expected, hint=hint, seed=options.seed)


@register(5, needs_metrics)
def check_metric_known_values(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Each metric returns the known value on an oracle model: all probability on the right token gives perplexity
    1, loss 0 and accuracy 1; a uniform model gives perplexity equal to the vocabulary size."""
    return _against_truth(spec, "metric_known_values", known_value_oracles(spec, options.seed), options,
                          hint="The labels are not shifted (position t predicts label t + 1), the log is not the "
                          "natural one, or the metric is computed from something other than the logits.")  # fmt: skip


@register(5, needs_metrics)
def check_metric_token_weighting(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """On rows of very different lengths each metric weights every scored token equally, never every row."""
    return _against_truth(spec, "metric_token_weighting", token_weighting_oracles(spec, options.seed), options,
                          hint="The metric averages per-row values (a mean of per-row perplexities or accuracies); "
                          "sum over tokens first, then divide by the number of scored tokens.")  # fmt: skip


@register(5, needs_metrics)
def check_metric_masking(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """No metric scores a prompt token or a padding position (attention_mask 0), whether the pad id is 1 or 0."""
    return _against_truth(spec, "metric_masking", masking_oracles(spec, options.seed), options,
                          hint="The metric ignores prompt_lengths, scores labels where attention_mask is 0, or "
                          "tests the pad id for truth (`if pad_id:`), so pad id 0 counts as no padding.")  # fmt: skip


@register(5, needs_metrics)
def check_metric_batching(spec: ModelSpec, model: torch.nn.Module, *, options: CheckOptions) -> CheckResult:
    """Each metric gives the same value on one set of rows however it is cut into batches and ordered."""
    tolerance = ORACLE_TOLERANCE
    reference, *others = batching_oracles(spec, options.seed)
    entries = []
    for name, metric in spec.metrics.items():
        expected, error = _value(metric, reference)
        if error:
            entries.append(_entry(name, reference, math.nan, math.nan, error, tolerance))
            continue
        for oracle in others:
            got, error = _value(metric, oracle)
            entries.append(_entry(name, oracle, expected, got, error, tolerance))
    return _held(spec, "metric_batching", entries, tolerance, [reference, *others],
                 expected=f"each metric's value on every batching within atol={tolerance.atol:g} + "
                 f"rtol={tolerance.rtol:g} * |value| of its value on one batch",
                 hint="The metric averages per-batch values (a mean of batch perplexities or accuracies), or "
                 "depends on the padded width or the row order; accumulate token sums over batches.",
                 seed=options.seed)  # fmt: skip

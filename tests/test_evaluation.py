"""Evaluation: token-weighted perplexity, teacher-forced accuracy without prompt tokens, BLEU and ROUGE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from harness.adapters import adapter_for
from harness.evaluation import (
    bleu,
    classification_scores,
    digit_batches,
    evaluate,
    perplexity,
    rouge,
    text_batches,
    text_examples,
    token_scores,
)
from tests.defect_models import causal_spec, image_spec


def test_perplexity_is_token_weighted_not_a_mean_of_perplexities():
    nll, tokens = np.array([2.0, 30.0]), np.array([1, 10])
    assert perplexity(nll, tokens) == pytest.approx(math.exp(32.0 / 11))
    assert perplexity(nll, tokens) != pytest.approx(np.mean(np.exp(nll / tokens)))
    with pytest.raises(ValueError, match="token_counts"):
        perplexity([1.0], [0])


def test_token_scores_brute_force_with_prompts_and_ignored_labels():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=generator)
    labels = torch.tensor([[1, 2, 3, 4, 5], [6, 0, 1, -100, -100]])
    prompts = torch.tensor([3, 0])
    scores = token_scores(logits, labels, shift=True, prompt_lengths=prompts)
    log_probs = torch.log_softmax(logits.double(), -1)
    for row in range(2):
        scored = [t for t in range(1, 5) if labels[row, t] != -100 and t >= prompts[row]]
        assert scores.tokens[row] == len(scored)
        expected = -sum(float(log_probs[row, t - 1, labels[row, t]]) for t in scored)
        assert scores.nll[row] == pytest.approx(expected)
        correct = sum(int(logits[row, t - 1].argmax() == labels[row, t]) for t in scored)
        assert scores.correct[row] == correct


def test_evaluate_causal_lm_matches_the_reference_loss():
    spec = causal_spec()
    model = spec.build_model()
    adapter = adapter_for(spec)
    batch = adapter.make_batch(spec, batch_size=4, length=12, generator=torch.Generator().manual_seed(1))
    batch["labels"][0, 8:] = spec.inputs.ignore_index  # a shorter example
    result = evaluate(spec, model, [batch])
    with torch.no_grad():
        reference = float(adapter.reference_loss(spec, adapter.forward(spec, model, batch), batch))
    assert result.loss == pytest.approx(reference, rel=1e-6)
    assert result.perplexity == pytest.approx(math.exp(reference), rel=1e-6)
    assert result.example_tokens == (7, 11, 11, 11)
    assert len(result.example_loss) == 4


def test_prompt_tokens_are_never_scored():
    spec = causal_spec()
    model = spec.build_model()
    batch = adapter_for(spec).make_batch(spec, batch_size=2, length=10, generator=torch.Generator().manual_seed(2))
    full = evaluate(spec, model, [batch])
    prompted = evaluate(spec, model, [{**batch, "prompt_lengths": torch.tensor([4, 6])}])
    assert prompted.example_tokens == (6, 4)
    assert prompted.n_tokens < full.n_tokens


def test_classification_accuracy_and_loss():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    nll, correct = classification_scores(logits, torch.tensor([0, 0, 0]))
    assert correct.tolist() == [True, False, True]
    assert nll[1] == pytest.approx(-math.log(math.exp(0) / (1 + math.e)))
    spec = image_spec()
    result = evaluate(
        spec, spec.build_model(), [{"pixel_values": torch.randn(6, 1, 8, 8), "labels": torch.arange(6) % 5}]
    )
    assert result.perplexity is None and result.n_examples == 6 and 0 <= result.accuracy <= 1


def test_real_text_and_digit_batches():
    from harness_zoo import load_zoo_spec

    spec = load_zoo_spec("gpt2-tiny")
    batches = text_batches(spec, text_examples()[:5], batch_size=4, max_length=16)
    assert [b["input_ids"].shape[0] for b in batches] == [4, 1]
    assert (batches[0]["labels"][batches[0]["attention_mask"] == 0] == -100).all()
    assert sum(len(b["labels"]) for b in digit_batches(stop=0.1, batch_size=50)) == int(0.1 * 1797)


def test_bleu_and_rouge_from_the_maintained_libraries():
    import sacrebleu

    hypotheses = ["the cat sat on the mat", "a dog barked loudly"]
    references = ["the cat sat on the mat", "the dog barked"]
    corpus, sentences = bleu(hypotheses, references)
    assert corpus == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    assert sentences[0] == pytest.approx(100.0)
    means, rows = rouge(hypotheses, references)
    assert rows[0]["rouge1"] == pytest.approx(1.0)
    assert means["rougeL"] == pytest.approx(np.mean([r["rougeL"] for r in rows]))
    with pytest.raises(ValueError, match="paired"):
        bleu(["a"], [])


def test_padding_is_never_scored_whatever_its_label_holds():
    """Labels may hold the pad id at padding (labels = input ids); attention_mask 0 keeps them out of the score."""
    spec = causal_spec()
    model = spec.build_model()
    batch = adapter_for(spec).make_batch(spec, batch_size=2, length=10, generator=torch.Generator().manual_seed(3))
    batch["attention_mask"] = torch.ones_like(batch["input_ids"])
    batch["attention_mask"][0, 6:] = 0
    ignored = {**batch, "labels": batch["labels"].masked_fill(batch["attention_mask"] == 0, -100)}
    padded = {**batch, "input_ids": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, spec.inputs.pad_id)}
    padded["labels"] = padded["input_ids"].clone()  # the pad id, not the ignore index, at padding
    assert evaluate(spec, model, [padded]).example_tokens == evaluate(spec, model, [ignored]).example_tokens == (5, 9)


def test_evaluate_outputs_equals_evaluate_and_token_metrics_read_it():
    from harness.evaluation import TOKEN_METRICS, evaluate_outputs

    spec = causal_spec()
    model = spec.build_model()
    batches = [
        adapter_for(spec).make_batch(spec, batch_size=3, length=8, generator=torch.Generator().manual_seed(s))
        for s in (4, 5)
    ]
    with torch.no_grad():
        outputs = [adapter_for(spec).forward(spec, model, batch) for batch in batches]
    direct, given = evaluate(spec, model, batches), evaluate_outputs(spec, outputs, batches)
    assert given == direct
    assert TOKEN_METRICS["perplexity"](outputs, batches, spec) == pytest.approx(direct.perplexity)
    assert TOKEN_METRICS["accuracy"](outputs, batches, spec) == direct.accuracy
    assert TOKEN_METRICS["loss"](outputs, batches, spec) == direct.loss
    with pytest.raises(ValueError, match="one output per batch"):
        evaluate_outputs(spec, outputs[:1], batches)

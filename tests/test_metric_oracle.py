"""Tier 5 metric oracles: every planted metric defect is flagged by its check, naming the oracle and how far off
it is; the harness's own evaluation functions and the clean user metrics pass; the oracles are right and sharp."""

from __future__ import annotations

import math

import pytest

from harness.checks import CHECKS, CheckOptions, run_check
from harness.checks.metrics import (
    Row,
    _truth,
    batching_oracles,
    known_value_oracles,
    masking_oracles,
    token_weighting_oracles,
)
from harness.evaluation import TOKEN_METRICS
from harness.result import Status
from harness_zoo import load_zoo_spec
from tests.defect_models import causal_spec, image_spec
from tests.metric_defects import CLEAN, DEFECTS, per_row_perplexity

METRIC_CHECKS = sorted(name for name in CHECKS if name.startswith("metric_"))
SPEC = causal_spec()  # a tiny causal LM: vocabulary 32, context 16 (the oracles need no model)


def _run(spec, check):
    return run_check(CHECKS[check], spec, SPEC.build_model(), CheckOptions())  # the checks never call the model


@pytest.mark.parametrize("metrics", [TOKEN_METRICS, CLEAN], ids=["harness", "clean-user"])
@pytest.mark.parametrize("check", METRIC_CHECKS)
def test_clean_metrics_pass_every_oracle(metrics, check):
    result = _run(SPEC.replace(metrics=metrics), check)
    assert result.status is Status.PASSED, result.message
    assert result.measured <= result.threshold == 1.0 and result.tolerance and result.sample_size > 0


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_planted_metric_defect_is_flagged_naming_the_oracle(defect):
    metrics, check, oracle = DEFECTS[defect]
    result = _run(SPEC.replace(name=f"lm-{defect}", metrics=metrics), check)
    assert result.status is Status.FAILED, result.message
    assert f"on oracle '{oracle}'" in result.got and "off by" in result.got, result.message
    wrong = [entry for entry in result.details["values"] if entry["oracle"] == oracle]
    assert wrong and wrong[0]["tolerance_units"] > 1.0


@pytest.mark.parametrize("defect", sorted(set(DEFECTS) - {"labels-not-shifted"}))  # a missing shift is wrong everywhere
def test_a_planted_metric_defect_is_flagged_by_its_check_only(defect):
    """Each oracle isolates one property: single-row masking oracles, single-batch weighting oracles."""
    metrics, check, _ = DEFECTS[defect]
    spec = SPEC.replace(name=f"lm-{defect}", metrics=metrics)
    failed = {name for name in METRIC_CHECKS if _run(spec, name).status is Status.FAILED}
    assert failed == {check}


def test_gpt2_lora_zoo_entry_holds_the_harness_metrics_to_the_oracles():
    spec = load_zoo_spec("gpt2-tiny-lora")
    for check in METRIC_CHECKS:
        assert _run(spec, check).status is Status.PASSED


def test_the_oracle_values_are_the_known_ones():
    perfect, uniform = known_value_oracles(SPEC, seed=0)
    assert perfect.truth == {"perplexity": 1.0, "loss": 0.0, "accuracy": 1.0}
    assert uniform.truth["perplexity"] == SPEC.inputs.vocab_size
    rows = [Row(b["labels"][i], o[i]) for o, b in zip(perfect.outputs, perfect.batches, strict=True) for i in range(3)]
    assert _truth(rows)["perplexity"] == 1.0  # the brute-force count agrees with the closed form


def test_the_oracles_are_sharp():
    """Each defect's value is far outside the tolerance on its oracle, not at its edge."""
    (lengths,) = token_weighting_oracles(SPEC, seed=0)
    row_mean = per_row_perplexity(lengths.outputs, lengths.batches, lengths.spec)
    assert abs(row_mean - lengths.truth["perplexity"]) / lengths.truth["perplexity"] > 0.1
    prompt, padding_1, padding_0 = masking_oracles(SPEC, seed=0)
    assert padding_0.spec.inputs.pad_id == 0 and padding_1.spec.inputs.pad_id == 1
    assert (padding_0.batches[0]["attention_mask"] == 0).any() and int(prompt.batches[0]["prompt_lengths"]) > 0
    assert len({len(o.batches) for o in batching_oracles(SPEC, seed=0)}) >= 3


def test_a_metric_that_raises_fails_with_the_error():
    def broken(outputs, batches, spec):
        raise KeyError("prompt_lengths")

    result = _run(SPEC.replace(metrics={"perplexity": broken}), "metric_known_values")
    assert result.status is Status.FAILED and "raised KeyError" in result.got


def test_unknown_metric_names_are_held_to_batching_only():
    spec = SPEC.replace(metrics={"bits_per_byte": lambda o, b, s: math.log2(CLEAN["perplexity"](o, b, s))})
    assert _run(spec, "metric_known_values").status is Status.SKIPPED
    assert _run(spec, "metric_batching").status is Status.PASSED


def test_specs_without_metrics_or_language_model_skip_with_the_reason():
    assert "ModelSpec.metrics" in _run(SPEC, "metric_masking").got
    result = _run(image_spec().replace(metrics=CLEAN), "metric_masking")
    assert result.status is Status.SKIPPED and "next-token language models" in result.got

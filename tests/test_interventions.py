"""Tier 2 intervention checks: each planted defect is flagged by its check, with the numbers in the message, and
the zoo's clean interventions (PEFT LoRA on gpt2-tiny, FiLM hooks on cnn-digits) pass every one."""

from __future__ import annotations

import sys

import pytest

from harness.checks import CHECKS, CheckOptions, run_check
from harness.interventions import Intervention
from harness.result import Status
from harness.spec import MissingExtraError, SpecError
from harness_zoo import load_zoo_spec
from tests.intervention_defects import DEFECTS

INTERVENTION_CHECKS = sorted(name for name, check in CHECKS.items() if name.startswith("intervention_"))


@pytest.mark.parametrize("model", ["gpt2-tiny-lora", "cnn-digits-film"])
def test_clean_interventions_pass_every_check(model):
    if "lora" in model:
        pytest.importorskip("peft", reason="gpt2-tiny-lora needs the optional extra 'peft'")
    spec = load_zoo_spec(model)
    built = spec.build_model()
    for name in INTERVENTION_CHECKS:
        result = run_check(CHECKS[name], spec, built, CheckOptions())
        assert result.status is Status.PASSED, result.message
        assert result.measured is not None and result.threshold is not None


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_planted_defect_is_flagged(defect):
    spec, check, text = DEFECTS[defect]
    if "lora" in spec.name:
        pytest.importorskip("peft", reason="gpt2-tiny-lora needs the optional extra 'peft'")
    result = run_check(CHECKS[check], spec, spec.build_model(), CheckOptions())
    assert result.status is Status.FAILED, result.message
    assert text in result.got, result.message
    assert result.model == spec.name and result.rule in result.message and result.hint in result.message


def test_effect_reports_found_and_claimed_and_moved():
    spec, _, _ = DEFECTS["modulator-finds-no-linear"]
    result = run_check(CHECKS["intervention_effect"], spec, spec.build_model(), CheckOptions())
    assert result.details["found"] == 0 and result.details["claimed"] == 2
    assert set(result.details["moved"]) == set(spec.intervention.targets)


def test_a_refused_second_attach_passes_and_is_reported():
    spec = load_zoo_spec("cnn-digits-film")
    result = run_check(CHECKS["intervention_idempotent"], spec, spec.build_model(), CheckOptions())
    assert result.status is Status.PASSED and "refused" in result.got and result.details["refused"]


def test_models_without_an_intervention_skip_with_the_reason():
    spec = load_zoo_spec("cnn-digits")
    for name in INTERVENTION_CHECKS:
        result = run_check(CHECKS[name], spec, spec.build_model(), CheckOptions())
        assert result.status is Status.SKIPPED and "ModelSpec.intervention" in result.got


def test_intervention_gradient_skips_without_parameters():
    spec, _, _ = DEFECTS["modulator-finds-no-linear"]
    result = run_check(CHECKS["intervention_gradient"], spec, spec.build_model(), CheckOptions())
    assert result.status is Status.SKIPPED and "names no parameters" in result.got


def test_intervention_spec_rejects_bad_values():
    with pytest.raises(SpecError, match="attach must be callable"):
        Intervention(attach=None, detach=lambda model, handle: None)
    with pytest.raises(SpecError, match="targets must be a tuple"):
        Intervention(attach=lambda model: None, detach=lambda model, handle: None, targets="blocks.0")


def test_lora_without_peft_is_a_skip_naming_the_extra(monkeypatch):
    import harness_zoo.gpt2_lora

    monkeypatch.setitem(sys.modules, "peft", None)  # as if not installed
    with pytest.raises(MissingExtraError, match=r"\[peft\]"):
        harness_zoo.gpt2_lora.SPEC.build_model()

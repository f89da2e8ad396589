"""Every Tier 3 check can fail: a planted defect in the user's training recipe it must flag, and the
clean recipe it must pass. The result rows say the user's pieces were exercised."""

from __future__ import annotations

import pytest

from harness.checks import CHECKS, CheckOptions, run_check
from harness.result import Status
from tests.training_defects import DEFECTS, defect_spec

# the training-recipe checks; Tier 3's numerics checks have their own defects in tests/test_numerics_checks.py
TIER3 = sorted(
    name for name, check in CHECKS.items() if check.tier == 3 and check.function.__module__ == "harness.checks.training"
)


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _run(check: str, spec):
    return run_check(CHECKS[check], spec, spec.build_model(), CheckOptions())


def test_every_tier3_check_has_a_planted_defect():
    assert sorted(check for check, _ in DEFECTS.values()) == TIER3


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_is_flagged(defect):
    check, _ = DEFECTS[defect]
    spec = defect_spec(defect)
    result = _run(check, spec)
    assert result.status is Status.FAILED, result.message
    assert result.message.startswith(f"{spec.name}: {check}: ")
    assert "Expected" in result.message and "got" in result.message
    assert "user" in result.details["recipe"].values()  # the user's piece was exercised, not our default


@pytest.mark.parametrize("check", TIER3)
def test_clean_recipe_passes(check):
    family = {"learning_on_real_text": "digits", "knobs": "knobs", "learning_rate_groups": "rates"}.get(check, "tagger")
    spec = defect_spec(None, family=family)
    result = _run(check, spec)
    assert result.status is Status.PASSED, result.message
    assert isinstance(result.measured, float) and result.threshold is not None


def test_clean_tagger_uses_its_own_recipe():
    result = _run("freeze_unfreeze", defect_spec(None))
    assert result.details["recipe"]["freeze"] == "user"
    assert result.details["recipe"]["add_unfrozen"] == "user"
    assert result.details["recipe"]["loss"] == "harness"


def test_optimizer_missing_unfrozen_names_the_parameters():
    result = _run("freeze_unfreeze", defect_spec("optimizer_missing_unfrozen"))
    assert "is in no optimizer param group" in result.got
    assert any(name.startswith("transformer.") for name in result.details["missing_from_optimizer"])


def test_learning_check_skips_without_real_data():
    result = _run("learning_on_real_text", defect_spec(None))
    assert result.status is Status.SKIPPED


def test_the_harness_default_loss_accumulates_token_weighted():
    """Our own Lightning path weighs accumulated micro-batches by their scored tokens (transformers PR #34191):
    on padded rows of uneven length, k micro-batches give the full batch's gradient."""
    from harness_zoo import load_zoo_spec

    spec = load_zoo_spec("gpt2-tiny")
    result = _run("gradient_accumulation", spec)
    assert result.status is Status.PASSED, result.message
    assert result.details["layouts"][0]["recipe"]["loss"] == "harness"
    scored = result.details["layouts"][0]["scored_per_micro_batch"]
    assert len(set(scored)) > 1  # the micro-batches really score different numbers of labels

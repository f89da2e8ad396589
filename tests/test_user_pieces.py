"""Issue 17: the checks find the bugs in the user's own pieces. Each planted defect (tests/user_pieces_defects.py)
is flagged with a message naming model, check, rule, expected and got; each clean variant passes."""

from __future__ import annotations

import pytest

from harness.checks import CHECKS, CheckOptions, run_check
from harness.checks.base import raised_by, verdict
from harness.result import Status
from tests.user_pieces_defects import (
    HEAD_STD,
    MEMORY_FLAWS,
    NO_SUCH,
    SCHEDULE_FLAWS,
    TIED,
    bounded_digits_spec,
    flawed_spec,
    freeze_claim_spec,
    init_claim_spec,
    knob_spec,
    lr_claim_spec,
    memory_spec,
    no_repair_spec,
    schedule_spec,
    tied_freeze_spec,
    unmasked_bidirectional_spec,
)


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HARNESS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield


def _run(check: str, spec, options: CheckOptions | None = None):
    return run_check(CHECKS[check], spec, spec.build_model(), options or CheckOptions())


def _failed(check: str, spec, *fragments: str):
    result = _run(check, spec)
    assert result.status is Status.FAILED, result.message
    assert result.message.startswith(f"{spec.name}: {check}: {CHECKS[check].rule}. Expected ")
    assert ", got " in result.message
    for fragment in fragments:
        assert fragment in result.got, result.got
    return result


def _passed(check: str, spec):
    result = _run(check, spec)
    assert result.status is Status.PASSED, result.message
    return result


# 1. no NaN or Inf passes ---------------------------------------------------------------------------------------


def test_a_non_finite_measured_value_never_passes() -> None:
    spec = flawed_spec("nan_on_pairs")
    result = verdict(spec, "batch_independence", passed=True, measured=float("nan"), threshold=0.0, expected="x",
                     got="y", hint="h", sample_size=1, seed=0)  # fmt: skip
    assert result.status is Status.FAILED and "non-finite" in result.got


def test_nan_on_the_one_at_a_time_baseline_is_named() -> None:
    spec = flawed_spec("nan_when_alone")
    assert _run("batch_independence", spec).status is Status.PASSED  # finite on the 4-row batches
    _failed("batch_size_invariance", spec, "NaN", "one at a time outputs")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_nan_on_the_causality_corner_is_not_read_as_a_result(bidirectional: bool) -> None:
    """NaN is "infinitely far": a bidirectional claim used to pass on it (the last token "moved" the first output)."""
    spec = flawed_spec("nan_on_pairs", bidirectional=bidirectional)
    assert _run("gradient_flow", spec).status is Status.PASSED  # finite on random 4-row batches
    result = _failed("causality", spec, "NaN", "not judged")
    assert "future leakage" not in result.got


def test_nan_on_the_padding_corner_is_named() -> None:
    _failed("padding_invariance", flawed_spec("nan_on_pairs"), "NaN", "padded outputs at real tokens")


def test_overfit_ratios_never_pass_on_a_nan_gradient_norm() -> None:
    from harness.checks.training import _overfit_ratios

    history = [{"train_loss": 1.0, "grad_norm": 1.0}, {"train_loss": 0.01, "grad_norm": float("nan")}]
    assert _overfit_ratios(history, 0.9)[2] is False


# 2. what was measured before a crash, which step raised, model or harness -------------------------------------


def test_gradient_flow_reports_the_dead_parameters_of_the_first_backward_when_a_later_forward_raises() -> None:
    result = _failed("gradient_flow", flawed_spec("second_train_forward_raises"), "raised by the model",
                     "during step 'forward and backward of batch 2'", "blocks.0.mlp")  # fmt: skip
    assert result.details["raised_by"] == "model"
    assert "blocks.0.mlp.0.weight" in result.details["established"]["dead_after_first_backward"]


def test_an_exception_is_attributed_to_the_harness_unless_it_passes_through_the_users_code() -> None:
    def harness_side() -> None:
        raise ValueError("harness")

    try:
        harness_side()
    except ValueError as error:
        assert raised_by(error, {__file__ + ".nowhere"}) == "harness"
        assert raised_by(error, {__file__}) == "model"


def test_a_crash_in_the_causality_probe_is_not_reported_as_leakage() -> None:
    spec = flawed_spec("bounded").replace(inputs=flawed_spec("nan_on_pairs").inputs)  # states 16 tokens, takes 8
    result = _failed("causality", spec, "raised by the model", "above its stated maximum")
    assert "future leakage" not in result.got


# 3. never repair the user's code -------------------------------------------------------------------------------


def test_the_harness_does_not_add_what_the_users_optimizer_forgot() -> None:
    result = _failed("freeze_unfreeze", no_repair_spec(clean=False), "is in no optimizer param group")
    assert result.details["recipe"]["add_unfrozen"] == "none (the user's optimizer as built)"
    assert result.details["recipe"]["configure_optimizers"] == "user"


def test_a_users_optimizer_holding_every_parameter_needs_no_repair() -> None:
    result = _passed("freeze_unfreeze", no_repair_spec(clean=True))
    assert result.details["recipe"]["add_unfrozen"].startswith("none")


# 4. claims the user can state, checked both ways ---------------------------------------------------------------


def test_freeze_must_freeze_what_the_recipe_states() -> None:
    _failed("freeze_unfreeze", freeze_claim_spec(clean=False), "transformer.wpe.weight is trainable after freeze")
    _passed("freeze_unfreeze", freeze_claim_spec(clean=True))


def test_a_tied_alias_is_frozen_with_its_tensor() -> None:
    _failed("freeze_unfreeze", tied_freeze_spec(clean=False), "lm_head.weight is frozen after freeze")
    _passed("freeze_unfreeze", tied_freeze_spec(clean=True))


@pytest.mark.parametrize(
    ("claims", "std", "tied", "fragment"),
    [(HEAD_STD, 0.2, False, "std 0.19"), (TIED, 0.02, False, "two tensors"), (NO_SUCH, 0.02, False, "matches no")],
)
def test_stated_initial_statistics_and_ties_are_checked(claims, std: float, tied: bool, fragment: str) -> None:
    _failed("initialization", init_claim_spec(head_std=std, tied=tied, claims=claims), fragment)


@pytest.mark.parametrize("claims", [HEAD_STD, TIED])
def test_stated_initial_statistics_and_ties_that_hold_pass(claims) -> None:
    _passed("initialization", init_claim_spec(head_std=0.02, tied=claims is TIED, claims=claims))


def test_groups_carry_their_stated_learning_rates() -> None:
    _failed("learning_rate_groups", lr_claim_spec(clean=False), "stated 0.0003 (x0.1)")
    _passed("learning_rate_groups", lr_claim_spec(clean=True))


@pytest.mark.parametrize(
    ("flaw", "fragment"),
    [
        ("z_never_read", "z_loss_weight=0.01 left the loss"),
        ("smoothing_overrides", "the loss of label_smoothing alone"),
        ("off_is_default", "an off knob still acts"),
    ],
)
def test_knobs_change_the_loss_combine_and_switch_off(flaw: str, fragment: str) -> None:
    _failed("knobs", knob_spec(flaw), fragment)


def test_clean_knobs_pass() -> None:
    result = _passed("knobs", knob_spec())
    assert len(result.details["losses"]) >= 6


# 5. the user's scheduler on generic properties -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("flaw", "fragment"),
    [
        ("zero_warmup_default", "'warmup': 0"),
        ("jump_after_warmup", "a jump of"),
        ("misses_end", "declared end value"),
        ("nan_for_zero_decay", "non-finite"),
        ("warmup_dips", "phase warmup"),
    ],
)
def test_the_users_scheduler_is_held_to_its_claim(flaw: str, fragment: str) -> None:
    assert set(SCHEDULE_FLAWS) >= {flaw}
    _failed("scheduler_properties", schedule_spec(flaw), fragment)


def test_a_scheduler_meeting_its_claim_passes() -> None:
    result = _passed("scheduler_properties", schedule_spec())
    assert result.details["schedulers"] == ["user-warmup-decay"]  # not the harness's own formulas


# 6. the complete memory contract -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flaws", "eviction", "kind"),
    [
        (("crashes_when_full",), "lru", "raised IndexError"),
        (("evicts_newest",), "lru", "removed the wrong items"),
        (("sentinel_valid",), "lru", "k > stored"),
        (("forget_floors",), "lru", "another number of items"),
        (("touch_ignored",), "lru", "wrong items"),
        (("reuses_ids",), "lru", "reused"),
        (("reject_truncates",), "reject", "accepted under eviction 'reject'"),
    ],
)
def test_each_memory_defect_is_flagged(flaws: tuple[str, ...], eviction: str, kind: str) -> None:
    assert set(flaws) <= set(MEMORY_FLAWS)
    result = _failed("memory_oracle", memory_spec(*flaws, eviction=eviction), "after:")
    assert any(kind in found for found in result.details["failures"]), result.details["failures"]


def test_every_distinct_memory_failure_is_reported() -> None:
    result = _failed("memory_oracle", memory_spec("sentinel_valid", "forget_floors", "crashes_when_full"))
    kinds = list(result.details["failures"])
    assert len(kinds) >= 3, kinds
    assert result.measured == float(len(kinds))


@pytest.mark.parametrize("eviction", ["lru", "fifo", "reject"])
def test_a_correct_memory_with_capacity_passes(eviction: str) -> None:
    result = _passed("memory_oracle", memory_spec(eviction=eviction))
    assert result.details["operations"] > result.sample_size


# 7. padding sensitivity for every sequence model ---------------------------------------------------------------


def test_an_unmasked_bidirectional_model_used_on_padded_batches_fails() -> None:
    result = _failed("padding_invariance", unmasked_bidirectional_spec(), "pad tokens")
    assert "add one" in result.hint and "attention mask" in result.hint


def test_an_unmasked_model_never_run_padded_is_measured_and_passes() -> None:
    result = _passed("padding_invariance", unmasked_bidirectional_spec(padded_batches=False))
    assert result.measured > result.threshold  # padding does move it: the row says how much


# 8. the input space is a hard limit ----------------------------------------------------------------------------


@pytest.mark.parametrize("bounded", ["lm", "digits"])
def test_no_check_steps_above_the_stated_maximum(bounded: str) -> None:
    """Every registered check, every tier, on a model that raises on any batch above 3 rows (or 8 tokens): a causal
    LM, and the digits CNN, whose real data reaches every real-input path."""
    spec = flawed_spec("bounded") if bounded == "lm" else bounded_digits_spec()
    model = spec.build_model()
    options = CheckOptions()
    over = {}
    for name, check in CHECKS.items():
        result = run_check(check, spec, model, options)
        assert "input_shapes" in result.details or result.status is Status.SKIPPED
        if "above its stated maximum" in result.got or any(
            int(shape.split("x")[0]) > 3 or (len(shape.split("x")) > 1 and int(shape.split("x")[1]) > 8)
            for shape in result.details.get("input_shapes", [])
        ):
            over[name] = result.got
    assert not over, over


# 9. messages say only what was established; rules are whole sentences -------------------------------------------


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_every_rule_is_a_whole_sentence(name: str) -> None:
    paragraph = (CHECKS[name].function.__doc__ or "").strip().split("\n\n")[0].strip()
    assert paragraph.endswith("."), f"{name}: the rule {paragraph!r} does not end a sentence"
    assert CHECKS[name].rule == " ".join(line.strip() for line in paragraph.splitlines()).rstrip(".")


def test_regression_labels_get_no_ignore_index() -> None:
    from harness_zoo import load_zoo_spec

    spec = load_zoo_spec("multimode-gpt-scorer")
    result = _run("loss_oracle", spec)
    assert result.status is Status.PASSED, result.message
    assert result.details["ignored_labels"] == 0  # float targets in [0, 1]: no label is replaced by -100

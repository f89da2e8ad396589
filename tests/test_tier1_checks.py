"""Every Tier 1 check can fail: a planted defect it must flag, and the clean model it must pass.

The defect table ``PLANTED`` pairs each check with tiny models from ``defect_models`` that differ
from a clean model by exactly one defect. Each row also lists the *other* checks the defect
legitimately trips (``also_fails``), so the full matrix test proves both that a check catches its
defect and that no check raises a false alarm on a defect that is not its business.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
import torch

import harness
from harness.checks import CHECKS, CheckOptions, run_check
from harness.result import CheckResult, Status
from harness.spec import InitSpec, ModelSpec
from tests.defect_models import CAUSAL_DEFECTS, IMAGE_DEFECTS, TinyCausalLM, causal_spec, image_spec

TIER1_CHECKS = (
    "output_shapes",
    "batch_independence",
    "batch_size_invariance",
    "padding_invariance",
    "causality",
    "gradient_flow",
    "eval_determinism",
    "initialization",
    "save_load_roundtrip",
    "loss_oracle",
)
LANGUAGE_CHECKS = tuple(
    name for name, check in CHECKS.items() if check.function.__module__ == "harness.checks.language"
)
"""Tier 1's language-path checks, registered after the invariants; their defects: tests/test_language_checks.py."""
SEQUENCE_ONLY = {"padding_invariance", "causality", *LANGUAGE_CHECKS}  # not applicable to image classifiers

FAMILIES: dict[str, Callable[..., ModelSpec]] = {"causal": causal_spec, "image": image_spec}


@dataclass(frozen=True)
class Planted:
    """A model with one planted defect, the check that must flag it, and what else it legitimately trips."""

    check: str
    family: str  # "causal" or "image"
    defect: str | None
    claims: tuple[tuple[str, Any], ...] = ()  # extra Capabilities claims for causal_spec
    also_fails: frozenset[str] = field(default_factory=frozenset)

    @property
    def id(self) -> str:
        claims = "".join(f"+{key}={value}" for key, value in self.claims)
        return f"{self.check}-{self.family}-{self.defect or 'clean'}{claims}"

    def spec(self) -> ModelSpec:
        return _spec(self.family, self.defect, self.claims)

    @property
    def fails(self) -> frozenset[str]:
        return self.also_fails | {self.check}


@cache
def _spec(family: str, defect: str | None, claims: tuple[tuple[str, Any], ...] = ()) -> ModelSpec:
    return FAMILIES[family](defect, **dict(claims))


# Defects whose outputs vary from call to call, or with the batch, trip every comparison of outputs.
_NOISY = frozenset(
    {"batch_independence", "batch_size_invariance", "save_load_roundtrip", "loss_oracle", "eval_determinism"}
)

PLANTED: tuple[Planted, ...] = (
    # output_shapes: found at the corners of the input space (length 1, max length)
    Planted(
        "output_shapes",
        "causal",
        "wrong_shape_at_max_length",
        also_fails=frozenset({"padding_invariance", "gradient_flow", "loss_oracle"}),  # they run at max length too
    ),
    Planted("output_shapes", "causal", "nan_at_length_one", also_fails=frozenset({"padding_invariance"})),
    # batch_independence
    Planted("batch_independence", "causal", "batch_norm_across_batch", also_fails=frozenset({"batch_size_invariance"})),
    Planted("batch_independence", "image", "batch_stats_in_eval", also_fails=frozenset({"batch_size_invariance"})),
    # batch_size_invariance: rows independent at a fixed batch size, but the batch size leaks in
    Planted("batch_size_invariance", "causal", "divides_by_batch_size"),
    Planted("batch_size_invariance", "image", "divides_by_batch_size"),
    # padding_invariance
    Planted("padding_invariance", "causal", "ignores_attention_mask"),
    # causality, both directions of the claim
    Planted("causality", "causal", "no_causal_mask"),
    Planted("causality", "causal", None, claims=(("is_causal", False),)),  # claims bidirectional, is causal
    # gradient_flow
    Planted("gradient_flow", "causal", "detached_submodule"),
    Planted("gradient_flow", "image", "detached_features"),
    # eval_determinism
    Planted(
        "eval_determinism",
        "causal",
        "dropout_in_eval",
        also_fails=_NOISY | {"padding_invariance", "causality"},  # causality: "nondeterministic", not "leakage"
    ),
    Planted("eval_determinism", "image", "dropout_in_eval", also_fails=_NOISY),
    Planted("eval_determinism", "causal", "counter_in_forward"),
    Planted("eval_determinism", "causal", "counter_buffer_in_forward"),
    # initialization
    Planted("initialization", "causal", "constant_init"),
    Planted("initialization", "causal", "norm_not_one"),
    Planted("initialization", "image", "constant_init"),
    Planted("initialization", "image", "norm_not_one"),
    # save_load_roundtrip
    Planted("save_load_roundtrip", "causal", "state_outside_state_dict"),
    Planted("save_load_roundtrip", "image", "state_outside_state_dict"),
    # loss_oracle
    Planted("loss_oracle", "causal", "unshifted_loss"),
    Planted("loss_oracle", "causal", "ignore_index_not_honoured"),
    Planted("loss_oracle", "causal", "ignored_labels_in_denominator"),
    Planted("loss_oracle", "image", "sum_loss"),
    Planted("eval_determinism", "causal", "cache_in_forward"),
)

CLEAN: tuple[Planted, ...] = (
    Planted("", "causal", None),
    Planted("", "image", None),
    Planted("", "causal", "no_causal_mask", claims=(("is_causal", False),)),  # a truly bidirectional model
    Planted("", "causal", None, claims=(("has_attention_mask", False),)),  # no mask: unmasked right padding, causal
)


def _run(check: str, spec: ModelSpec) -> CheckResult:
    return run_check(CHECKS[check], spec, spec.build_model(), CheckOptions())


def _invariant_results(spec: ModelSpec) -> list[CheckResult]:
    """The invariants (TIER1_CHECKS) on one model, as check_model runs them."""
    model = spec.build_model()
    return [run_check(CHECKS[name], spec, model, CheckOptions()) for name in TIER1_CHECKS]


def _assert_reported(result: CheckResult, spec: ModelSpec, check: str) -> None:
    """The result carries a measured number and a message naming model, check, rule, expectation and observation."""
    assert isinstance(result.measured, float) and not math.isnan(result.measured), result.measured
    message = result.message
    for part in (spec.name, check, CHECKS[check].rule, "Expected", "got"):
        assert part in message, f"{part!r} missing from {message!r}"
    assert result.expected and result.got, message


# (a) every planted defect is flagged by its check ------------------------------------------------


@pytest.mark.parametrize("planted", PLANTED, ids=lambda p: p.id)
def test_check_flags_planted_defect(planted: Planted) -> None:
    spec = planted.spec()
    result = _run(planted.check, spec)
    assert result.status is Status.FAILED, result.message
    assert result.check == planted.check and result.model == spec.name and result.tier == 1
    _assert_reported(result, spec, planted.check)
    assert "traceback" not in result.details, f"the check crashed instead of measuring: {result.got}"


def test_initialization_honours_constant_ok_for_norm_weights() -> None:
    spec = image_spec("norm_not_one").replace(init=InitSpec(constant_ok=("*bias", "bn.weight")))
    result = _run("initialization", spec)
    assert result.status is Status.PASSED, result.message


def test_gradient_flow_names_the_dead_parameters() -> None:
    spec = causal_spec("detached_submodule")
    result = _run("gradient_flow", spec)
    dead = {
        name for name, _ in spec.build_model().named_parameters() if name.startswith(("blocks.0.ln2.", "blocks.0.mlp."))
    }
    assert len(dead) == 6
    assert set(result.details["dead_parameters"]) == dead
    assert set(result.details["dead_parameters"].values()) == {"no gradient"}
    assert result.measured == float(len(dead))
    assert "blocks.0.ln2.weight" in result.message  # the message names them too


def test_gradient_flow_names_the_dead_image_parameters() -> None:
    result = _run("gradient_flow", image_spec("detached_features"))
    assert set(result.details["dead_parameters"]) == {"conv.weight", "conv.bias"}


@pytest.mark.parametrize("defect", ["counter_in_forward", "counter_buffer_in_forward"])
def test_eval_determinism_names_the_changed_state(defect: str) -> None:
    result = _run("eval_determinism", causal_spec(defect))
    assert result.details["changed_state"] == ["forward_calls"]
    assert result.measured == 0.0  # the outputs themselves are identical
    assert "forward_calls" in result.message


def test_eval_determinism_measures_dropout_noise() -> None:
    result = _run("eval_determinism", causal_spec("dropout_in_eval"))
    assert result.measured > 0.0
    assert result.details["changed_state"] == []


@pytest.mark.parametrize("defect", ["constant_init", "norm_not_one"])
@pytest.mark.parametrize("family", ["causal", "image"])
def test_initialization_names_the_bad_parameter(family: str, defect: str) -> None:
    bad = {
        ("causal", "constant_init"): "lm_head.weight",
        ("causal", "norm_not_one"): "ln_f.weight",
        ("image", "constant_init"): "head.weight",
        ("image", "norm_not_one"): "bn.weight",
    }[family, defect]
    result = _run("initialization", FAMILIES[family](defect))
    assert result.measured == 1.0  # one bad parameter
    assert bad in result.message


def test_causality_records_the_claim() -> None:
    claimed_bidirectional = _run("causality", causal_spec(is_causal=False))
    assert claimed_bidirectional.details["claimed_causal"] is False
    assert claimed_bidirectional.measured == 0.0  # position 0 did not move: the model is causal after all
    leaky = _run("causality", causal_spec("no_causal_mask"))
    assert leaky.details["claimed_causal"] is True
    assert leaky.measured > leaky.threshold


def test_padding_invariance_reports_the_layout() -> None:
    result = _run("padding_invariance", causal_spec("ignores_attention_mask"))
    assert "left" in result.details["failing_example"]  # right padding cannot reach a causal model's past


def test_loss_oracle_reports_both_losses() -> None:
    result = _run("loss_oracle", causal_spec("unshifted_loss"))
    details = result.details
    assert math.isclose(result.measured, abs(details["model_loss"] - details["reference_loss"]), rel_tol=1e-12)
    assert result.measured > 100 * result.threshold  # next-token vs same-token targets: not a rounding difference


def test_save_load_roundtrip_reports_the_route() -> None:
    result = _run("save_load_roundtrip", causal_spec("state_outside_state_dict"))
    assert set(result.details["routes"]) == {"safetensors"}  # no save_pretrained on a plain nn.Module
    assert result.measured == result.details["routes"]["safetensors"] > result.threshold


@pytest.mark.parametrize("defect", ["wrong_shape_at_max_length", "nan_at_length_one"])
def test_output_shapes_reports_a_failing_example(defect: str) -> None:
    result = _run("output_shapes", causal_spec(defect))
    assert result.measured == 1.0
    assert result.details["failing_example"]  # Hypothesis's (shrunk or explicit) failing case
    assert "BatchShape(" in result.details["failing_example"]


@pytest.mark.parametrize(
    "defect, named, shape",
    [
        ("nan_at_length_one", "input 1x1 ", "BatchShape(batch_size=1, length=1)"),
        ("wrong_shape_at_max_length", "input 1x16 ", "BatchShape(batch_size=1, length=16)"),
    ],
)
def test_output_shapes_failing_example_is_the_one_in_the_message(defect: str, named: str, shape: str) -> None:
    result = _run("output_shapes", causal_spec(defect))
    assert named in result.got  # the message names the first failing corner...
    assert shape in result.details["failing_example"]  # ...and failing_example must be that input


# (b) the clean models pass every applicable check ------------------------------------------------


@pytest.mark.parametrize("check", TIER1_CHECKS)
@pytest.mark.parametrize("clean", CLEAN, ids=lambda p: p.id.removeprefix("-"))
def test_clean_model_passes(clean: Planted, check: str) -> None:
    spec = clean.spec()
    result = _run(check, spec)
    not_applicable = clean.family == "image" and check in SEQUENCE_ONLY
    if not_applicable:
        assert result.status is Status.SKIPPED, result.message
        assert result.got  # the reason
    else:
        assert result.status is Status.PASSED, result.message
        assert isinstance(result.measured, float) and math.isfinite(result.measured)
        assert result.measured <= (result.threshold or 0.0) or check == "causality" and not spec.capabilities.is_causal


@pytest.mark.parametrize("check", TIER1_CHECKS)
def test_checks_stay_within_min_length(check: str) -> None:
    """A clean model that refuses inputs shorter than its declared min_length passes: no check steps outside."""
    spec = causal_spec(min_length=3)
    result = _run(check, spec)
    assert result.status is Status.PASSED, result.message


# (a + b) the whole matrix: each defect trips its check and only the checks listed for it ---------


@pytest.mark.parametrize("planted", PLANTED + CLEAN, ids=lambda p: p.id.removeprefix("-"))
def test_defect_trips_exactly_the_expected_checks(planted: Planted) -> None:
    results = _invariant_results(planted.spec())
    failed = {r.check for r in results if r.status is Status.FAILED}
    expected = planted.fails - {""}
    assert failed == expected, "\n".join(r.message for r in results if r.check in failed ^ expected)
    assert all(r.status in (Status.PASSED, Status.FAILED, Status.SKIPPED) for r in results)


# (c) check_model on the clean spec and on the reference zoo --------------------------------------


def test_check_model_clean_causal_spec_all_passed() -> None:
    results = harness.check_model(causal_spec())
    assert [r.check for r in results] == list(TIER1_CHECKS + LANGUAGE_CHECKS)
    assert all(r.status is Status.PASSED for r in results[: len(TIER1_CHECKS)]), [
        r.message for r in results if r.status is not Status.PASSED
    ]
    assert not [r.message for r in results if r.status is Status.FAILED]  # language checks: passed or skipped


def test_check_model_clean_image_spec_passes_or_skips_sequence_checks() -> None:
    results = harness.check_model(image_spec())
    for result in results:
        expected = Status.SKIPPED if result.check in SEQUENCE_ONLY else Status.PASSED
        assert result.status is expected, result.message


@pytest.mark.parametrize("name", ["gpt2-tiny", "cnn-digits"])
def test_check_model_reference_zoo_has_no_failures(name: str) -> None:
    import harness_zoo

    spec = harness_zoo.load_zoo_spec(name)
    results = harness.check_model(spec)
    assert [r.check for r in results] == list(TIER1_CHECKS + LANGUAGE_CHECKS)
    assert not [r.message for r in results if r.status is Status.FAILED]
    for result in results:
        if result.status is Status.SKIPPED:
            assert CHECKS[result.check].not_applicable_because(spec), result.message


# (d) the catalog and the defect table stay in step ------------------------------------------------


def test_catalog_holds_exactly_the_tier1_checks() -> None:
    tier1 = [name for name, check in CHECKS.items() if check.tier == 1]
    assert sorted(tier1) == sorted(TIER1_CHECKS + LANGUAGE_CHECKS)
    assert tier1 == list(TIER1_CHECKS + LANGUAGE_CHECKS)  # registration order is the report order


def test_every_tier1_check_has_a_planted_defect() -> None:
    covered = {planted.check for planted in PLANTED} | set(LANGUAGE_CHECKS)  # theirs: test_language_checks.py
    missing = sorted(name for name, check in CHECKS.items() if check.tier == 1 and name not in covered)
    assert not missing, f"Tier 1 checks without a planted defect in PLANTED: {missing}"


def test_every_defect_model_is_used() -> None:
    used = {(p.family, p.defect) for p in PLANTED + CLEAN}
    defined = {("causal", d) for d in CAUSAL_DEFECTS} | {("image", d) for d in IMAGE_DEFECTS}
    unused = sorted(defined - used)
    assert not unused, f"defects never checked: {unused}"


def test_defect_models_are_small_and_hf_shaped() -> None:
    causal, image = causal_spec().build_model(), image_spec().build_model()
    assert sum(p.numel() for p in causal.parameters()) < 20_000
    ids = torch.randint(0, 32, (2, 5))
    out = causal(ids, attention_mask=torch.ones_like(ids), labels=ids)
    assert out["logits"].shape == (2, 5, 32) and out["loss"].ndim == 0
    out = image(torch.randn(3, 1, 8, 8), labels=torch.tensor([0, 1, 4]))
    assert out["logits"].shape == (3, 5) and out["loss"].ndim == 0
    with pytest.raises(ValueError, match="defect='nope'"):
        causal_spec("nope")


def test_masked_fully_padded_rows_stay_finite() -> None:
    """A left-padded row's pad queries see only masked keys: the hand-written softmax must not give NaN."""
    model = causal_spec().build_model()
    ids = torch.randint(1, 32, (2, 6))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        logits = model(ids, attention_mask=mask)["logits"]
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("check", TIER1_CHECKS)
def test_check_messages_of_passing_results_are_complete(check: str) -> None:
    spec = causal_spec()
    result = _run(check, spec)
    assert result.message.startswith(f"{spec.name}: {check}: {CHECKS[check].rule}.")
    assert result.to_dict()["status"] == "passed"


def _silently_frozen(*, declared: bool) -> ModelSpec:
    def build():
        model = TinyCausalLM()
        model.lm_head.weight.requires_grad_(False)  # frozen at build: no check on trainable params would see it
        return model

    spec = causal_spec().replace(name=f"tiny-lm-frozen-{declared}", build=build)
    return spec.replace(init=InitSpec(frozen_ok=("lm_head.weight",))) if declared else spec


def test_gradient_flow_flags_a_parameter_frozen_at_build_unless_declared() -> None:
    result = _run("gradient_flow", _silently_frozen(declared=False))
    assert result.status is Status.FAILED, result.message
    assert "lm_head.weight" in result.details["dead_parameters"]
    assert _run("gradient_flow", _silently_frozen(declared=True)).status is Status.PASSED

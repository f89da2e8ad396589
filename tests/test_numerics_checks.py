"""Every numerics check (harness/checks/numerics.py) fails on its planted defect and passes the defect's clean twin.

The float16 part of ``half_precision_parity`` runs on CUDA only; here ``NumericsOptions(float16_on_cpu=True)`` runs
the same code with CPU float16 kernels, so its logic is tested on a machine without a GPU.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from harness.checks import CHECKS, CheckOptions, run_check
from harness.checks.numerics import (
    ActivationWatch,
    compare_gradients,
    degenerate_cases,
    half_precision_runs,
)
from harness.checks.options import NumericsOptions
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.tolerances import Tolerance
from harness.training.recipe import TrainingRecipe
from tests.numerics_defects import (
    DEFECTS,
    WARNING_DEFECTS,
    NumericsLM,
    accumulation_spec,
    clean_twin,
    defect_spec,
    image_spec,
    lm_spec,
    micro_batch_mean_loss,
)

pytestmark = pytest.mark.filterwarnings(  # the planted frozen-embeddings defect: torch says what goes wrong
    "ignore:None of the inputs have requires_grad=True:UserWarning"
)

NUMERICS = (
    "half_precision_parity",
    "mixed_precision_training",
    "compile_parity",
    "gradient_checkpointing_equivalence",
    "degenerate_inputs",
)


FLOAT16 = CheckOptions(numerics=NumericsOptions(float16_on_cpu=True, compile_backend="eager"))
"""float16 on the CPU; compile with Dynamo's ``eager`` backend, 5-7x faster to compile than the default ``aot_eager``
and enough for these defects (a branch and a guard are Dynamo's); one test runs the default backend."""


def _run(check: str, spec: ModelSpec, options: CheckOptions | None = None) -> CheckResult:
    return run_check(CHECKS[check], spec, spec.build_model(), options or FLOAT16)


def _assert_reported(result: CheckResult, spec: ModelSpec, check: str) -> None:
    message = result.message
    for part in (spec.name, check, CHECKS[check].rule, "Expected", "got"):
        assert part in message, f"{part!r} missing from {message!r}"
    assert "traceback" not in result.details, result.got
    assert isinstance(result.measured, float) and not math.isnan(result.measured)
    assert result.threshold is not None and result.seed == FLOAT16.seed and result.sample_size > 0


def test_catalog_holds_the_numerics_checks_at_tier_3() -> None:
    registered = [name for name, check in CHECKS.items() if check.function.__module__ == "harness.checks.numerics"]
    assert registered == list(NUMERICS)
    assert {CHECKS[name].tier for name in NUMERICS} == {3}
    assert {check for check, _, _ in DEFECTS.values()} == set(NUMERICS)  # every check has a planted defect


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_defect_is_flagged_and_its_clean_twin_passes(defect: str) -> None:
    check = DEFECTS[defect][0]
    spec = defect_spec(defect)
    result = _run(check, spec)
    assert result.status is Status.FAILED, result.message
    _assert_reported(result, spec, check)
    clean = clean_twin(defect)
    twin = _run(check, clean)
    assert twin.status is Status.PASSED, twin.message
    assert twin.measured <= twin.threshold


# half_precision_parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("defect", "where"), [("naive_softmax", "blocks.0.softmax"), ("scale_after_matmul", "blocks.0.scores")]
)
def test_half_precision_names_where_float16_overflows(defect: str, where: str) -> None:
    result = _run("half_precision_parity", defect_spec(defect))
    runs = {row["dtype"]: row for row in result.details["runs"]}
    assert not runs["bfloat16"]["problems"]  # bfloat16 has float32's range: these overflows are float16's
    assert runs["float16"]["first_non_finite_at"] == where
    assert f"output of {where}" in result.got and "65504" in result.got
    assert result.measured == math.inf


def test_half_precision_reports_the_float32_activation_near_the_limit() -> None:
    row = next(r for r in _run("half_precision_parity", defect_spec("scale_after_matmul")).details["runs"]
               if r["dtype"] == "float16")  # fmt: skip
    assert row["largest_float32_activation"] > 65504 / 8 and "near float16's limit" in row["explanation"]


def test_float16_needs_cuda_by_default() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available: float16 runs on it")
    result = _run("half_precision_parity", defect_spec("naive_softmax"), CheckOptions())
    assert result.status is Status.PASSED, result.message  # only bfloat16 ran, and it does not overflow
    assert "float16 skipped: it needs CUDA" in result.got
    assert [row["dtype"] for row in result.details["runs"]] == ["bfloat16"]


def test_half_precision_runs_by_device() -> None:
    assert half_precision_runs(cuda=False, float16_on_cpu=False) == (
        [("bfloat16", "cpu")],
        ["float16 skipped: it needs CUDA (torch.cuda.is_available() is False)"],
    )
    assert half_precision_runs(cuda=True, float16_on_cpu=False) == (
        [("bfloat16", "cpu"), ("bfloat16", "cuda"), ("float16", "cuda")],
        [],
    )
    assert half_precision_runs(cuda=False, float16_on_cpu=True) == ([("bfloat16", "cpu"), ("float16", "cpu")], [])


@pytest.mark.parametrize("check", ["half_precision_parity", "mixed_precision_training"])
def test_the_float32_comparisons_skip_in_a_bfloat16_run(check: str) -> None:
    """Under --harness-dtype bfloat16 there is no float32 model to compare with: the row says so."""
    from harness.placement import Placement, placed_spec

    spec = placed_spec(lm_spec(), Placement("cpu", "bfloat16"))
    result = _run(check, spec, CheckOptions(dtype="bfloat16"))
    assert result.status is Status.SKIPPED and "runs in float32 only" in result.got


# mixed_precision_training ---------------------------------------------------------------------------------


def test_mixed_precision_names_the_cast_master_weights() -> None:
    result = _run("mixed_precision_training", defect_spec("autocast_self_cast"))
    assert "master weights not float32: wte.weight" in result.got
    assert "optimizer state in torch.bfloat16" in result.got


def test_mixed_precision_measures_the_trajectory_gap() -> None:
    result = _run("mixed_precision_training", defect_spec("unscaled_loss_scale"))
    assert result.measured == pytest.approx(127, rel=0.05)  # the loss is 128x the float32 run's
    assert len(result.details["bf16_mixed_losses"]) == len(result.details["float32_losses"]) == 4


# compile_parity -------------------------------------------------------------------------------------------


def test_compile_parity_names_the_first_shape_that_differs_with_the_default_backend() -> None:
    result = _run("compile_parity", defect_spec("compile_only_branch"), CheckOptions())
    assert result.status is Status.FAILED, result.message
    assert "batch 2 x length 16: outputs differ" in result.got
    assert result.measured > result.threshold
    assert result.details["backend"] == "aot_eager"


def test_compile_parity_warns_with_the_recompile_count() -> None:
    options = CheckOptions(numerics=NumericsOptions(compile_backend="eager", compile_examples=3, max_recompiles=0))
    result = _run("compile_parity", defect_spec("length_indexed_masks"), options)
    assert result.status is Status.WARNED, result.message
    count = result.details["recompiling_fuzzed_shapes"]
    assert count >= 1 and f"{count} of " in result.got and "compiled again" in result.got
    clean = _run("compile_parity", lm_spec(), options)  # the same fuzzed shapes compile nothing new
    assert clean.status is Status.PASSED and clean.details["recompiling_fuzzed_shapes"] == 0, clean.message


def test_compile_parity_skips_when_the_backend_is_missing() -> None:
    result = _run(
        "compile_parity", lm_spec(), CheckOptions(numerics=NumericsOptions(compile_backend="no-such-backend"))
    )
    assert result.status is Status.SKIPPED and "no-such-backend" in result.got


# gradient_checkpointing_equivalence ------------------------------------------------------------------------


def test_reentrant_mode_alone_drops_the_gradients_of_frozen_embeddings() -> None:
    result = _run("gradient_checkpointing_equivalence", defect_spec("frozen_embeddings_reentrant"))
    modes = result.details["modes"]
    assert set(modes) == {"reentrant", "non-reentrant"}
    assert modes["reentrant"]["violations"] and not modes["non-reentrant"]["violations"]
    assert "reentrant: 16 parameter gradient(s) differ" in result.got and "no gradient" in result.got
    assert modes["non-reentrant"]["recomputed_module_calls"] > 0
    assert modes["reentrant"]["recomputed_module_calls"] == 0  # backward never reached the checkpoints


def test_detaching_checkpoint_fails_in_both_modes() -> None:
    result = _run("gradient_checkpointing_equivalence", defect_spec("detaching_checkpoint"))
    assert all(row["violations"] for row in result.details["modes"].values())
    assert "wte.weight" in result.got


@dataclasses.dataclass(frozen=True)
class CheckpointingRecipe(TrainingRecipe):
    """A recipe with a gradient_checkpointing piece, as a user's own would name it."""

    gradient_checkpointing: object = None


def test_checkpointing_through_a_recipe_piece() -> None:
    calls = []

    def enable(model: nn.Module, *, use_reentrant: bool) -> None:
        calls.append(use_reentrant)
        model.gradient_checkpointing_enable({"use_reentrant": use_reentrant})

    spec = lm_spec().replace(name="numerics-lm-recipe", recipe=CheckpointingRecipe(gradient_checkpointing=enable))
    result = _run("gradient_checkpointing_equivalence", spec)
    assert result.status is Status.PASSED, result.message
    assert result.details["route"] == "recipe.gradient_checkpointing" and calls == [True, False]


def test_checkpointing_skips_a_model_without_it() -> None:
    result = _run("gradient_checkpointing_equivalence", image_spec())
    assert result.status is Status.SKIPPED and "gradient_checkpointing_enable" in result.got


# degenerate_inputs ----------------------------------------------------------------------------------------


def test_degenerate_inputs_name_the_input_and_where() -> None:
    result = _run("degenerate_inputs", defect_spec("log_of_zero_activation"))
    failing = [row["input"] for row in result.details["inputs"] if row["problems"]]
    assert "all-zero pixel_values" in failing
    assert result.measured == float(len(failing))
    assert "the first: constant pixel_values" in result.got and "head" in result.got


def test_degenerate_token_inputs_cover_the_extremes() -> None:
    spec = lm_spec()
    names = [name for name, _ in degenerate_cases(spec, CheckOptions())]
    assert names[:3] == [
        "token 1 repeated to length 16",
        "largest token id 31 at all 16 positions",
        "smallest token id 0 at all 16 positions",
    ]
    cases = dict(degenerate_cases(spec, CheckOptions()))
    padded = cases["a row of 1 real token(s) and 15 left padding"]
    assert padded["attention_mask"].tolist()[0] == [0] * 15 + [1] and padded["attention_mask"][1].all()
    assert (padded["labels"][0, :15] == -100).all()  # padding is never scored


# gradient_accumulation (Tier 3, harness/checks/training.py) with uneven real tokens ----------------------------


def test_gradient_accumulation_flags_a_loss_averaged_per_micro_batch() -> None:
    spec = accumulation_spec(loss=micro_batch_mean_loss)
    result = _run("gradient_accumulation", spec, CheckOptions())
    assert result.status is Status.FAILED, result.message
    assert "micro-batches scoring [2, 32] labels" in result.got  # 2 one-token rows, then 2 full rows of 16
    assert result.measured > 10 * result.threshold
    assert result.details["recipe"]["loss"] == "user"
    assert f"{spec.name}: gradient_accumulation: " in result.message and "Expected" in result.message


def test_gradient_accumulation_passes_one_label_per_row_at_any_padding() -> None:
    result = _run("gradient_accumulation", accumulation_spec("sequence-scorer"), CheckOptions())
    assert result.status is Status.PASSED, result.message
    layouts = result.details["layouts"]
    assert len(layouts) == 3 and layouts[0]["real_tokens"] == [1, 1, 16, 16]  # the uneven layout, then fuzzed
    assert all(row["scored_per_micro_batch"] == [2, 2] for row in layouts)  # a score per row, padding or not


# helpers ----------------------------------------------------------------------------------------------------


def test_activation_watch_names_the_first_non_finite_module() -> None:
    class Log(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x)

    model = nn.Sequential(nn.ReLU(), Log(), nn.Linear(2, 2))
    with ActivationWatch(model) as watch:
        model(torch.tensor([[-1.0, 2.0]]))
    assert watch.first_non_finite == "1" and watch.last_finite == "0"
    assert watch.largest == pytest.approx(2.0) and watch.largest_at == "0"
    assert "output of 1, after 0" in watch.where()


def test_compare_gradients_applies_the_rule_to_norms() -> None:
    tolerance = Tolerance(rtol=1e-3, atol=0.0)
    reference = {"a": torch.ones(4), "b": torch.ones(2), "unused": None}
    got = {"a": torch.ones(4) * (1 + 1e-4), "b": None, "unused": None}
    comparison = compare_gradients(got, reference, tolerance)
    assert comparison.relative["a"] == pytest.approx(1e-4, rel=1e-3) and "a" not in comparison.violations
    assert comparison.relative["b"] == math.inf and "no gradient" in comparison.violations["b"]
    assert comparison.worst == ("b", math.inf) and "unused" not in comparison.relative


def test_numerics_options_validate_and_default() -> None:
    assert CheckOptions().numerics == NumericsOptions()
    assert FLOAT16.numerics.float16_on_cpu
    with pytest.raises(ValueError, match="compile_examples=0"):
        NumericsOptions(compile_examples=0)
    with pytest.raises(ValueError, match="max_recompiles"):
        NumericsOptions(max_recompiles=-1)


def test_defect_models_are_small_and_hf_shaped() -> None:
    model = NumericsLM()
    assert sum(p.numel() for p in model.parameters()) < 10_000
    ids = torch.randint(0, 32, (2, 5))
    out = model(ids, attention_mask=torch.ones_like(ids), labels=ids)
    assert out["logits"].shape == (2, 5, 32) and out["loss"].ndim == 0
    with pytest.raises(ValueError, match="defect='nope'"):
        NumericsLM("nope")
    assert set(WARNING_DEFECTS) == {"length_indexed_masks"}


# the zoo ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2-tiny", "cnn-digits"])
@pytest.mark.parametrize("check", [c for c in NUMERICS if c != "compile_parity"])
def test_zoo_models_pass_or_skip_with_a_reason(name: str, check: str) -> None:
    from harness_zoo import load_zoo_spec

    spec = load_zoo_spec(name)
    result = _run(check, spec, CheckOptions())
    if result.status is Status.SKIPPED:
        assert result.got, result.message
        return
    assert result.status is Status.PASSED, result.message
    assert result.measured <= result.threshold


def test_compile_parity_passes_the_digits_cnn() -> None:
    from harness_zoo import load_zoo_spec

    result = _run("compile_parity", load_zoo_spec("cnn-digits"), CheckOptions())
    assert result.status is Status.PASSED, result.message
    assert result.details["recompiling_fuzzed_shapes"] == 0

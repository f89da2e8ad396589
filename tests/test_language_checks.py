"""The language checks (``harness/checks/language.py``) can fail, and pass where they should.

- Every check fails on a planted defect of :mod:`tests.language_defects` (a hand-written cached LM and its
  tokenizer), with a message naming model, check, rule, expectation and observation; each defect trips exactly
  the checks listed for it, and the clean model passes all seven.
- gpt2-tiny, t5-tiny and multimode-gpt-lm pass the checks that apply and skip the others with the reason.
- A second, independent family (:mod:`tests.hf_causal_family`: Llama with grouped-query attention, GPT-NeoX,
  Qwen2, OPT from tiny configs) passes every check that applies.
- The Tier 1 defect models of :mod:`tests.defect_models` trip the language checks only where their defect is the
  language checks' business too.
"""

from __future__ import annotations

import math
from functools import cache

import pytest
import torch

from harness.checks import CHECKS, CheckOptions, language, run_check
from harness.result import CheckResult, Status
from harness.spec import ModelSpec
from harness.tolerances import tolerance_for
from tests.hf_causal_family import SPECS as HF_FAMILY
from tests.language_defects import MODEL_DEFECTS, TOKENIZER_DEFECTS, TinyCacheLM, language_spec

LANGUAGE_CHECKS = (
    "cache_consistency",
    "generation_equivalence",
    "attention_backend_equivalence",
    "inputs_embeds_equivalence",
    "packed_sequences",
    "tokenizer_contract",
    "tied_weights",
)

# defect -> (the check that must flag it, the other language checks it legitimately trips); the check's explicit
# examples flag it under every Hypothesis profile, the others may need a drawn example (see MAY_ALSO_FAIL)
PLANTED: dict[str, tuple[str, frozenset[str]]] = {
    "cache_position_off_by_one": ("cache_consistency", frozenset()),
    "cache_ignores_mask": ("cache_consistency", frozenset()),
    "positions_restart": ("cache_consistency", frozenset()),
    "cache_shared_across_calls": ("cache_consistency", frozenset()),
    "generate_ignores_mask": ("generation_equivalence", frozenset()),
    "sdpa_drops_mask": ("attention_backend_equivalence", frozenset()),
    "kernel_nan_on_masked_row": ("attention_backend_equivalence", frozenset()),
    "inputs_embeds_skips_positions": ("inputs_embeds_equivalence", frozenset()),
    "packed_mask_collapsed": ("packed_sequences", frozenset()),
    "resize_breaks_tie": ("tied_weights", frozenset()),
    "resize_reinitialises_rows": ("tied_weights", frozenset()),
    "tie_claimed_not_held": ("tied_weights", frozenset()),
    "tokenizer_exceeds_vocab": ("tokenizer_contract", frozenset()),
    "pad_is_eos": ("tokenizer_contract", frozenset()),
    "lossy_tokenizer": ("tokenizer_contract", frozenset()),
}
MAY_ALSO_FAIL = {  # the padded keys move the cached paths' logits; a greedy token flips on some drawn prompts only
    "cache_ignores_mask": {"generation_equivalence"},
}


def _run(check: str, spec: ModelSpec, model: torch.nn.Module | None = None) -> CheckResult:
    return run_check(CHECKS[check], spec, spec.build_model() if model is None else model, CheckOptions())


@cache
def _spec(defect: str | None) -> ModelSpec:
    return language_spec(defect)


@cache
def _results(defect: str | None) -> dict[str, CheckResult]:
    """Every language check on the planted model (built once per defect)."""
    spec = _spec(defect)
    model = spec.build_model()
    return {check: _run(check, spec, model) for check in LANGUAGE_CHECKS}


def _assert_reported(result: CheckResult, spec: ModelSpec, check: str) -> None:
    assert isinstance(result.measured, float) and not math.isnan(result.measured), result.measured
    message = result.message
    for part in (spec.name, check, CHECKS[check].rule, "Expected", "got"):
        assert part in message, f"{part!r} missing from {message!r}"
    assert result.expected and result.got and result.hint, message
    assert "traceback" not in result.details, f"the check crashed instead of measuring: {result.got}"


# (a) every check fails on its planted defect, and only the listed checks trip ---------------------------------


@pytest.mark.parametrize("defect", sorted(PLANTED))
def test_check_flags_planted_defect(defect: str) -> None:
    check, _ = PLANTED[defect]
    result = _results(defect)[check]
    assert result.status is Status.FAILED, result.message
    assert result.tier == 1 and result.model == _spec(defect).name
    _assert_reported(result, _spec(defect), check)


@pytest.mark.parametrize("defect", [None, *sorted(PLANTED)], ids=lambda d: d or "clean")
def test_defect_trips_exactly_the_expected_checks(defect: str | None) -> None:
    results = _results(defect)
    failed = {name for name, result in results.items() if result.status is Status.FAILED}
    expected = set() if defect is None else {PLANTED[defect][0], *PLANTED[defect][1]}
    unexpected = failed - expected - MAY_ALSO_FAIL.get(defect, set())
    assert expected <= failed and not unexpected, "\n".join(results[name].message for name in failed ^ expected)


def test_clean_model_passes_every_language_check_within_its_threshold() -> None:
    for check, result in _results(None).items():
        assert result.status is Status.PASSED, result.message
        assert math.isfinite(result.measured) and result.measured <= result.threshold, result.message
        assert result.tolerance or check in ("tokenizer_contract",), check


def test_every_language_check_has_a_planted_defect_and_every_defect_is_used() -> None:
    assert {check for check, _ in PLANTED.values()} == set(LANGUAGE_CHECKS)
    assert set(PLANTED) == set(MODEL_DEFECTS) | set(TOKENIZER_DEFECTS)


def test_language_checks_are_tier1_and_registered_after_the_invariants() -> None:
    tier1 = [name for name, check in CHECKS.items() if check.tier == 1]
    language_rows = [name for name in tier1 if name in LANGUAGE_CHECKS]
    assert language_rows == list(LANGUAGE_CHECKS)  # registration order is the report order
    assert tier1.index(LANGUAGE_CHECKS[0]) > tier1.index("loss_oracle")  # after the invariants
    assert all(CHECKS[name].function.__module__ == "harness.checks.language" for name in LANGUAGE_CHECKS)


# (b) what each failure says ------------------------------------------------------------------------------------


def test_cache_failures_name_the_layout_and_the_shared_cache() -> None:
    off_by_one = _results("cache_position_off_by_one")["cache_consistency"]
    assert off_by_one.measured > 100 * off_by_one.threshold  # a wrong position, not rounding
    assert "cached steps differ from the full forward" in off_by_one.got
    shared = _results("cache_shared_across_calls")["cache_consistency"]
    assert "not given the cache changed it" in shared.got
    assert shared.details["mutated_by_unrelated_forward"]


def test_generation_failure_reports_the_path_and_the_top2_margin() -> None:
    result = _results("generate_ignores_mask")["generation_equivalence"]
    assert "generate" in result.got and "top-2 margin" in result.got
    mismatch = result.details["mismatches"][0]
    assert mismatch["gap"] > tolerance_for(torch.float32, "eager").atol  # a real difference, not a near-tie
    assert "generate" in mismatch["path"]


def test_near_ties_are_ties_and_clear_differences_are_mismatches() -> None:
    tolerance = tolerance_for(torch.float32, "eager")
    logits = torch.zeros(2, 1, 5, dtype=torch.float64)
    logits[0, 0, 2] = logits[0, 0, 3] = 1.0  # row 0: an exact tie between tokens 2 and 3
    logits[1, 0, 2], logits[1, 0, 4] = 1.0, 0.5  # row 1: token 2 wins clearly
    reference = language.Decoded(torch.tensor([[2], [2]]), logits)
    other = language.Decoded(torch.tensor([[3], [4]]), None)
    mismatches, ties = language._token_differences("other", reference, other, tolerance, stop_at=())
    assert [(t["row"], t["gap"]) for t in ties] == [(0, 0.0)]
    assert [(m["row"], m["gap"], m["top2_margin"]) for m in mismatches] == [(1, 0.5, 0.5)]


def test_backend_failures_name_both_backends() -> None:
    dropped = _results("sdpa_drops_mask")["attention_backend_equivalence"]
    assert dropped.details["backends"] == ["eager", "sdpa"] and "sdpa outputs differ from eager's" in dropped.got
    nan = _results("kernel_nan_on_masked_row")["attention_backend_equivalence"]
    assert "non-finite" in nan.got and nan.measured == float("inf")


def test_tokenizer_failures_say_what_breaks() -> None:
    assert "480 embedding rows" in _results("tokenizer_exceeds_vocab")["tokenizer_contract"].got
    assert "never learn to stop" in _results("pad_is_eos")["tokenizer_contract"].got
    assert _results("pad_is_eos")["tokenizer_contract"].details["eos_labels_masked"] == 2
    assert "round-trip" in _results("lossy_tokenizer")["tokenizer_contract"].got


def test_tie_failures_name_the_stage() -> None:
    assert "separate tensors" in _results("resize_breaks_tie")["tied_weights"].got
    assert "changed the existing embedding rows" in _results("resize_reinitialises_rows")["tied_weights"].got
    assert "after build" in _results("tie_claimed_not_held")["tied_weights"].got


# (c) applicability comes from what the model accepts -----------------------------------------------------------


def test_applicability_never_depends_on_the_name() -> None:
    spec = _spec(None)
    renamed = spec.replace(name="gpt2-tiny")
    for check in LANGUAGE_CHECKS:
        assert CHECKS[check].not_applicable_because(renamed) == CHECKS[check].not_applicable_because(spec)


class _NoCacheLM(TinyCacheLM):
    """The clean model without the cache, inputs_embeds, position_ids, kernel switch, tie or generate()."""

    def __init__(self) -> None:
        super().__init__()
        self.lm_head.weight = torch.nn.Parameter(self.wte.weight.detach().clone())
        self.config.tie_word_embeddings = False

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
        return super().forward(input_ids=input_ids, attention_mask=attention_mask)

    set_attn_implementation = None  # type: ignore[assignment]
    generate = None  # type: ignore[assignment]  (its generate() would pass arguments this forward refuses)


def test_a_model_without_the_paths_skips_with_reasons() -> None:
    spec = _spec(None).replace(name="no-paths-lm", build=_NoCacheLM, tokenizer=None)
    reasons = {check: CHECKS[check].not_applicable_because(spec) for check in LANGUAGE_CHECKS}
    assert "no key/value cache" in reasons["cache_consistency"]
    assert reasons["generation_equivalence"] is None  # the harness drives greedy decoding itself
    assert "set_attn_implementation" in reasons["attention_backend_equivalence"]
    assert "no inputs_embeds" in reasons["inputs_embeds_equivalence"]
    assert "no position_ids" in reasons["packed_sequences"]
    assert "no tokenizer" in reasons["tokenizer_contract"]
    assert "separate tensors" in reasons["tied_weights"]
    # and it cannot decode a left-padded batch: without position_ids its learned positions shift with the padding
    generation = _run("generation_equivalence", spec)
    assert generation.status is Status.FAILED and generation.got.startswith("batched decoding"), generation.message


def test_a_model_that_cannot_build_leaves_the_checks_applicable() -> None:
    def broken() -> torch.nn.Module:
        raise RuntimeError("weights missing")

    spec = _spec(None).replace(name="broken-lm", build=broken)
    assert all(
        CHECKS[check].not_applicable_because(spec) is None for check in LANGUAGE_CHECKS if check != "tokenizer_contract"
    )
    assert language.model_facts(spec).error.startswith("build raised RuntimeError")


# (d) the reference zoo and a second family ---------------------------------------------------------------------

ZOO_EXPECTED: dict[str, dict[str, str]] = {
    "gpt2-tiny": {"tokenizer_contract": "warned"},  # its tokenizer pads on the right
    "t5-tiny": {"packed_sequences": "skipped", "tokenizer_contract": "warned"},
    "multimode-gpt-lm": {
        "cache_consistency": "skipped",
        "attention_backend_equivalence": "skipped",
        "inputs_embeds_equivalence": "skipped",
        "packed_sequences": "skipped",
        "tokenizer_contract": "skipped",
    },
}


@pytest.mark.parametrize("name", sorted(ZOO_EXPECTED))
def test_zoo_models_pass_or_skip_with_the_reason(name: str) -> None:
    from harness_zoo import load_zoo_spec

    spec = load_zoo_spec(name)
    model = spec.build_model()
    for check in LANGUAGE_CHECKS:
        result = _run(check, spec, model)
        expected = ZOO_EXPECTED[name].get(check, "passed")
        assert result.status.value == expected, result.message
        if result.status is Status.SKIPPED:
            assert result.got == CHECKS[check].not_applicable_because(spec) and result.got
        elif result.status is Status.PASSED:
            assert result.measured <= result.threshold, result.message


@pytest.mark.parametrize("spec", HF_FAMILY, ids=lambda spec: spec.name)
def test_hf_causal_family_passes(spec: ModelSpec) -> None:
    model = spec.build_model()
    untied = {"hf-llama-gqa", "hf-gpt-neox"}
    for check in LANGUAGE_CHECKS:
        result = _run(check, spec, model)
        if check == "tied_weights" and spec.name in untied:
            assert result.status is Status.SKIPPED and "separate tensors" in result.got, result.message
            continue
        assert result.status is Status.PASSED, result.message
        assert result.measured <= result.threshold, result.message


def test_hf_family_is_what_it_says() -> None:
    llama = HF_FAMILY[0].build_model()
    assert llama.config.num_key_value_heads < llama.config.num_attention_heads  # grouped-query attention
    assert language.model_facts(HF_FAMILY[0]).cache_argument == "cache"  # transformers 5's name
    assert language.model_facts(_spec(None)).cache_argument == "past_key_values"  # 4.x's, in the defect model


# (e) the Tier 1 defect models trip language checks only where the defect is theirs too --------------------------

TIER1_ALSO_FAILS = {  # Tier 1 planted id -> language checks it trips
    "output_shapes-causal-nan_at_length_one": {"generation_equivalence"},  # a one-token prompt decodes NaN
    "padding_invariance-causal-ignores_attention_mask": {"generation_equivalence", "packed_sequences"},
    "eval_determinism-causal-dropout_in_eval": {"generation_equivalence"},
}
TIER1_MAY_FAIL = {  # rows mixed by a batch mean: a batched greedy token flips on some drawn prompts only
    "batch_independence-causal-batch_norm_across_batch": {"generation_equivalence"},
}


def test_tier1_defect_models_trip_only_their_language_checks() -> None:
    from tests.test_tier1_checks import CLEAN
    from tests.test_tier1_checks import PLANTED as TIER1_PLANTED

    for planted in TIER1_PLANTED + CLEAN:
        spec = planted.spec()
        model = spec.build_model()
        failed = {check for check in LANGUAGE_CHECKS if _run(check, spec, model).status is Status.FAILED}
        expected = TIER1_ALSO_FAILS.get(planted.id, set())
        assert expected <= failed <= expected | TIER1_MAY_FAIL.get(planted.id, set()), (planted.id, failed)


# (f) harness mutate plants these paths' faults, and the language checks kill them ------------------------------

LANGUAGE_INJECTORS = {  # injector -> (the check that must kill it, a spec it applies to)
    "cache_position_shift": ("cache_consistency", lambda: _spec(None)),
    "embeds_skip_positions": ("inputs_embeds_equivalence", lambda: _spec(None)),
    "kernel_mask_dropped": ("attention_backend_equivalence", lambda: HF_FAMILY[-1]),  # a transformers model
}


@pytest.mark.parametrize("name", sorted(LANGUAGE_INJECTORS))
def test_language_injectors_are_killed_by_their_check(name: str) -> None:
    from harness.mutate import INJECTORS, mutant_spec

    check, make_spec = LANGUAGE_INJECTORS[name]
    spec = make_spec()
    assert INJECTORS[name].not_applicable_because(spec) is None
    assert _run(check, spec).status is Status.PASSED
    mutant = mutant_spec(spec, INJECTORS[name])
    result = _run(check, mutant)
    assert result.status is Status.FAILED, result.message


def test_language_injectors_say_why_they_do_not_apply() -> None:
    from harness.mutate import INJECTORS
    from harness_zoo import load_zoo_spec

    t5 = load_zoo_spec("t5-tiny")
    assert "no position_ids" in INJECTORS["cache_position_shift"].not_applicable_because(t5)
    assert "no learned position embedding" in INJECTORS["embeds_skip_positions"].not_applicable_because(t5)
    assert "attention_mask" in INJECTORS["kernel_mask_dropped"].not_applicable_because(_spec(None))


def test_generation_processors_count_token_ids_zero_and_one() -> None:
    from harness.checks.language import _sets

    assert _sets(0, None) and _sets(1, None)  # Marian forces eos 0, Pegasus eos 1: both change greedy tokens
    assert not _sets(None, None) and not _sets(1.0, 1.0) and not _sets(0, 0) and not _sets([], None)


def test_packing_mask_carries_the_models_sliding_window() -> None:
    from harness.checks.language import _document_mask

    allowed = _document_mask([5], 5, causal=True, window=2)
    expected = torch.ones(5, 5, dtype=torch.bool).tril() & torch.ones(5, 5, dtype=torch.bool).triu(diagonal=-1)
    assert torch.equal(allowed, expected)

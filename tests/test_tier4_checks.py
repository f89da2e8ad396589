"""Every Tier 4 check fails on a model with one planted export defect and passes on its clean twin."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from harness.checks import CHECKS, CheckOptions, run_check
from harness.export import exports_for
from harness.result import Status
from tests.export_defects import causal_lm_spec, classifier_spec, script_divergent_spec

PARITY_CHECKS = ("torchscript_parity", "onnx_parity", "onnx_optimized_parity")


@pytest.fixture
def options(tmp_path) -> CheckOptions:
    return CheckOptions(artifacts_dir=str(tmp_path))


def run(name: str, spec, options: CheckOptions, model=None):
    return run_check(CHECKS[name], spec, model if model is not None else spec.build_model(), options)


def assert_flagged(result, spec) -> None:
    assert result.status is Status.FAILED, result.message
    for part in (spec.name, result.check, "Expected", "got"):
        assert part in result.message


def test_tier4_catalog():
    assert {name for name, check in CHECKS.items() if check.tier == 4} == {
        *PARITY_CHECKS,
        "torchscript_script_parity",
        "onnx_int8_parity",
        "onnx_int8_accuracy",
        "latency_ratios",
    }


@pytest.mark.parametrize("check", [*PARITY_CHECKS, "onnx_int8_parity", "onnx_int8_accuracy", "latency_ratios"])
@pytest.mark.parametrize("make_spec", [causal_lm_spec, classifier_spec], ids=["causal-lm", "classifier"])
def test_clean_models_pass(check, make_spec, options):
    spec = make_spec()
    result = run(check, spec, options)
    if check == "onnx_int8_accuracy" and spec.task == "causal-lm":
        assert result.status is Status.SKIPPED and "no real labelled inputs" in result.got  # no tokenizer
        return
    assert result.status is Status.PASSED, result.message
    assert isinstance(result.measured, float)
    if check in PARITY_CHECKS:
        assert result.measured < 1e-4
        assert result.details["worst_shape"] is not None
        shapes = {(row["batch_size"], row["length"]) for row in result.details["shapes"]}
        assert (2, 8 if spec.task == "causal-lm" else 1) not in shapes  # never the export shape
        assert (1, 1) in shapes


@pytest.mark.parametrize("check", ["torchscript_parity", "onnx_parity"])
def test_size_baked_in_at_export_time_is_flagged(check, options):
    spec = causal_lm_spec("baked_length")
    result = run(check, spec, options)
    assert_flagged(result, spec)
    assert "shape" in result.got  # the failing shape is named
    assert result.measured > 1e-4


def test_perturbed_onnx_initializer_is_flagged(options):
    spec = causal_lm_spec()
    model = spec.build_model()
    record = exports_for(spec, model, options.artifacts_dir).record("onnx")
    graph = onnx.load(str(record.path))
    largest = max(graph.graph.initializer, key=lambda tensor: np.prod(tensor.dims))
    values = numpy_helper.to_array(largest).copy()
    values += np.random.default_rng(0).normal(0, 1e-2, values.shape).astype(values.dtype)
    largest.CopyFrom(numpy_helper.from_array(values, largest.name))
    onnx.save(graph, str(record.path))

    result = run("onnx_parity", spec, options, model)
    assert_flagged(result, spec)
    assert result.measured > 1e-4


def test_int8_accuracy_collapse_is_flagged(options):
    spec = classifier_spec("int8_outliers")
    clean_fp32 = run("onnx_parity", spec, options)
    assert clean_fp32.status is Status.PASSED, "the fp32 export of the outlier model is exact"
    faithful = run("onnx_int8_parity", spec, options)
    assert faithful.status is Status.PASSED, "the int8 file is exactly as bad as int8 of these weights: no export bug"
    result = run("onnx_int8_accuracy", spec, options)
    assert_flagged(result, spec)
    assert result.details["eager_accuracy"] > 0.9
    assert result.details["int8_accuracy"] < 0.5
    assert result.measured > result.threshold
    assert result.details["mcnemar"]["p_value"] < 1e-6
    assert result.sample_size == 256


@pytest.mark.parametrize("make_spec", [causal_lm_spec, classifier_spec], ids=["causal-lm", "classifier"])
def test_int8_file_worse_than_its_quantization_is_flagged(make_spec, options):
    """Every weight scale of the int8 file off by 30%: the same weights, quantized, explain far less error."""
    spec = make_spec()
    model = spec.build_model()
    record = exports_for(spec, model, options.artifacts_dir).record("onnx-int8")
    graph = onnx.load(str(record.path))
    scales = [tensor for tensor in graph.graph.initializer if tensor.name.endswith("_scale")]
    assert scales, "the int8 file holds weight scales"
    for tensor in scales:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * np.float32(1.3), tensor.name))
    onnx.save(graph, str(record.path))

    result = run("onnx_int8_parity", spec, options, model)
    assert_flagged(result, spec)
    assert result.measured > result.threshold
    assert "that int8 quantization of the same weights gives" in result.got


def test_int8_reference_emulates_onnxruntime(options):
    """The fake-quantized eager run and the int8 file agree far better than either agrees with float."""
    spec = classifier_spec()
    result = run("onnx_int8_parity", spec, options)
    assert result.details["reference_quantized_ops"] == 2  # both linear layers
    for row in result.details["shapes"]:
        assert 0.9 < row["excess"] < 1.1, row


def test_unsupported_operator_is_a_failed_result_naming_operator_and_opset(options):
    spec = classifier_spec("unsupported_op")
    result = run("onnx_parity", spec, options)
    assert_flagged(result, spec)
    assert "aten::histc" in result.got
    assert "opset 17" in result.got
    assert result.details["operator"] == "aten::histc"


def test_script_parity_passes_on_a_scriptable_model_and_flags_a_script_only_branch(options):
    from harness_zoo import load_zoo_spec

    clean = run("torchscript_script_parity", load_zoo_spec("cnn-digits"), options)
    assert clean.status is Status.PASSED, clean.message
    assert clean.details["exporter"] == "script"
    divergent = script_divergent_spec()
    assert run("torchscript_parity", divergent, options).status is Status.PASSED  # the trace never scripts
    assert_flagged(run("torchscript_script_parity", divergent, options), divergent)


def test_unscriptable_model_skips_the_script_check_with_the_reason(options):
    from harness_zoo import load_zoo_spec

    result = run("torchscript_script_parity", load_zoo_spec("gpt2-tiny"), options)
    assert result.status is Status.SKIPPED
    assert result.got.startswith("not scriptable")


def test_slow_exported_graph_fails_the_latency_ratio(options):
    spec = classifier_spec("slow_when_exported")
    result = run("latency_ratios", spec, options)
    assert_flagged(result, spec)
    assert result.measured > result.threshold
    assert set(result.details["p50_ratio"]) == {"torchscript", "onnxruntime"}


def test_int8_quantizes_the_export_itself_when_shape_inference_fails(options, monkeypatch):
    import onnxruntime.quantization.shape_inference as shape_inference

    def refuse(*args, **kwargs):
        raise RuntimeError("shape inference failed on this graph")

    monkeypatch.setattr(shape_inference, "quant_pre_process", refuse)
    spec = classifier_spec()
    result = run("onnx_int8_parity", spec, options)
    assert result.status is Status.PASSED, result.message  # the graph quantizes fine without the pre-processing
    assert result.details["export_notes"][0].startswith("quant_pre_process failed (")
    assert "shape inference failed on this graph" in result.details["export_notes"][0]


def test_export_error_names_the_first_line_that_says_something():
    from harness.export.artifacts import _unsupported

    error = _unsupported(RuntimeError("\nCould not export Python function call 'GeLUFunction'."), None)
    assert str(error).endswith("RuntimeError: Could not export Python function call 'GeLUFunction'.")


def test_int8_agreement_is_held_only_where_int8_cannot_close_the_margin():
    from harness.checks.export import _decided, _decided_agreement

    spec = classifier_spec()
    reference = torch.tensor([[1.0, 0.99, 0.0], [2.0, 0.0, 0.0]])  # a near-tie, and a clear prediction
    emulated = reference + torch.tensor([[-0.02, 0.02, 0.0], [0.02, 0.0, 0.0]])  # what int8 itself moves
    decided = _decided(spec, reference, emulated)
    assert decided.tolist() == [False, True]
    flipped_tie = torch.tensor([[0.9, 1.0, 0.0], [2.0, 0.0, 0.0]])
    assert _decided_agreement(spec, reference, flipped_tie, decided) == 1.0  # the near-tie decides nothing
    flipped_clear = torch.tensor([[1.0, 0.99, 0.0], [0.0, 2.0, 0.0]])
    assert _decided_agreement(spec, reference, flipped_clear, decided) == 0.0

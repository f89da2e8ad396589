"""ModelSpec, InputSpace and InitSpec validation, and ModelSpec.build_model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.spec import TASKS, Capabilities, InitSpec, InputSpace, ModelSpec, SpecError


def _lm_inputs(**changes) -> InputSpace:
    return InputSpace(**{"vocab_size": 16, "max_length": 8, **changes})


def _spec(**changes) -> ModelSpec:
    fields = {"name": "unit-lm", "task": "causal-lm", "build": lambda: torch.nn.Linear(2, 2), "inputs": _lm_inputs()}
    return ModelSpec(**{**fields, **changes})


def test_spec_error_is_a_value_error():
    assert issubclass(SpecError, ValueError)


def test_a_valid_spec_keeps_its_fields_and_defaults():
    spec = _spec()
    assert (spec.name, spec.task, spec.inputs.vocab_size, spec.inputs.max_length) == ("unit-lm", "causal-lm", 16, 8)
    assert spec.capabilities == Capabilities()
    assert spec.init == InitSpec()
    assert dict(spec.expected_failures) == {}


def test_unknown_task_lists_the_allowed_tasks():
    with pytest.raises(SpecError) as error:
        _spec(task="translation")
    message = str(error.value)
    assert "'translation'" in message
    for task in TASKS:
        assert task in message


@pytest.mark.parametrize("name", ["", "two words", "tab\tname", " "])
def test_name_must_be_a_non_empty_word(name):
    with pytest.raises(SpecError, match="ModelSpec.name must be a non-empty word"):
        _spec(name=name)


def test_build_must_be_callable():
    with pytest.raises(SpecError, match="ModelSpec.build must be callable, got int"):
        _spec(build=42)
    with pytest.raises(SpecError, match="ModelSpec.build must be callable, got str"):
        _spec(build="harness_zoo.cnn_digits:DigitsCNN")


@pytest.mark.parametrize("missing", ["vocab_size", "max_length"])
def test_causal_lm_needs_vocab_size_and_max_length(missing):
    inputs = dataclasses.replace(_lm_inputs(), **{missing: None})
    with pytest.raises(SpecError) as error:
        _spec(inputs=inputs)
    assert f"InputSpace.{missing}" in str(error.value)
    assert "'unit-lm'" in str(error.value)
    assert "causal-lm" in str(error.value)


def test_image_classification_needs_image_size_and_num_classes():
    with pytest.raises(SpecError, match=r"InputSpace\.image_size, num_classes"):
        _spec(task="image-classification", inputs=InputSpace())
    spec = _spec(task="image-classification", inputs=InputSpace(image_size=(1, 8, 8), num_classes=10))
    assert spec.inputs.num_classes == 10


@pytest.mark.parametrize("pad_id", [16, 17, -1])
def test_pad_id_outside_the_vocabulary_is_rejected(pad_id):
    with pytest.raises(SpecError) as error:
        InputSpace(vocab_size=16, max_length=8, pad_id=pad_id)
    assert "pad_id" in str(error.value)
    assert "[0, 16)" in str(error.value)
    assert str(pad_id) in str(error.value)


@pytest.mark.parametrize("pad_id", [0, 15])
def test_pad_id_at_the_vocabulary_bounds_is_accepted(pad_id):
    assert InputSpace(vocab_size=16, max_length=8, pad_id=pad_id).pad_id == pad_id


def test_max_length_below_min_length_is_rejected():
    with pytest.raises(SpecError, match=r"max_length \(3\) must be >= min_length \(4\)"):
        InputSpace(vocab_size=16, min_length=4, max_length=3)
    assert InputSpace(vocab_size=16, min_length=4, max_length=4).max_length == 4


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"min_length": 0}, "min_length must be >= 1, got 0"),
        ({"max_batch_size": 1}, "max_batch_size must be >= 2, got 1"),
    ],
)
def test_other_input_space_bounds(changes, match):
    with pytest.raises(SpecError, match=match):
        InputSpace(vocab_size=16, max_length=8, **changes)


@pytest.mark.parametrize("bounds", [(1.0, 0.5), (0.5, 0.5), (-0.1, 1.0)])
def test_init_spec_rejects_bad_std_bounds(bounds):
    with pytest.raises(SpecError) as error:
        InitSpec(std_bounds=bounds)
    assert "0 <= low < high" in str(error.value)
    assert str(bounds) in str(error.value)


def test_init_spec_accepts_zero_lower_bound():
    assert InitSpec(std_bounds=(0.0, 1.0)).std_bounds == (0.0, 1.0)


def test_specs_are_frozen():
    spec = _spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.inputs.vocab_size = 3  # type: ignore[misc]


def test_replace_returns_a_validated_copy():
    spec = _spec()
    renamed = spec.replace(name="unit-lm-2", expected_failures={"causality": "known"})
    assert (renamed.name, dict(renamed.expected_failures)) == ("unit-lm-2", {"causality": "known"})
    assert (spec.name, dict(spec.expected_failures)) == ("unit-lm", {})
    with pytest.raises(SpecError, match="ModelSpec.task must be one of"):
        spec.replace(task="bogus")


class _Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.dropout = torch.nn.Dropout(0.5)


def test_build_model_is_seeded_and_in_eval_mode():
    spec = _spec(build=_Tiny, seed=3)
    first, second = spec.build_model(), spec.build_model()
    assert isinstance(first, _Tiny)
    assert not first.training and not first.dropout.training
    assert torch.equal(first.linear.weight, second.linear.weight)
    other = spec.build_model(seed=4)
    assert not torch.equal(first.linear.weight, other.linear.weight)
    torch.manual_seed(3)
    assert torch.equal(first.linear.weight, _Tiny().linear.weight)


@pytest.mark.parametrize(
    ("built", "type_name"), [({"logits": None}, "dict"), (None, "NoneType"), (torch.zeros(2), "Tensor")]
)
def test_build_model_rejects_a_build_that_returns_no_module(built, type_name):
    spec = _spec(build=lambda: built)
    with pytest.raises(SpecError) as error:
        spec.build_model()
    assert str(error.value) == f"ModelSpec 'unit-lm': build() returned {type_name}, not a torch.nn.Module"

"""harness.strategies: generated inputs stay within a spec's input space; bad arguments are named."""

from __future__ import annotations

import math

import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from harness.spec import TASKS, InputSpace, ModelSpec
from harness.strategies import (
    HYPOTHESIS_PROFILES,
    BatchShape,
    PaddingLayout,
    batch_shapes,
    batch_sizes,
    images,
    padding_layouts,
    sequence_lengths,
    token_ids,
)

# find() searches until it meets its condition or runs out of examples: give rare targets room.
SEARCH = settings(max_examples=1000, database=None)


def _build() -> None:  # never called: strategies only read the spec
    raise AssertionError("strategies must not build the model")


def _sequence_spec(
    min_length: int = 1, max_length: int = 16, max_batch_size: int = 8, vocab_size: int = 32
) -> ModelSpec:
    return ModelSpec(
        name="strategy-lm",
        task="causal-lm",
        build=_build,
        inputs=InputSpace(
            vocab_size=vocab_size, min_length=min_length, max_length=max_length, max_batch_size=max_batch_size
        ),
    )


def _image_spec(image_size: tuple[int, int, int] = (1, 4, 4), max_batch_size: int = 4) -> ModelSpec:
    return ModelSpec(
        name="strategy-cnn",
        task="image-classification",
        build=_build,
        inputs=InputSpace(image_size=image_size, num_classes=3, max_batch_size=max_batch_size),
    )


@st.composite
def sequence_specs(draw: st.DrawFn, *, min_max_length: int = 1) -> ModelSpec:
    """Sequence specs with varied bounds (min_length up to max_length, small batches and vocabularies)."""
    max_length = draw(st.integers(min_max_length, 24))
    min_length = draw(st.integers(1, max_length))
    return _sequence_spec(min_length, max_length, draw(st.integers(2, 8)), draw(st.integers(2, 50)))


# bounds ------------------------------------------------------------------------------------------


@given(sequence_specs(), st.data())
def test_batch_sizes_within_bounds(spec: ModelSpec, data: st.DataObject) -> None:
    assert 1 <= data.draw(batch_sizes(spec)) <= spec.inputs.max_batch_size
    low = data.draw(st.integers(1, spec.inputs.max_batch_size))
    high = data.draw(st.integers(low, spec.inputs.max_batch_size))
    assert low <= data.draw(batch_sizes(spec, min_size=low, max_size=high)) <= high


@given(sequence_specs(), st.data())
def test_sequence_lengths_within_bounds(spec: ModelSpec, data: st.DataObject) -> None:
    assert spec.inputs.min_length <= data.draw(sequence_lengths(spec)) <= spec.inputs.max_length
    high = data.draw(st.integers(spec.inputs.min_length, spec.inputs.max_length))
    assert spec.inputs.min_length <= data.draw(sequence_lengths(spec, max_length=high)) <= high


@given(sequence_specs(), st.data())
def test_batch_shapes_within_bounds(spec: ModelSpec, data: st.DataObject) -> None:
    shape = data.draw(batch_shapes(spec))
    assert isinstance(shape, BatchShape)
    assert 1 <= shape.batch_size <= spec.inputs.max_batch_size
    assert spec.inputs.min_length <= shape.length <= spec.inputs.max_length


@given(st.integers(2, 8), st.data())
def test_image_batch_shapes_have_length_one(max_batch_size: int, data: st.DataObject) -> None:
    spec = _image_spec(max_batch_size=max_batch_size)
    shape = data.draw(batch_shapes(spec))
    assert shape.length == 1 and 1 <= shape.batch_size <= max_batch_size


@given(sequence_specs(), st.integers(1, 4), st.integers(1, 6), st.data())
def test_token_ids_within_vocabulary(spec: ModelSpec, batch_size: int, length: int, data: st.DataObject) -> None:
    rows = data.draw(token_ids(spec, batch_size=batch_size, length=length))
    assert len(rows) == batch_size and all(len(row) == length for row in rows)
    assert all(0 <= token < spec.inputs.vocab_size for row in rows for token in row)


@given(sequence_specs(min_max_length=2), st.sampled_from([("right",), ("left",), ("right", "left")]), st.data())
def test_padding_layouts_within_bounds(spec: ModelSpec, sides: tuple[str, ...], data: st.DataObject) -> None:
    if spec.inputs.min_length == spec.inputs.max_length:  # no room for padding: a clear error, tested below
        spec = _sequence_spec(spec.inputs.min_length - 1, spec.inputs.max_length, spec.inputs.max_batch_size)
    layout = data.draw(padding_layouts(spec, sides=sides))
    assert isinstance(layout, PaddingLayout)
    assert layout.side in sides
    assert 1 <= layout.batch_size <= spec.inputs.max_batch_size
    assert spec.inputs.min_length <= layout.length
    assert layout.amount >= 1
    assert layout.length + layout.amount <= spec.inputs.max_length


@given(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5)), st.data())
def test_images_are_finite_and_sized(batch_size: int, image_size: tuple[int, int, int], data: st.DataObject) -> None:
    pixels = data.draw(images(_image_spec(image_size), batch_size=batch_size))
    assert len(pixels) == batch_size * math.prod(image_size)
    assert all(math.isfinite(p) and -3.0 <= p <= 3.0 for p in pixels)


def test_sequence_lengths_reach_both_ends() -> None:
    spec = _sequence_spec(min_length=3, max_length=11)
    assert find(sequence_lengths(spec), lambda n: n == 3, settings=SEARCH) == 3
    assert find(sequence_lengths(spec), lambda n: n == 11, settings=SEARCH) == 11


def test_padding_layouts_reach_the_extremes() -> None:
    spec = _sequence_spec(min_length=2, max_length=9)
    assert (
        find(padding_layouts(spec), lambda p: p.length + p.amount == 9 and p.side == "left", settings=SEARCH).amount
        >= 1
    )
    assert find(padding_layouts(spec, sides=("right",)), lambda p: p.amount == 7, settings=SEARCH).length == 2


SEQUENCE_TASKS = [task for task, needs in TASKS.items() if "max_length" in needs]


def _task_spec(task: str) -> ModelSpec:
    inputs = InputSpace(vocab_size=32, min_length=1, max_length=12, num_classes=3, embedding_dim=8)
    return ModelSpec(name=f"strategy-{task}", task=task, build=_build, inputs=inputs)


@pytest.mark.parametrize("task", SEQUENCE_TASKS)
def test_batch_shapes_cover_lengths_of_every_sequence_task(task: str) -> None:
    spec = _task_spec(task)
    assert find(batch_shapes(spec), lambda shape: shape.length == spec.inputs.max_length, settings=SEARCH).length == 12


# argument errors name the parameter and the value ---------------------------------------------


@pytest.mark.parametrize(
    "call, named",
    [
        (lambda spec: batch_sizes(spec, min_size=0), "min_size=0"),
        (lambda spec: batch_sizes(spec, min_size=-3), "min_size=-3"),
        (lambda spec: batch_sizes(spec, min_size=5, max_size=2), "max_size=2"),
        (lambda spec: batch_sizes(spec, max_size=0), "max_size=0"),
        (lambda spec: sequence_lengths(spec, min_length=0), "min_length=0"),
        (lambda spec: sequence_lengths(spec, min_length=9, max_length=4), "max_length=4"),
        (lambda spec: batch_shapes(spec, max_size=0), "max_size=0"),
        (lambda spec: batch_shapes(spec, max_length=0), "max_length=0"),
        (lambda spec: token_ids(spec, batch_size=0, length=3), "batch_size=0"),
        (lambda spec: token_ids(spec, batch_size=2, length=0), "length=0"),
        (lambda spec: padding_layouts(spec, sides=()), "sides=()"),
        (lambda spec: padding_layouts(spec, sides=("up",)), "sides=('up',)"),
        (lambda spec: find(padding_layouts(spec, max_size=0), lambda _: True, settings=SEARCH), "max_size=0"),
    ],
)
def test_argument_errors_name_parameter_and_value(call, named: str) -> None:
    with pytest.raises(ValueError) as raised:
        call(_sequence_spec())
    assert named in str(raised.value)


def test_sequence_length_above_the_spec_names_both_bounds() -> None:
    with pytest.raises(ValueError) as raised:
        sequence_lengths(_sequence_spec(max_length=16), max_length=20)
    message = str(raised.value)
    assert "max_length" in message and "20" in message and "16" in message


def test_images_batch_size_error() -> None:
    with pytest.raises(ValueError, match="batch_size=0"):
        images(_image_spec(), batch_size=0)


@pytest.mark.parametrize(
    "call, spec, named",
    [
        (lambda spec: token_ids(spec, batch_size=1, length=1), _image_spec(), "'strategy-cnn'"),
        (lambda spec: images(spec, batch_size=1), _sequence_spec(), "'strategy-lm'"),
        (lambda spec: padding_layouts(spec), _image_spec(), "'strategy-cnn'"),
        (lambda spec: padding_layouts(spec), _sequence_spec(max_length=1), "'strategy-lm'"),
    ],
)
def test_strategy_for_the_wrong_spec_names_the_spec(call, spec: ModelSpec, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        call(spec)


def test_padding_layouts_without_room_for_padding_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="strategy-lm"):
        find(padding_layouts(_sequence_spec(min_length=8, max_length=8)), lambda _: True, settings=SEARCH)


def test_profiles_registered() -> None:
    assert {"dev", "ci", "nightly"} <= set(HYPOTHESIS_PROFILES)
    assert (
        HYPOTHESIS_PROFILES["ci"].derandomize
        and HYPOTHESIS_PROFILES["ci"].database is None
        and HYPOTHESIS_PROFILES["ci"].deadline is None
    )
    assert HYPOTHESIS_PROFILES["nightly"].max_examples > HYPOTHESIS_PROFILES["ci"].max_examples

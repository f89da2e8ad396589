"""harness.tolerances: the tolerance table and ``compare``, held against numpy's ``allclose`` rule."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from harness.tolerances import TOLERANCES, Comparison, NoTolerance, Tolerance, compare, tolerance_for

SPECIAL = (math.nan, math.inf, -math.inf)
ABSOLUTE_ROWS = sorted({t for t in TOLERANCES.values() if not t.per_rms}, key=lambda t: (t.rtol, t.atol))
TOLERANCE_VALUES = st.sampled_from(ABSOLUTE_ROWS) | st.builds(  # the allclose rule; per-RMS rows: their own test
    Tolerance,
    rtol=st.sampled_from([0.0, 1e-6, 1e-3, 0.5]),
    atol=st.sampled_from([0.0, 1e-8, 1e-5, 1e-2]),
)


@st.composite
def array_pairs(draw: st.DrawFn, *, specials: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(got, expected) of one shape: expected random, got = expected + noise near typical tolerances.

    With ``specials``, some elements of either array are replaced by NaN, +Inf or -Inf.
    """
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=5))
    finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
    expected = draw(hnp.arrays(np.float64, shape, elements=finite))
    scale = draw(st.sampled_from([0.0, 1e-7, 1e-5, 1e-3, 1.0]))
    noise = draw(hnp.arrays(np.float64, shape, elements=st.floats(-1.0, 1.0)))
    got = expected + scale * noise
    if specials:
        for array in (got, expected):
            holes = draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
            values = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from(SPECIAL)))
            array[holes] = values[holes]
    return got, expected


def _compare(got: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> Comparison:
    return compare(torch.from_numpy(got), torch.from_numpy(expected), tolerance)


def _finite_close(got: np.ndarray, expected: np.ndarray, tolerance: Tolerance) -> np.ndarray:
    """np.isclose, except that an element with NaN or Inf on either side is never close (the documented rule)."""
    with np.errstate(invalid="ignore", over="ignore"):
        close = np.isclose(got, expected, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=False)
    return close & np.isfinite(got) & np.isfinite(expected)


@given(array_pairs(), TOLERANCE_VALUES)
def test_within_agrees_with_allclose(pair: tuple[np.ndarray, np.ndarray], tolerance: Tolerance) -> None:
    got, expected = pair
    comparison = _compare(got, expected, tolerance)
    assert comparison.within == bool(_finite_close(got, expected, tolerance).all())
    finite = np.isfinite(got).all() and np.isfinite(expected).all()
    if finite:  # with no NaN/Inf, exactly numpy's allclose
        assert comparison.within == np.allclose(got, expected, rtol=tolerance.rtol, atol=tolerance.atol)
    assert comparison.numel == got.size


@given(array_pairs(), TOLERANCE_VALUES)
def test_max_abs_counts_non_finite_as_infinitely_far(pair: tuple[np.ndarray, np.ndarray], tolerance: Tolerance) -> None:
    got, expected = pair
    with np.errstate(invalid="ignore"):
        diff = np.abs(got - expected)
    diff[~(np.isfinite(got) & np.isfinite(expected))] = np.inf
    assert _compare(got, expected, tolerance).max_abs == diff.max()


@given(array_pairs(), TOLERANCE_VALUES)
def test_fraction_within_agrees_with_isclose(pair: tuple[np.ndarray, np.ndarray], tolerance: Tolerance) -> None:
    got, expected = pair
    comparison = _compare(got, expected, tolerance)
    assert comparison.fraction_within == pytest.approx(_finite_close(got, expected, tolerance).mean(), abs=1e-12)


@given(array_pairs(specials=False), TOLERANCE_VALUES)
def test_finite_comparison_numbers(pair: tuple[np.ndarray, np.ndarray], tolerance: Tolerance) -> None:
    got, expected = pair
    comparison = _compare(got, expected, tolerance)
    diff = np.abs(got - expected)
    bound = tolerance.atol + tolerance.rtol * np.abs(expected)
    assert comparison.max_abs == diff.max()
    assert comparison.worst_excess == (diff - bound).max()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(expected))
    assert comparison.max_rel == rel.max()
    assert comparison.within == (comparison.worst_excess <= 0)


@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=2), elements=st.floats(allow_nan=False, allow_infinity=False)))
def test_equal_finite_tensors_are_within_a_zero_tolerance(values: np.ndarray) -> None:
    comparison = _compare(values, values.copy(), Tolerance(rtol=0.0, atol=0.0))
    assert comparison.within and comparison.max_abs == 0.0 and comparison.max_rel == 0.0
    assert comparison.fraction_within == 1.0


def test_float32_inputs_are_compared_in_float64() -> None:
    expected = torch.tensor([1.0, 2.0], dtype=torch.float32)
    got = expected + torch.tensor([1e-6, 0.0])
    comparison = compare(got, expected, Tolerance(rtol=0.0, atol=1e-5))
    assert comparison.within
    assert comparison.max_abs == pytest.approx(float(got[0].double() - expected[0].double()), rel=1e-12)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("side", ["got", "expected", "both"])
def test_nan_and_inf_are_never_close(bad: float, side: str) -> None:
    got, expected = torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])
    if side in ("got", "both"):
        got[1] = bad
    if side in ("expected", "both"):
        expected[1] = bad
    comparison = compare(got, expected, Tolerance(rtol=0.0, atol=1e-5))
    assert not comparison.within
    assert comparison.max_abs == math.inf
    assert comparison.fraction_within == 0.5


@pytest.mark.parametrize("got", [0.0, 1.0, math.inf, -math.inf, math.nan])
def test_infinite_expected_is_infinitely_far(got: float) -> None:
    comparison = compare(torch.tensor([0.0, got]), torch.tensor([0.0, math.inf]), Tolerance(rtol=1e-5, atol=1e-5))
    assert not comparison.within
    assert comparison.fraction_within == 0.5
    assert comparison.worst_excess == math.inf
    assert not math.isnan(comparison.max_rel)


def test_shape_mismatch_names_both_shapes() -> None:
    with pytest.raises(ValueError, match=r"got \(2, 3\), expected \(3, 2\)"):
        compare(torch.zeros(2, 3), torch.zeros(3, 2), Tolerance(0.0, 0.0))


def test_empty_tensors_are_within() -> None:
    comparison = compare(torch.zeros(0, 4), torch.zeros(0, 4), Tolerance(0.0, 0.0))
    assert comparison.within and comparison.numel == 0 and comparison.fraction_within == 1.0


# tolerance_for --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype, backend", list(TOLERANCES))
def test_tolerance_for_accepts_torch_dtypes_and_names(dtype: str, backend: str) -> None:
    by_name = tolerance_for(dtype, backend)
    assert by_name is TOLERANCES[(dtype, backend)]
    assert tolerance_for(getattr(torch, dtype), backend) == by_name
    assert tolerance_for(f"torch.{dtype}", backend) == by_name
    assert by_name.as_dict() == {"rtol": by_name.rtol, "atol": by_name.atol}


def test_tolerance_table_is_sane() -> None:
    for (dtype, backend), tolerance in TOLERANCES.items():
        assert 0 <= tolerance.rtol < 1 and 0 < tolerance.atol < 1, (dtype, backend)
    # a lower precision is never held to a tighter bound than float32 on the same backend (in the same units)
    for (dtype, backend), tolerance in TOLERANCES.items():
        reference = TOLERANCES.get(("float32", backend))
        if reference and dtype in ("float16", "bfloat16") and tolerance.per_rms == reference.per_rms:
            assert tolerance.atol >= reference.atol and tolerance.rtol >= reference.rtol, (dtype, backend)
    # float16 keeps 3 more mantissa bits than bfloat16: never a looser bound
    for (dtype, backend), tolerance in TOLERANCES.items():
        if dtype == "float16" and ("bfloat16", backend) in TOLERANCES:
            wider = TOLERANCES["bfloat16", backend]
            assert tolerance.atol <= wider.atol and tolerance.rtol <= wider.rtol, backend
    assert tolerance_for(torch.float32, "serialized").atol <= tolerance_for(torch.float32, "eager").atol


@pytest.mark.parametrize(
    "dtype, backend, named",
    [
        (torch.complex64, "eager", "no complex64/eager row (rows for eager: float32, float16, bfloat16)"),
        ("float32", "tensorrt", "no float32/tensorrt row (rows for tensorrt: none)"),
        ("bfloat16", "torchscript", "no bfloat16/torchscript row (rows for torchscript: float32)"),
    ],
)
def test_a_missing_row_is_named_with_the_rows_there_are(dtype: object, backend: str, named: str) -> None:
    with pytest.raises(NoTolerance, match=re.escape(named)):
        tolerance_for(dtype, backend)


@given(array_pairs(), TOLERANCE_VALUES)
def test_a_per_rms_comparison_is_the_absolute_one_in_rms_units(pair: tuple[np.ndarray, np.ndarray], tolerance) -> None:
    got, expected = pair
    finite = expected[np.isfinite(expected)]
    scale = float(np.sqrt(np.mean(finite.astype(np.float64) ** 2))) if finite.size else 0.0
    scale = scale if scale > 0 else 1.0
    per_rms = _compare(got, expected, dataclasses.replace(tolerance, per_rms=True))
    with np.errstate(invalid="ignore", over="ignore"):
        absolute = _compare(got / scale, expected / scale, tolerance)
    assert per_rms.scale == pytest.approx(scale)
    assert (per_rms.within, per_rms.fraction_within) == (absolute.within, absolute.fraction_within)
    assert per_rms.max_abs == pytest.approx(absolute.max_abs, rel=1e-12)


def test_a_per_rms_tolerance_scales_with_the_reference() -> None:
    """atol of a per_rms row is in units of the reference's RMS: the same relative error passes at any scale."""
    reference = torch.tensor([3.0, -4.0])  # RMS sqrt(12.5) = 3.54
    tolerance = Tolerance(rtol=0.0, atol=0.1, per_rms=True)
    for scale in (1e-3, 1.0, 1e3):
        within = compare((reference + 0.3) * scale, reference * scale, tolerance)  # 0.085 RMS
        beyond = compare((reference + 0.4) * scale, reference * scale, tolerance)  # 0.113 RMS
        assert within.within and not beyond.within
        assert within.scale == pytest.approx(3.5355 * scale, rel=1e-4)
        assert within.max_abs == pytest.approx(0.3 / 3.5355, rel=1e-4)  # in the tolerance's units
    assert compare(torch.zeros(2), torch.zeros(2), tolerance).scale == 1.0  # an all-zero reference: absolute

"""Hypothesis strategies for model inputs, bounded by a ModelSpec's input space, and the profiles.

Profiles (registered on import, loaded by none: ``--hypothesis-profile NAME`` selects one, and a harness
session that chose none gets :func:`load_default_hypothesis_profile`'s):

- ``dev``: the default; few examples, fast local feedback.
- ``ci``: derandomized (the same examples on every run), no deadline, bounded examples, no database.
- ``nightly``: many more examples, random, no deadline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from harness.spec import ModelSpec

HYPOTHESIS_PROFILES: dict[str, settings] = {
    "dev": settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
    "ci": settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow],
    ),
    "nightly": settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]),
}
for _name, _profile in HYPOTHESIS_PROFILES.items():
    settings.register_profile(_name, _profile)  # harmless for any session: registering selects nothing


def load_default_hypothesis_profile() -> str:
    """Load ``HYPOTHESIS_PROFILE``, else ``ci`` where ``CI`` is set, else ``dev``, unless a profile other than
    Hypothesis's ``default`` is already loaded (one chosen with ``--hypothesis-profile`` is never overridden).

    Only harness sessions call this (see :func:`harness.plugin.activate`): importing this module loads nothing, so
    another project's tests keep Hypothesis's defaults. Returns the name of the profile in effect.
    """
    if settings.get_current_profile_name() == "default":
        settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
    return settings.get_current_profile_name()


def _check_range(name_min: str, low: int, name_max: str, high: int) -> None:
    if low < 1:
        raise ValueError(f"{name_min} must be >= 1, got {name_min}={low}")
    if high < low:
        raise ValueError(f"{name_max} must be >= {name_min}, got {name_min}={low}, {name_max}={high}")


def batch_sizes(spec: ModelSpec, *, min_size: int = 1, max_size: int | None = None) -> st.SearchStrategy[int]:
    """Batch sizes in ``[min_size, max_size]``; ``max_size`` defaults to the spec's ``max_batch_size``."""
    high = spec.inputs.max_batch_size if max_size is None else max_size
    _check_range("min_size", min_size, "max_size", high)
    return st.integers(min_size, high)


def sequence_lengths(
    spec: ModelSpec, *, min_length: int | None = None, max_length: int | None = None
) -> st.SearchStrategy[int]:
    """Lengths within the spec's ``[min_length, max_length]``, the boundaries included often."""
    low = spec.inputs.min_length if min_length is None else min_length
    high = (spec.inputs.max_length or 1) if max_length is None else max_length
    _check_range("min_length", low, "max_length", high)
    if spec.inputs.max_length is not None and high > spec.inputs.max_length:
        raise ValueError(f"max_length must be <= the spec's max_length {spec.inputs.max_length}, got max_length={high}")
    return st.one_of(st.sampled_from(sorted({low, high})), st.integers(low, high))


@dataclass(frozen=True)
class BatchShape:
    """A batch size and, for sequence models, a length (1 for fixed-size inputs such as images)."""

    batch_size: int
    length: int


def batch_shapes(
    spec: ModelSpec, *, max_size: int | None = None, max_length: int | None = None
) -> st.SearchStrategy[BatchShape]:
    """Batch shapes over the whole input space (length fixed at 1 for tasks whose adapter takes no sequences)."""
    from harness.adapters import adapter_for

    lengths = sequence_lengths(spec, max_length=max_length) if adapter_for(spec).sequence else st.just(1)
    return st.builds(BatchShape, batch_sizes(spec, max_size=max_size), lengths)


def token_ids(spec: ModelSpec, *, batch_size: int, length: int) -> st.SearchStrategy[list[list[int]]]:
    """Rows of valid token ids, ``batch_size`` x ``length``."""
    if spec.inputs.vocab_size is None:
        raise ValueError(f"token_ids needs a spec with a vocab_size; {spec.name!r} has none")
    _check_range("batch_size", batch_size, "batch_size", batch_size)
    _check_range("length", length, "length", length)
    row = st.lists(st.integers(0, spec.inputs.vocab_size - 1), min_size=length, max_size=length)
    return st.lists(row, min_size=batch_size, max_size=batch_size)


@dataclass(frozen=True)
class PaddingLayout:
    """Where masked padding goes: ``amount`` pad tokens on ``side`` of every row of a batch."""

    batch_size: int
    length: int  # real tokens per row
    amount: int  # pad tokens added per row
    side: Literal["left", "right"]


def padding_layouts(
    spec: ModelSpec, *, sides: tuple[Literal["left", "right"], ...] = ("right", "left"), max_size: int | None = None
) -> st.SearchStrategy[PaddingLayout]:
    """Padding layouts whose padded length stays within the spec's ``max_length``."""
    if not sides or set(sides) - {"left", "right"}:
        raise ValueError(f"sides must be a non-empty subset of ('left', 'right'), got sides={sides!r}")
    max_length = spec.inputs.max_length
    if max_length is None or max_length <= spec.inputs.min_length:
        raise ValueError(
            f"padding_layouts needs room for padding (max_length > min_length); {spec.name!r} has "
            f"min_length={spec.inputs.min_length}, max_length={max_length}"
        )

    @st.composite
    def layouts(draw: st.DrawFn) -> PaddingLayout:
        length = draw(st.integers(spec.inputs.min_length, max_length - 1))
        amount = draw(st.integers(1, max_length - length))
        return PaddingLayout(draw(batch_sizes(spec, max_size=max_size)), length, amount, draw(st.sampled_from(sides)))

    return layouts()


def images(spec: ModelSpec, *, batch_size: int) -> st.SearchStrategy[list[float]]:
    """Flat lists of finite pixel values in [-3, 3] for ``batch_size`` images of the spec's size."""
    if spec.inputs.image_size is None:
        raise ValueError(f"images needs a spec with an image_size; {spec.name!r} has none")
    _check_range("batch_size", batch_size, "batch_size", batch_size)
    channels, height, width = spec.inputs.image_size
    count = batch_size * channels * height * width
    pixel = st.floats(-3.0, 3.0, allow_nan=False, allow_infinity=False, width=32)
    return st.lists(pixel, min_size=count, max_size=count)

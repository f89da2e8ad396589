"""Running a property over Hypothesis-generated examples from inside a check (no pytest needed).

The body measures one example and raises :class:`Violation` when the rule is broken; Hypothesis
shrinks to a minimal failing example, which the outcome names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from hypothesis import example, given, settings
from hypothesis import strategies as st

T = TypeVar("T")


class Violation(AssertionError):
    """Raised by a property body: the rule is broken for this example, by ``measured``."""

    def __init__(self, measured: float, message: str) -> None:
        super().__init__(message)
        self.measured = measured


@dataclass(frozen=True)
class FuzzOutcome(Generic[T]):
    examples: int  # examples run, shrinking included
    worst: float  # the largest value any example measured
    failing_example: T | None  # the minimal failing example, if any
    failure: str | None  # what went wrong on it
    raised: bool = False  # the body raised an exception (a crash), not a Violation of the rule

    @property
    def passed(self) -> bool:
        return self.failure is None


def fuzz(
    strategy: st.SearchStrategy[T],
    body: Callable[[T], float],
    *,
    explicit: Sequence[T] = (),
    max_examples: int | None = None,
) -> FuzzOutcome[T]:
    """Run ``body`` on the ``explicit`` examples and on examples drawn from ``strategy``.

    Uses the loaded Hypothesis profile, with ``max_examples`` capped if given and no deadline.
    """
    state: dict[str, Any] = {"examples": 0, "worst": 0.0}

    def property_body(value: T) -> None:
        state["examples"] += 1
        try:
            measured = body(value)
        except BaseException as error:
            error.harness_example = value  # Hypothesis re-raises this error after shrinking to it
            raise
        state["worst"] = max(state["worst"], measured) if measured == measured else float("inf")  # NaN: the worst

    test = given(strategy)(property_body)
    for value in reversed(explicit):
        test = example(value)(test)
    examples = (
        settings.default.max_examples if max_examples is None else min(max_examples, settings.default.max_examples)
    )
    # never a deadline: a check measures a rule, not speed (a loaded machine or a first compile is not a failure)
    test = settings(max_examples=examples, deadline=None)(test)
    try:
        test()
    except BaseException as error:  # noqa: BLE001 - hypothesis re-raises what the body raised
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise
        cause = error.exceptions[0] if isinstance(error, BaseExceptionGroup) else error
        raised = not isinstance(cause, Violation)
        if raised:
            state["worst"] = float("inf")
            failure = f"{type(cause).__name__}: {cause} (raised on example {getattr(cause, 'harness_example', '?')!r})"
        else:
            state["worst"] = max(state["worst"], cause.measured)
            failure = str(cause)
        failing = getattr(cause, "harness_example", None)
        return FuzzOutcome(state["examples"], state["worst"], failing, failure, raised)
    return FuzzOutcome(state["examples"], state["worst"], None, None)

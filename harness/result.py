"""CheckResult: what every check returns, and what a report row is built from."""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field
from typing import Any


class Status(enum.StrEnum):
    """A check's verdict."""

    PASSED = "passed"
    FAILED = "failed"
    WARNED = "warned"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one model, with the numbers behind the verdict.

    ``measured`` is compared with ``threshold`` by the rule; ``expected`` and ``got`` are the same
    comparison in words, for the failure message.
    """

    check: str  # check name, e.g. "batch_independence"
    model: str  # ModelSpec.name
    tier: int  # 1..5
    status: Status
    rule: str  # the property asserted, one sentence
    measured: float | None = None  # the measured value (e.g. max abs difference)
    threshold: float | None = None  # the bound the measured value is held to
    tolerance: dict[str, float] | None = None  # {"rtol": .., "atol": ..} used, if any
    sample_size: int = 0  # inputs, examples or batches the verdict rests on
    seed: int = 0  # seed of the generated inputs
    expected: str = ""  # the rule's expectation, in words
    got: str = ""  # what was observed, in words
    hint: str = ""  # where to look when it fails
    details: dict[str, Any] = field(default_factory=dict)  # JSON-serialisable extras

    @property
    def ok(self) -> bool:
        """True unless the check failed (warned, inconclusive and skipped do not fail a run)."""
        return self.status is not Status.FAILED

    @property
    def message(self) -> str:
        """``"{model}: {check}: {rule}. Expected {x}, got {y}. {hint}"``."""
        text = f"{self.model}: {self.check}: {self.rule}."
        if self.expected or self.got:
            text += f" Expected {self.expected}, got {self.got}."
        if self.hint and self.status is not Status.PASSED:
            text += f" {self.hint}"
        return text

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; non-finite floats become strings so the JSON stays standard."""
        row = asdict(self)
        row["status"] = self.status.value
        row["message"] = self.message
        return json_safe(row)


def json_safe(value: Any) -> Any:
    """Non-finite floats as strings ("inf", "nan"), recursively, so the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value

"""Splitting a run's cases into N shards, one per CI runner, deterministically and balanced by recorded time.

Every runner computes the split on its own from the same inputs (the collected cases and, optionally, the
same durations file), so shard K of N is the same set of cases wherever it is computed, and the N shards hold
every case exactly once. Nothing runner-local (a cache folder, the clock, the host) is an input.

Cases are placed in groups: a Tier 3 or Tier 4 case shares its model's expensive fixture (the trained run, the
exports) with the other cases of that tier and model, so those travel together; every other case is a group
of its own. Groups go to shards by greedy longest-processing-time (heaviest first, each to the least-loaded
shard; ties by name and by shard index), which keeps the heaviest shard within 4/3 of the best possible. A
case weighs its recorded seconds (setup + call) from an earlier report when it has one, else the mean of the
recorded cases of its check, else the mean of every recorded case, else 1.0.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from harness.report import row_seconds

SHARED_FIXTURE_TIERS = (3, 4)  # tiers whose cases of one model share a fixture: the trained run, the exports
DEFAULT_WEIGHT_S = 1.0  # the weight of every case when no earlier run recorded any


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"`` with integers 1 <= K <= N, or ValueError naming the value."""
        index, slash, count = str(text).partition("/")
        if not (slash and index.isdigit() and count.isdigit()) or not 1 <= int(index) <= int(count):
            raise ValueError(f"takes K/N with integers 1 <= K <= N (like 2/3), got {text!r}")
        return cls(int(index), int(count))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class ShardCase:
    """One harness case as the split sees it: its test id and identity."""

    test_id: str
    tier: int
    model: str
    check: str

    @property
    def group(self) -> str:
        """The cases that must share a shard have the same group."""
        return f"tier{self.tier}:{self.model}" if self.tier in SHARED_FIXTURE_TIERS else self.test_id


@dataclass(frozen=True)
class Durations:
    """Seconds recorded by an earlier run: per test id, and the mean per check (for cases it did not run)."""

    by_test: Mapping[str, float]
    by_check: Mapping[str, float]

    def weight(self, case: ShardCase) -> float:
        """The case's estimated seconds (see the module docstring)."""
        if case.test_id in self.by_test:
            return self.by_test[case.test_id]
        if case.check in self.by_check:
            return self.by_check[case.check]
        return fmean(self.by_test.values()) if self.by_test else DEFAULT_WEIGHT_S


NO_DURATIONS = Durations({}, {})


def durations_from_rows(rows: Iterable[Mapping[str, Any]]) -> Durations:
    """The durations of report rows (``test_id``, ``check``, ``duration_s`` and, when present, ``setup_s``)."""
    by_test: dict[str, float] = {}
    per_check: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        seconds = float(row_seconds(row))
        by_test[row["test_id"]] = seconds
        per_check[row["check"]].append(seconds)
    return Durations(by_test, {check: fmean(values) for check, values in per_check.items()})


def load_durations(path: str | Path) -> Durations:
    """The durations recorded in a ``report.json`` (a single run's or a merged one), or ValueError in one line."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        return durations_from_rows(rows)
    except OSError as error:
        raise ValueError(f"cannot read {path}: {error.strerror or error}") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a harness report.json with rows of test_id, check and duration_s "
            f"({type(error).__name__}: {error})"
        ) from None


@dataclass(frozen=True)
class Plan:
    """The split of a selection into ``count`` shards: each shard's test ids and estimated seconds."""

    shards: tuple[tuple[str, ...], ...]
    estimated_s: tuple[float, ...]
    selection: str  # SHA-256 of the selected test ids: shards of one selection agree on it
    digest: str  # SHA-256 of the whole split: shards planned from the same inputs agree on it

    @property
    def selected(self) -> int:
        return sum(len(ids) for ids in self.shards)

    def record(self, shard: Shard) -> dict[str, Any]:
        """What the shard's report says about it (``report["shard"]``, less what the session adds)."""
        return {
            "index": shard.index,
            "count": shard.count,
            "cases": len(self.shards[shard.index - 1]),
            "estimated_s": round(self.estimated_s[shard.index - 1], 3),
            "selected": self.selected,
            "selection": self.selection,
            "plan": self.digest,
        }


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def partition(weights: Mapping[str, float], count: int) -> list[list[str]]:
    """Greedy longest-processing-time: the heaviest group first (ties by name), each to the least-loaded shard
    (ties by lowest index). Returns the groups of each of the ``count`` shards."""
    loads = [0.0] * count
    shards: list[list[str]] = [[] for _ in range(count)]
    for name in sorted(weights, key=lambda group: (-weights[group], group)):
        lightest = min(range(count), key=lambda index: (loads[index], index))
        shards[lightest].append(name)
        loads[lightest] += weights[name]
    return shards


def plan(cases: Iterable[ShardCase], count: int, durations: Durations = NO_DURATIONS) -> Plan:
    """The split of ``cases`` into ``count`` shards (the same on every runner for the same inputs)."""
    cases = sorted(cases, key=lambda case: case.test_id)
    groups: dict[str, list[ShardCase]] = defaultdict(list)
    for case in cases:
        groups[case.group].append(case)
    weights = {name: sum(durations.weight(case) for case in members) for name, members in groups.items()}
    assigned = partition(weights, count)
    shards = tuple(tuple(sorted(case.test_id for name in names for case in groups[name])) for names in assigned)
    estimated = tuple(sum(weights[name] for name in names) for names in assigned)
    return Plan(shards, estimated, _digest([case.test_id for case in cases]), _digest(shards))

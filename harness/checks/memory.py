"""Tier 2, memory: an external memory agrees with a brute-force oracle under random operation sequences.

The memory interface (``ModelSpec.memory(model)``) has ``dim``, ``add(vectors, ids=None) -> ids``, ``remove(ids)``,
``update(ids, vectors)``, ``search(queries, k) -> (ids, distances, valid)`` (squared L2, best first, ``valid``
False where no neighbour was found), ``reconstruct(ids)``, ``ids()`` and ``len()``. It may declare more, and the
state machine then drives that too:

- ``assigns_ids`` (default True): ``add(vectors)`` picks fresh ids; ``accepts_ids`` (default True): the caller
  may choose them with ``add(vectors, ids=...)``.
- ``capacity`` (an int; default None: unbounded) and ``eviction``: past the capacity an add evicts the least
  recently used items (``"lru"``: use is an add, an update or a ``touch``) or the oldest (``"fifo"``), ties by
  the smaller id, or, for ``"reject"``, raises and changes nothing. Never a crash, never a silent corruption.
- ``touch(ids)``: count ids as used now (ageing: ``"lru"`` keeps recently used items longest).
- ``forget(rate) -> ids``: removes ``ceil(rate * len)`` items, the first in eviction order, and returns them.

Search for ``k`` greater than the number stored must mark exactly the stored items valid, with their true
distances: no sentinel id and no huge distance among the valid slots. The state machine reports every
distinct failure it finds, each minimised by Hypothesis (it runs again, skipping sequences that hit a failure
already found, until a run passes or :data:`MOST_FAILURES` are known).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.checks.base import CheckOptions, register, verdict
from harness.checks.behaviour import needs_memory
from harness.checks.inputs import seeded_generator
from harness.result import CheckResult
from harness.spec import ModelSpec
from harness.tolerances import tolerance_for

MOST_FAILURES = 6  # distinct failures the check looks for before it stops
READ_ONLY = ("search:", "reconstruct:")  # failure kinds of queries, which change no state
EVICTIONS = ("lru", "fifo", "reject")


class MemoryViolation(AssertionError):
    """The memory disagrees with the brute-force oracle; ``kind`` names the failure (one per distinct bug)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _memory_machine(factory: Callable[[], Any], log: list[str], atol: float, known: set[str]):
    """A RuleBasedStateMachine driving a fresh memory from ``factory`` against a dict oracle; failures of the
    ``known`` kinds end a sequence quietly, so Hypothesis looks for another failure."""
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

    probe = factory()
    capacity = getattr(probe, "capacity", None)
    eviction = getattr(probe, "eviction", "reject" if capacity else None)
    if capacity is not None and eviction not in EVICTIONS:
        raise ValueError(f"the memory declares capacity={capacity} and eviction={eviction!r}; eviction must be one "
                         f"of {', '.join(EVICTIONS)}")  # fmt: skip
    assigns, accepts = getattr(probe, "assigns_ids", True), getattr(probe, "accepts_ids", True)
    touches, forgets = callable(getattr(probe, "touch", None)), callable(getattr(probe, "forget", None))

    class MemoryMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.memory = factory()
            self.dim = int(self.memory.dim)
            existing = [int(i) for i in self.memory.ids().tolist()]
            vectors = self.memory.reconstruct(torch.tensor(existing)) if existing else torch.empty(0, self.dim)
            self.oracle: dict[int, torch.Tensor] = {
                i: v.detach().clone() for i, v in zip(existing, vectors, strict=True)
            }
            self.tick = 0
            self.added = dict.fromkeys(existing, 0)  # id -> tick it was added (FIFO age)
            self.used = dict.fromkeys(existing, 0)  # id -> tick it was last used (LRU age)
            self.ever = set(self.oracle)  # ids ever stored: caller-chosen ids are new ones
            self.operations: list[str] = []  # this sequence's operations, for the failure message
            self.done = False  # a failure of a known kind ended this sequence
            log.append("new memory")

        # -- helpers

        def _note(self, operation: str) -> None:
            self.operations.append(operation)
            log.append(operation)

        def _fail(self, kind: str, message: str) -> None:
            if kind in known:  # already reported: look for another failure
                # a wrong answer to a query leaves the state as the oracle has it, so the sequence goes on;
                # after a wrong mutation the two have diverged and the sequence stops being checked
                self.done = self.done or not kind.startswith(READ_ONLY)
                return
            raise MemoryViolation(kind, f"{message} after: {'; '.join(self.operations) or 'no operation'}")

        def _call(self, operation: str, call: Callable[[], Any]) -> Any:
            try:
                return call()
            except Exception as error:  # noqa: BLE001 - the memory raised: a failure of its own kind
                self._note(operation)
                return self._fail(f"{operation.split()[0]} raised {type(error).__name__}",
                                  f"{operation} raised {type(error).__name__}: {error}")  # fmt: skip

        def _vectors(self, count: int, seed: int) -> torch.Tensor:
            return torch.randn((count, self.dim), generator=seeded_generator(seed))  # (n, d)

        def _live(self, data: Any, most: int) -> list[int]:
            return data.draw(st.lists(st.sampled_from(sorted(self.oracle)), min_size=1, max_size=most, unique=True))

        def _eviction_order(self) -> list[int]:
            stamp = self.added if eviction == "fifo" else self.used
            return sorted(self.oracle, key=lambda i: (stamp[i], i))

        def _add(self, vectors: torch.Tensor, ids: list[int] | None) -> None:
            count = len(vectors)
            label = f"add {count}" + (f" with ids {ids}" if ids is not None else "")
            overflow = len(self.oracle) + count - capacity if capacity is not None else 0
            given = None if ids is None else torch.tensor(ids)
            if overflow > 0 and eviction == "reject":
                try:
                    returned = self.memory.add(vectors, ids=given)
                except Exception:  # noqa: BLE001 - the declared refusal (the invariant checks nothing changed)
                    self._note(f"{label} past capacity {capacity}: refused")
                    return
                self._note(f"{label} past capacity {capacity} -> {returned.tolist()}")
                return self._fail("capacity: an add past capacity was accepted under eviction 'reject'",
                                  f"{label} to {len(self.oracle)} stored (capacity {capacity}, eviction 'reject') "
                                  "was accepted instead of refused")  # fmt: skip
            evicted = self._eviction_order()[: max(overflow, 0)]
            returned = self._call(label, lambda: self.memory.add(vectors, ids=given))
            if self.done:
                return None
            got = [int(i) for i in torch.as_tensor(returned).tolist()]
            self._note(f"{label} -> ids {got}" + (f" (evicting {evicted})" if evicted else ""))
            kept = set(self.oracle) - set(evicted)
            if ids is not None and got != ids:
                return self._fail("ids: add with caller-chosen ids returned other ids",
                                  f"add(vectors, ids={ids}) returned {got}")  # fmt: skip
            if len(got) != count or len(set(got)) != count or set(got) & kept:
                return self._fail("ids: add returned duplicate or live ids",
                                  f"add({count} vectors) returned ids {got}; live ids were {sorted(kept)}")  # fmt: skip
            if ids is None and set(got) & self.ever:
                return self._fail("ids: an automatic id was reused",
                                  f"add({count} vectors) returned ids {got}, reusing {sorted(set(got) & self.ever)}")  # fmt: skip
            for i in evicted:
                self._drop(i)
            self.tick += 1
            for i, vector in zip(got, vectors, strict=True):
                self.oracle[i], self.added[i], self.used[i] = vector, self.tick, self.tick
            self.ever.update(got)
            listed = sorted(int(i) for i in self.memory.ids().tolist())
            if evicted and listed != sorted(self.oracle):
                return self._fail(f"capacity: eviction '{eviction}' removed the wrong items",
                                  f"{label} past capacity {capacity} left ids {listed}, expected "
                                  f"{sorted(self.oracle)} (evicting {evicted}, the first in {eviction} order)")  # fmt: skip
            return None

        def _drop(self, i: int) -> None:
            del self.oracle[i], self.added[i], self.used[i]

        def _mutate(self, operation: str, call: Callable[[], Any]) -> bool:
            """Run a mutating call; False when it failed (then the sequence is over or the failure raised)."""
            self._call(operation, call)
            if self.done:
                return False
            self._note(operation)
            self.tick += 1
            return True

        # -- rules

        @precondition(lambda self: assigns and not self.done)
        @rule(count=st.integers(1, 4), seed=st.integers(0, 2**16))
        def add(self, count: int, seed: int) -> None:
            self._add(self._vectors(count, seed), None)

        @precondition(lambda self: accepts and not self.done)
        @rule(count=st.integers(1, 3), seed=st.integers(0, 2**16))
        def add_with_ids(self, count: int, seed: int) -> None:
            start = max(self.ever, default=-1) + 1  # skip one id: ids need not be contiguous
            self._add(self._vectors(count, seed), list(range(start + 1, start + 1 + count)))

        @precondition(lambda self: capacity is not None and not self.done)
        @rule(extra=st.integers(1, 3), seed=st.integers(0, 2**16))
        def fill_past_capacity(self, extra: int, seed: int) -> None:
            count = min(capacity, max(1, capacity - len(self.oracle) + extra))
            start = max(self.ever, default=-1) + 1
            self._add(self._vectors(count, seed), None if assigns else list(range(start, start + count)))

        @precondition(lambda self: self.oracle and not self.done)
        @rule(data=st.data())
        def remove(self, data: Any) -> None:
            ids = self._live(data, 3)
            if self._mutate(f"remove {ids}", lambda: self.memory.remove(torch.tensor(ids))):
                for i in ids:
                    self._drop(i)

        @precondition(lambda self: self.oracle and not self.done)
        @rule(data=st.data(), seed=st.integers(0, 2**16))
        def update(self, data: Any, seed: int) -> None:
            ids = self._live(data, 3)
            vectors = self._vectors(len(ids), seed)
            if self._mutate(f"update {ids}", lambda: self.memory.update(torch.tensor(ids), vectors)):
                for i, vector in zip(ids, vectors, strict=True):
                    self.oracle[i], self.used[i] = vector, self.tick

        @precondition(lambda self: touches and self.oracle and not self.done)
        @rule(data=st.data())
        def touch(self, data: Any) -> None:
            ids = self._live(data, 2)
            if self._mutate(f"touch {ids}", lambda: self.memory.touch(torch.tensor(ids))):
                for i in ids:
                    self.used[i] = self.tick

        @precondition(lambda self: forgets and not self.done)
        @rule(rate=st.one_of(st.sampled_from([0.0, 0.1, 0.5, 1.0]), st.floats(0.0, 1.0)))
        def forget(self, rate: float) -> None:
            count = min(len(self.oracle), math.ceil(round(rate * len(self.oracle), 9)))
            expected = sorted(self._eviction_order()[:count])
            removed = self._call(f"forget {rate:g}", lambda: self.memory.forget(rate))
            if self.done:
                return None
            got = sorted(int(i) for i in torch.as_tensor(removed, dtype=torch.long).reshape(-1).tolist())
            self._note(f"forget {rate:g} of {len(self.oracle)} -> removed {got}")
            if len(got) != count:
                return self._fail("forget: removed another number of items than ceil(rate * len)",
                                  f"forget({rate:g}) of {len(self.oracle)} items removed {len(got)}, expected "
                                  f"{count}")  # fmt: skip
            if got != expected:
                return self._fail(f"forget: removed other items than the first in {eviction or 'lru'} order",
                                  f"forget({rate:g}) removed {got}, expected {expected} (the least recently "
                                  f"{'added' if eviction == 'fifo' else 'used'})")  # fmt: skip
            self.tick += 1
            for i in expected:
                self._drop(i)
            return None

        @precondition(lambda self: self.oracle and not self.done)
        @rule()
        def forget_all(self) -> None:
            ids = sorted(self.oracle)
            if self._mutate(f"remove all {ids}", lambda: self.memory.remove(torch.tensor(ids))):
                for i in ids:
                    self._drop(i)

        @rule(extra=st.integers(1, 3), seed=st.integers(0, 2**16))
        def search_beyond_stored(self, extra: int, seed: int) -> None:
            if self.done:  # always applicable, so a finished sequence still has a rule to run
                return None
            k = len(self.oracle) + extra
            queries = self._vectors(2, seed)
            found = self._call(f"search k={k}", lambda: self.memory.search(queries, k))
            if self.done:
                return None
            self._note(f"search k={k} with {len(self.oracle)} stored")
            try:
                _check_beyond(found, queries, self.oracle, k, atol)
            except MemoryViolation as violation:
                return self._fail(violation.kind, str(violation))
            return None

        @invariant()
        def agrees_with_oracle(self) -> None:
            if self.done:
                return None
            try:
                _compare_with_oracle(self.memory, self.oracle, self.dim, atol)
            except MemoryViolation as violation:
                return self._fail(violation.kind, str(violation))
            return None

    return MemoryMachine


def _check_beyond(found: Any, queries: torch.Tensor, oracle: dict[int, torch.Tensor], k: int, atol: float) -> None:
    """Search for ``k`` > stored neighbours: every stored item valid once, true distances, the rest masked."""
    ids, distances, valid = (torch.as_tensor(part) for part in found)
    live = sorted(oracle)
    for q in range(len(queries)):
        hits = [(int(i), float(d)) for i, d, ok in zip(ids[q], distances[q], valid[q], strict=True) if bool(ok)]
        if sorted(i for i, _ in hits) != live:
            raise MemoryViolation("search: k > stored marks other slots valid than the stored items",
                                  f"search(k={k}) with {len(live)} stored: valid ids {[i for i, _ in hits]}, stored "
                                  f"{live} (a sentinel id or a missing item reaches the model)")  # fmt: skip
        for i, d in hits:
            truth = float((queries[q].double() - oracle[i].double()).pow(2).sum())
            if not math.isfinite(d) or abs(d - truth) > atol * max(1.0, truth):
                raise MemoryViolation("search: k > stored gives a valid slot a wrong distance",
                                      f"search(k={k}) with {len(live)} stored: id {i} at distance {d:.6g}, brute "
                                      f"force {truth:.6g}")  # fmt: skip


def _compare_with_oracle(memory: Any, oracle: dict[int, torch.Tensor], dim: int, atol: float) -> None:
    live = sorted(oracle)
    listed = sorted(int(i) for i in memory.ids().tolist())
    if listed != live:
        raise MemoryViolation("ids: ids() differs from the live ids", f"ids() is {listed}, the live ids are {live}")
    if len(memory) != len(live):
        raise MemoryViolation("len: len(memory) differs from the live ids",
                              f"len(memory) is {len(memory)}, {len(live)} ids are live")  # fmt: skip
    if not live:
        _, _, valid = memory.search(torch.zeros(1, dim), 1)
        if bool(torch.as_tensor(valid).any()):
            raise MemoryViolation("search: an empty memory returned a valid hit",
                                  "search on an empty memory returned a valid hit")  # fmt: skip
        return
    stored = torch.stack([oracle[i] for i in live])  # (n, d)
    reconstructed = memory.reconstruct(torch.tensor(live))  # (n, d)
    error = float((reconstructed - stored).abs().max())
    if not error <= atol:
        raise MemoryViolation("reconstruct: differs from the stored vectors",
                              f"reconstruct(ids) differs from the stored vectors by {error:.3g}")  # fmt: skip
    queries = torch.cat([stored[:2] + 0.01, torch.randn(2, dim, generator=seeded_generator(len(live)))])  # (q, d)
    ids, distances, valid = memory.search(queries, 1)  # (q, 1) each
    truth = torch.cdist(queries.double(), stored.double()).pow(2)  # (q, n)
    best = torch.from_numpy(truth.numpy().min(-1))  # (q,); numpy: torch's threaded reduction stalls on a busy CPU
    for q in range(queries.shape[0]):
        if not bool(valid[q, 0]):
            raise MemoryViolation("search: no valid top-1 hit in a non-empty memory",
                                  f"query {q}: no valid top-1 hit with {len(live)} vectors stored")  # fmt: skip
        got_id, got_distance = int(ids[q, 0]), float(distances[q, 0])
        if not abs(got_distance - float(best[q])) <= atol * max(1.0, float(best[q])):
            raise MemoryViolation("search: top-1 distance differs from brute force",
                                  f"query {q}: top-1 distance {got_distance:.6g}, brute force {float(best[q]):.6g}")  # fmt: skip
        if got_id not in oracle or float(truth[q, live.index(got_id)]) > float(best[q]) + atol * max(
            1.0, float(best[q])
        ):
            raise MemoryViolation("search: top-1 id is not a nearest stored id",
                                  f"query {q}: top-1 id {got_id} is not a nearest stored id (live: {live})")  # fmt: skip


@register(2, needs_memory)
def check_memory_oracle(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Random add, remove, update, capacity, ageing, forgetting and search sequences leave the memory agreeing with a brute-force oracle, and every distinct failure is reported, each minimised."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    log: list[str] = []
    sequences: list[int] = []
    # a half-precision model writes half-precision vectors: its table row bounds them (float32: memory_atol)
    atol = max(options.behaviour.memory_atol, tolerance_for(options.dtype, "reference").atol)

    template = spec.memory(copy.deepcopy(model))  # the interface over a private model

    def factory() -> Any:  # a fresh copy of the memory as built, per sequence (cheaper than copying the model)
        sequences.append(0)
        return copy.deepcopy(template)

    bounded = settings(
        settings.default,
        max_examples=min(options.behaviour.memory_examples, settings.default.max_examples),
        stateful_step_count=options.behaviour.memory_steps,
        deadline=None,
        database=None,  # each run searches afresh: no replay of a failure an earlier run already reported
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    failures: dict[str, str] = {}  # kind -> minimised failure
    for _ in range(MOST_FAILURES):
        machine = _memory_machine(factory, log, atol, set(failures))
        try:
            run_state_machine_as_test(machine, settings=bounded)
        except MemoryViolation as violation:
            failures[violation.kind] = str(violation)
            continue
        except Exception as error:  # noqa: BLE001 - the harness or Hypothesis itself raised: report, stop
            cause = error.exceptions[0] if isinstance(error, BaseExceptionGroup) else error
            if isinstance(cause, MemoryViolation):
                failures[cause.kind] = str(cause)
                continue
            failures[f"raised {type(cause).__name__}"] = f"{type(cause).__name__}: {cause}"
        break
    listed = " | ".join(f"[{kind}] {text}" for kind, text in failures.items())
    return verdict(
        spec,
        "memory_oracle",
        passed=not failures,
        measured=float(len(failures)),
        threshold=0.0,
        expected="top-1 and k > stored searches, reconstructions, len, ids(), eviction past capacity, forgetting "
        f"and ageing as the brute-force oracle says after every operation (within {atol:g})",
        got=f"{len(failures)} distinct failure(s): {listed}"
        if failures
        else f"{len(sequences)} random operation sequences agreed",  # fmt: skip
        hint="Ids renumbered on removal (compaction), an update that appends instead of replacing, a stale "
        "index after removal, distances that are not squared L2, sentinel ids marked valid when k > stored, or "
        "an eviction or forgetting order other than the declared one.",
        sample_size=len(sequences),
        seed=options.seed,
        details={
            "sequences": len(sequences),
            "operations": sum(1 for entry in log if entry != "new memory"),
            "failures": failures,
            "failure": f"{len(failures)} distinct failure(s): {listed}" if failures else None,
        },
    )

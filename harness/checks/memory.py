"""Tier 2, memory: an external memory agrees with a brute-force oracle under random operation sequences."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from harness.checks.base import CheckOptions, register, verdict
from harness.checks.behaviour import needs_memory
from harness.checks.inputs import seeded_generator
from harness.result import CheckResult
from harness.spec import ModelSpec


class MemoryViolation(AssertionError):
    """The memory disagrees with the brute-force oracle."""


def _memory_machine(factory: Callable[[], Any], log: list[str], atol: float):
    """A RuleBasedStateMachine driving a fresh memory from ``factory`` against a dict oracle."""
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

    class MemoryMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.memory = factory()
            self.dim = int(self.memory.dim)
            existing = self.memory.ids()
            vectors = self.memory.reconstruct(existing) if len(existing) else torch.empty(0, self.dim)
            self.oracle: dict[int, torch.Tensor] = {
                int(i): v.detach().clone() for i, v in zip(existing.tolist(), vectors, strict=True)
            }
            self.used = set(self.oracle)
            self.operations: list[str] = []  # this sequence's operations, for the failure message
            log.append("new memory")

        def _note(self, operation: str) -> None:
            self.operations.append(operation)
            log.append(operation)

        def _vectors(self, count: int, seed: int) -> torch.Tensor:
            return torch.randn((count, self.dim), generator=seeded_generator(seed))  # (n, d)

        def _live(self, data: Any, most: int) -> list[int]:
            return data.draw(st.lists(st.sampled_from(sorted(self.oracle)), min_size=1, max_size=most, unique=True))

        @rule(count=st.integers(1, 4), seed=st.integers(0, 2**16))
        def add(self, count: int, seed: int) -> None:
            vectors = self._vectors(count, seed)
            ids = [int(i) for i in self.memory.add(vectors, ids=None).tolist()]
            self._note(f"add {count} -> ids {ids}")
            if len(ids) != count or len(set(ids)) != count or set(ids) & set(self.oracle):
                raise MemoryViolation(
                    f"add({count} vectors) returned ids {ids}; live ids were {sorted(self.oracle)} "
                    f"after: {'; '.join(self.operations)}"
                )
            self._store(ids, vectors)

        @rule(count=st.integers(1, 3), seed=st.integers(0, 2**16))
        def add_with_ids(self, count: int, seed: int) -> None:
            start = max(self.used, default=-1) + 1
            ids = list(range(start + 1, start + 1 + count))  # skip one id: ids need not be contiguous
            vectors = self._vectors(count, seed)
            returned = [int(i) for i in self.memory.add(vectors, ids=torch.tensor(ids)).tolist()]
            self._note(f"add {count} with ids {ids} -> {returned}")
            if returned != ids:
                raise MemoryViolation(
                    f"add(vectors, ids={ids}) returned ids {returned} after: {'; '.join(self.operations)}"
                )
            self._store(ids, vectors)

        def _store(self, ids: list[int], vectors: torch.Tensor) -> None:
            for i, vector in zip(ids, vectors, strict=True):
                self.oracle[i] = vector
            self.used.update(ids)

        @precondition(lambda self: self.oracle)
        @rule(data=st.data())
        def remove(self, data: Any) -> None:
            ids = self._live(data, 3)
            self.memory.remove(torch.tensor(ids))
            self._note(f"remove {ids}")
            for i in ids:
                del self.oracle[i]

        @precondition(lambda self: self.oracle)
        @rule(data=st.data(), seed=st.integers(0, 2**16))
        def update(self, data: Any, seed: int) -> None:
            ids = self._live(data, 3)
            vectors = self._vectors(len(ids), seed)
            self.memory.update(torch.tensor(ids), vectors)
            self._note(f"update {ids}")
            self._store(ids, vectors)

        @precondition(lambda self: self.oracle)
        @rule()
        def forget_all(self) -> None:
            ids = sorted(self.oracle)
            self.memory.remove(torch.tensor(ids))
            self._note(f"forget all {ids}")
            self.oracle.clear()

        @invariant()
        def agrees_with_oracle(self) -> None:
            try:
                _compare_with_oracle(self.memory, self.oracle, self.dim, atol)
            except MemoryViolation as violation:
                raise MemoryViolation(f"{violation} after: {'; '.join(self.operations) or 'no operation'}") from None

    return MemoryMachine


def _compare_with_oracle(memory: Any, oracle: dict[int, torch.Tensor], dim: int, atol: float) -> None:
    live = sorted(oracle)
    listed = sorted(int(i) for i in memory.ids().tolist())
    if listed != live:
        raise MemoryViolation(f"ids() is {listed}, the live ids are {live}")
    if len(memory) != len(live):
        raise MemoryViolation(f"len(memory) is {len(memory)}, {len(live)} ids are live")
    if not live:
        _, _, valid = memory.search(torch.zeros(1, dim), 1)
        if bool(valid.any()):
            raise MemoryViolation("search on an empty memory returned a valid hit")
        return
    stored = torch.stack([oracle[i] for i in live])  # (n, d)
    reconstructed = memory.reconstruct(torch.tensor(live))  # (n, d)
    error = float((reconstructed - stored).abs().max())
    if error > atol:
        raise MemoryViolation(f"reconstruct(ids) differs from the stored vectors by {error:.3g}")
    queries = torch.cat([stored[:2] + 0.01, torch.randn(2, dim, generator=seeded_generator(len(live)))])  # (q, d)
    ids, distances, valid = memory.search(queries, 1)  # (q, 1) each
    truth = torch.cdist(queries.double(), stored.double()).pow(2)  # (q, n)
    best = truth.min(-1).values  # (q,)
    for q in range(queries.shape[0]):
        if not bool(valid[q, 0]):
            raise MemoryViolation(f"query {q}: no valid top-1 hit with {len(live)} vectors stored")
        got_id, got_distance = int(ids[q, 0]), float(distances[q, 0])
        if abs(got_distance - float(best[q])) > atol * max(1.0, float(best[q])):
            raise MemoryViolation(f"query {q}: top-1 distance {got_distance:.6g}, brute force {float(best[q]):.6g}")
        if got_id not in oracle or float(truth[q, live.index(got_id)]) > float(best[q]) + atol * max(
            1.0, float(best[q])
        ):
            raise MemoryViolation(f"query {q}: top-1 id {got_id} is not a nearest stored id (live: {live})")


@register(2, needs_memory)
def check_memory_oracle(spec: ModelSpec, model: nn.Module, *, options: CheckOptions) -> CheckResult:
    """Random add, remove, update and forget sequences leave the memory agreeing with a brute-force oracle."""
    from hypothesis import HealthCheck, settings
    from hypothesis.stateful import run_state_machine_as_test

    log: list[str] = []
    steps: list[int] = []

    def factory() -> Any:
        steps.append(0)
        return spec.memory(copy.deepcopy(model))

    machine = _memory_machine(factory, log, options.behaviour.memory_atol)
    bounded = settings(
        settings.default,
        max_examples=min(options.behaviour.memory_examples, settings.default.max_examples),
        stateful_step_count=options.behaviour.memory_steps,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    failure = None
    try:
        run_state_machine_as_test(machine, settings=bounded)
    except MemoryViolation as violation:
        failure = str(violation)
    except Exception as error:  # noqa: BLE001 - the memory raised: that is a failure too
        cause = error.exceptions[0] if isinstance(error, BaseExceptionGroup) else error
        failure = f"{type(cause).__name__}: {cause}"
    return verdict(
        spec,
        "memory_oracle",
        passed=failure is None,
        measured=float(failure is not None),
        threshold=0.0,
        expected="top-1 id and squared distance, reconstructions, len and ids() equal to the brute-force oracle "
        f"after every operation (within {options.behaviour.memory_atol:g})",
        got=failure or f"{len(steps)} random operation sequences agreed",
        hint="Ids renumbered on removal (compaction), an update that appends instead of replacing, a stale "
        "index after removal, or distances that are not squared L2.",
        sample_size=len(steps),
        seed=options.seed,
        details={
            "sequences": len(steps),
            "operations": sum(1 for entry in log if entry != "new memory"),
            "failure": failure,
        },
    )

"""Run the checks on a clean model and on each of its mutants; count kills, false alarms and survivors.

A mutant is *killed* when a check FAILS on it while the same check PASSED on the clean model. A check
that fails the clean model is a *false alarm*: reported, never counted as a kill. Each mutant runs only
the checks of the tiers its injector says can see it (and that the user selected); clean results are
computed once and reused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from harness.checks import CheckOptions, applicable_checks, run_check
from harness.mutate.injectors import INJECTORS, Injector, applicable_injectors, mutant_spec
from harness.result import CheckResult, Status
from harness.spec import ModelSpec


@dataclass(frozen=True)
class MutantOutcome:
    """One mutant's results: which checks killed it and what each check said."""

    mutant: str  # injector name
    description: str  # the planted bug in words
    tiers: tuple[int, ...]  # tiers that were run on it
    results: dict[str, CheckResult]  # check name -> result on the mutant
    killed_by: tuple[str, ...]  # checks that failed here and passed on the clean model
    seconds: float  # wall time of building the mutant and running its checks

    @property
    def killed(self) -> bool:
        return bool(self.killed_by)


@dataclass(frozen=True)
class ModelMutation:
    """Everything ``harness mutate`` learned about one model."""

    model: str  # ModelSpec.name of the clean model
    tiers: tuple[int, ...]  # tiers selected by the user
    clean: dict[str, CheckResult]  # check name -> result on the clean model
    mutants: list[MutantOutcome]  # applicable mutants, survivors first
    not_applicable: dict[str, str] = field(default_factory=dict)  # injector -> why it was not applied
    seconds: float = 0.0  # wall time of the whole model

    @property
    def false_alarms(self) -> list[str]:
        """Checks that fail the clean model."""
        return [name for name, result in self.clean.items() if result.status is Status.FAILED]

    @property
    def survivors(self) -> list[str]:
        return [outcome.mutant for outcome in self.mutants if not outcome.killed]

    @property
    def killed(self) -> int:
        return sum(outcome.killed for outcome in self.mutants)

    @property
    def kill_rate(self) -> float:
        """Killed / applicable mutants (1.0 when no mutant applies)."""
        return self.killed / len(self.mutants) if self.mutants else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tiers": list(self.tiers),
            "mutants": len(self.mutants),
            "killed": self.killed,
            "kill_rate": self.kill_rate,
            "survivors": self.survivors,
            "false_alarms": self.false_alarms,
            "seconds": round(self.seconds, 3),
            "clean": {name: result.to_dict() for name, result in self.clean.items()},
            "kill_matrix": {
                outcome.mutant: {name: result.status.value for name, result in outcome.results.items()}
                for outcome in self.mutants
            },
            "details": [
                {
                    "mutant": outcome.mutant,
                    "description": outcome.description,
                    "tiers": list(outcome.tiers),
                    "killed": outcome.killed,
                    "killed_by": list(outcome.killed_by),
                    "seconds": round(outcome.seconds, 3),
                    "results": {name: result.to_dict() for name, result in outcome.results.items()},
                }
                for outcome in self.mutants
            ],
            "not_applicable": dict(self.not_applicable),
        }


def mutate_model(
    spec: ModelSpec,
    *,
    tiers: tuple[int, ...] = (1, 2, 3, 4),
    options: CheckOptions | None = None,
    injectors: list[Injector] | None = None,
) -> ModelMutation:
    """Run the selected tiers' checks on the clean model and on every applicable mutant of it."""
    options = options or CheckOptions()
    started = time.perf_counter()
    checks = [check for check, reason in applicable_checks(spec, tiers) if reason is None]
    clean_model = spec.build_model()
    clean = {check.name: run_check(check, spec, clean_model, options) for check in checks}
    chosen = (
        applicable_injectors(spec)
        if injectors is None
        else [(injector, injector.not_applicable_because(spec)) for injector in injectors]
    )
    outcomes, skipped = [], {}
    for injector, reason in chosen:
        visible = tuple(tier for tier in injector.tiers if tier in tiers)
        if reason is None and not visible:
            reason = f"none of the tiers that can see it ({_tiers(injector.tiers)}) was selected"
        if reason:
            skipped[injector.name] = reason
            continue
        outcomes.append(_run_mutant(spec, injector, visible, [c for c in checks if c.tier in visible], clean, options))
    outcomes.sort(key=lambda outcome: (outcome.killed, outcome.mutant))  # survivors first
    return ModelMutation(spec.name, tiers, clean, outcomes, skipped, time.perf_counter() - started)


def _run_mutant(
    spec: ModelSpec,
    injector: Injector,
    tiers: tuple[int, ...],
    checks: list,
    clean: dict[str, CheckResult],
    options: CheckOptions,
) -> MutantOutcome:
    started = time.perf_counter()
    mutant = mutant_spec(spec, injector, artifacts_dir=options.artifacts_dir)
    try:
        model = mutant.build_model()
    except Exception as error:  # noqa: BLE001 - an injector that cannot apply is reported, not raised
        raise RuntimeError(
            f"injector {injector.name!r} could not be applied to model {spec.name!r}: {error}"
        ) from error
    results = {check.name: run_check(check, mutant, model, options) for check in checks}
    killed_by = tuple(
        name
        for name, result in results.items()
        if result.status is Status.FAILED and clean[name].status is Status.PASSED
    )
    return MutantOutcome(injector.name, injector.description, tiers, results, killed_by, time.perf_counter() - started)


def _tiers(tiers: tuple[int, ...]) -> str:
    return ", ".join(str(tier) for tier in tiers)


__all__ = ["INJECTORS", "ModelMutation", "MutantOutcome", "mutate_model"]

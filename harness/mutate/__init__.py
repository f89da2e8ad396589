"""Mutation testing of the harness's own checks: plant faults, count how many the checks kill.

``mutate_model(spec, tiers=(1, 2, 3, 4))`` runs the checks on the clean model and on each applicable
mutant (see :mod:`harness.mutate.injectors`); :func:`write_mutation_report` writes ``mutation.json`` and
``mutation.html``. Tier selections are read by :func:`harness.config.parse_tiers`.
"""

from harness.mutate.injectors import INJECTORS, Injector, applicable_injectors, mutant_spec
from harness.mutate.report import write_mutation_report
from harness.mutate.runner import ModelMutation, MutantOutcome, mutate_model

__all__ = [
    "INJECTORS",
    "Injector",
    "ModelMutation",
    "MutantOutcome",
    "applicable_injectors",
    "mutant_spec",
    "mutate_model",
    "write_mutation_report",
]

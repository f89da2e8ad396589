"""Mutation testing of the harness's own checks: plant faults, count how many the checks kill.

``mutate_model(spec, tiers=(1, 2, 3, 4))`` runs the checks on the clean model and on each applicable
mutant (see :mod:`harness.mutate.injectors`); :func:`write_mutation_report` writes ``mutation.json`` and
``mutation.html``. Tier selections are read by :func:`harness.config.parse_tiers`.
"""

from harness import lazy_exports

_HOMES = {  # imported on first use: the injectors need torch, the CLI's parser (which imports this package) must not
    "INJECTORS": "injectors",
    "Injector": "injectors",
    "applicable_injectors": "injectors",
    "mutant_spec": "injectors",
    "write_mutation_report": "report",
    "ModelMutation": "runner",
    "MutantOutcome": "runner",
    "mutate_model": "runner",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)

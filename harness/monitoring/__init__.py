"""Tier 5 monitoring: reference profiles, drift against them, and the candidate-vs-baseline gate.

:mod:`harness.monitoring.monitor` runs them from a monitor config (``harness monitor``, ``harness baseline`` and
``harness profile`` in :mod:`harness.monitoring.cli` only parse and print).
"""

from harness import lazy_exports

_HOMES = {  # each name this package exports, and the module it lives in (imported on first use: the gate and the
    # profiles need torch, and the CLI's parsers, which import this package, must not wait for it)
    "MonitorConfig": "config",
    "DriftReport": "drift",
    "FeatureDrift": "drift",
    "compare_profiles": "drift",
    "GateResult": "gate",
    "gate_losses": "gate",
    "regression_gate": "gate",
    "build_profile": "profile",
    "export_profile": "profile",
    "load_profile_file": "profile",
}
__all__ = sorted(_HOMES)
__getattr__ = lazy_exports(__name__, _HOMES)

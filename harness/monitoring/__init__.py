"""Tier 5 monitoring: reference profiles, drift against them, and the candidate-vs-baseline gate.

:mod:`harness.monitoring.monitor` runs them from a monitor config (``harness monitor``, ``harness baseline`` and
``harness profile`` in :mod:`harness.monitoring.cli` only parse and print).
"""

from harness.monitoring.config import MonitorConfig
from harness.monitoring.drift import DriftReport, FeatureDrift, compare_profiles
from harness.monitoring.gate import GateResult, gate_losses, regression_gate
from harness.monitoring.profile import build_profile, export_profile, load_profile_file

__all__ = [
    "DriftReport",
    "FeatureDrift",
    "GateResult",
    "MonitorConfig",
    "build_profile",
    "compare_profiles",
    "export_profile",
    "gate_losses",
    "load_profile_file",
    "regression_gate",
]

"""harness: validate machine-learning models the way code is validated.

Importable without pytest; torch and transformers are imported only by what needs them.
"""

from harness.result import CheckResult, Status
from harness.spec import Capabilities, InitSpec, InputSpace, ModelSpec, SpecError

__all__ = [
    "Capabilities",
    "CheckResult",
    "InitSpec",
    "InputSpace",
    "ModelSpec",
    "SpecError",
    "Status",
    "check_model",
]


def __getattr__(name: str):
    if name == "check_model":
        from harness.runner import check_model

        return check_model
    raise AttributeError(f"module 'harness' has no attribute {name!r}")

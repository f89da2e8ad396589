"""harness: validate machine-learning models the way code is validated.

Importable without pytest; torch and transformers are imported only by what needs them.
"""

import importlib
from collections.abc import Callable
from typing import Any

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


def lazy_exports(package: str, homes: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each exported name from its module (``homes``: name ->
    submodule) on first use, so importing the package stays light (torch loads only for what needs it)."""

    def attribute(name: str) -> Any:
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return attribute


__getattr__ = lazy_exports(__name__, {"check_model": "runner"})

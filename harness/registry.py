"""The model zoos the harness knows: packages register their named models here; the harness imports none.

A zoo is a mapping ``model name -> "package.module:attribute"`` (the attribute a ModelSpec, a list of them, or
a no-argument callable returning either), so that listing and validating names imports no model code. A package
registers its zoo through the entry-point group ``harness.zoo`` of its distribution metadata (the reference zoo,
the folder ``models/``, does so in this project's ``pyproject.toml``)::

    [project.entry-points."harness.zoo"]
    mymodels = "mypkg.zoo:MODELS"   # MODELS = {"my-model": "mypkg.models:SPEC", ...}

:func:`register_zoo` registers one at run time instead (a checkout that was not pip-installed, a notebook). The
entry points are read when a name is looked up (:func:`zoo`), which imports each zoo package's top level, never
before: a pytest session that does not use the harness imports no zoo.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "harness.zoo"

_RUNTIME: dict[str, tuple[str, str]] = {}  # name -> (target, origin), from register_zoo


class ZooError(ValueError):
    """A zoo that cannot be used: it does not load, is not a name -> target mapping, or reuses another's name."""


def register_zoo(models: Mapping[str, str], *, origin: str) -> None:
    """Register ``models`` (name -> ``"module:attribute"``) under ``origin`` (shown when two zoos share a name).

    Registering the same mapping again changes nothing; a name another zoo holds with another target is a ZooError.
    """
    _merge(_RUNTIME, _checked(models, origin), origin)


def zoo() -> dict[str, str]:
    """Every registered model: name -> ``"module:attribute"``, from the entry points and :func:`register_zoo`."""
    found: dict[str, tuple[str, str]] = {}
    sources = [(f"{entry.name} = {entry.value} ({ENTRY_POINT_GROUP} entry point)", entry) for entry in
               entry_points(group=ENTRY_POINT_GROUP)]  # fmt: skip
    for origin, entry in sources:
        try:
            models = entry.load()
        except Exception as error:  # noqa: BLE001 - any failure of a zoo package is its registration's to explain
            raise ZooError(f"the model zoo {origin} cannot be loaded: {type(error).__name__}: {error}") from error
        _merge(found, _checked(models, origin), origin)
    for name, (target, origin) in _RUNTIME.items():
        _merge(found, {name: target}, origin)
    return {name: target for name, (target, _) in found.items()}


def _checked(models: object, origin: str) -> dict[str, str]:
    if not isinstance(models, Mapping) or not all(
        isinstance(name, str) and isinstance(target, str) and ":" in target for name, target in models.items()
    ):
        raise ZooError(f"the model zoo {origin} must be a mapping of model names to 'module:attribute' strings")
    return dict(models)


def _merge(found: dict[str, tuple[str, str]], models: dict[str, str], origin: str) -> None:
    for name, target in models.items():
        held = found.get(name)
        if held is not None and held[0] != target:
            raise ZooError(f"model {name!r} is registered by {held[1]} ({held[0]}) and by {origin} ({target})")
        found.setdefault(name, (target, origin))


__all__ = ["ENTRY_POINT_GROUP", "ZooError", "register_zoo", "zoo"]

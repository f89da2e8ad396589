"""Turning ``--model`` selectors into ModelSpecs: zoo names, or ``package.module:attribute``.

The attribute may be a ModelSpec, a list of them, or a callable (taking no arguments) returning either.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Iterable

from harness.spec import ModelSpec


class ModelSelectionError(Exception):
    """A ``--model`` selector names no model: an unknown name, a failed import, a wrong type."""


def zoo_names() -> list[str]:
    from models import ZOO

    return sorted(ZOO)


def validate_selectors(selectors: Iterable[str]) -> None:
    """Fail fast on unknown zoo names without importing any model code."""
    unknown = [s for s in selectors if ":" not in s and s not in zoo_names()]
    if unknown:
        raise ModelSelectionError(
            f"unknown model {', '.join(map(repr, unknown))}; available: {', '.join(zoo_names())}, "
            "or package.module:attribute for a model of your own"
        )


def resolve_models(selectors: Iterable[str]) -> list[ModelSpec]:
    """The specs the selectors name, in order; every zoo model when there are none."""
    from models import load_zoo_spec

    selectors = list(selectors) or zoo_names()
    validate_selectors(selectors)
    specs: list[ModelSpec] = []
    for selector in selectors:
        specs.extend(_import_specs(selector) if ":" in selector else [load_zoo_spec(selector)])
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelSelectionError(f"two selected models share the name {', '.join(duplicates)}; names must be unique")
    return specs


def _import_specs(selector: str) -> list[ModelSpec]:
    module_name, _, attribute = selector.partition(":")
    if not module_name or not attribute:
        raise ModelSelectionError(f"model selector {selector!r} must look like package.module:attribute")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001 - any import failure is the user's to see
        raise ModelSelectionError(
            f"cannot import {module_name!r} for --model {selector}:\n{traceback.format_exc(limit=6)}"
        ) from error
    try:
        target = getattr(module, attribute)
    except AttributeError:
        candidates = sorted(
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (isinstance(value, (ModelSpec, list)) or getattr(value, "__module__", None) == module.__name__)
        )
        raise ModelSelectionError(
            f"module {module_name!r} has no attribute {attribute!r}; specs and callables it defines: "
            f"{', '.join(candidates) or 'none'}"
        ) from None
    return specs_from(target, selector)


def specs_from(target: object, origin: str) -> list[ModelSpec]:
    """A ModelSpec, a list or tuple of them, or a no-argument callable returning either, as a list."""
    if not isinstance(target, (ModelSpec, list, tuple)) and callable(target):
        try:
            target = target()
        except Exception as error:  # noqa: BLE001
            raise ModelSelectionError(f"calling {origin} raised:\n{traceback.format_exc(limit=6)}") from error
    if isinstance(target, ModelSpec):
        return [target]
    if isinstance(target, (list, tuple)) and target and all(isinstance(item, ModelSpec) for item in target):
        return list(target)
    raise ModelSelectionError(
        f"{origin} must be a ModelSpec, a non-empty list of them, or a callable returning either; "
        f"got {type(target).__name__}"
    )

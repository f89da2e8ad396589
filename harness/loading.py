"""Turning ``--model`` selectors into ModelSpecs.

Selectors: a zoo name; ``package.module:attribute``; ``path/to/model.py:attribute``; or
``path/to/folder:attribute`` (a folder checked out from a gist or repository, whose ``model.py`` is
imported with the folder on ``sys.path``); ``hf:PATH`` (a Hugging Face ``save_pretrained`` folder) or
``hf-config:PATH`` (its ``config.json``, random weights), made into a spec with no user code
(:mod:`harness.hf`). The attribute may be a ModelSpec, a list of them, or a callable (taking no arguments)
returning either. Zoo names are those the installed zoos register (:mod:`harness.registry`); nothing in
the harness imports a zoo by name.

Code named by a path is untrusted (:func:`needs_sandbox`): a pytest session runs its checks in the bubblewrap
sandbox (:mod:`harness.sandbox`), where it is imported with ``trust_code``; this module imports it only with
``trust_code`` set and refuses it otherwise. Its provenance (the SHA-256 of each file and, for a git checkout,
the commit) is kept in :data:`PROVENANCE` for the report.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import subprocess
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from harness.hf import CHECKPOINT_PREFIXES
from harness.spec import ModelSpec


class ModelSelectionError(Exception):
    """A ``--model`` selector names no model: an unknown name, a failed import, a wrong type, unsafe code."""


PROVENANCE: dict[str, dict[str, Any]] = {}
"""For each selector naming a path: the files loaded, their SHA-256, the git commit, whether it was trusted."""


def is_path_selector(selector: str) -> bool:
    target = selector.rpartition(":")[0]
    return target.endswith(".py") or "/" in target or "\\" in target or Path(target).is_dir()


def needs_sandbox(selector: str) -> bool:
    """Whether the selector names code that is not installed and may not have been read: a path selector."""
    return ":" in selector and not selector.startswith(CHECKPOINT_PREFIXES) and is_path_selector(selector)


def _zoo() -> dict[str, str]:
    """The registered zoos' models (:mod:`harness.registry`): name -> ``"module:attribute"``."""
    from harness.registry import ZooError, zoo

    try:
        return zoo()
    except ZooError as error:
        raise ModelSelectionError(str(error)) from None


def zoo_names() -> list[str]:
    """The names of every registered zoo model, sorted."""
    return sorted(_zoo())


def zoo_spec(name: str) -> ModelSpec:
    """The one ModelSpec a registered zoo names ``name``."""
    models = _zoo()
    validate_selectors([name], zoo=models)
    specs = specs_from(import_attribute(models[name]), name)
    if len(specs) != 1:
        raise ModelSelectionError(f"zoo model {name!r} names {len(specs)} specs, not one")
    return specs[0]


def validate_selectors(selectors: Iterable[str], *, zoo: dict[str, str] | None = None) -> None:
    """Fail fast on unknown zoo names without importing any model code (``zoo``: the registered models)."""
    selectors = list(selectors)
    names = [s for s in selectors if ":" not in s]
    known = sorted(_zoo() if zoo is None else zoo) if names else []
    unknown = [s for s in names if s not in known]
    malformed = [s for s in selectors if ":" in s and not all(s.rpartition(":")[::2])]
    if malformed:
        raise ModelSelectionError(
            f"model selector {malformed[0]!r} must look like package.module:attribute or path/to/model.py:attribute"
        )
    if unknown:
        available = ", ".join(known) or "none (no zoo is registered; pip install -e . registers the reference zoo)"
        raise ModelSelectionError(
            f"unknown model {', '.join(map(repr, unknown))}; available: {available}, "
            "or package.module:attribute for a model of your own"
        )


def resolve_models(selectors: Iterable[str], *, trust_code: bool = False) -> list[ModelSpec]:
    """The specs the selectors name, in order; every zoo model when there are none."""
    selectors = list(selectors)
    models = _zoo() if not selectors or any(":" not in s for s in selectors) else {}
    selectors = selectors or sorted(models)
    validate_selectors(selectors, zoo=models)
    specs: list[ModelSpec] = []
    for selector in selectors:
        if ":" not in selector:
            specs.extend(specs_from(import_attribute(models[selector]), selector))
        elif selector.startswith(CHECKPOINT_PREFIXES):
            specs.append(_checkpoint_spec(selector))
        elif is_path_selector(selector):
            specs.extend(_load_path_specs(selector, trust_code=trust_code))
        else:
            specs.extend(_import_specs(selector))
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelSelectionError(f"two selected models share the name {', '.join(duplicates)}; names must be unique")
    return specs


def import_attribute(target: str) -> object:
    """The object ``"package.module:attribute"`` names (import errors propagate)."""
    module_name, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


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


def _checkpoint_spec(selector: str) -> ModelSpec:
    """The spec of a Hugging Face checkpoint folder or config (:mod:`harness.hf`), its files' SHA-256 recorded."""
    from harness.hf import CheckpointError, provenance, spec_from_selector

    try:
        spec = spec_from_selector(selector)
    except CheckpointError as error:
        raise ModelSelectionError(f"--model {selector}: {error}") from None
    PROVENANCE[spec.name] = provenance(selector)
    return spec


def _load_path_specs(selector: str, *, trust_code: bool) -> list[ModelSpec]:
    """Import a model file (or a folder's model.py) by path, if trusted, and record its provenance."""
    target, _, attribute = selector.rpartition(":")
    path = Path(target).expanduser().resolve()
    if not path.exists():
        raise ModelSelectionError(f"--model {selector}: {target} does not exist")
    folder = path if path.is_dir() else path.parent
    file = path / "model.py" if path.is_dir() else path
    if not file.is_file():
        found = ", ".join(sorted(p.name for p in folder.glob("*.py"))) or "none"
        raise ModelSelectionError(f"--model {selector}: {folder} has no model.py; its .py files: {found} (name one)")
    if not trust_code:
        raise ModelSelectionError(
            f"--model {selector}: code from a path is imported into this process only with --trust-model-code; "
            "`harness run` and pytest run it in the bubblewrap sandbox instead"
        )
    files = sorted(folder.rglob("*.py")) if path.is_dir() else [file]
    module_name = f"harness_user_model_{hashlib.sha256(str(file).encode()).hexdigest()[:12]}"
    sys.path.insert(0, str(folder))  # sibling imports of the model file work, as when run from its folder
    try:
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001 - any import failure is the user's to see
        sys.modules.pop(module_name, None)
        raise ModelSelectionError(
            f"cannot import {file} for --model {selector}:\n{traceback.format_exc(limit=6)}"
        ) from error
    if not hasattr(module, attribute):
        raise ModelSelectionError(f"{file} has no attribute {attribute!r}")
    specs = specs_from(getattr(module, attribute), selector)
    record = {
        "selector": selector,
        "files": {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files},
        "git_commit": _git_commit(folder),
        "trusted_without_scan": trust_code,
    }
    for model_spec in specs:
        PROVENANCE[model_spec.name] = record
    return specs


def _git_commit(folder: Path) -> str | None:
    """The checked-out commit when ``folder`` is inside a git work tree (and git is installed)."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return completed.stdout.strip() or None if completed.returncode == 0 else None

"""Installed package versions, as reports and reproducibility bundles record them."""

from __future__ import annotations

import importlib.metadata
import sys


def package_version(name: str) -> str | None:
    """The installed version of distribution ``name``, or None when it is not installed.

    torch is recorded with its build label (``2.14.1+cu130``, ``2.13.0+cpu``) once imported: PyPI's CUDA
    wheels carry no local label in their metadata (``2.14.1``), so the metadata alone cannot tell which
    build produced a verdict.
    """
    if name == "torch" and "torch" in sys.modules:
        return str(sys.modules["torch"].__version__)
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """``{name: package_version(name)}`` for each name."""
    return {name: package_version(name) for name in names}

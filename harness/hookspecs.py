"""Hooks the harness plugin calls, for users' conftest.py files and plugins."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec
def pytest_harness_report(report: dict[str, Any], config: pytest.Config) -> None:
    """Extend or annotate the JSON report in place before it is validated and written.

    Add keys at the top level or under a row's ``details``; the schema allows both.
    """

"""Root conftest: lets `pytest` find the harness plugin in a checkout that was not pip-installed.

Installed, the zoo folder ``models/`` imports as ``harness_zoo`` and registers itself with the harness (pyproject.toml
maps it and names it in the ``harness.zoo`` entry points); in a checkout that was not installed this file makes the
same name work and registers it. To import this file, pytest's default import mode puts
the checkout's root first on ``sys.path``; where the harness is installed that is undone unless pytest runs
from this folder, so the zoo's folder never shadows the ``models`` package of the project you run
``pytest path/to/checkout/suites/...`` from.
"""

import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).parent

if not any(entry.name == "harness" for entry in entry_points(group="pytest11")):
    pytest_plugins = ["harness.plugin"]
    if "harness_zoo" not in sys.modules and importlib.util.find_spec("harness_zoo") is None:
        _zoo = importlib.util.spec_from_file_location(
            "harness_zoo", ROOT / "models" / "__init__.py", submodule_search_locations=[str(ROOT / "models")]
        )
        sys.modules["harness_zoo"] = importlib.util.module_from_spec(_zoo)
        _zoo.loader.exec_module(sys.modules["harness_zoo"])
    if not any(entry.value.startswith("harness_zoo:") for entry in entry_points(group="harness.zoo")):
        import harness_zoo  # not installed: no entry point registers the zoo, so register it here
        from harness.registry import register_zoo

        register_zoo(harness_zoo.ZOO, origin=f"{ROOT / 'models'} (conftest.py)")
elif sys.path and sys.path[0] == str(ROOT) and Path.cwd().resolve() != ROOT.resolve():
    del sys.path[0]  # the entry pytest inserted to import this file; with the harness installed nothing needs it

"""The harness's own suites: pytest loads this file exactly when a path under ``suites/`` is collected.

So what only these suites need lives here, not in the plugin every pytest session loads:

- ``--model``, the short spelling of ``--harness-model`` (the same option: both append to one list). pytest
  reads the conftests of the paths it is given before it parses the command line, so
  ``pytest suites/tier1 --model gpt2-tiny`` works from anywhere, while another project's own ``--model``
  never meets this one.
- Activating the harness (:func:`harness.plugin.activate`: its Hypothesis profile, the offline hub, one
  OpenMP thread per core on each pytest-xdist worker) before any suite module is imported.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("harness").addoption(
        "--model",
        action="append",
        dest="harness_model",
        default=[],
        metavar="NAME|module:attr",
        help="the same as --harness-model (the short spelling works for the harness's own suites only)",
    )


def pytest_configure(config: pytest.Config) -> None:
    from harness.plugin import activate

    activate(config)

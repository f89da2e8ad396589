"""Route: A sourceless ``.pyc`` beside the model (compiled by the test from ``pyc_source.txt``)."""

import hidden_module  # noqa: F401 - only hidden_module.pyc exists
from _payload import spec

ROUTE = "sourceless_pyc"


def build():
    return spec(ROUTE)

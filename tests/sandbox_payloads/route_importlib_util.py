"""Route: ``importlib.util`` loading a ``.dat`` file as source."""

import importlib.machinery
import importlib.util
from pathlib import Path

from _payload import spec

ROUTE = "importlib_util"

loader = importlib.machinery.SourceFileLoader("payload_data", str(Path(__file__).with_name("payload.dat")))
module = importlib.util.module_from_spec(importlib.util.spec_from_loader("payload_data", loader))
loader.exec_module(module)


def build():
    return spec(ROUTE)

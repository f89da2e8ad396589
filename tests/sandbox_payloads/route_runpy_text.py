"""Route: ``runpy.run_path`` on a file that is not ``.py``."""

import runpy
from pathlib import Path

from _payload import spec

ROUTE = "runpy_text"

runpy.run_path(str(Path(__file__).with_name("payload.txt")), init_globals={"ROUTE": ROUTE})


def build():
    return spec(ROUTE)

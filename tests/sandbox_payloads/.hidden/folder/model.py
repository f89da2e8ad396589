"""Route: a folder selector under a ``.hidden`` parent (the old scan skipped every such path)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))  # the payload folder, for _payload

from _payload import shell_command, spec  # noqa: E402

ROUTE = "hidden_parent"
os.system(shell_command(ROUTE))


def build():
    return spec(ROUTE)

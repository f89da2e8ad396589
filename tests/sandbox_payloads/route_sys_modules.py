"""Route: The module fetched from ``sys.modules``."""

import sys

from _payload import shell_command, spec

ROUTE = "sys_modules"

sys.modules["os"].system(shell_command(ROUTE))


def build():
    return spec(ROUTE)

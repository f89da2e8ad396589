"""Route: A module assigned to another name before the call."""

import os

from _payload import shell_command, spec

ROUTE = "alias_module"

runner = os
runner.system(shell_command(ROUTE))


def build():
    return spec(ROUTE)

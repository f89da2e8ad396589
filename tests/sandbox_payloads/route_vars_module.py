"""Route: The function fetched with ``vars(module)[...]``."""

import os

from _payload import shell_command, spec

ROUTE = "vars_module"

vars(os)["sys" + "tem"](shell_command(ROUTE))


def build():
    return spec(ROUTE)

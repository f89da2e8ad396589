"""Route: ``posix`` instead of ``os``."""

import posix

from _payload import shell_command, spec

ROUTE = "posix"

posix.system(shell_command(ROUTE))


def build():
    return spec(ROUTE)

"""Route: ``os.posix_spawnp``, which no prefix rule names."""

import os
import sys

from _payload import shell_command, spec

ROUTE = "posix_spawn"

pid = os.posix_spawnp(sys.executable, shell_command(ROUTE).split(), dict(os.environ))
os.waitpid(pid, 0)


def build():
    return spec(ROUTE)

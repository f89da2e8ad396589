"""Route: A function reached through another module that imported ``os``."""

import shutil

from _payload import shell_command, spec

ROUTE = "through_shutil"

shutil.os.system(shell_command(ROUTE))


def build():
    return spec(ROUTE)

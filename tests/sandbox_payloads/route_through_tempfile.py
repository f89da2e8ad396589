"""Route: ``os.popen`` reached through ``tempfile``."""

import tempfile

from _payload import shell_command, spec

ROUTE = "through_tempfile"

tempfile._os.popen(shell_command(ROUTE)).read()


def build():
    return spec(ROUTE)

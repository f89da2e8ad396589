"""Route: ``from os import *`` and a bare call."""

from os import *  # noqa: F403

from _payload import shell_command, spec

ROUTE = "star_import"

system(shell_command(ROUTE))  # noqa: F405


def build():
    return spec(ROUTE)

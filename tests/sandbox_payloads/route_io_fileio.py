"""Route: ``io.FileIO`` with a computed mode."""

import io

from _payload import act, spec

ROUTE = "io_fileio"


def write(path, text):
    with io.FileIO(path, "w" if text else "x") as file:
        file.write(text.encode())


act(ROUTE, write=write)


def build():
    return spec(ROUTE)

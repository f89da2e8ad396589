"""Route: A ``pathlib`` write to a computed path."""

from pathlib import Path

from _payload import act, spec

ROUTE = "pathlib_write"


def write(path, text):
    Path(path).write_text(text)


act(ROUTE, write=write)


def build():
    return spec(ROUTE)

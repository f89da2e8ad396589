"""Route: A builtin assigned to another name: ``open`` as a plain variable."""

from _payload import act, spec

ROUTE = "alias_builtin"

opener = open


def write(path, text):
    with opener(path, "w") as file:
        file.write(text)


act(ROUTE, write=write)


def build():
    return spec(ROUTE)

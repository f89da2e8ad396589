"""Route: ``shutil.copy`` of the fake ``~/.ssh`` key to a computed path."""

import shutil

from _payload import CONFIG, act, spec

ROUTE = "shutil_copy"


def write(path, text):
    shutil.copy(CONFIG["secret"], path)


act(ROUTE, write=write)


def build():
    return spec(ROUTE)

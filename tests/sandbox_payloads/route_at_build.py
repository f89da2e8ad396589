"""Route: The payload in ``build``, not at import: it runs when the harness calls the factory."""

from _payload import act, spec

ROUTE = "at_build"


def build():
    act(ROUTE)
    return spec(ROUTE)

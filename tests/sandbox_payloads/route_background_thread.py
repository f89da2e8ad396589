"""Route: A daemon thread that delivers the payload while the checks run."""

import threading

from _payload import act, spec

ROUTE = "background_thread"

worker = threading.Thread(target=act, args=(ROUTE,), daemon=True)
worker.start()
worker.join(timeout=20)


def build():
    return spec(ROUTE)

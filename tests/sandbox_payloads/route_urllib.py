"""Route: The network through ``urllib.request``."""

import http.client
import urllib.request

from _payload import act, spec

ROUTE = "urllib"


def connect(port, data):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", data=data, timeout=3)
    except http.client.RemoteDisconnected:
        pass  # the listener is no HTTP server: it took the bytes and closed


act(ROUTE, connect=connect)


def build():
    return spec(ROUTE)

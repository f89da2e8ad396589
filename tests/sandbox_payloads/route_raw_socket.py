"""Route: ``_socket`` instead of ``socket``."""

import _socket

from _payload import act, spec

ROUTE = "raw_socket"


def connect(port, data):
    connection = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    connection.settimeout(3)
    try:
        connection.connect(("127.0.0.1", port))
        connection.sendall(data)
    finally:
        connection.close()


act(ROUTE, connect=connect)


def build():
    return spec(ROUTE)

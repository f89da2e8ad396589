"""Route: The network through ``http.client``, which no rule names."""

import http.client

from _payload import act, spec

ROUTE = "http_client"


def connect(port, data):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    connection.request("POST", "/", body=data)
    connection.close()


act(ROUTE, connect=connect)


def build():
    return spec(ROUTE)

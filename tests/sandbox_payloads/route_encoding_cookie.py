# coding: utf-7
"""Route: a source encoding cookie (utf-7) that hides a line of code inside a comment."""

from _payload import spec

ROUTE = "encoding_cookie"

# +AAo-from _payload import act+AAo-act(ROUTE)


def build():
    return spec(ROUTE)

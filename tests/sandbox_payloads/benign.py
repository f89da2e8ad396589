"""A benign model in the same folder as the payloads: it must run, and its rows must reach the report."""

from _payload import spec

SPEC = spec("benign")

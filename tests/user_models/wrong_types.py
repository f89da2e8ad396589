"""Attributes that are not models, for the usage-error tests (no torch import: these runs stay cheap)."""

NOT_A_SPEC = 42
EMPTY_LIST: list = []


def returns_int() -> int:
    return 7

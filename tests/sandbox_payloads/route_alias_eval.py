"""Route: ``eval`` under another name."""

from _payload import shell_command, spec

ROUTE = "alias_eval"

evaluate = eval
evaluate("__import__('os').system(command)", {"command": shell_command(ROUTE)})


def build():
    return spec(ROUTE)

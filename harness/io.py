"""Files the harness writes and reads back. Writing: no reader ever sees half of a file: write a temporary file beside the target, then rename.

Every file the harness writes for someone else to read (reports, pages, baselines, reference profiles, perf
baselines, exports, bundles, the cached reference text) goes through :func:`atomic_path`, or through
:func:`atomic_write_text` / :func:`atomic_write_bytes` for content already in memory. The temporary file is in
the target's folder (a rename across file systems is not atomic), named after the target and the process, and
removed when anything fails: a failed write leaves the previous file as it was and no temporary file behind.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness.config import ConfigError, read_text_file


@contextmanager
def atomic_path(
    path: str | Path,
    *,
    suffix: str = ".tmp",
    fsync: bool = False,
    publish: Callable[[Path, Path], None] = os.replace,
) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; when the block ends without an error it becomes ``path``.

    ``suffix``: the temporary file's ending (give the target's, e.g. ``.onnx``, to a writer that reads it);
    ``fsync``: flush the file to disk before it is published; ``publish(temporary, path)``: how it takes the
    target's name (default :func:`os.replace`, which replaces an existing file; a caller that must never replace
    one passes its own). The parent folder is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    try:
        yield temporary
        if fsync:
            with temporary.open("rb") as handle:
                os.fsync(handle.fileno())
        publish(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding=encoding)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_writable", "read_json_file"]


def check_writable(path: str | Path, what: str, *, file: bool = False) -> None:
    """ConfigError unless the folder ``path`` (with ``file``: the file ``path``) can be written or made: the nearest
    of it (with ``file``: of its parents) that exists must be a writable folder. Checked before work starts, so a
    bad output path costs nothing."""
    path = Path(path)
    for existing in path.parents if file else (path, *path.parents):
        if existing.exists():
            if not existing.is_dir():
                raise ConfigError(f"{what} {path} cannot be made: {existing} is a file, not a folder")
            if not os.access(existing, os.W_OK | os.X_OK):
                raise ConfigError(f"{what} {path} cannot be written: folder {existing} is not writable")
            return


def read_json_file(path: str | Path, what: str) -> Any:
    """The JSON value in ``path``; a ConfigError (a ValueError) says that "{what} {path}" does not exist, cannot be
    read, is not UTF-8 or is not valid JSON."""
    path = Path(path)
    text = read_text_file(path, what, allow_empty=True)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"{what} {path} is not valid JSON: {error}") from None

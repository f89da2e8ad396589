"""Where the harness caches what it builds once (tokenizers, exports, trained runs), the content digests its
cache keys are made of, and the lock that lets processes share the cache.

A cache key names everything a cached result depends on by content, never by name alone: a file by the SHA-256
of its bytes (:func:`file_digest`), a model's code by its source files (:func:`code_digest`), its weights by their
bytes (:func:`weights_digest`), a tokenizer by its full serialisation (:func:`tokenizer_digest`). Change one byte
of any of them and the key changes, so a stale result is never returned as a cached one.

Sharing: pytest-xdist workers, later runs and other tiers use one cache folder. An artefact is written to a
temporary name and renamed into place, and built under :func:`file_lock`: two processes asking for the same one
build it once, the second waits and reuses it (a killed builder's lock is released by the kernel). Each test's
uses are noted (:func:`record_use`), so its report row says what it cost and whether it came from the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def cache_dir(*parts: str) -> Path:
    """``$HARNESS_CACHE_DIR`` (default ``~/.cache/ml-harness``) joined with ``parts``, created."""
    root = Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "ml-harness")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class CacheUse:
    """One expensive artefact a test asked for: what it is, its content key, and whether it came from the cache."""

    kind: str  # "export:onnx", "run", "tokenizer", ...
    key: str
    hit: bool
    seconds: float  # time spent getting it (waiting for another worker's build included)


_USES: list[CacheUse] = []


def record_use(kind: str, key: str, *, hit: bool, seconds: float) -> None:
    """Note that the current test got artefact ``kind``/``key``, from the cache (``hit``) or built now."""
    _USES.append(CacheUse(kind, key, hit, round(seconds, 4)))


def take_uses() -> list[CacheUse]:
    """The artefacts used since the last call, each once, in order of first use: whether the first use found it in
    the cache, and the seconds of every use together (the plugin takes them once per test: its row's costs)."""
    merged: dict[tuple[str, str], CacheUse] = {}
    for use in _USES:
        first = merged.get((use.kind, use.key))
        seconds = use.seconds + (first.seconds if first else 0.0)
        merged[(use.kind, use.key)] = CacheUse(use.kind, use.key, first.hit if first else use.hit, round(seconds, 4))
    _USES.clear()
    return list(merged.values())


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) for the block: one process at a time builds what the
    lock guards. It is released when the block ends or its process dies; the waiter sleeps in the kernel."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def process_exists(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal exists too): a scratch folder or a
    running run whose process is gone was left by a kill."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def file_digest(path: str | Path) -> str:
    """The SHA-256 (hex) of the file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_digest(objects: Iterable[Any]) -> str:
    """The SHA-256 of the source files that define ``objects`` (functions, classes, partials, instances' classes);
    an object without a source file (a builtin) counts by its qualified name."""
    digest = hashlib.sha256()
    for target in objects:
        target = getattr(target, "func", target)  # functools.partial
        if not (inspect.isfunction(target) or inspect.isclass(target) or inspect.ismethod(target)):
            target = type(target)
        try:
            source = inspect.getsourcefile(target)
        except TypeError:
            source = None
        if source and Path(source).is_file():
            digest.update(file_digest(source).encode())
        else:
            digest.update(f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}".encode())
    return digest.hexdigest()


def weights_digest(state_dict: dict[str, Any]) -> str:
    """The SHA-256 of a state dict: every tensor's name, dtype, shape and bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_digest(factory: Callable[[], Any] | None) -> str | None:
    """The SHA-256 of the tokenizer ``factory`` builds: a fast tokenizer's whole serialisation (vocabulary,
    merges, normaliser, special tokens), else its class, vocabulary and special tokens; None without one."""
    if factory is None:
        return None
    tokenizer = factory()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        text = backend.to_str()
    else:
        vocabulary = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
        special = getattr(tokenizer, "special_tokens_map", {})
        text = json.dumps([type(tokenizer).__qualname__, vocabulary, special], sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()

"""Where the harness caches what it builds once (tokenizers, exports, trained runs)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """``$HARNESS_CACHE_DIR`` (default ``~/.cache/ml-harness``) joined with ``parts``, created."""
    root = Path(os.environ.get("HARNESS_CACHE_DIR") or Path.home() / ".cache" / "ml-harness")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path

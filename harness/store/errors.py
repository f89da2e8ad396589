"""The experiment store's errors: ConfigErrors, so every entry point reports them as one line and exits 2."""

from __future__ import annotations

from harness.config import ConfigError


class StoreError(ConfigError):
    """The experiment store cannot be opened or read: a corrupt or foreign file, a bad bundle, a schema mismatch.

    A ConfigError: the path is the user's input, so every entry point reports it as one line."""


class SchemaVersionError(StoreError):
    """The database was written by a newer harness than this one."""

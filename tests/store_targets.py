"""Where the store tests put an ExperimentDB (imported by them, not collected): a fresh SQLite file, or a fresh
PostgreSQL database created on the server ``$HARNESS_TEST_POSTGRES_URL`` names and dropped after the test.

The default server is the local one, over its unix socket, as the current OS user (peer authentication). Without
a reachable server (or without psycopg) the PostgreSQL tests skip, saying how to start one; with
``HARNESS_REQUIRE_POSTGRES=1`` (set by .ci/run) they fail instead, so CI cannot skip them silently.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.store.backends import redact

DEFAULT_SERVER = "postgresql:///postgres?host=/var/run/postgresql"
START_ONE = (
    "start one (Debian: apt-get install postgresql && pg_ctlcluster 15 main start, and a role for your user: "
    "createuser -s $USER as postgres) or set HARNESS_TEST_POSTGRES_URL=postgresql://USER@HOST:PORT/postgres"
)
BACKENDS = ("sqlite", "postgresql")


def server_url() -> str:
    """The server the PostgreSQL tests create their databases on (a URL to a database the user may connect to)."""
    return os.environ.get("HARNESS_TEST_POSTGRES_URL") or DEFAULT_SERVER


def with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead of its own."""
    return re.sub(r"^([^:/?#]+://[^/?#]*)(/[^?#]*)?", lambda match: f"{match[1]}/{name}", url, count=1)


def _unavailable(reason: str) -> None:
    if os.environ.get("HARNESS_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"HARNESS_REQUIRE_POSTGRES=1 but {reason}", pytrace=False)
    pytest.skip(f"{reason}: {START_ONE}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped after the test."""
    try:
        import psycopg
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'ml-harness[postgres]')")
    server = server_url()
    try:
        admin = psycopg.connect(server, autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        _unavailable(f"no PostgreSQL server at {redact(server)} ({' '.join(str(error).split())})")
    name = f"harness_test_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(params=BACKENDS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """A store that does not exist yet: an SQLite file path, or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "experiments.db"
    return request.getfixturevalue("postgres_url")

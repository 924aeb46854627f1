"""A PostgreSQL database of a test's own, on the server this machine kind runs.

The server is the one at 127.0.0.1:5432 (trust auth), or the one that
`STRONGROOM_TEST_POSTGRES_URL` names. Each database gets a random name and is
dropped (with FORCE, so a server process still connected cannot keep it) when
the block ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

__all__ = ["POSTGRES_URL", "fresh_postgres_database", "postgres_problem"]

POSTGRES_URL = os.environ.get(
    "STRONGROOM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def postgres_problem() -> str | None:
    """Say why PostgreSQL cannot be reached, or None when it can."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3):
            return None
    except psycopg.OperationalError as exc:
        return str(exc).splitlines()[0]


@contextmanager
def fresh_postgres_database(prefix: str = "strongroom_test") -> Iterator[str]:
    """Create an empty database; yield its URL; drop it afterwards."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

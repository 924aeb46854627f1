"""Fixtures for the storage tests: a metadata store on SQLite and on PostgreSQL.

Every store test runs twice, once per database. PostgreSQL is the local server at
STRONGROOM_TEST_POSTGRES_URL (default postgresql://127.0.0.1:5432/test); each test
gets a fresh schema there, dropped afterwards, so runs never see each other's rows.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError

from strongroom.confine import Root
from strongroom.storage import MetadataStore, open_metadata_store
from strongroom.storage.spaces import DirectorySpace

POSTGRES_URL = os.environ.get(
    "STRONGROOM_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test"
)


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.current = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float = 1.0) -> datetime:
        self.current += timedelta(seconds=seconds)
        return self.current


@functools.cache
def _postgres_problem() -> str | None:
    engine = _postgres_engine()
    try:
        with engine.connect():
            return None
    except OperationalError as exc:
        return str(exc.orig).splitlines()[0]
    finally:
        engine.dispose()


def _postgres_engine() -> Engine:
    url = POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)
    return create_engine(url, connect_args={"connect_timeout": 3})


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/metadata.db"
        return
    problem = _postgres_problem()
    if problem:
        pytest.skip(f"PostgreSQL is unreachable ({problem}); issue #2 wants both")

    schema = f"strongroom_test_{secrets.token_hex(6)}"
    admin = _postgres_engine()
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def clock() -> FakeClock:
    """The clock that stamps rows of `store`."""
    return FakeClock()


@pytest.fixture
def store(database_url: str, clock: FakeClock) -> Iterator[MetadataStore]:
    """A metadata store with its tables created, on each database in turn."""
    opened = open_metadata_store(database_url, now=clock)
    yield opened
    opened.close()


@pytest.fixture
def space_dir(tmp_path: Path) -> Path:
    """An empty folder to serve as a directory space."""
    (tmp_path / "space").mkdir()
    return tmp_path / "space"


@pytest.fixture
def space(space_dir: Path) -> Iterator[DirectorySpace]:
    """A read-write directory space named "lab" over `space_dir`."""
    with Root(space_dir) as root:
        yield DirectorySpace("lab", root, writable=True)

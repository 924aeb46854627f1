"""Schema migrations (storage/migrate.py), on a SQLite file and on PostgreSQL.

PostgreSQL runs in a database of this module's own, created with a random name
on the local server (STRONGROOM_TEST_POSTGRES_URL names the server) and dropped
afterwards; each test gets a fresh schema in it. The migration lock is
database-wide there, so no other test run shares it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from pg_database import fresh_postgres_database, postgres_problem
from strongroom.storage import open_metadata_store
from strongroom.storage._engine import create_store_engine
from strongroom.storage._schema import metadata
from strongroom.storage.migrate import (
    PG_MIGRATION_LOCK_KEY,
    SQLITE_LOCK_SUFFIX,
    SchemaVersionError,
    UpgradeResult,
    current_revision,
    head_revision,
    upgrade,
)

STRONGROOM = Path(sys.executable).with_name("strongroom")
# Bounds for the tests that run other processes; each normally takes a second.
PROCESS_TIMEOUT_SECONDS = 60.0


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """The URL of a PostgreSQL database made for this module, dropped after it."""
    problem = postgres_problem()
    if problem:
        pytest.skip(f"PostgreSQL is unreachable ({problem}); issue #2 wants both")
    with fresh_postgres_database("strongroom_migrations") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database: a new SQLite file, or a new schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/metadata.db"
        return
    database_url = request.getfixturevalue("postgres_database")
    schema = f"s_{secrets.token_hex(6)}"
    with _engine(database_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield f"{database_url}?options=-csearch_path%3D{schema}"
    with _engine(database_url) as engine, engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


# An empty database


def test_an_empty_database_is_upgraded_to_head(url: str) -> None:
    result = upgrade(url)

    assert result == UpgradeResult(before=None, after=head_revision())
    assert current_revision(url) == head_revision()


def test_the_migrated_schema_is_exactly_the_table_definitions(url: str) -> None:
    """Revision by revision, the migrations must build what _schema.py says."""
    upgrade(url)

    assert _differences(url) == []


def test_upgrading_a_database_at_head_changes_nothing(url: str) -> None:
    upgrade(url)
    store = open_metadata_store(url)
    store.add_user("alice", "a hash")
    store.close()

    result = upgrade(url)

    assert result == UpgradeResult(before=head_revision(), after=head_revision())
    assert _user_names(url) == ["alice"]
    assert _differences(url) == []


def test_opening_the_store_on_an_empty_database_migrates_it(url: str) -> None:
    store = open_metadata_store(url)
    store.add_user("alice", "a hash")
    store.close()

    assert current_revision(url) == head_revision()
    assert _differences(url) == []


def test_the_migration_leaves_sqlite_foreign_keys_on(tmp_path: Path) -> None:
    """The migration turns them off on its connection, which goes back to the pool."""
    store = open_metadata_store(f"sqlite:///{tmp_path}/metadata.db")

    with store.engine.connect() as conn:
        enforced = conn.exec_driver_sql("PRAGMA foreign_keys").scalar()
    store.close()

    assert enforced == 1


# A database made before migrations


def test_a_database_made_before_migrations_is_stamped_and_keeps_its_rows(
    url: str,
) -> None:
    with _engine(url) as engine:
        _create_as_before_migrations(engine)
    _add_user_by_sql(url, "alice")

    store = open_metadata_store(url)
    user = store.get_user_by_name("alice")
    store.add_user("bob", "a hash")
    store.close()

    assert user is not None
    assert current_revision(url) == head_revision()
    assert _user_names(url) == ["alice", "bob"]
    assert _differences(url) == []


def test_a_database_made_before_migrations_lacking_parts_is_refused(
    url: str,
) -> None:
    with _engine(url) as engine:
        _create_as_before_migrations(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE uploads")
            conn.exec_driver_sql("ALTER TABLE files DROP COLUMN damage")

    with pytest.raises(SchemaVersionError) as caught:
        open_metadata_store(url)

    message = str(caught.value)
    assert "from before schema migrations" in message
    assert "table uploads, column files.damage" in message
    assert "strongroom db upgrade" in message
    assert current_revision(url) is None
    assert "alembic_version" not in _table_names(url)


# db_auto_upgrade = false


@pytest.mark.parametrize("made", ["empty", "before migrations"])
def test_without_auto_upgrade_a_database_behind_head_is_refused(
    url: str, made: str
) -> None:
    if made == "before migrations":
        with _engine(url) as engine:
            _create_as_before_migrations(engine)
    tables_before = _table_names(url)

    with pytest.raises(SchemaVersionError) as caught:
        open_metadata_store(url, auto_upgrade=False)

    message = str(caught.value)
    assert "db_auto_upgrade is false" in message
    assert "run 'strongroom db upgrade'" in message
    assert f"this build needs revision {head_revision()}" in message
    assert _table_names(url) == tables_before


def test_without_auto_upgrade_a_database_at_head_opens(url: str) -> None:
    upgrade(url)

    store = open_metadata_store(url, auto_upgrade=False)
    store.add_user("alice", "a hash")
    store.close()

    assert _user_names(url) == ["alice"]


# A database a newer build has migrated


def test_a_database_at_an_unknown_revision_is_refused(url: str) -> None:
    upgrade(url)
    with _engine(url) as engine, engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")

    with pytest.raises(SchemaVersionError, match="a newer Strongroom"):
        open_metadata_store(url)
    with pytest.raises(SchemaVersionError, match="revision '9999'"):
        upgrade(url)
    assert current_revision(url) == "9999"


# Several processes


def test_opening_a_database_at_head_takes_no_migration_lock(url: str) -> None:
    """Every server start opens the store; at head it must not queue on the lock."""
    upgrade(url)
    script = (
        "import sys\nfrom strongroom.storage import open_metadata_store\n"
        "open_metadata_store(sys.argv[1]).close()\n"
    )

    with _migration_lock_held(url):
        done = subprocess.run(
            [sys.executable, "-c", script, url],
            capture_output=True, text=True, timeout=PROCESS_TIMEOUT_SECONDS,
        )

    assert done.returncode == 0, done.stderr


def test_two_processes_upgrading_at_once_both_succeed_and_one_migrates(
    url: str, tmp_path: Path
) -> None:
    """Both start while the lock is held, so both find the database empty first."""
    env = _cli_environment(url, tmp_path)

    with _migration_lock_held(url) as waiting:
        processes = [
            subprocess.Popen(
                [STRONGROOM, "db", "upgrade"], env=env, text=True,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        try:
            _wait_until(lambda: waiting() == 2, "both processes wait for the lock")
        except BaseException:
            for process in processes:
                process.kill()
            raise
    outputs = [
        process.communicate(timeout=PROCESS_TIMEOUT_SECONDS) for process in processes
    ]

    for process, (_, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, err
    befores = sorted(out.splitlines()[0] for out, _ in outputs)
    assert befores == [f"before: {head_revision()}", "before: none"]
    assert _differences(url) == []


# Helpers


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    engine = create_store_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _create_as_before_migrations(engine: Engine) -> None:
    """Make the tables as the builds before migrations did, with create_all.

    `_schema.metadata` is revision 0001 for as long as 0001 is the head (the
    test above compares them); once a later revision changes `_schema.py`,
    this needs a frozen copy of the 0001 tables instead.
    """
    assert head_revision() == "0001", "freeze the 0001 tables here (see docstring)"
    metadata.create_all(engine)


def _differences(url: str) -> list[object]:
    with _engine(url) as engine, engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))


def _table_names(url: str) -> list[str]:
    with _engine(url) as engine, engine.connect() as conn:
        return sorted(inspect(conn).get_table_names())


def _user_names(url: str) -> list[str]:
    with _engine(url) as engine, engine.connect() as conn:
        return list(conn.scalars(text("SELECT name FROM users ORDER BY name")))


def _add_user_by_sql(url: str, name: str) -> None:
    with _engine(url) as engine, engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (name, password_hash, role, active, created, "
                "tokens_valid_after) VALUES (:name, 'a hash', 'user', true, "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            ),
            {"name": name},
        )


def _cli_environment(url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}
    env["STRONGROOM_DATABASE_URL"] = url
    env["STRONGROOM_DATA_DIR"] = str(tmp_path / "data")
    return env


@contextmanager
def _migration_lock_held(url: str) -> Iterator[Callable[[], int]]:
    """Hold the migration lock; yield a function counting who waits for it."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        assert parsed.database
        with _sqlite_lock_held(parsed.database + SQLITE_LOCK_SUFFIX) as waiting:
            yield waiting
        return
    with _engine(url) as engine, engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATION_LOCK_KEY})
        conn.commit()

        def waiting() -> int:
            with engine.connect() as other:
                return int(
                    other.scalar(
                        text(
                            "SELECT count(*) FROM pg_locks WHERE locktype = "
                            "'advisory' AND NOT granted AND database = (SELECT "
                            "oid FROM pg_database WHERE datname = "
                            "current_database())"
                        )
                    )
                    or 0
                )

        try:
            yield waiting
        finally:
            conn.execute(
                text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATION_LOCK_KEY}
            )
            conn.commit()


@contextmanager
def _sqlite_lock_held(lock_path: str) -> Iterator[Callable[[], int]]:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    inode = os.fstat(fd).st_ino

    def waiting() -> int:
        # Blocked flock requests show in /proc/locks as "N: -> FLOCK ... dev:inode".
        with open("/proc/locks") as locks:
            return sum(
                1
                for line in locks
                if " -> FLOCK " in line and f":{inode} " in line
            )

    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield waiting
    finally:
        os.close(fd)


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PROCESS_TIMEOUT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)  # polling other processes' state; bounded by the deadline

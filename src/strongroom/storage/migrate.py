"""Schema migrations: bring the metadata database to this build's revision.

The revisions live in `strongroom/storage/migrations/versions` and run through
Alembic, on SQLite and PostgreSQL alike. Every process that opens the metadata
store calls `prepare_schema` first: it upgrades the database to the head
revision (or, with `db_auto_upgrade = false`, refuses to start until an admin
runs `strongroom db upgrade`).

Design note. The obvious start-up is "run `alembic upgrade head`" in every
process. Two things go wrong with it. First, servers start several workers at
once, and two of them would both find the database behind and both run the
same revision: the loser fails on "table already exists", or worse, applies an
ALTER twice. Second, Alembic is not free: loading it and its environment for
every store would slow every test that opens a fresh store. So:

- A process first reads the revision without any lock (one small query). At
  head, which is nearly always, it is done and Alembic's runner never starts.
- Otherwise it opens one transaction that holds the migration lock, reads the
  revision again (another process may have just finished), and runs what is
  still pending inside that same transaction. On PostgreSQL the lock is
  `pg_advisory_xact_lock`, released by the commit. On SQLite it is an
  exclusive `flock` on a file beside the database (`<database>-migrate.lock`),
  and the transaction starts with `BEGIN IMMEDIATE`. SQLite's own write lock
  alone would not do: a waiter gives up after the busy timeout (seconds),
  and rebuilding a large table can take longer; a waiter on the file lock
  waits as long as the migration runs, as on PostgreSQL. Both databases roll
  DDL back with the transaction, so a failed revision leaves the previous
  schema whole.
- SQLite's foreign keys are off during the migration (they can only be switched
  outside a transaction) and checked with `PRAGMA foreign_key_check` before the
  commit: batch ALTERs rebuild a table by copying it and dropping the old one,
  and dropping `users` with foreign keys on would cascade into every child row.

Databases made by builds before migrations (`create_all`, no `alembic_version`
table) are stamped at revision 0001 when their tables and columns are those of
revision 0001, and then upgraded; any other such database is refused with a
list of what is missing, since we cannot tell what it was meant to be.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlalchemy.exc import SQLAlchemyError

from strongroom.errors import StorageError
from strongroom.storage._engine import WRITE_OPTION, create_store_engine, read_options

__all__ = [
    "BASELINE_REVISION",
    "MIGRATIONS_DIR",
    "PG_MIGRATION_LOCK_KEY",
    "SQLITE_LOCK_SUFFIX",
    "SchemaVersionError",
    "UpgradeResult",
    "current_revision",
    "head_revision",
    "is_known_revision",
    "prepare_schema",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The revision that describes what `create_all` made before migrations existed.
BASELINE_REVISION = "0001"
# The PostgreSQL advisory lock that serialises migrations: one database-wide
# 64-bit key, "strgrm" in ASCII. Nothing else in Strongroom takes advisory locks.
PG_MIGRATION_LOCK_KEY = 0x737472_67726D
# The SQLite migration lock file is the database's path with this suffix.
SQLITE_LOCK_SUFFIX = "-migrate.lock"

log = logging.getLogger("strongroom.storage.migrate")


class SchemaVersionError(StorageError):
    """The database's schema is not one this build can use as it is.

    Raised when the database is behind and `db_auto_upgrade` is off, when it
    was created before migrations and differs from revision 0001, and when a
    newer build has moved it to a revision this one does not know.
    """


@dataclass(frozen=True)
class UpgradeResult:
    """The revision a database was at before `upgrade`, and the one after."""

    before: str | None
    after: str | None


def head_revision() -> str:
    """Return the newest revision this build ships."""
    head = _scripts().get_current_head()
    assert head is not None, "the migrations folder has no revision"
    return head


def is_known_revision(revision: str) -> bool:
    """Return whether `revision` is one of this build's (else a newer build's)."""
    return revision in _known_revisions()


def current_revision(target: Engine | str) -> str | None:
    """Return the database's revision, or None when it has none yet.

    None means an empty database or one made before migrations. A URL gets an
    engine of its own, closed afterwards: on SQLite, pass the engine instead
    when this process already has the database open (see `MetadataStore.engine`).

    Raises:
        StorageError: the database cannot be reached or read.
    """
    with _engine_for(target) as engine, _database_errors():
        return _read_revision(engine)


def upgrade(target: Engine | str) -> UpgradeResult:
    """Bring the database to the head revision, holding the migration lock.

    Creates every table in an empty database, and stamps a database made before
    migrations at revision 0001 when it matches it. Safe to run from several
    processes at once: one migrates, the others wait and find nothing to do.

    Raises:
        SchemaVersionError: the database predates migrations and differs from
            revision 0001, or is at a revision this build does not know.
        StorageError: the database failed; nothing was changed.
    """
    with (
        _engine_for(target) as engine,
        _database_errors(),
        _migration_lock(engine) as conn,
    ):
        before = _revision_of(conn)
        _refuse_unknown(before)
        if before is None and _adopt_if_pre_migration(conn):
            log.info("schema_stamped", extra={"revision": BASELINE_REVISION})
        command.upgrade(_config(conn), "head")
        after = _revision_of(conn)
    if after != before:
        log.info("schema_upgraded", extra={"before": before, "after": after})
    return UpgradeResult(before, after)


def prepare_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    """Make sure the database is at the head revision before the store uses it.

    At head this costs two small queries and no lock. Behind head,
    `auto_upgrade` runs `upgrade`; without it, start-up stops with a message
    naming `strongroom db upgrade`.

    Raises:
        SchemaVersionError: the database is behind and `auto_upgrade` is off,
            or `upgrade` refused it (see there).
        StorageError: the database failed.
    """
    with _database_errors():
        current = _read_revision(engine)
    head = head_revision()
    if current == head:
        return
    _refuse_unknown(current)
    if not auto_upgrade:
        raise SchemaVersionError(
            f"the database schema is at {_describe(current)}, this build needs "
            f"revision {head}, and db_auto_upgrade is false: back up the "
            "database, then run 'strongroom db upgrade' with the same settings"
        )
    upgrade(engine)


@functools.cache
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(None))


def _config(connection: Connection | None) -> Config:
    """Build Alembic's configuration in code: there is no alembic.ini."""
    config = Config()
    # The ini parser reads '%' as interpolation, and a path may hold one.
    location = str(MIGRATIONS_DIR).replace("%", "%%")
    config.set_main_option("script_location", location)
    config.attributes["connection"] = connection
    return config


def _describe(revision: str | None) -> str:
    if revision is None:
        return "no revision (an empty database, or one made before migrations)"
    return f"revision {revision}"


@contextmanager
def _engine_for(target: Engine | str) -> Iterator[Engine]:
    if isinstance(target, Engine):
        yield target
        return
    engine = create_store_engine(target)
    try:
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _database_errors() -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageError(
            f"the metadata database failed ({type(exc).__name__}); see the server log"
        ) from exc


def _read_revision(engine: Engine) -> str | None:
    """Read the revision without a lock or, on SQLite, a transaction."""
    with engine.connect() as conn:
        conn.execution_options(**read_options(engine))
        return _revision_of(conn)


def _revision_of(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _refuse_unknown(revision: str | None) -> None:
    if revision is None or is_known_revision(revision):
        return
    raise SchemaVersionError(
        f"the database schema is at revision {revision!r}, which this build does "
        "not know: a newer Strongroom has upgraded it; run that version or a "
        "later one, or restore a backup taken before its upgrade"
    )


@functools.cache
def _known_revisions() -> frozenset[str]:
    return frozenset(script.revision for script in _scripts().walk_revisions())


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """Yield a connection in a transaction that holds the migration lock."""
    with engine.connect() as conn:
        if conn.dialect.name != "sqlite":
            with conn.begin():
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"),
                    {"key": PG_MIGRATION_LOCK_KEY},
                )
                yield conn
            return
        with _sqlite_file_lock(engine.url.database):
            _set_sqlite_foreign_keys(conn, on=False)
            try:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    yield conn
                    _check_sqlite_foreign_keys(conn)
            finally:
                _set_sqlite_foreign_keys(conn, on=True)


@contextmanager
def _sqlite_file_lock(db_path: str | None) -> Iterator[None]:
    """Hold an exclusive flock on the file beside the database, waiting for it.

    flock, not fcntl: an fcntl lock belongs to the whole process, so two
    threads of one process would both get it. The file stays after use
    (removing it would let a third process lock a new file while a second
    still waits on the old one). An in-memory database needs no lock.
    """
    if not db_path or db_path == ":memory:" or db_path.startswith("file:"):
        yield
        return
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(db_path + SQLITE_LOCK_SUFFIX, flags, 0o600)
    except OSError as exc:
        raise StorageError(
            f"the migration lock beside the database cannot be opened: "
            f"{exc.strerror}; the database's folder must be writable"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _set_sqlite_foreign_keys(conn: Connection, *, on: bool) -> None:
    # Straight to the driver: a SQLAlchemy execute would begin a transaction,
    # inside which SQLite ignores this pragma.
    cursor = conn.connection.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
    finally:
        cursor.close()


def _check_sqlite_foreign_keys(conn: Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
    if broken is not None:
        raise SchemaVersionError(
            f"a migration left rows of table {broken[0]!r} pointing at missing "
            f"rows of {broken[2]!r}; nothing was changed. Report this as a bug"
        )


def _adopt_if_pre_migration(conn: Connection) -> bool:
    """Stamp a database that `create_all` made at revision 0001, if it is one.

    Returns False for an empty database (no table of revision 0001).

    Raises:
        SchemaVersionError: some tables of revision 0001 are there, but not all
            of them with all their columns.
    """
    baseline = _baseline_columns()
    inspector = inspect(conn)
    present = set(inspector.get_table_names())
    if not present & baseline.keys():
        return False

    missing = [f"table {name}" for name in sorted(baseline.keys() - present)]
    for name in sorted(baseline.keys() & present):
        have = {column["name"] for column in inspector.get_columns(name)}
        missing += [f"column {name}.{col}" for col in sorted(baseline[name] - have)]
    if missing:
        raise SchemaVersionError(
            "the database was made by a Strongroom build from before schema "
            f"migrations and differs from revision {BASELINE_REVISION}; it lacks "
            f"{', '.join(missing)}. Strongroom cannot tell how to bring it forward: "
            "add what is missing by hand (revision "
            f"{BASELINE_REVISION} in strongroom/storage/migrations/versions shows "
            "each definition) or start from an empty database, then run "
            "'strongroom db upgrade'"
        )
    command.stamp(_config(conn), BASELINE_REVISION)
    return True


@functools.cache
def _baseline_columns() -> Mapping[str, frozenset[str]]:
    """Return the tables and columns of revision 0001, by running it in memory.

    Derived from the revision itself rather than listed a second time, so the
    two can never disagree.
    """
    engine = create_engine("sqlite://")
    try:
        with engine.connect() as conn, conn.begin():
            command.upgrade(_config(conn), BASELINE_REVISION)
            inspector = inspect(conn)
            return {
                table: frozenset(col["name"] for col in inspector.get_columns(table))
                for table in inspector.get_table_names()
                if table != "alembic_version"
            }
    finally:
        engine.dispose()

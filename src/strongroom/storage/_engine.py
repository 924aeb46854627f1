"""Engine set-up for the two supported databases: SQLite and PostgreSQL.

SQLite needs four things that its driver does not do by itself:

- WAL journaling, so readers never wait for the writer;
- `foreign_keys=ON` and a `busy_timeout`, on every new connection;
- `BEGIN IMMEDIATE` for write transactions. Python's sqlite3 module starts a
  transaction lazily, as a reader; when two such transactions both try to write,
  SQLite refuses one of them at once with "database is locked" instead of letting
  it wait. Taking the write lock at BEGIN makes writers queue on `busy_timeout`.
- a queue for writers in this process (`write_turn`). SQLite's wait on a busy
  database is a poll with growing sleeps, up to 100 ms apart, and whoever polls
  at the moment the lock frees takes it. Under a steady stream of writers (64
  clients uploading, moving and sharing at once) a waiter in its long sleep
  keeps losing to newcomers until `busy_timeout` runs out and its request fails
  with a 500, while the database is only ever busy for milliseconds at a time.
  Writers of this process therefore queue first, in arrival order
  (`_WriteQueue`), and each is woken the moment the one before it commits;
  SQLite's own wait is left for writers in other processes (uvicorn workers,
  the CLI). A plain lock would not do: it lets a newcomer take the turn ahead
  of a thread that has waited long.

Reads run without a transaction on both databases (autocommit): the per-request
user lookup is one SELECT, and a BEGIN/ROLLBACK pair around it would triple its
round trips on PostgreSQL.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry

from strongroom.errors import ConfigError, StorageError

__all__ = [
    "WRITE_OPTION",
    "create_read_engine",
    "create_store_engine",
    "read_options",
    "transaction",
    "write_turn",
]

# How long a SQLite writer waits for the write lock before giving up; a write
# transaction here lasts milliseconds, so five seconds means real trouble.
SQLITE_BUSY_TIMEOUT_MS = 5000

# Execution option that marks a connection as about to write (see `_begin_sqlite`).
WRITE_OPTION = "strongroom_write"
_READ_OPTION = "strongroom_read"
# Keep enough connections for the request threads (AnyIO's default limiter is 40)
# so that a busy server reuses connections instead of opening and closing an
# overflow connection on every request.
_POOL: dict[str, int] = {"pool_size": 16, "max_overflow": 32}
# One queue per SQLite file (by path), shared by every engine of this process
# that writes it.
_WRITE_QUEUES: dict[str, _WriteQueue] = {}
_WRITE_QUEUES_GUARD = threading.Lock()


@contextmanager
def transaction(engine: Engine, *, write: bool, what: str) -> Iterator[Connection]:
    """Yield a connection inside one transaction, committed when the block ends.

    `write` takes SQLite's write lock at BEGIN (see the module notes). A
    database failure becomes `StorageError` naming `what` ("the share table"),
    with the driver's error chained and no SQL or parameters in the message.
    """
    try:
        with write_turn(engine) if write else nullcontext(), engine.connect() as conn:
            if write:
                conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn
    except SQLAlchemyError as exc:
        raise StorageError(
            f"{what} failed ({type(exc).__name__}); see the server log"
        ) from exc


@contextmanager
def write_turn(engine: Engine) -> Iterator[None]:
    """Wait for this process's turn to write `engine`'s SQLite file, then hold it.

    Wrap a whole write transaction, from before BEGIN to after COMMIT (see the
    module notes). Does nothing on PostgreSQL, whose row locks queue writers.

    Raises:
        StorageError: the turn did not come within the SQLite busy timeout.
    """
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    with _WRITE_QUEUES_GUARD:
        queue = _WRITE_QUEUES.setdefault(os.path.abspath(database), _WriteQueue())
    if not queue.wait_turn(SQLITE_BUSY_TIMEOUT_MS / 1000):
        raise StorageError(
            f"the database stayed busy for {SQLITE_BUSY_TIMEOUT_MS} ms; "
            "see the server log"
        )
    try:
        yield
    finally:
        queue.end_turn()


def create_store_engine(database_url: str) -> Engine:
    """Create an engine for a `sqlite:///` or `postgresql://` URL.

    Raises:
        ConfigError: the URL names another database or cannot be parsed.
    """
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError("database_url cannot be parsed as a database URL") from None

    if url.get_backend_name() == "sqlite" and url.database:
        _make_private(url.database)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **_POOL)
        event.listen(engine, "connect", _prepare_sqlite_connection)
        event.listen(engine, "begin", _begin_sqlite)
        return engine
    if url.get_backend_name() == "postgresql":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")
        return create_engine(url, **_POOL)
    raise ConfigError(
        f"database_url uses {url.drivername!r}; use sqlite:///PATH or "
        "postgresql://USER@HOST/DB"
    )


def create_read_engine(engine: Engine) -> Engine:
    """Return the engine for reads: autocommit, so a read costs one round trip.

    On SQLite this is `engine` itself (its reads skip BEGIN, see `read_options`).
    On PostgreSQL it is a second pool whose connections stay in autocommit:
    switching one pooled connection in and out of autocommit per read costs
    more than the SELECT it serves.
    """
    if engine.dialect.name == "sqlite":
        return engine
    return create_engine(engine.url, isolation_level="AUTOCOMMIT", **_POOL)


class _WriteQueue:
    """Writers of one database, served one at a time in the order they came.

    Reentrant: a thread that holds the turn (a nested write) is not made to wait
    for itself. Thread-safe.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiting: deque[tuple[threading.Lock, int]] = deque()
        self._holder: int | None = None
        self._depth = 0

    def wait_turn(self, timeout: float) -> bool:
        """Wait until this thread's turn; False if it did not come in `timeout` s."""
        me = threading.get_ident()
        with self._guard:
            if self._holder in (None, me):
                self._holder = me
                self._depth += 1
                return True
            gate = threading.Lock()
            gate.acquire()
            self._waiting.append((gate, me))
        if gate.acquire(timeout=timeout):
            return True
        with self._guard:
            if (gate, me) in self._waiting:
                self._waiting.remove((gate, me))
                return False
        # The turn was handed over just as the wait ran out: it is ours.
        return True

    def end_turn(self) -> None:
        """Give the turn to the longest waiter, or free it."""
        # Handing the turn straight to the next waiter (never freeing it in
        # between) is what keeps a newcomer from cutting in.
        with self._guard:
            self._depth -= 1
            if self._depth:
                return
            if not self._waiting:
                self._holder = None
                return
            gate, waiter = self._waiting.popleft()
            self._holder = waiter
            self._depth = 1
            gate.release()


def _make_private(db_path: str) -> None:
    """Create the SQLite file with mode 0600, or tighten it, before SQLite opens it.

    The file holds password hashes. SQLite gives its -wal and -shm files the mode
    of the database file, so one check here covers all three.
    """
    if db_path == ":memory:" or db_path.startswith("file:"):
        return
    try:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(db_path, flags, 0o600)
    except OSError:
        return  # SQLite reports a missing folder or permission problem itself.
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def read_options(engine: Engine) -> Mapping[str, object]:
    """Return the execution options for a read on `create_read_engine`'s engine."""
    return {_READ_OPTION: True} if engine.dialect.name == "sqlite" else {}


def _prepare_sqlite_connection(
    dbapi_connection: sqlite3.Connection, connection_record: ConnectionPoolEntry
) -> None:
    # Leave BEGIN to `_begin_sqlite`; the driver's own would start a reader.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin_sqlite(connection: Connection) -> None:
    options = connection.get_execution_options()
    if options.get(_READ_OPTION):
        return
    if options.get(WRITE_OPTION):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")

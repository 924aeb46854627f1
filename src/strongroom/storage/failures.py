"""Failed-login counts in the database, shared by every app process.

Implements `strongroom.auth.throttle.FailureCounts`. Each failure is one upsert
per key (PostgreSQL and SQLite both speak `INSERT ... ON CONFLICT DO UPDATE`),
so two processes counting the same key at once both count; the count restarts
from one when the last failure is older than the window. The same transaction
deletes rows that have aged out, through an index on their age, so the table
holds only keys that failed within the window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager

from sqlalchemy import Connection, Engine, case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from strongroom.storage._engine import transaction
from strongroom.storage._schema import login_failures

__all__ = ["DatabaseFailureCounts"]


class DatabaseFailureCounts:
    """Failure counts in the `login_failures` table. Thread- and process-safe."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._insert = (
            postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
        )

    def read(self, keys: Iterable[str]) -> Mapping[str, tuple[int, float]]:
        """Return the count and last failure time of each key that has any."""
        query = select(
            login_failures.c.key,
            login_failures.c.failures,
            login_failures.c.last_failure,
        ).where(login_failures.c.key.in_(list(keys)))
        with self._connect(write=False) as conn:
            rows = conn.execute(query).all()
        return {str(key): (int(n), float(last)) for key, n, last in rows}

    def add_failure(self, keys: Iterable[str], now: float, window: float) -> None:
        """Count one failure at `now` for each key, in one transaction."""
        table = login_failures
        with self._connect(write=True) as conn:
            for key in sorted(keys):  # one lock order for every process
                stmt = self._insert(table).values(key=key, failures=1, last_failure=now)
                fresh = case(
                    (table.c.last_failure < now - window, 1),
                    else_=table.c.failures + 1,
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[table.c.key],
                        set_={"failures": fresh, "last_failure": now},
                    )
                )
            conn.execute(delete(table).where(table.c.last_failure < now - window))

    def clear(self, key: str) -> None:
        """Forget a key's failures."""
        with self._connect(write=True) as conn:
            conn.execute(delete(login_failures).where(login_failures.c.key == key))

    def forgive(self, key: str) -> None:
        """Take back one failure of a key (never below zero)."""
        table = login_failures
        with self._connect(write=True) as conn:
            conn.execute(
                update(table)
                .where(table.c.key == key, table.c.failures > 0)
                .values(failures=table.c.failures - 1)
            )

    def _connect(self, *, write: bool) -> AbstractContextManager[Connection]:
        return transaction(self._engine, write=write, what="the login throttle table")

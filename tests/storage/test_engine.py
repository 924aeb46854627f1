"""The SQLite writers' queue of `storage._engine` (issue 7: load found starvation).

Under 64 clients writing at once, SQLite's own busy wait (a poll with growing
sleeps) let newcomers take the write lock ahead of a writer that had waited for
five seconds, which then failed with a 500. Writers of one process now queue in
arrival order; these tests pin that order and the queue's edges.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from strongroom.errors import StorageError
from strongroom.storage import _engine
from strongroom.storage._engine import create_store_engine, transaction, write_turn

# Bound of the polls below, which wait for a thread to join the queue.
JOIN_SECONDS = 10.0


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """An engine on a fresh SQLite file holding one table `t(name)`."""
    engine = create_store_engine(f"sqlite:///{tmp_path}/q.db")
    with transaction(engine, write=True, what="t") as conn:
        conn.execute(text("CREATE TABLE t (name TEXT)"))
    yield engine
    engine.dispose()


def test_writers_commit_in_the_order_they_asked(engine: Engine) -> None:
    """A writer that waits is served before one that came later (no cutting in)."""
    threads = []

    with transaction(engine, write=True, what="t") as conn:
        conn.execute(text("INSERT INTO t VALUES ('first')"))
        for waiting, name in enumerate(("early", "late"), start=1):
            threads.append(_start_writer(engine, name))
            _wait_for_waiters(engine, waiting)
    for thread in threads:
        thread.join()

    assert _names(engine) == ["first", "early", "late"]


def test_a_nested_write_turn_on_one_thread_does_not_wait_for_itself(
    engine: Engine,
) -> None:
    with write_turn(engine), write_turn(engine):
        inner_done = True

    assert inner_done


def test_a_writer_whose_turn_never_comes_gets_storage_error(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
    failures: list[BaseException] = []

    with write_turn(engine):
        thread = _start_writer(engine, "starved", failures)
        thread.join()

    assert [type(f) for f in failures] == [StorageError]


def test_the_queue_works_on_after_a_writer_gave_up(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
    with write_turn(engine):
        _start_writer(engine, "starved", []).join()

    with transaction(engine, write=True, what="t") as conn:
        conn.execute(text("INSERT INTO t VALUES ('after')"))

    assert _names(engine) == ["after"]


def _start_writer(
    engine: Engine, name: str, failures: list[BaseException] | None = None
) -> threading.Thread:
    def write() -> None:
        try:
            with transaction(engine, write=True, what="t") as conn:
                conn.execute(text("INSERT INTO t VALUES (:name)"), {"name": name})
        except StorageError as exc:
            if failures is None:
                raise
            failures.append(exc)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def _wait_for_waiters(engine: Engine, count: int) -> None:
    """Poll the queue of `engine`'s file until `count` writers wait in it."""
    path = os.path.abspath(str(engine.url.database))
    deadline = time.monotonic() + JOIN_SECONDS
    while True:
        queue = _engine._WRITE_QUEUES.get(path)
        if queue is not None and len(queue._waiting) >= count:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} writers did not queue in {JOIN_SECONDS} s")
        time.sleep(0.001)


def _names(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT name FROM t ORDER BY rowid"))
        return [row[0] for row in rows]

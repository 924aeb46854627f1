"""Start several calls at the same moment, for tests of limits under concurrency."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_together"]

T = TypeVar("T")
START_TIMEOUT_SECONDS = 30.0


def run_together(count: int, action: Callable[[int], T]) -> list[T]:
    """Call `action(0)` ... `action(count - 1)` on threads released at once.

    Returns the results in call order; the first exception a call raised is
    raised again once every thread has finished.
    """
    barrier = threading.Barrier(count, timeout=START_TIMEOUT_SECONDS)
    results: list[T | None] = [None] * count
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            results[n] = action(n)
        except BaseException as exc:  # collected, raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]

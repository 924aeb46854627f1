"""Login throttling: failed attempts slow down further attempts, never lock out.

Each failure is counted twice: for the user name tried and for the client
address. Once a key has `FREE_FAILURES` recent failures, it must wait before the
next attempt, twice as long after each further failure, up to `MAX_WAIT_SECONDS`.
A success clears the user name's count. Counts fade after `WINDOW_SECONDS`
without a failure, so nobody is locked out for good.

Known limit (issue #3 moves this into the database): the counts live in this
process, so several app processes each keep their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from strongroom.errors import TooManyRequestsError

__all__ = [
    "FREE_FAILURES",
    "MAX_WAIT_SECONDS",
    "WINDOW_SECONDS",
    "LoginThrottle",
]

# Five mistyped passwords in a row are human; the sixth starts the back-off.
FREE_FAILURES = 5
# The longest wait between two attempts for one key: slows an online guesser to
# under 100 guesses an hour per key without making a real user wait long.
MAX_WAIT_SECONDS = 60.0
# A key with no failure for this long starts again from zero.
WINDOW_SECONDS = 15 * 60.0
# Keys kept at most; past it the oldest-quiet keys are dropped first.
MAX_KEYS = 100_000


@dataclass
class _Record:
    failures: int
    last_failure: float


class LoginThrottle:
    """Decide whether a login attempt may proceed. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: dict[str, _Record] = {}
        self._lock = threading.Lock()

    def check(self, user_name: str, client: str) -> None:
        """Raise `TooManyRequestsError` (with `retry_after`) if a key must wait."""
        now = self._clock()
        with self._lock:
            wait = max(self._wait(f"user:{user_name}", now),
                       self._wait(f"addr:{client}", now))
        if wait > 0:
            raise TooManyRequestsError(
                "too many failed logins; wait before trying again", retry_after=wait
            )

    def failed(self, user_name: str, client: str) -> None:
        """Count one failed attempt for the name and the address."""
        now = self._clock()
        with self._lock:
            if len(self._records) >= MAX_KEYS:
                self._forget_oldest()
            for key in (f"user:{user_name}", f"addr:{client}"):
                record = self._records.get(key)
                if record is None or now - record.last_failure > WINDOW_SECONDS:
                    record = self._records[key] = _Record(0, now)
                record.failures += 1
                record.last_failure = now

    def succeeded(self, user_name: str) -> None:
        """Clear the name's count after a correct password."""
        with self._lock:
            self._records.pop(f"user:{user_name}", None)

    def _wait(self, key: str, now: float) -> float:
        record = self._records.get(key)
        if record is None or now - record.last_failure > WINDOW_SECONDS:
            return 0.0
        extra = record.failures - FREE_FAILURES
        if extra < 0:
            return 0.0
        delay = min(MAX_WAIT_SECONDS, 2.0 ** extra)
        return max(0.0, record.last_failure + delay - now)

    def _forget_oldest(self) -> None:
        by_age = sorted(self._records.items(), key=lambda kv: kv[1].last_failure)
        for key, _ in by_age[: len(by_age) // 2]:
            del self._records[key]

"""Login throttling: failed attempts slow down further attempts, never lock out.

Each attempt is counted twice: for the user name tried and for the client
address. Once a key has `FREE_FAILURES` recent failures, it must wait before the
next attempt, twice as long after each further failure, up to `MAX_WAIT_SECONDS`.
Counts fade after `WINDOW_SECONDS` without a failure, so nobody is locked out for
good. The name's count holds whatever the address (TOK-01: rotating addresses
must not reset it, and the right password waits too while a name is blocked).

An attempt is counted *before* its password is checked (`check`, then
`failed`), and given back by `succeeded`: a burst of parallel guesses all see
each other's counts instead of all passing the check while the slow hash runs.

Known limit: per-name counting lets one guesser keep a name waiting for as long
as it goes on guessing (one counted guess per `MAX_WAIT_SECONDS`); its owner
waits up to a minute per try meanwhile. Remembering the addresses a name last
logged in from, to let those through, would end that; it is not built yet.

Where the counts live is a `FailureCounts`: `MemoryFailureCounts` for one
process (and tests), or the database (`strongroom.storage.failures`), which every
app process shares, so running four workers does not give a guesser four times
the tries. Keys reach a store only as keyed digests (HMAC-SHA256 with a secret
derived from the token keys): people type passwords into the user name field,
and neither the clear text nor a plain hash, which a password list would undo,
may be stored.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from strongroom.errors import TooManyRequestsError

__all__ = [
    "FREE_FAILURES",
    "MAX_WAIT_SECONDS",
    "THROTTLE_KEY_PURPOSE",
    "WINDOW_SECONDS",
    "FailureCounts",
    "LoginThrottle",
    "MemoryFailureCounts",
]

# Five mistyped passwords in a row are human; the sixth starts the back-off.
FREE_FAILURES = 5
# The longest wait between two attempts for one key: slows an online guesser to
# under 100 guesses an hour per key without making a real user wait long.
MAX_WAIT_SECONDS = 60.0
# A key with no failure for this long starts again from zero.
WINDOW_SECONDS = 15 * 60.0
# What the key of every throttle sharing the database is derived for
# (`KeySet.secret_for`): each app process then computes the same digests.
THROTTLE_KEY_PURPOSE = "login throttle"
# Keys a memory store keeps at most; past it the oldest-quiet keys go first.
MAX_KEYS = 100_000


class FailureCounts(Protocol):
    """Recent failures per key: (count, time of the last failure, Unix seconds)."""

    def read(self, keys: Iterable[str]) -> Mapping[str, tuple[int, float]]:
        """Return the count and last failure time of each key that has any."""
        ...

    def add_failure(self, keys: Iterable[str], now: float, window: float) -> None:
        """Count one failure at `now` for each key; a count older than `window`
        starts again from one."""
        ...

    def clear(self, key: str) -> None:
        """Forget a key's failures."""
        ...

    def forgive(self, key: str) -> None:
        """Take back one failure of a key (never below zero)."""
        ...


class LoginThrottle:
    """Decide whether a login attempt may proceed. Thread-safe if its store is."""

    def __init__(
        self,
        counts: FailureCounts | None = None,
        clock: Callable[[], float] = time.time,
        *,
        key: bytes | None = None,
    ) -> None:
        """Keep counts in `counts` (default: this process's memory).

        `clock` is wall-clock seconds: stores shared between processes compare
        the times that different processes wrote. `key` keys the digests of
        names and addresses; throttles sharing a store must share it
        (`KeySet.secret_for`). Without one, a random key of this throttle's own.
        """
        self._counts = counts if counts is not None else MemoryFailureCounts()
        self._clock = clock
        self._key = key if key is not None else secrets.token_bytes(32)

    def check(self, user_name: str, client: str) -> None:
        """Raise `TooManyRequestsError` (with `retry_after`) if a key must wait."""
        now = self._clock()
        found = self._counts.read(self._keys(user_name, client))
        wait = max((_wait(*entry, now) for entry in found.values()), default=0.0)
        if wait > 0:
            raise TooManyRequestsError(
                "too many failed logins; wait before trying again", retry_after=wait
            )

    def failed(self, user_name: str, client: str) -> None:
        """Count one attempt as failed (before its password is even checked)."""
        keys = self._keys(user_name, client)
        self._counts.add_failure(keys, self._clock(), WINDOW_SECONDS)

    def succeeded(self, user_name: str, client: str) -> None:
        """Give back a counted attempt whose password was right.

        The name's count starts again; the address only gets this one attempt
        back, so a guesser who also holds one valid account cannot wipe its
        own count with it.
        """
        user_key, address_key = self._keys(user_name, client)
        self._counts.clear(user_key)
        self._counts.forgive(address_key)

    def _keys(self, user_name: str, client: str) -> tuple[str, str]:
        return self._digest("user", user_name), self._digest("addr", client)

    def _digest(self, kind: str, value: str) -> str:
        raw = f"{kind}\x00{value}".encode("utf-8", "surrogatepass")
        return hmac.digest(self._key, raw, "sha256").hex()


class MemoryFailureCounts:
    """Failure counts in this process only. Thread-safe; bounded to `MAX_KEYS`."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def read(self, keys: Iterable[str]) -> Mapping[str, tuple[int, float]]:
        """Return the count and last failure time of each key that has any."""
        with self._lock:
            return {k: self._records[k] for k in keys if k in self._records}

    def add_failure(self, keys: Iterable[str], now: float, window: float) -> None:
        """Count one failure at `now` for each key."""
        with self._lock:
            if len(self._records) >= MAX_KEYS:
                self._forget_oldest()
            for key in keys:
                failures, last = self._records.get(key, (0, now))
                if now - last > window:
                    failures = 0
                self._records[key] = (failures + 1, now)

    def clear(self, key: str) -> None:
        """Forget a key's failures."""
        with self._lock:
            self._records.pop(key, None)

    def forgive(self, key: str) -> None:
        """Take back one failure of a key (never below zero)."""
        with self._lock:
            if key in self._records:
                failures, last = self._records[key]
                self._records[key] = (max(0, failures - 1), last)

    def _forget_oldest(self) -> None:
        by_age = sorted(self._records.items(), key=lambda kv: kv[1][1])
        for key, _ in by_age[: len(by_age) // 2]:
            del self._records[key]


def _wait(failures: int, last_failure: float, now: float) -> float:
    if now - last_failure > WINDOW_SECONDS:
        return 0.0
    extra = failures - FREE_FAILURES
    if extra < 0:
        return 0.0
    delay = min(MAX_WAIT_SECONDS, 2.0**extra)
    return max(0.0, last_failure + delay - now)

"""Failed-login counts in the database: shared, atomic, fading, never in clear."""

from __future__ import annotations

import hashlib
import threading

import pytest
from sqlalchemy import select

from strongroom.auth.throttle import FREE_FAILURES, WINDOW_SECONDS, LoginThrottle
from strongroom.errors import TooManyRequestsError
from strongroom.storage import MetadataStore, open_metadata_store
from strongroom.storage._schema import login_failures

NOW = 1_800_000_000.0


def test_failures_count_up_per_key(store: MetadataStore) -> None:
    counts = store.login_failures

    for step in range(3):
        counts.add_failure(["a", "b"], NOW + step, WINDOW_SECONDS)
    counts.add_failure(["a"], NOW + 3, WINDOW_SECONDS)

    assert counts.read(["a", "b", "c"]) == {"a": (4, NOW + 3), "b": (3, NOW + 2)}


def test_a_count_older_than_the_window_starts_again(store: MetadataStore) -> None:
    counts = store.login_failures
    for _ in range(4):
        counts.add_failure(["a"], NOW, WINDOW_SECONDS)

    later = NOW + WINDOW_SECONDS + 1
    counts.add_failure(["a"], later, WINDOW_SECONDS)

    assert counts.read(["a"]) == {"a": (1, later)}


def test_rows_past_the_window_are_deleted_by_later_failures(
    store: MetadataStore,
) -> None:
    counts = store.login_failures
    counts.add_failure(["old"], NOW, WINDOW_SECONDS)

    counts.add_failure(["new"], NOW + WINDOW_SECONDS + 1, WINDOW_SECONDS)

    assert set(counts.read(["old", "new"])) == {"new"}


def test_forgive_takes_back_one_failure_and_never_goes_below_zero(
    store: MetadataStore,
) -> None:
    counts = store.login_failures
    counts.add_failure(["a"], NOW, WINDOW_SECONDS)
    counts.add_failure(["a"], NOW, WINDOW_SECONDS)

    counts.forgive("a")
    once = counts.read(["a"])["a"][0]
    counts.forgive("a")
    counts.forgive("a")

    assert once == 1
    assert counts.read(["a"])["a"][0] == 0


def test_clear_forgets_one_key(store: MetadataStore) -> None:
    counts = store.login_failures
    counts.add_failure(["a", "b"], NOW, WINDOW_SECONDS)

    counts.clear("a")

    assert set(counts.read(["a", "b"])) == {"b"}


def test_concurrent_failures_are_all_counted(store: MetadataStore) -> None:
    counts = store.login_failures
    threads = [
        threading.Thread(
            target=lambda: [
                counts.add_failure(["k"], NOW, WINDOW_SECONDS) for _ in range(10)
            ]
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert counts.read(["k"])["k"][0] == 80


def test_two_throttles_on_one_database_share_the_counts(
    store: MetadataStore, database_url: str
) -> None:
    """What two app processes see: one's failures slow the other's logins."""
    other = open_metadata_store(database_url)
    try:
        # Both derive one key from the same key files (KeySet.secret_for).
        key = b"k" * 32
        first = LoginThrottle(store.login_failures, clock=lambda: NOW, key=key)
        second = LoginThrottle(other.login_failures, clock=lambda: NOW, key=key)
        for _ in range(FREE_FAILURES + 1):
            first.failed("alice", "10.0.0.1")

        with pytest.raises(TooManyRequestsError):
            second.check("alice", "10.9.9.9")
    finally:
        other.close()


def test_no_user_name_or_address_is_stored_in_clear(store: MetadataStore) -> None:
    throttle = LoginThrottle(store.login_failures, clock=lambda: NOW)

    throttle.failed("my-secret-password-typed-as-name", "192.0.2.7")

    with store._engine.connect() as conn:
        keys = conn.execute(select(login_failures.c.key)).scalars().all()
    assert len(keys) == 2  # the name's key and the address's
    assert all(len(key) == 64 and "secret" not in key for key in keys)
    # Nor as a plain hash, which a password list would undo offline.
    plain = {
        hashlib.sha256(f"{kind}\x00{value}".encode()).hexdigest()
        for kind, value in (("user", "my-secret-password-typed-as-name"),
                            ("addr", "192.0.2.7"))
    }
    assert not plain & set(keys)


def test_throttles_with_other_keys_count_apart(store: MetadataStore) -> None:
    # A key derived from other key files (another deployment) shares nothing.
    first = LoginThrottle(store.login_failures, clock=lambda: NOW, key=b"a" * 32)
    second = LoginThrottle(store.login_failures, clock=lambda: NOW, key=b"b" * 32)
    for _ in range(FREE_FAILURES + 1):
        first.failed("alice", "10.0.0.1")

    second.check("alice", "10.0.0.1")  # does not raise
    with pytest.raises(TooManyRequestsError):
        first.check("alice", "10.0.0.1")

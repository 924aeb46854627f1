"""Sessions and refresh-token rotation, on SQLite and PostgreSQL (issue 3)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Protocol

import pytest
from sqlalchemy import select

from strongroom.storage import MetadataStore, User
from strongroom.storage._schema import refresh_tokens, sessions
from strongroom.storage.sessions import RefreshOutcome

DAY = 24 * 3600
ABSOLUTE = 30 * DAY
IDLE = 7 * DAY


class FakeClock(Protocol):
    """The `clock` fixture of tests/storage/conftest.py."""

    def advance(self, seconds: float = 1.0) -> datetime: ...


def digest(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
def alice(store: MetadataStore) -> int:
    return store.add_user("alice", "hash").id


@pytest.fixture
def session_id(store: MetadataStore, alice: int) -> str:
    return store.sessions.start(
        user_of(store, alice), digest("r1"), scope="files:read",
        absolute_seconds=ABSOLUTE, idle_seconds=IDLE,
    )


def user_of(store: MetadataStore, user_id: int) -> User:
    user = store.get_user_by_id(user_id)
    assert user is not None
    return user


def rotate(store: MetadataStore, old: str, new: str) -> RefreshOutcome:
    return store.sessions.rotate(digest(old), digest(new), idle_seconds=IDLE).outcome


def is_live(store: MetadataStore, user_id: int, session_id: str) -> bool:
    return store.get_user_in_session(user_id, session_id)[1]


def test_a_new_session_is_live_for_its_user_only(
    store: MetadataStore, alice: int, session_id: str
) -> None:
    bob = store.add_user("bob", "hash").id

    assert is_live(store, alice, session_id)
    assert not is_live(store, bob, session_id)
    assert not is_live(store, alice, "no-such-session-id")


def test_rotation_spends_the_old_token_and_the_successor_works(
    store: MetadataStore, alice: int, session_id: str
) -> None:
    result = store.sessions.rotate(digest("r1"), digest("r2"), idle_seconds=IDLE)

    assert result.outcome is RefreshOutcome.ROTATED
    assert (result.session_id, result.user_id) == (session_id, alice)
    assert rotate(store, "r2", "r3") is RefreshOutcome.ROTATED


def test_reuse_revokes_the_whole_family(
    store: MetadataStore, alice: int, session_id: str
) -> None:
    rotate(store, "r1", "r2")

    assert rotate(store, "r1", "x") is RefreshOutcome.REUSED
    assert not is_live(store, alice, session_id)
    assert rotate(store, "r2", "r3") is RefreshOutcome.EXPIRED


def test_an_unknown_token_is_unknown_and_revokes_nothing(
    store: MetadataStore, alice: int, session_id: str
) -> None:
    assert rotate(store, "never-issued", "x") is RefreshOutcome.UNKNOWN
    assert is_live(store, alice, session_id)


def test_a_token_idle_too_long_is_refused(
    store: MetadataStore, clock: FakeClock, session_id: str
) -> None:
    clock.advance(IDLE + 1)

    assert rotate(store, "r1", "r2") is RefreshOutcome.EXPIRED


def test_rotation_moves_the_idle_end_forward(
    store: MetadataStore, clock: FakeClock, session_id: str
) -> None:
    clock.advance(IDLE - 60)
    rotate(store, "r1", "r2")
    clock.advance(IDLE - 60)

    assert rotate(store, "r2", "r3") is RefreshOutcome.ROTATED


def test_the_absolute_end_holds_however_often_it_is_refreshed(
    store: MetadataStore, clock: FakeClock, session_id: str
) -> None:
    outcomes = []
    for step in range(4):
        clock.advance(IDLE - 60)
        outcomes.append(rotate(store, f"r{step + 1}", f"r{step + 2}"))
    clock.advance(3 * DAY)

    assert outcomes == [RefreshOutcome.ROTATED] * 4
    assert rotate(store, "r5", "r6") is RefreshOutcome.EXPIRED


def test_revoke_ends_the_session_and_its_refresh_tokens(
    store: MetadataStore, alice: int, session_id: str
) -> None:
    assert store.sessions.revoke(session_id, alice)

    assert not is_live(store, alice, session_id)
    assert rotate(store, "r1", "r2") is RefreshOutcome.EXPIRED


def test_a_user_cannot_revoke_another_users_session(
    store: MetadataStore, alice: int, session_id: str
) -> None:
    bob = store.add_user("bob", "hash").id

    assert not store.sessions.revoke(session_id, bob)
    assert is_live(store, alice, session_id)


def test_removing_a_user_removes_their_sessions(
    store: MetadataStore, alice: int, session_id: str
) -> None:
    store.remove_user(alice)

    assert rotate(store, "r1", "r2") is RefreshOutcome.UNKNOWN


def test_a_login_deletes_the_users_sessions_past_their_end(
    store: MetadataStore, clock: FakeClock, alice: int, session_id: str
) -> None:
    clock.advance(ABSOLUTE + 1)

    store.sessions.start(
        user_of(store, alice), digest("later"), scope="files:read",
        absolute_seconds=ABSOLUTE, idle_seconds=IDLE,
    )

    with store._engine.connect() as conn:
        left = conn.execute(select(sessions.c.id)).scalars().all()
        tokens = conn.execute(select(refresh_tokens.c.token_hash)).scalars().all()
    assert session_id not in left and len(left) == 1
    assert tokens == [digest("later")]


def test_a_revoked_session_stays_until_its_end_so_reuse_is_still_seen(
    store: MetadataStore, alice: int, session_id: str
) -> None:
    assert rotate(store, "r1", "r2") is RefreshOutcome.ROTATED
    store.sessions.revoke(session_id, alice)
    store.sessions.start(
        user_of(store, alice), digest("other"), scope="files:read",
        absolute_seconds=ABSOLUTE, idle_seconds=IDLE,
    )

    assert rotate(store, "r1", "r3") is RefreshOutcome.REUSED


@pytest.mark.parametrize(
    "change",
    [lambda s, uid: s.set_password(uid, "new-hash"),
     lambda s, uid: s.revoke_tokens(uid),
     lambda s, uid: s.set_active(uid, False)],
    ids=["password-changed", "tokens-revoked", "disabled"],
)
def test_no_session_opens_for_an_account_changed_since_the_login_checked_it(
    store: MetadataStore, clock: FakeClock, alice: int, change: object
) -> None:
    """The race of a login hashing the old password while the password changes."""
    checked = user_of(store, alice)
    clock.advance()
    change(store, alice)  # type: ignore[operator]

    opened = store.sessions.start(
        checked, digest("late"), scope="files:read",
        absolute_seconds=ABSOLUTE, idle_seconds=IDLE,
    )

    assert opened is None
    assert rotate(store, "late", "next") is RefreshOutcome.UNKNOWN


def test_a_rehash_never_overwrites_a_password_changed_meanwhile(
    store: MetadataStore, alice: int
) -> None:
    stale = user_of(store, alice)
    store.set_password(alice, "changed-hash")

    assert store.rehash_password(alice, stale.password_hash, "rehash") is None
    assert user_of(store, alice).password_hash == "changed-hash"
    fresh = store.rehash_password(alice, "changed-hash", "rehash")
    assert fresh is not None and fresh.password_hash == "rehash"

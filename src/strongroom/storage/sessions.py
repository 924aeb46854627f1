"""Login sessions and their refresh tokens, in the metadata database.

A session (a refresh-token family) is created at login with an absolute end;
each refresh token in it has an idle end. The store only ever sees the sha256
of a refresh token, never the token.

Design note: rotation must hand out at most one successor per refresh token,
even when two processes receive the same token at once. Reading the row, then
marking it used, lets both readers pass. Here the claim is one conditional
UPDATE (`WHERE token_hash = :old AND NOT used AND not idle-expired AND the
session is live`): the database serialises the two, the first changes one row,
the second changes none and finds the row used, which is the reuse (theft)
signal, so it revokes the whole session. Nothing else is read before the claim.
We do not delete used rows while their session lives: they are what makes a
replay recognisable.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import (
    Connection,
    Engine,
    Update,
    and_,
    bindparam,
    delete,
    exists,
    insert,
    select,
    update,
)

from strongroom.storage._engine import transaction
from strongroom.storage._schema import refresh_tokens, sessions, users
from strongroom.storage.records import User

__all__ = ["RefreshOutcome", "RefreshResult", "SessionStore"]


class RefreshOutcome(Enum):
    """What a refresh attempt found."""

    ROTATED = "rotated"
    UNKNOWN = "unknown"  # no such token
    EXPIRED = "expired"  # idle or absolute end passed, or the session was revoked
    REUSED = "reused"  # already used: the session is now revoked


@dataclass(frozen=True, slots=True)
class RefreshResult:
    """The outcome of `SessionStore.rotate`; ids are None for an unknown token."""

    outcome: RefreshOutcome
    session_id: str | None = None
    user_id: int | None = None
    scope: str = ""


class SessionStore:
    """Create, rotate and revoke sessions. Thread- and multi-process-safe.

    Built by `MetadataStore` on its engine; reach it as `MetadataStore.sessions`.
    Every method raises StorageError when the database fails.
    """

    def __init__(self, engine: Engine, now: Callable[[], datetime]) -> None:
        self._engine = engine
        self._now = now

    def start(
        self,
        user: User,
        token_hash: str,
        *,
        scope: str,
        absolute_seconds: int,
        idle_seconds: int,
    ) -> str | None:
        """Open a session for `user` with its first refresh token; return its id.

        `user` is the account as the login checked it. The session is opened
        only if the account is unchanged since (same password hash, no
        revocation since, still active), checked under the user row's lock in
        the same transaction: a password change that commits while a login
        with the old password is hashing must not leave that login a session.
        Returns None when the account changed.

        `scope` (space-separated) is what every token of the session may do. The
        user's sessions past their absolute end are deleted in the same
        transaction (through the user index), so the tables hold only sessions
        that could still matter; revoked ones stay until then, so a late reuse
        of their refresh tokens is still recognised and logged.
        """
        now = self._now()
        session_id = secrets.token_urlsafe(16)
        user_id = user.id

        with self._write() as conn:
            checked_columns = (
                users.c.password_hash, users.c.tokens_valid_after, users.c.active
            )
            current = conn.execute(
                select(*checked_columns)
                .where(users.c.id == user_id)
                .with_for_update()
            ).first()
            if current is None or tuple(current) != (
                user.password_hash, user.tokens_valid_after, True
            ):
                return None
            conn.execute(
                delete(sessions).where(
                    sessions.c.user_id == user_id, sessions.c.expires_at < now
                )
            )
            conn.execute(
                insert(sessions).values(
                    id=session_id,
                    user_id=user_id,
                    created=now,
                    expires_at=now + timedelta(seconds=absolute_seconds),
                    revoked=False,
                    scope=scope,
                )
            )
            _add_token(conn, session_id, token_hash, now, idle_seconds)
        return session_id

    def rotate(
        self, old_hash: str, new_hash: str, *, idle_seconds: int
    ) -> RefreshResult:
        """Spend the refresh token `old_hash` and store `new_hash` as its successor.

        At most one call per `old_hash` ever gets ROTATED. A call on a used token
        revokes its session (all its refresh and access tokens) and gets REUSED.
        """
        now = self._now()

        with self._write() as conn:
            claimed = conn.execute(_claim(old_hash, now)).rowcount == 1
            found = conn.execute(_FAMILY_OF, {"token_hash": old_hash}).first()
            if found is None:
                return RefreshResult(RefreshOutcome.UNKNOWN)
            session_id, user_id = found.session_id, found.user_id
            if claimed:
                _add_token(conn, session_id, new_hash, now, idle_seconds)
                outcome = RefreshOutcome.ROTATED
            elif found.used:
                _revoke(conn, session_id)
                outcome = RefreshOutcome.REUSED
            else:
                outcome = RefreshOutcome.EXPIRED
        return RefreshResult(outcome, session_id, user_id, found.scope)

    def revoke(self, session_id: str, user_id: int) -> bool:
        """Revoke the session if it is `user_id`'s; return whether it was live."""
        with self._write() as conn:
            result = conn.execute(
                update(sessions)
                .where(
                    sessions.c.id == session_id,
                    sessions.c.user_id == user_id,
                    sessions.c.revoked.is_(False),
                )
                .values(revoked=True)
            )
            return result.rowcount == 1

    def _write(self) -> AbstractContextManager[Connection]:
        return transaction(self._engine, write=True, what="the session table")


_FAMILY_OF = (
    select(
        refresh_tokens.c.session_id,
        refresh_tokens.c.used,
        sessions.c.user_id,
        sessions.c.scope,
    )
    .join(sessions, sessions.c.id == refresh_tokens.c.session_id)
    .where(refresh_tokens.c.token_hash == bindparam("token_hash"))
)


def _claim(old_hash: str, now: datetime) -> Update:
    live_session = exists().where(
        and_(
            sessions.c.id == refresh_tokens.c.session_id,
            sessions.c.revoked.is_(False),
            sessions.c.expires_at > now,
        )
    )
    return (
        update(refresh_tokens)
        .where(
            refresh_tokens.c.token_hash == old_hash,
            refresh_tokens.c.used.is_(False),
            refresh_tokens.c.idle_expires_at > now,
            live_session,
        )
        .values(used=True)
    )


def _add_token(
    conn: Connection, session_id: str, token_hash: str, now: datetime, idle: int
) -> None:
    conn.execute(
        insert(refresh_tokens).values(
            token_hash=token_hash,
            session_id=session_id,
            idle_expires_at=now + timedelta(seconds=idle),
            used=False,
        )
    )


def _revoke(conn: Connection, session_id: str) -> None:
    conn.execute(
        update(sessions).where(sessions.c.id == session_id).values(revoked=True)
    )

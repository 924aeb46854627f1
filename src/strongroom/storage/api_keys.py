"""API key rows: create, list, revoke, and the per-request lookup with its user.

Built by `MetadataStore` on its engine; reach it as `MetadataStore.api_keys`.
Only the SHA-256 of a key's secret is stored (see `strongroom.auth.api_keys`).
Every method raises StorageError when the database fails.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, insert, select, update

from strongroom.storage._engine import transaction
from strongroom.storage._schema import api_keys, users
from strongroom.storage.records import User

__all__ = ["MAX_KEYS_PER_USER", "ApiKey", "ApiKeyStore"]

# Keys one account may hold at once (revoked ones do not count): enough for
# every script a person runs, few enough that listing them stays one page.
MAX_KEYS_PER_USER = 50


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key as stored; `secret_hash` is left out of `repr`."""

    id: str
    user_id: int
    name: str
    scope: str
    created: datetime
    expires_at: datetime | None
    revoked: bool
    secret_hash: str = field(default="", repr=False)


class ApiKeyStore:
    """API keys in the `api_keys` table. Thread- and multi-process-safe."""

    def __init__(self, engine: Engine, now: Callable[[], datetime]) -> None:
        self._engine = engine
        self._now = now

    def add(
        self,
        user_id: int,
        key_id: str,
        secret_hash: str,
        *,
        name: str,
        scope: str,
        expires_at: datetime | None,
    ) -> ApiKey | None:
        """Store a new key; None when the user already holds MAX_KEYS_PER_USER."""
        key = ApiKey(key_id, user_id, name, scope, self._now(), expires_at, False,
                     secret_hash)
        with self._connect(write=True) as conn:
            live = conn.execute(
                select(api_keys.c.id).where(
                    api_keys.c.user_id == user_id, api_keys.c.revoked.is_(False)
                )
            ).all()
            if len(live) >= MAX_KEYS_PER_USER:
                return None
            conn.execute(insert(api_keys).values(_values(key)))
        return key

    def list_for(self, user_id: int) -> list[ApiKey]:
        """Return the user's keys that are not revoked, newest first."""
        query = (
            select(api_keys)
            .where(api_keys.c.user_id == user_id, api_keys.c.revoked.is_(False))
            .order_by(api_keys.c.created.desc())
        )
        with self._connect(write=False) as conn:
            return [ApiKey(**row._asdict()) for row in conn.execute(query)]

    def revoke(self, user_id: int, key_id: str) -> bool:
        """Revoke one of the user's keys; return whether it was live."""
        with self._connect(write=True) as conn:
            result = conn.execute(
                update(api_keys)
                .where(
                    api_keys.c.id == key_id,
                    api_keys.c.user_id == user_id,
                    api_keys.c.revoked.is_(False),
                )
                .values(revoked=True)
            )
            return result.rowcount == 1

    def lookup(self, key_id: str) -> tuple[ApiKey, User] | None:
        """Return a key with its user, in one indexed query, or None."""
        query = select(api_keys, *_USER_COLUMNS).join(
            users, users.c.id == api_keys.c.user_id
        ).where(api_keys.c.id == key_id)
        with self._connect(write=False) as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        values = row._asdict()
        user = User(**{c.name: values.pop(f"u_{c.name}") for c in users.columns})
        return ApiKey(**values), user

    def _connect(self, *, write: bool) -> AbstractContextManager[Connection]:
        return transaction(self._engine, write=write, what="the API key table")


_USER_COLUMNS = [column.label(f"u_{column.name}") for column in users.columns]


def _values(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "user_id": key.user_id,
        "name": key.name,
        "secret_hash": key.secret_hash,
        "scope": key.scope,
        "created": key.created,
        "expires_at": key.expires_at,
        "revoked": key.revoked,
    }

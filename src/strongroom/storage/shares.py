"""Share links in storage: their rows, and reaching what a link names.

`ShareStore` keeps the rows: create, look up (one primary-key query joined with
the owner), list, revoke, and count a download. Reaching the shared object
(`identify_target`, `open_shared_file`, `open_shared_folder`) lives in
`storage._share_targets`, whose notes say how a link stays inside what it
shares and when it dies with its target.
"""

from __future__ import annotations

import secrets
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, Row, bindparam, insert, select, update

from strongroom.storage._engine import transaction
from strongroom.storage._schema import shares, users
from strongroom.storage._share_targets import (
    SHARE_GONE,
    SharedFolder,
    ShareKind,
    ShareTarget,
    identify_target,
    open_shared_file,
    open_shared_folder,
)
from strongroom.storage.metadata import MetadataStore

__all__ = [
    "MAX_LISTED_SHARES",
    "SHARE_GONE",
    "ShareKind",
    "ShareOwner",
    "ShareRecord",
    "ShareStore",
    "ShareTarget",
    "SharedFolder",
    "identify_target",
    "open_shared_file",
    "open_shared_folder",
]

# A user's listing shows this many shares at most, newest first: links live a
# year at the very most, and a page this size is still a few hundred KiB.
MAX_LISTED_SHARES = 1000


@dataclass(frozen=True, slots=True)
class ShareOwner:
    """Who made a share, as the space registry needs to know it."""

    id: int
    name: str
    role: str
    active: bool


@dataclass(frozen=True, slots=True)
class ShareRecord:
    """One share row with its owner; the password hash is left out of `repr`."""

    id: str
    owner: ShareOwner
    target: ShareTarget
    password_hash: str | None = field(repr=False)
    max_downloads: int | None
    downloads: int
    created: datetime
    expires_at: datetime
    revoked: bool

    @property
    def has_password(self) -> bool:
        """Whether the link asks for a password."""
        return self.password_hash is not None

    def is_live(self, now: datetime) -> bool:
        """Whether the link still serves: not revoked, expired or used up."""
        used_up = self.max_downloads is not None and (
            self.downloads >= self.max_downloads
        )
        return not self.revoked and now < self.expires_at and not used_up


class ShareStore:
    """Share rows in SQLite or PostgreSQL. Thread- and multi-process-safe.

    Every method raises `StorageError` when the database fails. The table is
    created with the others by `MetadataStore.create_tables`.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def of(cls, meta: MetadataStore) -> ShareStore:
        """Return the share store on the metadata store's own database engine.

        Never a second engine for the same database: opening the SQLite file
        again and closing that descriptor drops the POSIX locks SQLite holds
        through the first engine's connections (fcntl locks belong to the
        process, not the descriptor), and readers then miss other processes'
        writes. The caller closes `meta`, which closes the engine.
        """
        return cls(meta.engine)

    def create(
        self,
        owner: ShareOwner,
        target: ShareTarget,
        *,
        password_hash: str | None,
        max_downloads: int | None,
        created: datetime,
        expires_at: datetime,
    ) -> ShareRecord:
        """Store a new share with a fresh random id and return it."""
        record = ShareRecord(
            id=secrets.token_urlsafe(16),
            owner=owner,
            target=target,
            password_hash=password_hash,
            max_downloads=max_downloads,
            downloads=0,
            created=created,
            expires_at=expires_at,
            revoked=False,
        )
        with self._connect(write=True) as conn:
            conn.execute(insert(shares).values(_values_of(record)))
        return record

    def get(self, share_id: str) -> ShareRecord | None:
        """Return the share with this id and its owner, or None (one query)."""
        with self._connect(write=False) as conn:
            row = conn.execute(_SHARE_BY_ID, {"share_id": share_id}).first()
        return _record_of(row) if row is not None else None

    def list_for(self, owner_id: int) -> list[ShareRecord]:
        """Return the owner's shares, newest first, at most `MAX_LISTED_SHARES`."""
        query = (
            _SHARES_WITH_OWNER.where(shares.c.owner_id == owner_id)
            .order_by(shares.c.created.desc(), shares.c.id)
            .limit(MAX_LISTED_SHARES)
        )
        with self._connect(write=False) as conn:
            rows = conn.execute(query).all()
        return [_record_of(row) for row in rows]

    def revoke(self, owner_id: int, share_id: str) -> bool:
        """Revoke the owner's share; return False when the owner has none by that id.

        Revoking twice is fine: the second call changes nothing and returns True.
        """
        query = (
            update(shares)
            .where(shares.c.id == share_id, shares.c.owner_id == owner_id)
            .values(revoked=True)
        )
        with self._connect(write=True) as conn:
            return conn.execute(query).rowcount == 1

    def count_download(self, share_id: str, now: datetime) -> bool:
        """Count one download if the share still allows it; return whether it did.

        Design note: reading the counter and then raising it would let two
        concurrent downloads both read "2 of 3" and both pass. Here the check
        and the increment are one conditional UPDATE (`downloads < max_downloads`,
        not revoked, not expired); the database serialises the updates, so at
        most `max_downloads` of them ever change a row, in every process.
        """
        query = (
            update(shares)
            .where(
                shares.c.id == share_id,
                shares.c.revoked.is_(False),
                shares.c.expires_at > now,
                (shares.c.max_downloads.is_(None))
                | (shares.c.downloads < shares.c.max_downloads),
            )
            .values(downloads=shares.c.downloads + 1)
        )
        with self._connect(write=True) as conn:
            return conn.execute(query).rowcount == 1

    def _connect(self, *, write: bool) -> AbstractContextManager[Connection]:
        return transaction(self._engine, write=write, what="the share table")


_SHARES_WITH_OWNER = select(
    shares,
    users.c.name.label("owner_name"),
    users.c.role.label("owner_role"),
    users.c.active.label("owner_active"),
).join(users, users.c.id == shares.c.owner_id)
_SHARE_BY_ID = _SHARES_WITH_OWNER.where(shares.c.id == bindparam("share_id"))


def _values_of(record: ShareRecord) -> dict[str, object]:
    target = record.target
    return {
        "id": record.id,
        "owner_id": record.owner.id,
        "space": target.space,
        "rel_path": target.rel_path,
        "kind": target.kind,
        "target": target.identity,
        "password_hash": record.password_hash,
        "max_downloads": record.max_downloads,
        "downloads": record.downloads,
        "created": record.created,
        "expires_at": record.expires_at,
        "revoked": record.revoked,
    }


def _record_of(row: Row[tuple[object, ...]]) -> ShareRecord:
    values = row._asdict()
    kind: ShareKind = "file" if values["kind"] == "file" else "dir"
    return ShareRecord(
        id=str(values["id"]),
        owner=ShareOwner(
            id=int(values["owner_id"]),
            name=str(values["owner_name"]),
            role=str(values["owner_role"]),
            active=bool(values["owner_active"]),
        ),
        target=ShareTarget(
            str(values["space"]), str(values["rel_path"]), kind,
            str(values["target"]),
        ),
        password_hash=values["password_hash"],
        max_downloads=values["max_downloads"],
        downloads=int(values["downloads"]),
        created=values["created"],
        expires_at=values["expires_at"],
        revoked=bool(values["revoked"]),
    )

"""The rows of resumable uploads (`_schema.uploads`), in SQLAlchemy Core.

Every statement that changes a row is conditional on what its caller read, so
two processes sharing the database cannot both move an upload: `move` only
moves a row from the offset it was at, and `delete` of an expired upload only
deletes it while it is still expired.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy import Connection, Engine, Row, delete, func, insert, select, update

from strongroom.errors import UploadQuotaError
from strongroom.storage._engine import transaction
from strongroom.storage._schema import uploads, users

__all__ = ["UploadRecord", "UploadRows"]


@dataclass(frozen=True, slots=True)
class UploadRecord:
    """One upload's row. `received` is the tus offset; `metadata` the raw header."""

    id: str
    owner_id: int
    space: str
    rel_path: str
    length: int
    received: int
    metadata: str
    sha256: str | None
    created: datetime
    expires_at: datetime
    completed: datetime | None

    @property
    def is_complete(self) -> bool:
        """Whether the file was published (then `received == length`)."""
        return self.completed is not None

    def has_expired(self, now: datetime) -> bool:
        """Whether the upload is past its expiry and must be refused."""
        return now >= self.expires_at


class UploadRows:
    """Upload rows in SQLite or PostgreSQL; every method raises `StorageError`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, upload_id: str) -> UploadRecord | None:
        """Return the upload with this id, or None."""
        with self._connect(write=False) as conn:
            row = conn.execute(
                select(uploads).where(uploads.c.id == upload_id)
            ).first()
        return _record_of(row) if row is not None else None

    def insert(self, record: UploadRecord) -> None:
        """Store a new row as it is (a completed upload of 0 bytes)."""
        with self._connect() as conn:
            conn.execute(insert(uploads).values(_values_of(record)))

    def insert_within_bounds(
        self, record: UploadRecord, *, max_live: int, max_reserved_bytes: int
    ) -> None:
        """Store a new unfinished upload if its owner stays within the bounds.

        Counted are the owner's unfinished, unexpired uploads and the lengths
        they declared.

        Raises:
            UploadQuotaError: there are `max_live` of them already, or the new
                length would take their total past `max_reserved_bytes`.
        """
        live = select(
            func.count(), func.coalesce(func.sum(uploads.c.length), 0)
        ).where(
            uploads.c.owner_id == record.owner_id,
            uploads.c.completed.is_(None),
            uploads.c.expires_at > record.created,
        )
        with self._connect() as conn:
            # Lock the owner's row so two creations in two processes cannot
            # both pass the bound (SQLite serialises writers by itself).
            conn.execute(
                select(users.c.id)
                .where(users.c.id == record.owner_id)
                .with_for_update()
            )
            count, reserved = conn.execute(live).one()
            _check_bounds(record.length, int(count), int(reserved),
                          max_live, max_reserved_bytes)
            conn.execute(insert(uploads).values(_values_of(record)))

    def move(self, old: UploadRecord, new: UploadRecord) -> bool:
        """Set `new`'s offset, expiry and completion if the row is still at `old`'s.

        Returns False when the row is gone, complete, or at another offset.
        """
        query = (
            update(uploads)
            .where(
                uploads.c.id == old.id,
                uploads.c.received == old.received,
                uploads.c.completed.is_(None),
            )
            .values(received=new.received, expires_at=new.expires_at,
                    completed=new.completed)
        )
        with self._connect() as conn:
            return conn.execute(query).rowcount == 1

    def delete(self, upload_id: str, *, expired_at: datetime | None = None) -> bool:
        """Delete a row, only if expired at `expired_at` when given; say if it went."""
        query = delete(uploads).where(uploads.c.id == upload_id)
        if expired_at is not None:
            query = query.where(uploads.c.expires_at <= expired_at)
        with self._connect() as conn:
            return conn.execute(query).rowcount == 1

    def expired_ids(self, now: datetime, limit: int) -> list[str]:
        """Return up to `limit` ids of uploads expired at `now`, oldest first."""
        query = (
            select(uploads.c.id)
            .where(uploads.c.expires_at <= now)
            .order_by(uploads.c.expires_at)
            .limit(limit)
        )
        with self._connect(write=False) as conn:
            return list(conn.execute(query).scalars())

    def known_ids(self, upload_ids: list[str]) -> set[str]:
        """Return which of `upload_ids` have a row."""
        query = select(uploads.c.id).where(uploads.c.id.in_(upload_ids))
        with self._connect(write=False) as conn:
            return set(conn.execute(query).scalars())

    def _connect(self, *, write: bool = True) -> AbstractContextManager[Connection]:
        return transaction(self._engine, write=write, what="the upload table")


def _check_bounds(
    length: int, count: int, reserved: int, max_live: int, max_reserved_bytes: int
) -> None:
    if count >= max_live:
        raise UploadQuotaError(
            f"you have {count} unfinished uploads, the most allowed; finish or "
            "terminate one first"
        )
    if reserved + length > max_reserved_bytes:
        raise UploadQuotaError(
            f"this upload's {length} bytes and the {reserved} that your unfinished "
            f"uploads reserve pass the {max_reserved_bytes}-byte bound; finish or "
            "terminate some first"
        )


def _values_of(record: UploadRecord) -> dict[str, object]:
    values = {f.name: getattr(record, f.name) for f in fields(record)}
    values["tus_metadata"] = values.pop("metadata")
    return values


def _record_of(row: Row[tuple[object, ...]]) -> UploadRecord:
    m = row._mapping
    return UploadRecord(
        id=m["id"], owner_id=m["owner_id"], space=m["space"],
        rel_path=m["rel_path"], length=m["length"], received=m["received"],
        metadata=m["tus_metadata"], sha256=m["sha256"], created=m["created"],
        expires_at=m["expires_at"], completed=m["completed"],
    )

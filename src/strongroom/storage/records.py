"""Values that cross from the metadata store into other layers.

Each is a small frozen dataclass; none holds a database handle. Path fields are
normalised root-relative keys ("a/b/c.txt", never a leading slash).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

__all__ = ["ChildPage", "DirEntry", "FileRow", "PutResult", "Role", "User"]

Role = Literal["user", "admin"]


@dataclass(frozen=True, slots=True)
class User:
    """One account. `password_hash` is left out of `repr` so it never reaches a log.

    `tokens_valid_after`: access tokens issued before this instant are refused; it
    moves forward when the password changes.
    """

    id: int
    name: str
    password_hash: str = field(repr=False)
    role: Role
    active: bool
    created: datetime
    tokens_valid_after: datetime

    @property
    def is_admin(self) -> bool:
        """Whether the user has the admin role."""
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class FileRow:
    """A file in a home space: where the user sees it and which blob holds it."""

    id: int
    owner_id: int
    rel_path: str
    blob_id: str
    size: int
    sha256: str
    content_type: str
    created: datetime
    modified: datetime
    # The kind of damage `strongroom check --repair` found, or None.
    damage: str | None = None

    @property
    def name(self) -> str:
        """The last component of `rel_path`."""
        return self.rel_path.rpartition("/")[2]


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One child of a home-space directory, as a listing shows it.

    `size` is 0 for a directory; `modified` is a directory's creation time.
    """

    name: str
    kind: Literal["file", "dir"]
    size: int
    modified: datetime


@dataclass(frozen=True, slots=True)
class ChildPage:
    """One page of a directory listing, sorted by name (code point order).

    `next_cursor` is the last name on this page when more entries follow, to pass
    back as `cursor`; it is None on the last page.
    """

    entries: tuple[DirEntry, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class PutResult:
    """The outcome of `put_file`.

    `replaced_blob_id` is the blob of the file this one replaced, or None when the
    name was new; the caller deletes that blob once the transaction is committed.
    """

    file: FileRow
    replaced_blob_id: str | None

    @property
    def created(self) -> bool:
        """Whether the name was new (HTTP 201 rather than 200)."""
        return self.replaced_blob_id is None

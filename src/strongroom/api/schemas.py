"""JSON shapes of the API, as the OpenAPI document shows them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from strongroom.config import USER_NAME_PATTERN
from strongroom.storage.spaces import FileMeta

__all__ = [
    "ApiKeyIn",
    "ApiKeyOut",
    "AccountOut",
    "PasswordChangeIn",
    "PasswordSetIn",
    "SpacePolicyOut",
    "UserIn",
    "UserOut",
    "UserPatch",
    "EntryOut",
    "FileMetaOut",
    "ListOut",
    "MoveIn",
    "SpaceOut",
    "TokenOut",
    "iso_time",
]


class TokenOut(BaseModel):
    """A fresh access token and the refresh token of its session (RFC 6749, 5.1)."""

    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name)
    expires_in: int
    refresh_token: str
    scope: str = Field(description="The scopes granted, space-separated")


class AccountOut(BaseModel):
    """The caller's account and what the presented token may do."""

    name: str
    role: Literal["user", "admin"]
    scopes: list[str]
    used_bytes: int
    quota_bytes: int | None


class PasswordChangeIn(BaseModel):
    """A password change: the current password proves it is the account's owner."""

    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024)


class ApiKeyIn(BaseModel):
    """A new API key: a name, its scopes, its lifetime, and the account password.

    The password proves that a person, not a stolen access token, asks for a
    credential that outlives the session.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
    scope: str = Field(max_length=128, description="space-separated scopes")
    password: str = Field(max_length=1024, description="the account's password")
    expires_in_days: int = Field(default=90, ge=1, le=3650)


class ApiKeyOut(BaseModel):
    """An API key as listed; `key` is present only in the answer that made it."""

    id: str
    name: str
    scope: str
    created: str
    expires_at: str
    key: str | None = None


class UserOut(BaseModel):
    """One account, as an admin sees it."""

    name: str
    role: Literal["user", "admin"]
    active: bool
    created: str


class UserIn(BaseModel):
    """A new account."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=f"^{USER_NAME_PATTERN}$")
    password: str = Field(max_length=1024)
    role: Literal["user", "admin"] = "user"


class PasswordSetIn(BaseModel):
    """A new password an admin sets for an account."""

    model_config = ConfigDict(extra="forbid")

    new_password: str = Field(max_length=1024)


class SpacePolicyOut(BaseModel):
    """A space as configured: who may use it and what its policies allow."""

    name: str
    kind: Literal["home", "directory"]
    mode: Literal["ro", "rw"]
    symlinks: Literal["deny", "within"] | None
    hardlinks: Literal["deny", "allow"] | None
    users: list[str]


class UserPatch(BaseModel):
    """Changes to an account; a role change or a disable revokes its tokens."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "admin"] | None = None
    active: StrictBool | None = None


class SpaceOut(BaseModel):
    """A space this user may use."""

    name: str
    kind: Literal["home", "directory"]
    mode: Literal["ro", "rw"]


class EntryOut(BaseModel):
    """One entry of a folder listing."""

    name: str
    path: str
    kind: str
    size: int
    modified: str


class ListOut(BaseModel):
    """A page of a folder listing; pass `next_cursor` back as `cursor`."""

    space: str
    path: str
    entries: list[EntryOut]
    next_cursor: str | None


class FileMetaOut(BaseModel):
    """Metadata of one file or folder."""

    filename: str
    path: str
    size: int
    kind: str
    modified: str
    content_type: str | None
    etag: str


class MoveIn(BaseModel):
    """A move inside one space."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    from_: str = Field(alias="from", max_length=4095)
    to: str = Field(max_length=4095)
    overwrite: StrictBool = False


def iso_time(mtime_ns: int) -> str:
    """Format a nanosecond timestamp as RFC 3339 UTC with a `Z`."""
    when = datetime.fromtimestamp(mtime_ns / 1_000_000_000, tz=UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def entry_out(meta: FileMeta) -> EntryOut:
    """Shape a listing entry."""
    return EntryOut(
        name=meta.name, path=meta.path, kind=meta.kind, size=meta.size,
        modified=iso_time(meta.mtime_ns),
    )


def meta_out(meta: FileMeta) -> FileMetaOut:
    """Shape a file's metadata."""
    return FileMetaOut(
        filename=meta.name, path=meta.path, size=meta.size, kind=meta.kind,
        modified=iso_time(meta.mtime_ns), content_type=meta.content_type,
        etag=meta.etag,
    )

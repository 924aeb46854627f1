"""The metadata tables, in SQLAlchemy Core.

Path columns hold normalised root-relative keys ("a/b/c.txt"; "" is the top of a
home space). Each row also stores its `parent` key and its last component `name`,
so that listing one directory is a range scan on (owner_id, parent, name) instead
of a pattern match over every path of the user.

Ordering is by code point everywhere: SQLite's default BINARY collation compares
UTF-8 bytes, and on PostgreSQL the path columns use the "C" collation for the same
order. Listing cursors and subtree ranges (`rel_path >= 'a/' AND < 'a0'`, since
'0' follows '/') depend on that order being the same on both databases and in
Python.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

__all__ = [
    "api_keys",
    "dirs",
    "files",
    "login_failures",
    "metadata",
    "refresh_tokens",
    "sessions",
    "shares",
    "uploads",
    "users",
]


class _UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases (SQLite keeps no zone itself)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps given to the metadata store must be aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(
        self, value: datetime | None, dialect: Dialect
    ) -> datetime | None:
        if value is None:
            return None
        # psycopg answers in the session's zone (a ZoneInfo); give UTC everywhere.
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_PATH = Text().with_variant(Text(collation="C"), "postgresql")

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(512), nullable=False),
    Column("role", String(16), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created", _UTCDateTime, nullable=False),
    Column("tokens_valid_after", _UTCDateTime, nullable=False),
    CheckConstraint("role IN ('user', 'admin')", name="users_role"),
    # Ids are token subjects: SQLite must never hand a deleted user's id to a new
    # user, which plain INTEGER PRIMARY KEY does after the highest id is deleted.
    sqlite_autoincrement=True,
)

files = Table(
    "files",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("owner_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("rel_path", _PATH, nullable=False),
    Column("parent", _PATH, nullable=False),
    Column("name", _PATH, nullable=False),
    Column("blob_id", String(32), nullable=False, unique=True),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("content_type", String(255), nullable=False),
    Column("created", _UTCDateTime, nullable=False),
    Column("modified", _UTCDateTime, nullable=False),
    # Set by `strongroom check --repair` when the blob is missing or differs from
    # the row (the finding's kind); such a file is refused, never served wrong.
    Column("damage", String(32), nullable=True),
    UniqueConstraint("owner_id", "rel_path", name="files_owner_path"),
    Index("files_listing", "owner_id", "parent", "name"),
    sqlite_autoincrement=True,
)

dirs = Table(
    "dirs",
    metadata,
    Column(
        "owner_id",
        ForeignKey("users.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("rel_path", _PATH, primary_key=True),
    Column("parent", _PATH, nullable=False),
    Column("name", _PATH, nullable=False),
    Column("created", _UTCDateTime, nullable=False),
    Index("dirs_listing", "owner_id", "parent", "name"),
)

# A session is one login: the family of refresh tokens rotated from it and the
# access tokens issued with its id (`sid`). Revoking the row refuses them all on
# the next request of every process; the per-request check is a primary-key
# lookup folded into the user lookup.
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created", _UTCDateTime, nullable=False),
    Column("expires_at", _UTCDateTime, nullable=False),
    Column("revoked", Boolean, nullable=False),
    # The scopes granted at login, space-separated; every refresh keeps them.
    Column("scope", String(128), nullable=False),
    Index("sessions_user", "user_id"),
)

# Refresh tokens by their sha256 only. A used row stays until its session goes,
# so a second use of it is recognised as reuse and revokes the family.
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column(
        "session_id", ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False
    ),
    Column("idle_expires_at", _UTCDateTime, nullable=False),
    Column("used", Boolean, nullable=False),
    Index("refresh_tokens_session", "session_id"),
)

# API keys for scripts: the SHA-256 of the secret only, the scopes granted, and
# the key's own end. A key created before its user's `tokens_valid_after` is dead.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("scope", String(128), nullable=False),
    Column("created", _UTCDateTime, nullable=False),
    Column("expires_at", _UTCDateTime, nullable=True),
    Column("revoked", Boolean, nullable=False),
    Index("api_keys_user", "user_id"),
)

# Recent failed logins per throttle key (a SHA-256 of the user name or client
# address, never the text itself), shared by every app process. Rows older than
# the throttle window are deleted as new failures arrive.
login_failures = Table(
    "login_failures",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure", Float, nullable=False),
    Index("login_failures_age", "last_failure"),
)

# Share links. The signed token in a link names a row by its random `id`; the row
# is the authority: it can be revoked, it expires, it counts downloads (one
# conditional UPDATE per download keeps `downloads <= max_downloads`), and
# `target` records which object was shared (an inode in a directory space, a file
# row and its blob or a folder's creation time in a home), so a link dies with
# its target. `password_hash` is an argon2id hash, or NULL for no password.
shares = Table(
    "shares",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("space", String(64), nullable=False),
    Column("rel_path", _PATH, nullable=False),
    Column("kind", String(8), nullable=False),
    Column("target", String(128), nullable=False),
    Column("password_hash", String(512), nullable=True),
    Column("max_downloads", Integer, nullable=True),
    Column("downloads", Integer, nullable=False),
    Column("created", _UTCDateTime, nullable=False),
    Column("expires_at", _UTCDateTime, nullable=False),
    Column("revoked", Boolean, nullable=False),
    CheckConstraint("kind IN ('file', 'dir')", name="shares_kind"),
    Index("shares_owner", "owner_id", "created"),
)

# Resumable (tus) uploads, one row each from creation until some time after the
# last byte. `received` is the offset the protocol talks about: the bytes staged
# and fsync-ed so far; it only moves while the upload's staging file is locked.
# `completed` is set once the file was published, and then `received = length`.
# `tus_metadata` is the client's Upload-Metadata header, echoed back by HEAD.
uploads = Table(
    "uploads",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("space", String(64), nullable=False),
    Column("rel_path", _PATH, nullable=False),
    Column("length", BigInteger, nullable=False),
    Column("received", BigInteger, nullable=False),
    Column("tus_metadata", Text, nullable=False),
    Column("sha256", String(64), nullable=True),
    Column("created", _UTCDateTime, nullable=False),
    Column("expires_at", _UTCDateTime, nullable=False),
    Column("completed", _UTCDateTime, nullable=True),
    CheckConstraint("received >= 0 AND received <= length", name="uploads_received"),
    Index("uploads_owner", "owner_id"),
    Index("uploads_expiry", "expires_at"),
)

"""The whole schema as the last build before migrations made it with create_all.

Revision 0001. A database that such a build created is stamped at this revision
rather than migrated (see `strongroom.storage.migrate`), so every table, column,
constraint and index here is exactly what `create_all` made from `_schema.py` at
the time: change nothing in this file; write a new revision instead.

Types are spelled out rather than imported from `_schema.py`, which keeps moving
with later revisions. Timestamps are plain `DateTime(timezone=True)` (the
`_UTCDateTime` decorator only converts values in Python), and path columns use
the "C" collation on PostgreSQL for code-point order, as SQLite's BINARY does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_PATH = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table and index of the first schema."""
    _create_users()
    _create_files_and_dirs()
    _create_login_tables()
    _create_shares()
    _create_uploads()


def downgrade() -> None:
    """Drop every table of the first schema, children before their parents."""
    for table in (
        "uploads",
        "shares",
        "login_failures",
        "api_keys",
        "refresh_tokens",
        "sessions",
        "dirs",
        "files",
        "users",
    ):
        op.drop_table(table)


def _owner_key(column: str = "owner_id") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], ["users.id"], ondelete="CASCADE")


def _create_users() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("tokens_valid_after", _TIME, nullable=False),
        sa.CheckConstraint("role IN ('user', 'admin')", name="users_role"),
        sa.UniqueConstraint("name"),
        sqlite_autoincrement=True,
    )


def _create_files_and_dirs() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("rel_path", _PATH, nullable=False),
        sa.Column("parent", _PATH, nullable=False),
        sa.Column("name", _PATH, nullable=False),
        sa.Column("blob_id", sa.String(32), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("modified", _TIME, nullable=False),
        sa.Column("damage", sa.String(32), nullable=True),
        _owner_key(),
        sa.UniqueConstraint("blob_id"),
        sa.UniqueConstraint("owner_id", "rel_path", name="files_owner_path"),
        sqlite_autoincrement=True,
    )
    op.create_index("files_listing", "files", ["owner_id", "parent", "name"])

    op.create_table(
        "dirs",
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("rel_path", _PATH, nullable=False),
        sa.Column("parent", _PATH, nullable=False),
        sa.Column("name", _PATH, nullable=False),
        sa.Column("created", _TIME, nullable=False),
        _owner_key(),
        sa.PrimaryKeyConstraint("owner_id", "rel_path"),
    )
    op.create_index("dirs_listing", "dirs", ["owner_id", "parent", "name"])


def _create_login_tables() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        _owner_key("user_id"),
    )
    op.create_index("sessions_user", "sessions", ["user_id"])

    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("idle_expires_at", _TIME, nullable=False),
        sa.Column("used", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["sessions.id"], ondelete="CASCADE"),
    )
    op.create_index("refresh_tokens_session", "refresh_tokens", ["session_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(128), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        _owner_key("user_id"),
    )
    op.create_index("api_keys_user", "api_keys", ["user_id"])

    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure", sa.Float(), nullable=False),
    )
    op.create_index("login_failures_age", "login_failures", ["last_failure"])


def _create_shares() -> None:
    op.create_table(
        "shares",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("space", sa.String(64), nullable=False),
        sa.Column("rel_path", _PATH, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=True),
        sa.Column("max_downloads", sa.Integer(), nullable=True),
        sa.Column("downloads", sa.Integer(), nullable=False),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.CheckConstraint("kind IN ('file', 'dir')", name="shares_kind"),
        _owner_key(),
    )
    op.create_index("shares_owner", "shares", ["owner_id", "created"])


def _create_uploads() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("space", sa.String(64), nullable=False),
        sa.Column("rel_path", _PATH, nullable=False),
        sa.Column("length", sa.BigInteger(), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("tus_metadata", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("created", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("completed", _TIME, nullable=True),
        sa.CheckConstraint(
            "received >= 0 AND received <= length", name="uploads_received"
        ),
        _owner_key(),
    )
    op.create_index("uploads_owner", "uploads", ["owner_id"])
    op.create_index("uploads_expiry", "uploads", ["expires_at"])

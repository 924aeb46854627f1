"""The metadata store: users, and the file tree of each user's home space.

Home spaces have no directory on disk: a file is a row naming its blob, and a
folder is a row in `dirs`. Every folder has a row, including the parents that
`put_file` creates on the way, so a listing never has to infer folders from paths.

Path keys given to this module are normalised root-relative strings ("a/b/c.txt";
"" is the top, where a directory is meant) that the caller has already checked
against the user-path rules (`strongroom.confine.parse_user_path`). The store only
re-checks their shape (no leading, trailing or doubled '/', no '.' or '..'
components) and their length, and refuses a malformed key with InvalidPathError;
it does not apply the full rules.

Concurrency: every write to a home space first locks that user's row (SELECT ...
FOR UPDATE on PostgreSQL; SQLite serialises all writers with BEGIN IMMEDIATE), so
two requests of one user can never create a file and a folder of the same name,
or move a folder while a file is put beneath it.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    bindparam,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.types import TypeEngine

from strongroom.errors import (
    DirectoryNotEmptyError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
    StorageError,
    StorageQuotaError,
    UserExistsError,
    UserNotFoundError,
)
from strongroom.storage import _tree as tree
from strongroom.storage._engine import (
    WRITE_OPTION,
    create_read_engine,
    create_store_engine,
    read_options,
    write_turn,
)
from strongroom.storage._schema import dirs, files, sessions, users
from strongroom.storage.api_keys import ApiKeyStore
from strongroom.storage.failures import DatabaseFailureCounts
from strongroom.storage.migrate import prepare_schema
from strongroom.storage.records import (
    ChildPage,
    DirEntry,
    FileRow,
    PutResult,
    Role,
    User,
)
from strongroom.storage.sessions import SessionStore

__all__ = [
    "MAX_KEY_BYTES", "MetadataStore", "NewFile", "RowCheck", "open_metadata_store",
]

MAX_KEY_BYTES = tree.MAX_KEY_BYTES
# A condition on the file row a change replaces or removes (None: no file
# there), checked inside the change's transaction; it refuses by raising.
RowCheck = Callable[[FileRow | None], None]

# SQLAlchemy's errors and SQLite's own, which the raw-connection fast path
# raises; psycopg's are added by `_database_errors` once PostgreSQL is in use.
_BASE_DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, sqlite3.Error)


def open_metadata_store(
    database_url: str,
    *,
    now: Callable[[], datetime] | None = None,
    auto_upgrade: bool = True,
) -> MetadataStore:
    """Connect to the database at `database_url` and bring its schema to head.

    `now` replaces the clock that stamps rows (for tests). `auto_upgrade` is
    the `db_auto_upgrade` setting: without it, a database behind this build's
    schema is refused instead of migrated (see `strongroom.storage.migrate`).

    Raises:
        ConfigError: the URL is not a sqlite:/// or postgresql:// URL.
        SchemaVersionError: the schema is not at head and cannot or may not be
            upgraded here; the message says what the admin should do.
        StorageError: the database cannot be reached or the tables not created.
    """
    store = MetadataStore(create_store_engine(database_url), now=now)
    try:
        store.create_tables(auto_upgrade=auto_upgrade)
    except BaseException:
        store.close()
        raise
    return store


class MetadataStore:
    """Users and home-space file rows in SQLite or PostgreSQL.

    Thread-safe: each method takes a pooled connection for its own duration.
    Every method raises StorageError (with the driver's error chained) when the
    database fails; the messages never hold SQL or parameters.
    """

    def __init__(
        self, engine: Engine, *, now: Callable[[], datetime] | None = None
    ) -> None:
        self._engine = engine
        self._read_engine = create_read_engine(engine)
        self._now = now or _utc_now
        self._read_options = read_options(self._read_engine)
        self._user_by_id = _UserLookup(self._read_engine)
        self.sessions = SessionStore(engine, self._now)
        self.login_failures = DatabaseFailureCounts(engine)
        self.api_keys = ApiKeyStore(engine, self._now)

    @property
    def engine(self) -> Engine:
        """The store's engine, for other tables of the same database.

        Share it rather than open a second engine: on SQLite, closing any other
        descriptor of the database file drops the locks this process holds
        through its connections (POSIX advisory locks are per process), and
        readers then see stale data.
        """
        return self._engine

    def create_tables(self, *, auto_upgrade: bool = True) -> None:
        """Bring the database to this build's schema through its migrations.

        At head this is one query; see `strongroom.storage.migrate.prepare_schema`
        for what happens otherwise and what it raises.
        """
        with _storage_errors():
            prepare_schema(self._engine, auto_upgrade=auto_upgrade)

    def close(self) -> None:
        """Close every pooled connection."""
        self._read_engine.dispose()
        self._engine.dispose()

    # Users

    def add_user(self, name: str, password_hash: str, *, role: Role = "user") -> User:
        """Create an active user and return it.

        Raises:
            UserExistsError: the name is taken.
        """
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, not {role!r}")
        now = self._now()

        with self._write() as conn:
            try:
                result = conn.execute(
                    insert(users).values(
                        name=name,
                        password_hash=password_hash,
                        role=role,
                        active=True,
                        created=now,
                        tokens_valid_after=now,
                    )
                )
            except IntegrityError:
                raise UserExistsError(f"user {name!r} already exists") from None
        return User(
            id=tree.new_id(result.inserted_primary_key),
            name=name,
            password_hash=password_hash,
            role=role,
            active=True,
            created=now,
            tokens_valid_after=now,
        )

    def get_user_by_id(self, user_id: int) -> User | None:
        """Return the user with this id, or None.

        Every authenticated request calls this, so it skips SQLAlchemy's
        Connection layer (see `_UserLookup`).
        """
        with _storage_errors():
            return self._user_by_id(user_id, "")[0]

    def get_user_in_session(
        self, user_id: int, session_id: str
    ) -> tuple[User | None, bool]:
        """Return the user with this id (or None) and whether the session is live.

        Live: it exists, is this user's and is not revoked. One query (a key
        lookup with an indexed EXISTS), run by every authenticated request.
        """
        with _storage_errors():
            return self._user_by_id(user_id, session_id)

    def get_user_by_name(self, name: str) -> User | None:
        """Return the user with this name, or None."""
        with self._read() as conn:
            row = conn.execute(_USER_BY_NAME, {"name": name}).first()
        return _user(row) if row else None

    def blob_references(self) -> dict[str, tuple[int, str]]:
        """Return every home file's blob id with its recorded (size, sha256).

        For `strongroom check`; it reads the whole table, so it is not for
        request paths.
        """
        query = select(files.c.blob_id, files.c.size, files.c.sha256)
        with self._read() as conn:
            return {
                str(blob_id): (int(size), str(sha256))
                for blob_id, size, sha256 in conn.execute(query)
            }

    def set_damage(self, blob_id: str, damage: str | None) -> bool:
        """Mark (or, with None, clear) the row that refers to `blob_id`.

        Keyed by the blob id, so a row that moved on to new content since the
        check read it is left alone. Returns whether a row was changed.
        """
        with self._write() as conn:
            result = conn.execute(
                update(files).where(files.c.blob_id == blob_id).values(damage=damage)
            )
            return result.rowcount == 1

    def damaged_blob_ids(self) -> dict[str, str]:
        """Return the blob id and damage kind of every marked row."""
        query = select(files.c.blob_id, files.c.damage).where(
            files.c.damage.is_not(None)
        )
        with self._read() as conn:
            return {str(b): str(d) for b, d in conn.execute(query)}

    def list_users(self) -> list[User]:
        """Return every user, sorted by name."""
        with self._read() as conn:
            rows = conn.execute(select(users).order_by(users.c.name)).all()
        return [_user(row) for row in rows]

    def has_users(self) -> bool:
        """Return whether at least one user exists."""
        with self._read() as conn:
            return bool(conn.execute(select(exists().select_from(users))).scalar())

    def set_password(
        self, user_id: int, password_hash: str, *, revoke_tokens: bool = True
    ) -> None:
        """Store a new password hash; by default also revoke every older token.

        Pass `revoke_tokens=False` when only re-hashing the same password with
        newer parameters.

        Raises:
            UserNotFoundError: no user has this id.
        """
        self._update_user(
            user_id, {"password_hash": password_hash}, revoke_tokens=revoke_tokens
        )

    def rehash_password(
        self, user_id: int, old_hash: str, new_hash: str
    ) -> User | None:
        """Replace a hash by a re-hash of the same password, if it is still current.

        Conditional on the old hash, so a password change that commits meanwhile
        is never overwritten by the old password. Returns the user as stored
        afterwards, or None when the hash had changed.
        """
        with self._write() as conn:
            result = conn.execute(
                update(users)
                .where(users.c.id == user_id, users.c.password_hash == old_hash)
                .values(password_hash=new_hash)
            )
            if result.rowcount != 1:
                return None
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
        return _user(row) if row else None

    def set_role(self, user_id: int, role: Role) -> None:
        """Change a user's role and revoke every token issued before the change.

        Tokens carry scopes granted by the role they were issued under; a
        demotion must not leave an admin-scoped token alive.

        Raises:
            UserNotFoundError: no user has this id.
        """
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, not {role!r}")
        self._update_user(user_id, {"role": role}, revoke_tokens=True)

    def set_active(self, user_id: int, active: bool) -> None:
        """Enable or disable an account; disabling revokes every token.

        Raises:
            UserNotFoundError: no user has this id.
        """
        self._update_user(user_id, {"active": active}, revoke_tokens=not active)

    def revoke_tokens(self, user_id: int) -> None:
        """Refuse every access and refresh token issued to the user until now.

        Moves `tokens_valid_after` (access tokens are checked against it on every
        request) and revokes every session (their refresh tokens), in one
        transaction, so every process refuses them on its next request.

        Raises:
            UserNotFoundError: no user has this id.
        """
        self._update_user(user_id, {}, revoke_tokens=True)

    def remove_user(self, user_id: int) -> tuple[str, ...]:
        """Delete a user with all its home-space rows; return the orphaned blob ids.

        The caller deletes those blobs after this returns.

        Raises:
            UserNotFoundError: no user has this id.
        """
        with self._write() as conn:
            tree.lock_owner(conn, user_id)
            blob_ids = conn.execute(
                select(files.c.blob_id).where(files.c.owner_id == user_id)
            ).scalars()
            orphans = tuple(blob_ids)
            conn.execute(delete(files).where(files.c.owner_id == user_id))
            conn.execute(delete(dirs).where(dirs.c.owner_id == user_id))
            conn.execute(delete(users).where(users.c.id == user_id))
        return orphans

    # Home-space rows

    def get_file(self, owner_id: int, rel_path: str) -> FileRow | None:
        """Return the file row at `rel_path`, or None (also for a folder there)."""
        tree.check_key("get", rel_path)

        with self._read() as conn:
            return _file_row_at(conn, owner_id, rel_path)

    def get_entry(self, owner_id: int, rel_path: str) -> DirEntry | None:
        """Return the file or folder at `rel_path` as a listing entry, or None.

        The top ("") is a folder as long as the owner exists; its time is the
        owner's creation time.
        """
        tree.check_key("stat", rel_path, top_ok=True)

        with self._read() as conn:
            if rel_path == "":
                created = conn.execute(_USER_CREATED, {"user_id": owner_id}).scalar()
                return DirEntry("", "dir", 0, created) if created else None
            row = tree.entry_row(conn, owner_id, rel_path)
        return tree.dir_entry(row) if row else None

    def list_children(
        self, owner_id: int, dir_rel_path: str, cursor: str | None, limit: int
    ) -> ChildPage:
        """Return up to `limit` files and folders of a folder, sorted by name.

        `cursor` is the last name of the previous page (None for the first page).

        Raises:
            PathNotFoundError: the folder does not exist.
            NotADirectoryPathError: `dir_rel_path` is a file.
            ValueError: `limit` is below 1.
        """
        tree.check_key("list", dir_rel_path, top_ok=True)
        if limit < 1:
            raise ValueError("limit must be at least 1")

        with self._read() as conn:
            tree.require_dir(conn, owner_id, dir_rel_path, "list")
            rows = tree.children_rows(conn, owner_id, dir_rel_path, cursor, limit + 1)
        entries = tuple(tree.dir_entry(row) for row in rows[:limit])
        more = len(rows) > limit
        return ChildPage(entries, entries[-1].name if more else None)

    def has_children(self, owner_id: int, rel_path: str) -> bool:
        """Return whether anything lies directly beneath the folder `rel_path`."""
        tree.check_key("list", rel_path, top_ok=True)

        with self._read() as conn:
            return tree.has_children(conn, owner_id, rel_path)

    def put_file(
        self,
        owner_id: int,
        rel_path: str,
        *,
        blob_id: str,
        size: int,
        sha256: str,
        content_type: str,
        create_only: bool = False,
        quota_bytes: int | None = None,
        check: RowCheck | None = None,
    ) -> PutResult:
        """Insert or replace the file at `rel_path` in one transaction.

        Missing parent folders are created. A replaced file keeps its `created`
        time; its old blob id is returned for the caller to delete after this
        returns (never before: until the commit, the old row still points at it).
        With `quota_bytes`, a put that grows the owner's files past it is refused.
        `check` sees the file row there (or None) inside the transaction, under
        the owner's lock, and refuses the put by raising.

        Raises:
            PathExistsError: `create_only` and a file is already there.
            IsADirectoryPathError: a folder is there.
            NotADirectoryPathError: a parent is a file.
            UserNotFoundError: the owner does not exist.
            StorageQuotaError: the put would take the owner past `quota_bytes`.
        """
        tree.check_key("put", rel_path)
        now = self._now()

        with self._write() as conn:
            tree.lock_owner(conn, owner_id)
            before = _used_bytes(conn, owner_id) if quota_bytes is not None else 0
            result = _put_in(
                conn, owner_id, rel_path, now, blob_id=blob_id, size=size,
                sha256=sha256, content_type=content_type, create_only=create_only,
                check=check,
            )
            _check_quota(conn, owner_id, quota_bytes, before)
            return result

    def used_bytes(self, owner_id: int) -> int:
        """Return the bytes of all the owner's files (what a quota counts)."""
        with self._read() as conn:
            return _used_bytes(conn, owner_id)

    def put_many(
        self,
        owner_id: int,
        folders: Sequence[str],
        puts: Sequence[NewFile],
        *,
        quota_bytes: int | None = None,
    ) -> list[str]:
        """Add `folders`, then put `puts`, all in one transaction.

        For an archive import: one commit for thousands of members instead of
        one each, and all or nothing. Folders that exist already are fine; each
        put behaves as `put_file` (`create_only` refuses an existing file).
        The paths of `puts` must differ. Returns the replaced files' blob ids,
        for the caller to delete after this returns.

        Raises:
            the errors of `put_file` and `add_dir`; nothing is written then.
            ValueError: two puts name the same path.
        """
        for rel_path in (*folders, *(p.rel_path for p in puts)):
            tree.check_key("put", rel_path)
        if len({p.rel_path for p in puts}) != len(puts):
            raise ValueError("put_many was given the same path twice")
        now = self._now()

        with self._write() as conn:
            tree.lock_owner(conn, owner_id)
            before = _used_bytes(conn, owner_id) if quota_bytes is not None else 0
            for rel_path in folders:
                kind = tree.kind_of(conn, owner_id, rel_path)
                if kind is None:
                    tree.ensure_parents(conn, owner_id, rel_path, "mkdir", now)
                    tree.insert_dirs(conn, owner_id, [rel_path], now)
                elif kind != "dir":
                    raise PathExistsError("mkdir", rel_path, "a file has this name")
            replaced = _put_batch(conn, owner_id, puts, now, known_dirs=set(folders))
            _check_quota(conn, owner_id, quota_bytes, before)
            return replaced

    def add_dir(
        self,
        owner_id: int,
        rel_path: str,
        *,
        parents: bool = False,
        exist_ok: bool = False,
    ) -> None:
        """Create the folder `rel_path` (and missing parents when `parents`).

        Raises:
            PathExistsError: a file has this name, or a folder and not `exist_ok`.
            PathNotFoundError: the parent is missing and not `parents`.
            NotADirectoryPathError: a parent is a file.
            UserNotFoundError: the owner does not exist.
        """
        tree.check_key("mkdir", rel_path, top_ok=True)

        with self._write() as conn:
            tree.lock_owner(conn, owner_id)
            kind = "dir" if rel_path == "" else tree.kind_of(conn, owner_id, rel_path)
            if kind == "dir" and exist_ok:
                return
            if kind is not None:
                raise PathExistsError(
                    "mkdir", rel_path, f"a {tree.NOUN[kind]} has this name"
                )
            if parents:
                tree.ensure_parents(conn, owner_id, rel_path, "mkdir", self._now())
            else:
                tree.require_dir(
                    conn, owner_id, tree.parent_of(rel_path), "mkdir", rel_path
                )
            tree.insert_dirs(conn, owner_id, [rel_path], self._now())

    def remove_file(
        self, owner_id: int, rel_path: str, *, check: RowCheck | None = None
    ) -> str:
        """Delete the file row at `rel_path` and return its blob id.

        The caller deletes the blob after this returns. `check` is as for
        `put_file`.

        Raises:
            PathNotFoundError: nothing is there.
            IsADirectoryPathError: a folder is there.
        """
        tree.check_key("delete", rel_path)

        with self._write() as conn:
            tree.lock_owner(conn, owner_id)
            if check is not None:
                check(_file_row_at(conn, owner_id, rel_path))
            blob_id = conn.execute(
                delete(files)
                .where(files.c.owner_id == owner_id, files.c.rel_path == rel_path)
                .returning(files.c.blob_id)
            ).scalar()
            if blob_id is None:
                if tree.kind_of(conn, owner_id, rel_path) == "dir":
                    raise IsADirectoryPathError("delete", rel_path, "this is a folder")
                raise PathNotFoundError("delete", rel_path, "no such file")
        return str(blob_id)

    def remove_dir(self, owner_id: int, rel_path: str) -> None:
        """Delete the empty folder `rel_path`.

        Raises:
            InvalidPathError: `rel_path` is the top of the space.
            PathNotFoundError: nothing is there.
            NotADirectoryPathError: a file is there.
            DirectoryNotEmptyError: the folder has entries.
        """
        tree.check_key("rmdir", rel_path, top_ok=True)
        if rel_path == "":
            raise InvalidPathError("rmdir", rel_path, "the top folder stays")

        with self._write() as conn:
            tree.lock_owner(conn, owner_id)
            tree.require_dir(conn, owner_id, rel_path, "rmdir")
            if tree.has_children(conn, owner_id, rel_path):
                raise DirectoryNotEmptyError(
                    "rmdir", rel_path, "the folder has entries"
                )
            conn.execute(
                delete(dirs).where(
                    dirs.c.owner_id == owner_id, dirs.c.rel_path == rel_path
                )
            )

    def move(
        self, owner_id: int, src: str, dst: str, *, overwrite: bool = False
    ) -> tuple[str, ...]:
        """Move a file, or a folder with everything beneath it, in one transaction.

        The parent of `dst` must exist. With `overwrite`, a file may replace a
        file and a folder may replace an empty folder, as rename(2) allows.
        Returns the blob ids of files that the move replaced, for the caller to
        delete after this returns.

        Raises:
            PathNotFoundError: `src` or the parent of `dst` does not exist.
            PathExistsError: `dst` exists and not `overwrite`.
            InvalidPathError: `dst` is `src` itself or lies beneath it.
            IsADirectoryPathError: a file would replace a folder.
            NotADirectoryPathError: a folder would replace a file, or a parent of
                `dst` is a file.
            DirectoryNotEmptyError: the folder to replace has entries.
        """
        tree.check_key("move", src)
        tree.check_key("move", dst)
        if dst == src or dst.startswith(src + "/"):
            raise InvalidPathError("move", dst, f"it lies inside {src!r} itself")

        with self._write() as conn:
            tree.lock_owner(conn, owner_id)
            kind = tree.kind_of(conn, owner_id, src)
            if kind is None:
                raise PathNotFoundError("move", src, "no such file or folder")
            tree.require_dir(conn, owner_id, tree.parent_of(dst), "move", dst)
            replaced = tree.clear_destination(conn, owner_id, kind, dst, overwrite)
            if kind == "file":
                tree.move_file(conn, owner_id, src, dst)
            else:
                tree.move_folder(conn, owner_id, src, dst)
        return replaced

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _storage_errors(), self._read_engine.connect() as conn:
            conn.execution_options(**self._read_options)
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with (
            _storage_errors(),
            write_turn(self._engine),
            self._engine.connect() as conn,
        ):
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    def _update_user(
        self, user_id: int, values: dict[str, object], *, revoke_tokens: bool
    ) -> None:
        if revoke_tokens:
            values = {**values, "tokens_valid_after": self._now()}
        with self._write() as conn:
            result = conn.execute(
                update(users).where(users.c.id == user_id).values(values)
            )
            if result.rowcount == 0:
                raise UserNotFoundError(f"no user has id {user_id}")
            if revoke_tokens:
                conn.execute(
                    update(sessions)
                    .where(sessions.c.user_id == user_id, sessions.c.revoked.is_(False))
                    .values(revoked=True)
                )


_ROLES = ("user", "admin")
# Built once: these run on every request (building a statement costs more than
# running it on SQLite).
_SESSION_LIVE = exists().where(
    sessions.c.id == bindparam("session_id"),
    sessions.c.user_id == users.c.id,
    sessions.c.revoked.is_(False),
)
_USER_BY_ID = select(users, _SESSION_LIVE.label("session_live")).where(
    users.c.id == bindparam("user_id")
)
_USER_CREATED = select(users.c.created).where(users.c.id == bindparam("user_id"))
_USER_BY_NAME = select(users).where(users.c.name == bindparam("name"))
# Bound parameters per IN list: well under SQLite's and PostgreSQL's limits.
_PATHS_PER_QUERY = 500
_FILE_AT = select(files).where(
    files.c.owner_id == bindparam("owner_id"), files.c.rel_path == bindparam("rel_path")
)


@dataclass(frozen=True, slots=True)
class NewFile:
    """One file for `MetadataStore.put_many`."""

    rel_path: str
    blob_id: str
    size: int
    sha256: str
    content_type: str
    create_only: bool = False


# Rows per executemany of `_put_batch`: 10,000 rows at once held about 16 MB
# of parameters; a few hundred cost as little time per row.
_INSERT_BATCH_ROWS = 500


def _put_batch(
    conn: Connection,
    owner_id: int,
    puts: Sequence[NewFile],
    now: datetime,
    *,
    known_dirs: set[str],
) -> list[str]:
    # `_put_in` for many files at once: each folder's parents are ensured once
    # (they then exist for every file beneath it), and the new rows go in with
    # an executemany per `_INSERT_BATCH_ROWS`, so memory stays flat however many
    # members an archive has. Replacements are updated one by one, as `_put_in`
    # does.
    new_rows: list[dict[str, object]] = []
    new_paths: set[str] = set()  # not in the table until the executemany
    replaced: list[str] = []
    taken = _taken_paths(conn, owner_id, [put.rel_path for put in puts])
    for put in puts:
        blocking = [a for a in tree.ancestors(put.rel_path) if a in new_paths]
        if blocking:
            reason = f"{blocking[0]!r} is a file"
            raise NotADirectoryPathError("put", put.rel_path, reason)
        parent = tree.parent_of(put.rel_path)
        if parent and parent not in known_dirs:
            tree.ensure_parents(conn, owner_id, put.rel_path, "put", now)
            known_dirs.update(tree.ancestors(put.rel_path))
        free = put.rel_path not in taken and put.rel_path not in known_dirs
        old = None if free else conn.execute(
            _FILE_AT, {"owner_id": owner_id, "rel_path": put.rel_path}
        ).first()
        if old is None:
            if not free and tree.kind_of(conn, owner_id, put.rel_path) == "dir":
                raise IsADirectoryPathError(
                    "put", put.rel_path, "a folder has this name"
                )
            draft = FileRow(
                0, owner_id, put.rel_path, put.blob_id, put.size, put.sha256,
                put.content_type, now, now,
            )
            new_rows.append(tree.file_values(draft))
            new_paths.add(put.rel_path)
            if len(new_rows) == _INSERT_BATCH_ROWS:
                conn.execute(insert(files), new_rows)
                new_rows.clear()
            continue
        result = _put_in(
            conn, owner_id, put.rel_path, now, blob_id=put.blob_id, size=put.size,
            sha256=put.sha256, content_type=put.content_type,
            create_only=put.create_only,
        )
        if result.replaced_blob_id:
            replaced.append(result.replaced_blob_id)
    if new_rows:
        conn.execute(insert(files), new_rows)
    return replaced


def _used_bytes(conn: Connection, owner_id: int) -> int:
    total = conn.execute(
        select(func.coalesce(func.sum(files.c.size), 0)).where(
            files.c.owner_id == owner_id
        )
    ).scalar_one()
    return int(total)


def _check_quota(
    conn: Connection, owner_id: int, quota_bytes: int | None, before: int
) -> None:
    # Counted after the change, inside its transaction and under the owner's
    # lock: the transaction rolls back when this raises. A change that does not
    # grow the space passes even over the quota (lowered since, say), so that
    # replacing a file with a smaller one always works.
    if quota_bytes is None:
        return
    after = _used_bytes(conn, owner_id)
    if after > quota_bytes and after > before:
        raise StorageQuotaError(
            f"the home space would hold {after} bytes, over its quota of "
            f"{quota_bytes} bytes; delete files to make room"
        )


def _taken_paths(conn: Connection, owner_id: int, paths: list[str]) -> set[str]:
    # Which of `paths` a file or folder of the owner already has: a few queries
    # for a whole import instead of two per member.
    taken: set[str] = set()
    for start in range(0, len(paths), _PATHS_PER_QUERY):
        chunk = paths[start:start + _PATHS_PER_QUERY]
        for table in (files, dirs):
            found = select(table.c.rel_path).where(
                table.c.owner_id == owner_id, table.c.rel_path.in_(chunk)
            )
            taken.update(conn.execute(found).scalars())
    return taken


def _put_in(
    conn: Connection,
    owner_id: int,
    rel_path: str,
    now: datetime,
    *,
    blob_id: str,
    size: int,
    sha256: str,
    content_type: str,
    create_only: bool,
    check: RowCheck | None = None,
) -> PutResult:
    # The body of `put_file`, inside a transaction that holds the owner's lock.
    if check is not None:
        check(_file_row_at(conn, owner_id, rel_path))
    if tree.kind_of(conn, owner_id, rel_path) == "dir":
        raise IsADirectoryPathError("put", rel_path, "a folder has this name")
    tree.ensure_parents(conn, owner_id, rel_path, "put", now)
    old = conn.execute(_FILE_AT, {"owner_id": owner_id, "rel_path": rel_path}).first()
    if old is not None and create_only:
        raise PathExistsError("put", rel_path, "a file has this name")
    if old is None:
        draft = FileRow(
            0, owner_id, rel_path, blob_id, size, sha256, content_type, now, now
        )
        return PutResult(tree.insert_file(conn, draft), None)
    row = replace(
        tree.file_row(old),
        blob_id=blob_id,
        size=size,
        sha256=sha256,
        content_type=content_type,
        modified=now,
        damage=None,  # new content: an old finding no longer applies
    )
    values = tree.file_values(row)
    conn.execute(update(files).where(files.c.id == row.id).values(values))
    return PutResult(row, old.blob_id)


def _file_row_at(conn: Connection, owner_id: int, rel_path: str) -> FileRow | None:
    row = conn.execute(_FILE_AT, {"owner_id": owner_id, "rel_path": rel_path}).first()
    return tree.file_row(row) if row else None


def _database_errors() -> tuple[type[Exception], ...]:
    """The errors that mean the database failed, by the drivers loaded.

    psycopg is loaded (by SQLAlchemy) only when a PostgreSQL URL is opened; an
    SQLite process never pays its 9 MB. Evaluated only when an error is raised.
    """
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return _BASE_DATABASE_ERRORS
    return (*_BASE_DATABASE_ERRORS, psycopg.Error)


def _utc_now() -> datetime:
    return datetime.now(UTC)


@contextmanager
def _storage_errors() -> Iterator[None]:
    try:
        yield
    except _database_errors() as exc:
        raise StorageError(
            f"the metadata database failed ({type(exc).__name__}); see the server log"
        ) from exc


def _user(row: Row[tuple[object, ...]]) -> User:
    return User(**row._asdict())


class _UserLookup:
    """The per-request user lookup, run on a pooled DB-API connection.

    Design note: going through a SQLAlchemy `Connection` costs about 100 µs per
    call (connection wrapper, event dispatch, result object), several times the
    query itself, and this query runs on every request. The statement is compiled
    once for the engine's dialect and executed on the raw pooled connection; the
    column types' own result processors turn the values into Python objects, so
    the answer is the same `User` as through the Core layer.
    """

    def __init__(self, engine: Engine) -> None:
        compiled = _USER_BY_ID.compile(dialect=engine.dialect)
        self._engine = engine
        self._sql = str(compiled)
        self._order = compiled.positiontup if compiled.positional else None
        self._columns = [
            (column.name, _processor(column.type, engine)) for column in users.columns
        ]

    def __call__(self, user_id: int, session_id: str) -> tuple[User | None, bool]:
        named: dict[str, int | str] = {"user_id": user_id, "session_id": session_id}
        params: tuple[int | str, ...] | dict[str, int | str] = (
            tuple(named[name] for name in self._order) if self._order else named
        )
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute(self._sql, params)
            row = cursor.fetchone()
            cursor.close()
        finally:
            connection.close()
        if row is None:
            return None, False
        *user_row, session_live = row
        values = {
            name: process(value) if process else value
            for (name, process), value in zip(self._columns, user_row, strict=True)
        }
        return _user_from(values), bool(session_live)


def _user_from(values: Mapping[str, object]) -> User:
    # The column processors already produced these types; the checks keep mypy
    # honest without an Any.
    uid, name, password_hash = values["id"], values["name"], values["password_hash"]
    role, active = values["role"], values["active"]
    created, valid_after = values["created"], values["tokens_valid_after"]
    assert isinstance(uid, int) and isinstance(name, str)
    assert isinstance(password_hash, str) and isinstance(active, bool)
    assert isinstance(created, datetime) and isinstance(valid_after, datetime)
    assert role == "user" or role == "admin"
    return User(uid, name, password_hash, role, active, created, valid_after)


def _processor(
    column_type: TypeEngine[object], engine: Engine
) -> Callable[[object], object] | None:
    # dialect_impl() adapts the type (and a TypeDecorator's impl) to the dialect,
    # so SQLite's text timestamps are parsed exactly as the Core layer would.
    impl = column_type.dialect_impl(engine.dialect)
    return impl.result_processor(engine.dialect, None)

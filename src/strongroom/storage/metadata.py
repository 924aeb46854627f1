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

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import (
    Connection,
    Engine,
    Row,
    Select,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from strongroom.errors import (
    DirectoryNotEmptyError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
    StorageError,
    UserExistsError,
    UserNotFoundError,
)
from strongroom.storage._engine import WRITE_OPTION, create_store_engine, read_options
from strongroom.storage._schema import dirs, files, metadata, users
from strongroom.storage.records import (
    ChildPage,
    DirEntry,
    FileRow,
    PutResult,
    Role,
    User,
)

__all__ = ["MAX_KEY_BYTES", "MetadataStore", "open_metadata_store"]

# PostgreSQL refuses a btree index entry over about 2700 bytes (a third of a page).
# A path key sits in the unique index once and, split as parent + name, in the
# listing index once more; 2048 bytes leaves room for the owner id and the tuple
# header. Known limit: home paths are shorter than the 4095 bytes that directory
# spaces allow.
MAX_KEY_BYTES = 2048

Kind = Literal["file", "dir"]


def open_metadata_store(
    database_url: str, *, now: Callable[[], datetime] | None = None
) -> MetadataStore:
    """Connect to the database at `database_url` and create missing tables.

    `now` replaces the clock that stamps rows (for tests).

    Raises:
        ConfigError: the URL is not a sqlite:/// or postgresql:// URL.
        StorageError: the database cannot be reached or the tables not created.
    """
    store = MetadataStore(create_store_engine(database_url), now=now)
    store.create_tables()
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
        self._now = now or _utc_now
        self._read_options = read_options(engine)

    def create_tables(self) -> None:
        """Create the tables and indexes that do not exist yet."""
        with _storage_errors():
            metadata.create_all(self._engine)

    def close(self) -> None:
        """Close every pooled connection."""
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
            id=_new_id(result.inserted_primary_key),
            name=name,
            password_hash=password_hash,
            role=role,
            active=True,
            created=now,
            tokens_valid_after=now,
        )

    def get_user_by_id(self, user_id: int) -> User | None:
        """Return the user with this id, or None."""
        with self._read() as conn:
            row = conn.execute(_USER_BY_ID, {"user_id": user_id}).first()
        return _user(row) if row else None

    def get_user_by_name(self, name: str) -> User | None:
        """Return the user with this name, or None."""
        with self._read() as conn:
            row = conn.execute(select(users).where(users.c.name == name)).first()
        return _user(row) if row else None

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
        """Store a new password hash; by default also refuse all older tokens.

        Pass `revoke_tokens=False` when only re-hashing the same password with
        newer parameters.

        Raises:
            UserNotFoundError: no user has this id.
        """
        values: dict[str, object] = {"password_hash": password_hash}
        if revoke_tokens:
            values["tokens_valid_after"] = self._now()
        self._update_user(user_id, values)

    def set_role(self, user_id: int, role: Role) -> None:
        """Change a user's role.

        Raises:
            UserNotFoundError: no user has this id.
        """
        if role not in _ROLES:
            raise ValueError(f"role must be one of {_ROLES}, not {role!r}")
        self._update_user(user_id, {"role": role})

    def remove_user(self, user_id: int) -> tuple[str, ...]:
        """Delete a user with all its home-space rows; return the orphaned blob ids.

        The caller deletes those blobs after this returns.

        Raises:
            UserNotFoundError: no user has this id.
        """
        with self._write() as conn:
            _lock_owner(conn, user_id)
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
        _check_key("get", rel_path)

        with self._read() as conn:
            row = conn.execute(
                select(files).where(
                    files.c.owner_id == owner_id, files.c.rel_path == rel_path
                )
            ).first()
        return _file_row(row) if row else None

    def get_entry(self, owner_id: int, rel_path: str) -> DirEntry | None:
        """Return the file or folder at `rel_path` as a listing entry, or None.

        The top ("") is a folder as long as the owner exists; its time is the
        owner's creation time.
        """
        _check_key("stat", rel_path, top_ok=True)

        with self._read() as conn:
            if rel_path == "":
                created = conn.execute(_USER_CREATED, {"user_id": owner_id}).scalar()
                return DirEntry("", "dir", 0, created) if created else None
            row = conn.execute(
                _children_query(owner_id, None, None, 1, rel_path=rel_path)
            ).first()
        return _dir_entry(row) if row else None

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
        _check_key("list", dir_rel_path, top_ok=True)
        if limit < 1:
            raise ValueError("limit must be at least 1")

        with self._read() as conn:
            _require_dir(conn, owner_id, dir_rel_path, "list")
            rows = conn.execute(
                _children_query(owner_id, dir_rel_path, cursor, limit + 1)
            ).all()
        entries = tuple(_dir_entry(row) for row in rows[:limit])
        more = len(rows) > limit
        return ChildPage(entries, entries[-1].name if more else None)

    def has_children(self, owner_id: int, rel_path: str) -> bool:
        """Return whether anything lies directly beneath the folder `rel_path`."""
        _check_key("list", rel_path, top_ok=True)

        with self._read() as conn:
            return _has_children(conn, owner_id, rel_path)

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
    ) -> PutResult:
        """Insert or replace the file at `rel_path` in one transaction.

        Missing parent folders are created. A replaced file keeps its `created`
        time; its old blob id is returned for the caller to delete after this
        returns (never before: until the commit, the old row still points at it).

        Raises:
            PathExistsError: `create_only` and a file is already there.
            IsADirectoryPathError: a folder is there.
            NotADirectoryPathError: a parent is a file.
            UserNotFoundError: the owner does not exist.
        """
        _check_key("put", rel_path)
        now = self._now()

        with self._write() as conn:
            _lock_owner(conn, owner_id)
            if _kind_of(conn, owner_id, rel_path) == "dir":
                raise IsADirectoryPathError("put", rel_path, "a folder has this name")
            _ensure_parents(conn, owner_id, rel_path, "put", now)
            old = conn.execute(
                select(files).where(
                    files.c.owner_id == owner_id, files.c.rel_path == rel_path
                )
            ).first()
            if old is not None and create_only:
                raise PathExistsError("put", rel_path, "a file has this name")
            if old is None:
                draft = FileRow(
                    0, owner_id, rel_path, blob_id, size, sha256, content_type, now, now
                )
                return PutResult(_insert_file(conn, draft), None)
            row = replace(
                _file_row(old),
                blob_id=blob_id,
                size=size,
                sha256=sha256,
                content_type=content_type,
                modified=now,
            )
            conn.execute(
                update(files).where(files.c.id == row.id).values(_file_values(row))
            )
        return PutResult(row, old.blob_id)

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
        _check_key("mkdir", rel_path, top_ok=True)

        with self._write() as conn:
            _lock_owner(conn, owner_id)
            kind = "dir" if rel_path == "" else _kind_of(conn, owner_id, rel_path)
            if kind == "dir" and exist_ok:
                return
            if kind is not None:
                raise PathExistsError(
                    "mkdir", rel_path, f"a {_NOUN[kind]} has this name"
                )
            if parents:
                _ensure_parents(conn, owner_id, rel_path, "mkdir", self._now())
            else:
                _require_dir(conn, owner_id, _parent_of(rel_path), "mkdir", rel_path)
            _insert_dirs(conn, owner_id, [rel_path], self._now())

    def remove_file(self, owner_id: int, rel_path: str) -> str:
        """Delete the file row at `rel_path` and return its blob id.

        The caller deletes the blob after this returns.

        Raises:
            PathNotFoundError: nothing is there.
            IsADirectoryPathError: a folder is there.
        """
        _check_key("delete", rel_path)

        with self._write() as conn:
            _lock_owner(conn, owner_id)
            blob_id = conn.execute(
                delete(files)
                .where(files.c.owner_id == owner_id, files.c.rel_path == rel_path)
                .returning(files.c.blob_id)
            ).scalar()
            if blob_id is None:
                if _kind_of(conn, owner_id, rel_path) == "dir":
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
        _check_key("rmdir", rel_path, top_ok=True)
        if rel_path == "":
            raise InvalidPathError("rmdir", rel_path, "the top folder stays")

        with self._write() as conn:
            _lock_owner(conn, owner_id)
            _require_dir(conn, owner_id, rel_path, "rmdir")
            if _has_children(conn, owner_id, rel_path):
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
        _check_key("move", src)
        _check_key("move", dst)
        if dst == src or dst.startswith(src + "/"):
            raise InvalidPathError("move", dst, f"it lies inside {src!r} itself")

        with self._write() as conn:
            _lock_owner(conn, owner_id)
            kind = _kind_of(conn, owner_id, src)
            if kind is None:
                raise PathNotFoundError("move", src, "no such file or folder")
            _require_dir(conn, owner_id, _parent_of(dst), "move", dst)
            replaced = _clear_destination(conn, owner_id, kind, dst, overwrite)
            if kind == "file":
                _move_file(conn, owner_id, src, dst)
            else:
                _move_folder(conn, owner_id, src, dst)
        return replaced

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with _storage_errors(), self._engine.connect() as conn:
            conn.execution_options(**self._read_options)
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        with _storage_errors(), self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                yield conn

    def _update_user(self, user_id: int, values: dict[str, object]) -> None:
        with self._write() as conn:
            result = conn.execute(
                update(users).where(users.c.id == user_id).values(values)
            )
            if result.rowcount == 0:
                raise UserNotFoundError(f"no user has id {user_id}")


_ROLES = ("user", "admin")
_NOUN = {"file": "file", "dir": "folder"}
# Built once: the user lookup runs on every authenticated request.
_USER_BY_ID = select(users).where(users.c.id == bindparam("user_id"))
_USER_CREATED = select(users.c.created).where(users.c.id == bindparam("user_id"))


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id(primary_key: Sequence[object] | None) -> int:
    assert primary_key is not None and isinstance(primary_key[0], int)
    return primary_key[0]


@contextmanager
def _storage_errors() -> Iterator[None]:
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageError(
            f"the metadata database failed ({type(exc).__name__}); see the server log"
        ) from exc


def _check_key(op: str, rel_path: str, *, top_ok: bool = False) -> None:
    if rel_path == "":
        if top_ok:
            return
        raise InvalidPathError(op, rel_path, "an empty path names no file")
    parts = rel_path.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\x00" in rel_path:
        raise InvalidPathError(op, rel_path, "the path is not in normal form")
    if len(rel_path.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidPathError(
            op, rel_path, f"home paths are limited to {MAX_KEY_BYTES} bytes"
        )


def _parent_of(rel_path: str) -> str:
    return rel_path.rpartition("/")[0]


def _ancestors(rel_path: str) -> list[str]:
    parts = rel_path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _lock_owner(conn: Connection, owner_id: int) -> None:
    found = conn.execute(
        select(users.c.id).where(users.c.id == owner_id).with_for_update()
    ).first()
    if found is None:
        raise UserNotFoundError(f"no user has id {owner_id}")


def _kind_of(conn: Connection, owner_id: int, rel_path: str) -> Kind | None:
    query = _children_query(owner_id, None, None, 1, rel_path=rel_path)
    first = conn.execute(query).first()
    return None if first is None else first.kind


def _require_dir(
    conn: Connection, owner_id: int, rel_path: str, op: str, shown: str | None = None
) -> None:
    # `shown` is the path the user asked about, when that is a child of `rel_path`.
    if rel_path == "":
        return
    kind = _kind_of(conn, owner_id, rel_path)
    if kind == "file":
        raise NotADirectoryPathError(op, shown or rel_path, f"{rel_path!r} is a file")
    if kind is None:
        raise PathNotFoundError(op, shown or rel_path, f"no folder {rel_path!r}")


def _has_children(conn: Connection, owner_id: int, rel_path: str) -> bool:
    return (
        conn.execute(_children_query(owner_id, rel_path, None, 1)).first() is not None
    )


def _children_query(
    owner_id: int,
    parent: str | None,
    cursor: str | None,
    limit: int,
    *,
    rel_path: str | None = None,
) -> Select[tuple[str, str, int, datetime]]:
    """Select (name, kind, size, modified) of files and folders, by name.

    Either the children of `parent` after `cursor`, or the one entry at `rel_path`.
    Each side is limited before the union so that both use their listing index.
    """
    sides = []
    for table, kind in ((files, "file"), (dirs, "dir")):
        size = table.c.size if table is files else literal(0)
        modified = table.c.modified if table is files else table.c.created
        query = select(
            table.c.name,
            literal(kind).label("kind"),
            size.label("size"),
            modified.label("modified"),
        ).where(table.c.owner_id == owner_id)
        if rel_path is not None:
            query = query.where(table.c.rel_path == rel_path)
        else:
            query = query.where(table.c.parent == parent)
        if cursor is not None:
            query = query.where(table.c.name > cursor)
        sides.append(select(query.order_by(table.c.name).limit(limit).subquery()))
    both = union_all(*sides).subquery()
    return select(both).order_by(both.c.name).limit(limit)


def _ensure_parents(
    conn: Connection, owner_id: int, rel_path: str, op: str, now: datetime
) -> None:
    ancestors = _ancestors(rel_path)
    if not ancestors:
        return
    blocking = (
        conn.execute(
            select(files.c.rel_path).where(
                files.c.owner_id == owner_id, files.c.rel_path.in_(ancestors)
            )
        )
        .scalars()
        .first()
    )
    if blocking is not None:
        raise NotADirectoryPathError(op, rel_path, f"{blocking!r} is a file")
    present = set(
        conn.execute(
            select(dirs.c.rel_path).where(
                dirs.c.owner_id == owner_id, dirs.c.rel_path.in_(ancestors)
            )
        ).scalars()
    )
    _insert_dirs(conn, owner_id, [a for a in ancestors if a not in present], now)


def _insert_dirs(
    conn: Connection, owner_id: int, rel_paths: Sequence[str], now: datetime
) -> None:
    if not rel_paths:
        return
    conn.execute(
        insert(dirs),
        [
            {
                "owner_id": owner_id,
                "rel_path": rel_path,
                "parent": _parent_of(rel_path),
                "name": rel_path.rpartition("/")[2],
                "created": now,
            }
            for rel_path in rel_paths
        ],
    )


def _insert_file(conn: Connection, draft: FileRow) -> FileRow:
    result = conn.execute(insert(files).values(_file_values(draft)))
    return replace(draft, id=_new_id(result.inserted_primary_key))


def _file_values(row: FileRow) -> dict[str, object]:
    """Return the column values of a file row, without its id."""
    return {
        "owner_id": row.owner_id,
        "rel_path": row.rel_path,
        "parent": _parent_of(row.rel_path),
        "name": row.name,
        "blob_id": row.blob_id,
        "size": row.size,
        "sha256": row.sha256,
        "content_type": row.content_type,
        "created": row.created,
        "modified": row.modified,
    }


def _clear_destination(
    conn: Connection, owner_id: int, kind: Kind, dst: str, overwrite: bool
) -> tuple[str, ...]:
    dst_kind = _kind_of(conn, owner_id, dst)
    if dst_kind is None:
        return ()
    if not overwrite:
        raise PathExistsError("move", dst, f"a {_NOUN[dst_kind]} has this name")
    if kind == "file" and dst_kind == "dir":
        raise IsADirectoryPathError("move", dst, "a folder has this name")
    if kind == "dir" and dst_kind == "file":
        raise NotADirectoryPathError("move", dst, "a file has this name")
    if dst_kind == "dir":
        if _has_children(conn, owner_id, dst):
            raise DirectoryNotEmptyError(
                "move", dst, "the folder to replace has entries"
            )
        conn.execute(
            delete(dirs).where(dirs.c.owner_id == owner_id, dirs.c.rel_path == dst)
        )
        return ()
    blob_id = conn.execute(
        delete(files)
        .where(files.c.owner_id == owner_id, files.c.rel_path == dst)
        .returning(files.c.blob_id)
    ).scalar_one()
    return (str(blob_id),)


def _move_file(conn: Connection, owner_id: int, src: str, dst: str) -> None:
    conn.execute(
        update(files)
        .where(files.c.owner_id == owner_id, files.c.rel_path == src)
        .values(rel_path=dst, parent=_parent_of(dst), name=dst.rpartition("/")[2])
    )


def _move_folder(conn: Connection, owner_id: int, src: str, dst: str) -> None:
    # Descendants keep their names; only the `src` prefix of rel_path and parent
    # changes. The key range ['src/', 'src0') holds exactly the descendants
    # because '0' is the code point after '/'. SUBSTR counts characters on both
    # databases, as len() does in Python.
    conn.execute(
        update(dirs)
        .where(dirs.c.owner_id == owner_id, dirs.c.rel_path == src)
        .values(rel_path=dst, parent=_parent_of(dst), name=dst.rpartition("/")[2])
    )
    tail_from = len(src) + 1
    for table in (dirs, files):
        conn.execute(
            update(table)
            .where(
                table.c.owner_id == owner_id,
                table.c.rel_path >= src + "/",
                table.c.rel_path < src + "0",
            )
            .values(
                rel_path=literal(dst) + func.substr(table.c.rel_path, tail_from),
                parent=literal(dst) + func.substr(table.c.parent, tail_from),
            )
        )


def _user(row: Row[tuple[object, ...]]) -> User:
    return User(**row._asdict())


def _file_row(row: Row[tuple[object, ...]]) -> FileRow:
    fields = row._asdict()
    del fields["parent"], fields["name"]
    return FileRow(**fields)


def _dir_entry(row: Row[tuple[object, ...]]) -> DirEntry:
    return DirEntry(**row._asdict())

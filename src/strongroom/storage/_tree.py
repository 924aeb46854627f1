"""SQL mechanics of the home-space tree, shared by `MetadataStore`'s methods.

Every function takes an open connection (inside the caller's transaction) and
normalised path keys; `check_key` is the only one that looks at a key's shape.
The tables and their ordering rules are described in `_schema.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Literal

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    Row,
    Select,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    union_all,
    update,
)

from strongroom.errors import (
    DirectoryNotEmptyError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
    UserNotFoundError,
)
from strongroom.storage._schema import dirs, files, users
from strongroom.storage.records import DirEntry, FileRow

# PostgreSQL refuses a btree index entry over about 2700 bytes (a third of a page).
# A path key sits in the unique index once and, split as parent + name, in the
# listing index once more; 2048 bytes leaves room for the owner id and the tuple
# header. Known limit: home paths are shorter than the 4095 bytes that directory
# spaces allow.
MAX_KEY_BYTES = 2048

Kind = Literal["file", "dir"]
NOUN = {"file": "file", "dir": "folder"}


def new_id(primary_key: Sequence[object] | None) -> int:
    assert primary_key is not None and isinstance(primary_key[0], int)
    return primary_key[0]


def check_key(op: str, rel_path: str, *, top_ok: bool = False) -> None:
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


def parent_of(rel_path: str) -> str:
    return rel_path.rpartition("/")[0]


def ancestors(rel_path: str) -> list[str]:
    parts = rel_path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def lock_owner(conn: Connection, owner_id: int) -> None:
    found = conn.execute(
        select(users.c.id).where(users.c.id == owner_id).with_for_update()
    ).first()
    if found is None:
        raise UserNotFoundError(f"no user has id {owner_id}")


def kind_of(conn: Connection, owner_id: int, rel_path: str) -> Kind | None:
    row = entry_row(conn, owner_id, rel_path)
    return None if row is None else row.kind


def require_dir(
    conn: Connection, owner_id: int, rel_path: str, op: str, shown: str | None = None
) -> None:
    # `shown` is the path the user asked about, when that is a child of `rel_path`.
    if rel_path == "":
        return
    kind = kind_of(conn, owner_id, rel_path)
    if kind == "file":
        raise NotADirectoryPathError(op, shown or rel_path, f"{rel_path!r} is a file")
    if kind is None:
        raise PathNotFoundError(op, shown or rel_path, f"no folder {rel_path!r}")


def has_children(conn: Connection, owner_id: int, rel_path: str) -> bool:
    return bool(children_rows(conn, owner_id, rel_path, None, 1))


def children_rows(
    conn: Connection, owner_id: int, parent: str, after: str | None, limit: int
) -> Sequence[Row[tuple[str, str, int, datetime]]]:
    """Return (name, kind, size, modified) of up to `limit` children, by name."""
    params = {"owner_id": owner_id, "key": parent, "after": after or "", "limit": limit}
    return conn.execute(_CHILDREN, params).all()


def entry_row(
    conn: Connection, owner_id: int, rel_path: str
) -> Row[tuple[str, str, int, datetime]] | None:
    """Return (name, kind, size, modified) of the file or folder at `rel_path`."""
    params = {"owner_id": owner_id, "key": rel_path, "after": "", "limit": 1}
    return conn.execute(_ENTRY, params).first()


def _entries_statement(key: str) -> Select[tuple[str, str, int, datetime]]:
    # Files and folders of one owner whose `key` column equals :key and whose
    # name sorts after :after (every name sorts after ""), merged by name. Each
    # side is limited before the union so that both use their listing index.
    # Built once per key column: listing is frequent, and building a statement
    # costs more than running it.
    sides = []
    for table, kind in ((files, "file"), (dirs, "dir")):
        size = table.c.size if table is files else literal(0, BigInteger)
        modified = table.c.modified if table is files else table.c.created
        side = (
            select(
                table.c.name,
                literal(kind).label("kind"),
                size.label("size"),
                modified.label("modified"),
            )
            .where(
                table.c.owner_id == bindparam("owner_id"),
                table.c[key] == bindparam("key"),
                table.c.name > bindparam("after"),
            )
            .order_by(table.c.name)
            .limit(bindparam("limit", type_=Integer))
        )
        sides.append(select(side.subquery()))
    both = union_all(*sides).subquery()
    return select(both).order_by(both.c.name).limit(bindparam("limit", type_=Integer))


_CHILDREN = _entries_statement("parent")
_ENTRY = _entries_statement("rel_path")


def ensure_parents(
    conn: Connection, owner_id: int, rel_path: str, op: str, now: datetime
) -> None:
    above = ancestors(rel_path)
    if not above:
        return
    blocking = (
        conn.execute(
            select(files.c.rel_path).where(
                files.c.owner_id == owner_id, files.c.rel_path.in_(above)
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
                dirs.c.owner_id == owner_id, dirs.c.rel_path.in_(above)
            )
        ).scalars()
    )
    insert_dirs(conn, owner_id, [a for a in above if a not in present], now)


def insert_dirs(
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
                "parent": parent_of(rel_path),
                "name": rel_path.rpartition("/")[2],
                "created": now,
            }
            for rel_path in rel_paths
        ],
    )


def insert_file(conn: Connection, draft: FileRow) -> FileRow:
    result = conn.execute(insert(files).values(file_values(draft)))
    return replace(draft, id=new_id(result.inserted_primary_key))


def file_values(row: FileRow) -> dict[str, object]:
    """Return the column values of a file row, without its id."""
    return {
        "owner_id": row.owner_id,
        "rel_path": row.rel_path,
        "parent": parent_of(row.rel_path),
        "name": row.name,
        "blob_id": row.blob_id,
        "size": row.size,
        "sha256": row.sha256,
        "content_type": row.content_type,
        "created": row.created,
        "modified": row.modified,
        "damage": row.damage,
    }


def clear_destination(
    conn: Connection, owner_id: int, kind: Kind, dst: str, overwrite: bool
) -> tuple[str, ...]:
    dst_kind = kind_of(conn, owner_id, dst)
    if dst_kind is None:
        return ()
    if not overwrite:
        raise PathExistsError("move", dst, f"a {NOUN[dst_kind]} has this name")
    if kind == "file" and dst_kind == "dir":
        raise IsADirectoryPathError("move", dst, "a folder has this name")
    if kind == "dir" and dst_kind == "file":
        raise NotADirectoryPathError("move", dst, "a file has this name")
    if dst_kind == "dir":
        if has_children(conn, owner_id, dst):
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


def move_file(conn: Connection, owner_id: int, src: str, dst: str) -> None:
    conn.execute(
        update(files)
        .where(files.c.owner_id == owner_id, files.c.rel_path == src)
        .values(rel_path=dst, parent=parent_of(dst), name=dst.rpartition("/")[2])
    )


def move_folder(conn: Connection, owner_id: int, src: str, dst: str) -> None:
    # Descendants keep their names; only the `src` prefix of rel_path and parent
    # changes. The key range ['src/', 'src0') holds exactly the descendants
    # because '0' is the code point after '/'. SUBSTR counts characters on both
    # databases, as len() does in Python.
    conn.execute(
        update(dirs)
        .where(dirs.c.owner_id == owner_id, dirs.c.rel_path == src)
        .values(rel_path=dst, parent=parent_of(dst), name=dst.rpartition("/")[2])
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


def file_row(row: Row[tuple[object, ...]]) -> FileRow:
    fields = row._asdict()
    del fields["parent"], fields["name"]
    return FileRow(**fields)


def dir_entry(row: Row[tuple[object, ...]]) -> DirEntry:
    return DirEntry(**row._asdict())

"""Reaching what a share link names: once when it is made, again for each use.

`identify_target` records what a new share names; `open_shared_file` and
`open_shared_folder` reach it again for each request and refuse with
`ShareGoneError` when it is no longer the object that was shared. Public through
`strongroom.storage.shares`.

Design note on reaching the target. The obvious way keeps the shared path and,
per request, joins the requested sub path to it and asks the space. In a
directory space that join is the bug share links keep having: a symlink inside
the shared folder that points at a sibling folder stays inside the space, so the
space's own confinement lets it through. Here a folder share opens the shared
folder as a root of its own (`Root.subroot`) and resolves every request beneath
that descriptor, with the space's policies; a file share opens the file and
compares what the opened descriptor is (its identity, below) with what was
recorded at creation. A home space has no links: a folder share looks up only
rows beneath the shared key, and the sub path passes the name rules on its own
before it is joined, so `..` cannot climb above the share.

Identity (the `target` column): in a directory space `inode:<dev>:<ino>:<mtime>`
for a file and `inode:<dev>:<ino>` for a folder; in a home `file:<row id>:<blob
id>` for a file and `dir:<creation time in ns>` for a folder. A new upload over
a shared file renames a new inode into place (directory space) or points the row
at a new blob (home), and a file changed in place gets a new mtime: in both kinds
of space the link then ends, as it does when the target is deleted, moved away
or replaced by another.

Known limits. Linux hands a freed inode number to the next new object at once,
and a folder's mtime moves with its entries, so in a directory space a folder
deleted and made again under the same name can come back with the same inode
number, and its link then serves the new folder at the shared path. The stable
fix is the creation time (statx STATX_BTIME), which the confined root does not
report yet. A home folder is checked when a request starts; a folder deleted and
made again while that request runs is what the rest of it reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Literal, Self

from strongroom.confine import Entry, Root, parse_user_path
from strongroom.errors import (
    DamagedContentError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    NotRegularFileError,
    PathError,
    PathNotFoundError,
    PermissionDeniedError,
    ShareGoneError,
)
from strongroom.storage.home import HomeSpace
from strongroom.storage.spaces import (
    DirectorySpace,
    FileMeta,
    FileReader,
    ListPage,
    Precondition,
    Space,
    SpaceWriter,
)

__all__ = [
    "SHARE_GONE",
    "ShareKind",
    "ShareTarget",
    "SharedFolder",
    "identify_target",
    "open_shared_file",
    "open_shared_folder",
]

# One message for every way a link can end, so an answer tells nothing more.
SHARE_GONE = "this share link has ended"

ShareKind = Literal["file", "dir"]


@dataclass(frozen=True, slots=True)
class ShareTarget:
    """What a share names: a space, a normalised path, its kind and identity."""

    space: str
    rel_path: str
    kind: ShareKind
    identity: str


def identify_target(space: Space, rel_path: str) -> ShareTarget:
    """Resolve a path to share through the space's own confined stat and open.

    A file must be one the space would serve for download (so it is opened once
    here); a folder is opened as it will be for every request.

    Raises:
        InvalidPathError: the path names the top of the space.
        NotRegularFileError: it is neither a file nor a folder.
        PathError: as the space's `meta` and `open`, e.g. not found (404).
    """
    meta = space.meta(rel_path)
    if meta.path == "":
        reason = "name a file or folder inside the space, not the space itself"
        raise InvalidPathError("share", rel_path, reason)
    if meta.kind not in ("file", "dir"):
        reason = f"only files and folders can be shared, and this is a {meta.kind}"
        raise NotRegularFileError("share", rel_path, reason)
    kind: ShareKind = "file" if meta.kind == "file" else "dir"
    if isinstance(space, HomeSpace):
        identity = _home_identity(space, meta)
    else:
        identity = _inode_identity(_directory(space), meta.path, kind)
    return ShareTarget(space.name, meta.path, kind, identity)


def open_shared_file(space: Space, target: ShareTarget) -> tuple[FileReader, FileMeta]:
    """Open the file a file share names, if it is still the file that was shared.

    The caller owns the handle.

    Raises:
        ShareGoneError: the file is gone, replaced, or no longer served.
    """
    if isinstance(space, HomeSpace):
        return _open_home_file(space, target)
    try:
        handle, meta = _directory(space).open(target.rel_path)
    except PathError:
        raise ShareGoneError(SHARE_GONE) from None
    if _file_identity(handle.entry) != target.identity:
        handle.close()
        raise ShareGoneError(SHARE_GONE)
    return handle, meta


def open_shared_folder(space: Space, target: ShareTarget) -> SharedFolder:
    """Open the folder a folder share names as a read-only space rooted at it.

    Raises:
        ShareGoneError: the folder is gone, replaced, or no longer reachable.
    """
    name = target.rel_path.rsplit("/", 1)[-1]
    if isinstance(space, HomeSpace):
        try:
            meta = space.meta(target.rel_path)
        except PathError:
            raise ShareGoneError(SHARE_GONE) from None
        if meta.kind != "dir" or _home_identity(space, meta) != target.identity:
            raise ShareGoneError(SHARE_GONE)
        return SharedFolder(_HomeFolderView(space, target.rel_path), name)
    try:
        root = _directory(space).root.subroot(target.rel_path)
    except PathError:
        raise ShareGoneError(SHARE_GONE) from None
    if _folder_identity(root.stat(".")) != target.identity:
        root.close()
        raise ShareGoneError(SHARE_GONE)
    return SharedFolder(DirectorySpace(space.name, root, writable=False), name, root)


class SharedFolder:
    """A shared folder opened for one request; close it when the request is done.

    `view` is a read-only space whose top is the shared folder: paths given to
    it are relative to the share, and so are the paths in its answers. Nothing
    beside or above the folder can be named through it.
    """

    def __init__(self, view: Space, name: str, root: Root | None = None) -> None:
        self.view = view
        self.name = name
        self._root = root

    def close(self) -> None:
        """Release the folder's descriptor (idempotent)."""
        if self._root is not None:
            self._root.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _HomeFolderView:
    """A home folder as a read-only space: rows beneath its key, nothing else."""

    kind: Literal["home"] = "home"
    writable = False

    def __init__(self, home: HomeSpace, prefix: str) -> None:
        self.name = home.name
        self._home = home
        self._prefix = prefix

    def list(self, rel_path: str, cursor: str | None, limit: int) -> ListPage:
        """List a folder of the share."""
        key = self._key("list", rel_path)
        with self._errors_in_share(rel_path):
            page = self._home.list(key, cursor, limit)
        return ListPage([self._rebased(m) for m in page.entries], page.next_cursor)

    def meta(self, rel_path: str) -> FileMeta:
        """Describe a file or folder of the share."""
        key = self._key("stat", rel_path)
        with self._errors_in_share(rel_path):
            return self._rebased(self._home.meta(key))

    def open(self, rel_path: str) -> tuple[FileReader, FileMeta]:
        """Open a file of the share."""
        key = self._key("read", rel_path)
        with self._errors_in_share(rel_path):
            handle, meta = self._home.open(key)
        return handle, self._rebased(meta)

    def writer(
        self, rel_path: str, *, exclusive: bool,
        precondition: Precondition | None = None,
    ) -> SpaceWriter:
        """Refuse: a share link is read-only."""
        raise _read_only(rel_path)

    def mkdir(self, rel_path: str) -> FileMeta:
        """Refuse: a share link is read-only."""
        raise _read_only(rel_path)

    def delete(
        self, rel_path: str, *, precondition: Precondition | None = None
    ) -> None:
        """Refuse: a share link is read-only."""
        raise _read_only(rel_path)

    def move(self, src: str, dst: str, *, overwrite: bool) -> FileMeta:
        """Refuse: a share link is read-only."""
        raise _read_only(src)

    def _key(self, op: str, rel_path: str) -> str:
        """Return the home key of a share-relative path, checked on its own first.

        The name rules refuse a `..` that climbs above the share's top before
        the prefix is put in front, so no sub path reaches beside the share.
        """
        if rel_path.strip("/") in ("", "."):
            return self._prefix
        up = parse_user_path(op, rel_path)
        parts: list[str] = []
        for part in up.parts:
            if part == "..":
                parts.pop()
            else:
                parts.append(part)
        if not parts:
            return self._prefix
        return "/".join([self._prefix, *parts]) + ("/" if up.must_be_dir else "")

    def _rebased(self, meta: FileMeta) -> FileMeta:
        return replace(meta, path=meta.path[len(self._prefix) + 1:])

    @contextmanager
    def _errors_in_share(self, rel_path: str) -> Iterator[None]:
        # The home's own messages name its full keys; a link holder sees only
        # paths inside the share.
        try:
            yield
        except PathError as exc:
            reason = _REASONS_IN_SHARE.get(type(exc), "this path is refused here")
            raise type(exc)(exc.op, rel_path, reason) from exc


_DAMAGED = "its stored content is damaged; its owner must upload it again"
_REASONS_IN_SHARE: dict[type[PathError], str] = {
    DamagedContentError: _DAMAGED,
    PathNotFoundError: "no such file or folder in this share",
    IsADirectoryPathError: "it is a folder, not a file",
    NotADirectoryPathError: "a part of the path is a file, not a folder",
}


def _open_home_file(
    home: HomeSpace, target: ShareTarget
) -> tuple[FileReader, FileMeta]:
    # The blob is opened by the id checked here, not looked up by path again, so
    # a replace racing with this request cannot slip another file in.
    row = home.metadata.get_file(home.owner_id, target.rel_path)
    if row is None or f"file:{row.id}:{row.blob_id}" != target.identity:
        raise ShareGoneError(SHARE_GONE)
    if row.damage is not None:
        raise DamagedContentError("read", row.name, _DAMAGED)
    try:
        handle = home.blob_store.open_blob(row.blob_id)
    except PathError:
        raise ShareGoneError(SHARE_GONE) from None
    meta = FileMeta(
        name=row.name,
        path=row.rel_path,
        kind="file",
        size=row.size,
        mtime_ns=int(row.modified.timestamp() * 1_000_000_000),
        etag=f'"{row.sha256}"',
        content_type=row.content_type,
    )
    return handle, meta


def _home_identity(home: HomeSpace, meta: FileMeta) -> str:
    if meta.kind == "dir":
        return f"dir:{meta.mtime_ns}"
    row = home.metadata.get_file(home.owner_id, meta.path)
    if row is None:
        raise PathNotFoundError("share", meta.path, "no such file")
    return f"file:{row.id}:{row.blob_id}"


def _inode_identity(space: DirectorySpace, rel_path: str, kind: ShareKind) -> str:
    if kind == "file":
        handle, _ = space.open(rel_path)
        with handle:
            return _file_identity(handle.entry)
    with space.root.subroot(rel_path) as root:
        return _folder_identity(root.stat("."))


def _file_identity(entry: Entry) -> str:
    # File systems hand a freed inode number to the next new file at once, so
    # (dev, ino) alone would take a re-created file for the shared one; a new
    # file also has a new mtime.
    return f"inode:{entry.dev}:{entry.ino}:{entry.mtime_ns}"


def _folder_identity(entry: Entry) -> str:
    # A folder's mtime moves with every entry added or removed, so it cannot
    # tell a replaced folder from a busy one; see the module's known limits.
    return f"inode:{entry.dev}:{entry.ino}"


def _directory(space: Space) -> DirectorySpace:
    if not isinstance(space, DirectorySpace):
        raise TypeError(f"no share support for {type(space).__name__}")
    return space


def _read_only(rel_path: str) -> PermissionDeniedError:
    return PermissionDeniedError(f"cannot change {rel_path!r}: share links only read")

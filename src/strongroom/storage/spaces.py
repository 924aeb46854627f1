"""Spaces: what a user can list, read and write, behind one protocol.

Two kinds share the protocol. A `DirectorySpace` maps user paths to real files
through a `Root` with the space's policies. A `HomeSpace` (in `home.py`) maps them to
rows in the metadata store and random-named blobs. The API only sees `Space`.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import mimetypes
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Literal, Protocol

from strongroom.confine import AtomicWriter, Entry, ReadHandle, Root
from strongroom.errors import (
    InvalidCursorError,
    PathError,
    PathNotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
)
from strongroom.storage.blobs import BlobReader

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "DirectorySpace",
    "FileMeta",
    "FileReader",
    "ListPage",
    "Precondition",
    "Space",
    "SpaceWriter",
    "decode_cursor",
    "encode_cursor",
    "etag_of",
    "guess_content_type",
    "paginate",
]

# Entries per listing page unless the client asks otherwise, and the most it may ask
# for: a page of 5,000 entries is a few hundred KiB of JSON.
DEFAULT_PAGE_SIZE = 1000
MAX_PAGE_SIZE = 5000
# A temporary name untouched this long belongs to a killed process: a live upload
# writes at least every few seconds (the server's body timeout closes one that
# stalls), so an hour leaves a wide margin for slow disks and long fsyncs.
STAGING_GRACE_SECONDS = 3600.0

# An opened file: a descriptor from a confined root (directory spaces and local
# blobs), or a reader of a blob store that has none (S3).
FileReader = ReadHandle | BlobReader

Kind = Literal[
    "file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev", "other"
]


@dataclass(frozen=True, slots=True)
class FileMeta:
    """Metadata of one file or folder, as the API shows it."""

    name: str
    path: str
    kind: Kind
    size: int
    mtime_ns: int
    etag: str
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a folder listing, sorted by name; `next_cursor` is opaque."""

    entries: list[FileMeta]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Precondition:
    """What a replacing write or a delete asks of the file there (HTTP's
    `If-Match`, `If-None-Match` with ETags, and `If-Unmodified-Since`).

    `match`: a file must be there and its ETag one of these (compared strongly;
    `*` takes any file). Else `unmodified_since` (whole seconds): a file must be
    there, not changed after that moment. `none_match`: the file there, if any,
    has none of these ETags (compared weakly; `*` refuses any file). A home
    checks it inside the transaction that makes the change, so the check is
    exact. A directory space checks it under an exclusive lock on the file,
    which every conditional change of that file through Strongroom takes, just
    before its rename or unlink: only a change that bypasses the service (or an
    unconditional write) can land in between, as the file system has no
    compare-and-swap on a name.
    """

    match: frozenset[str] | None = None
    none_match: frozenset[str] | None = None
    unmodified_since: int | None = None

    def require(self, op: str, rel_path: str, found: FileMeta | None) -> None:
        """Raise `PreconditionFailedError` unless `found` (a file, or None) meets it."""
        file = found if found is not None and found.kind == "file" else None
        if (self.match is not None or self.unmodified_since is not None) and not file:
            raise PreconditionFailedError(
                f"{op} refused: {rel_path!r} is not a file now, and the request "
                "was conditional on the file there (If-Match or If-Unmodified-Since)"
            )
        if file is None:
            return
        if self.match is not None:
            if "*" not in self.match and file.etag not in self.match:
                raise PreconditionFailedError(
                    f"{op} refused: {rel_path!r} has changed since the version "
                    "named in If-Match; read it again and retry"
                )
        elif (self.unmodified_since is not None
              and file.mtime_ns // 1_000_000_000 > self.unmodified_since):
            raise PreconditionFailedError(
                f"{op} refused: {rel_path!r} was modified after the time given in "
                "If-Unmodified-Since; read it again and retry"
            )
        if self.none_match is not None:
            tags = {tag.removeprefix("W/") for tag in self.none_match}
            if "*" in tags or file.etag.removeprefix("W/") in tags:
                raise PreconditionFailedError(
                    f"{op} refused: {rel_path!r} exists and matches If-None-Match"
                )


class SpaceWriter(Protocol):
    """An upload in progress: nothing is visible until `commit`."""

    size: int

    def write(self, data: bytes) -> None:
        """Append a chunk."""

    def commit(self) -> tuple[FileMeta, bool]:
        """Publish the file atomically; return (metadata, created)."""

    def abort(self) -> None:
        """Discard everything written (idempotent)."""


class Space(Protocol):
    """The operations every space offers; paths are untrusted user paths."""

    name: str
    writable: bool

    @property
    def kind(self) -> Literal["home", "directory"]:
        """Which kind of space this is."""

    def list(self, rel_path: str, cursor: str | None, limit: int) -> ListPage:
        """List a folder ("." or "" is the top)."""

    def meta(self, rel_path: str) -> FileMeta:
        """Describe one file or folder."""

    def open(self, rel_path: str) -> tuple[FileReader, FileMeta]:
        """Open a file for reading."""

    def writer(
        self, rel_path: str, *, exclusive: bool,
        precondition: Precondition | None = None,
    ) -> SpaceWriter:
        """Start an upload to `rel_path`, creating missing parent folders.

        `precondition` is checked now and again when the upload commits.
        """

    def mkdir(self, rel_path: str) -> FileMeta:
        """Create a folder (and missing parents)."""

    def delete(
        self, rel_path: str, *, precondition: Precondition | None = None
    ) -> None:
        """Remove a file or an empty folder (only a file if `precondition`)."""

    def move(self, src: str, dst: str, *, overwrite: bool) -> FileMeta:
        """Move a file or folder within the space."""


class DirectorySpace:
    """A directory an admin exposes, served through a confined `Root`."""

    kind: Literal["directory"] = "directory"

    def __init__(self, name: str, root: Root, *, writable: bool) -> None:
        self.name = name
        self.root = root
        self.writable = writable

    def list(self, rel_path: str, cursor: str | None, limit: int) -> ListPage:
        """List a folder, paging by name after `cursor`."""
        top = rel_path.strip("/") in ("", ".")
        entries = sorted(
            (e for e in self.root.list_dir("." if top else rel_path)
             if _is_addressable(e.name)),
            key=lambda e: e.name,
        )
        prefix = "" if top else _display_path(rel_path) + "/"
        return paginate(
            (_meta_of(prefix + e.name, e) for e in entries), cursor, limit
        )

    def meta(self, rel_path: str) -> FileMeta:
        """Describe one file or folder (following links as the policy allows)."""
        entry = self.root.stat(rel_path)
        return _meta_of(_display_path(rel_path), entry)

    def open(self, rel_path: str) -> tuple[ReadHandle, FileMeta]:
        """Open a regular file; the metadata comes from the opened descriptor."""
        handle = self.root.open_read(rel_path)
        return handle, _meta_of(_display_path(rel_path), handle.entry)

    def writer(
        self, rel_path: str, *, exclusive: bool,
        precondition: Precondition | None = None,
    ) -> SpaceWriter:
        """Start an atomic upload (parents created through the root)."""
        self._check_writable("upload to", rel_path)
        check = None
        if precondition is not None:
            @contextmanager
            def check() -> Iterator[None]:
                with self._locked(rel_path):
                    precondition.require("upload", rel_path, self._file_at(rel_path))
                    yield
            with check():
                pass  # refused now, before the body is read, if it fails already
        return _DirectoryWriter(
            rel_path, self.root.open_writer(rel_path, exclusive=exclusive,
                                            make_parents=True),
            check,
        )

    def mkdir(self, rel_path: str) -> FileMeta:
        """Create a folder and its missing parents."""
        self._check_writable("create a folder in", rel_path)
        self.root.mkdir(rel_path, parents=True)
        return _meta_of(_display_path(rel_path), self.root.lstat(rel_path))

    def delete(
        self, rel_path: str, *, precondition: Precondition | None = None
    ) -> None:
        """Remove a file, a link itself, or an empty folder."""
        self._check_writable("delete in", rel_path)
        if precondition is None:
            self.root.remove(rel_path)
            return
        with self._locked(rel_path):
            precondition.require("delete", rel_path, self._file_at(rel_path))
            self.root.remove(rel_path)

    def move(self, src: str, dst: str, *, overwrite: bool) -> FileMeta:
        """Move within the space; refuses to replace unless `overwrite`."""
        self._check_writable("move in", src)
        self.root.rename(src, dst, overwrite=overwrite)
        # lstat: a moved symlink is described as the link it is, not followed.
        return _meta_of(_display_path(dst), self.root.lstat(dst))

    def remove_staging_leftovers(self) -> int:
        """Delete what killed writes left behind (hidden temporary names); count them.

        Only entries untouched for `STAGING_GRACE_SECONDS`, so a write in progress
        in this or another process serving the same folder is never disturbed.
        """
        return len(self.root.remove_staging_leftovers(STAGING_GRACE_SECONDS))

    @contextmanager
    def _locked(self, rel_path: str) -> Iterator[None]:
        """Hold an exclusive flock on the file at `rel_path` (if one is there).

        Conditional changes of one file take turns this way, in every process
        on this host: each checks the name again once it holds the lock, so
        the second of two writers with the same If-Match sees the first's file.
        """
        try:
            handle = self.root.open_read(rel_path)
        except PathError:
            yield  # no regular file there: nothing to take turns on
            return
        with handle:
            fcntl.flock(handle.fd, fcntl.LOCK_EX)
            yield

    def _file_at(self, rel_path: str) -> FileMeta | None:
        # What a precondition is checked against: the name itself, never
        # through a final link (a link is not a file here, so it fails).
        try:
            return _meta_of(_display_path(rel_path), self.root.lstat(rel_path))
        except PathNotFoundError:
            return None

    def _check_writable(self, action: str, rel_path: str) -> None:
        if not self.writable:
            raise PermissionDeniedError(
                f"cannot {action} space {self.name!r}: it is read-only"
            )


class _DirectoryWriter:
    def __init__(
        self, rel_path: str, writer: AtomicWriter,
        check: Callable[[], AbstractContextManager[None]] | None = None,
    ) -> None:
        self._rel_path = rel_path
        self._writer = writer
        # A precondition, checked again under its lock, held through the rename.
        self._check = check
        self.size = 0

    def write(self, data: bytes) -> None:
        self._writer.write(data)
        self.size = self._writer.size

    def commit(self) -> tuple[FileMeta, bool]:
        with self._check() if self._check is not None else nullcontext():
            entry, created = self._writer.commit()
        return _meta_of(_display_path(self._rel_path), entry), created

    def abort(self) -> None:
        self._writer.abort()


def paginate(metas: Iterable[FileMeta], cursor: str | None, limit: int) -> ListPage:
    """Return the page of name-sorted `metas` that follows `cursor`."""
    after = decode_cursor(cursor) if cursor else None
    page: list[FileMeta] = []
    for meta in metas:
        if after is not None and meta.name <= after:
            continue
        if len(page) == limit:
            return ListPage(page, encode_cursor(page[-1].name))
        page.append(meta)
    return ListPage(page, None)


def encode_cursor(name: str) -> str:
    """Encode the last name of a page as an opaque cursor."""
    raw = name.encode("utf-8")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> str:
    """Decode a cursor made by `encode_cursor`; raise `InvalidCursorError` if bad."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
        if not raw:
            raise ValueError("empty cursor")
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        raise InvalidCursorError(
            "the cursor is not one a listing gave; list again without it"
        ) from None


def etag_of(entry: Entry) -> str:
    """Return a validator that changes whenever the file is replaced or written."""
    return f'"{entry.ino:x}-{entry.size:x}-{entry.mtime_ns:x}"'


def guess_content_type(name: str) -> str:
    """Return the media type for a file name, from its extension only.

    Never from the content and never from what an uploader declared: the type we
    send must not be something a client chose to make a browser run.
    """
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    if encoding or not guessed:
        return "application/octet-stream"
    return guessed


def _meta_of(path: str, entry: Entry) -> FileMeta:
    name = path.rsplit("/", 1)[-1] if path else ""
    return FileMeta(
        name=name,
        path=path,
        kind=entry.kind,
        size=entry.size,
        mtime_ns=entry.mtime_ns,
        etag=etag_of(entry),
        content_type=guess_content_type(name) if entry.kind == "file" else None,
    )


def _display_path(rel_path: str) -> str:
    """Return the path as answers show it: no `.` parts, no repeated slashes.

    `..` stays: in a directory space it is resolved on disk, where a symlink can
    give it another meaning than the text suggests, so we do not rewrite it.
    """
    return "/".join(p for p in rel_path.split("/") if p not in ("", "."))


def _is_addressable(name: str) -> bool:
    # A name that is not valid UTF-8 (os.listdir hands it over with surrogate
    # escapes) cannot be sent back in a request path, and would break JSON.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

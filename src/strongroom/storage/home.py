"""`HomeSpace`: a user's private space, as metadata rows that point at blobs.

The user's path of every file is a row in the metadata store; its bytes are a blob
with a random name. No user path ever becomes a file name on disk, so nothing a user
sends can steer a filesystem operation; the rows are keyed by the owner's id, so no
path or id reaches another user's files.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Literal

from strongroom.confine import parse_user_path
from strongroom.errors import (
    DamagedContentError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
    StorageError,
    StorageQuotaError,
)
from strongroom.storage.blobs import BlobStore, BlobWriter
from strongroom.storage.metadata import MetadataStore, RowCheck
from strongroom.storage.records import DirEntry, FileRow
from strongroom.storage.spaces import (
    FileMeta,
    FileReader,
    ListPage,
    Precondition,
    decode_cursor,
    encode_cursor,
    guess_content_type,
)

__all__ = ["BLOB_RACE_RETRIES", "HomeSpace"]

log = logging.getLogger("strongroom.storage")

# Each retry follows a replace that committed between our row read and blob open;
# three in a row means the file is being replaced faster than it can be read.
BLOB_RACE_RETRIES = 3


class HomeSpace:
    """One user's home: listing, reading and writing through rows and blobs.

    Uploads are written to a new blob first; the row is switched to it in one
    transaction, and only then is the old blob deleted. A crash in between leaves an
    orphan blob (which `strongroom check` finds), never a row without its bytes.
    """

    name = "home"
    kind: Literal["home"] = "home"
    writable = True

    def __init__(
        self,
        owner_id: int,
        meta: MetadataStore,
        blobs: BlobStore,
        *,
        quota_bytes: int | None = None,
    ) -> None:
        self.owner_id = owner_id
        self._meta = meta
        self._blobs = blobs
        # What all the owner's files may add up to; checked as each is stored.
        self.quota_bytes = quota_bytes

    @property
    def metadata(self) -> MetadataStore:
        """The metadata store holding this home's rows (for archive import)."""
        return self._meta

    @property
    def blob_store(self) -> BlobStore:
        """The blob store holding this home's bytes (for archive import)."""
        return self._blobs

    def list(self, rel_path: str, cursor: str | None, limit: int) -> ListPage:
        """List a folder by name, a page at a time."""
        key = _dir_key("list", rel_path, top_ok=True)
        after = decode_cursor(cursor) if cursor else None
        page = self._meta.list_children(self.owner_id, key, after, limit)
        prefix = f"{key}/" if key else ""
        entries = [_entry_meta(prefix + e.name, e) for e in page.entries]
        next_cursor = encode_cursor(page.next_cursor) if page.next_cursor else None
        return ListPage(entries, next_cursor)

    def meta(self, rel_path: str) -> FileMeta:
        """Describe one file or folder."""
        key = _key("stat", rel_path, top_ok=True)
        must_be_dir = key.endswith("/")
        key = key.rstrip("/")
        row = self._meta.get_file(self.owner_id, key) if key else None
        if row is not None:
            if must_be_dir:
                reason = "a final '/' or '/.' names a folder, and this is a file"
                raise NotADirectoryPathError("stat", rel_path, reason)
            return _file_meta(row)
        entry = self._meta.get_entry(self.owner_id, key)
        if entry is None:
            raise PathNotFoundError("stat", rel_path, "no such file or folder")
        return _entry_meta(key, entry)

    def check_room(self, rel_path: str, size: int) -> None:
        """Refuse now a file of `size` bytes at `rel_path` that the quota cannot hold.

        An early answer for a client that declares its size (a resumable
        upload); the quota is enforced for good when the file is stored.

        Raises:
            StorageQuotaError: storing it would take the home past its quota.
        """
        if self.quota_bytes is None:
            return
        row = self._meta.get_file(self.owner_id, _file_key("put", rel_path))
        replaced = row.size if row is not None else 0
        after = self._meta.used_bytes(self.owner_id) - replaced + size
        if size > replaced and after > self.quota_bytes:
            raise StorageQuotaError(
                f"a {size}-byte file would take the home space to {after} bytes, "
                f"over its quota of {self.quota_bytes} bytes; delete files first"
            )

    def open(self, rel_path: str) -> tuple[FileReader, FileMeta]:
        """Open a file's blob for reading."""
        key = _file_key("read", rel_path)
        # A replace commits the new row, then deletes the old blob: a reader that
        # read the old row may find its blob gone, and reads the row again.
        for _ in range(BLOB_RACE_RETRIES):
            row = self._meta.get_file(self.owner_id, key)
            if row is None:
                entry = self._meta.get_entry(self.owner_id, key)
                if entry is not None and entry.kind == "dir":
                    raise IsADirectoryPathError("read", rel_path, "it is a folder")
                raise PathNotFoundError("read", rel_path, "no such file")
            if row.damage is not None:
                raise DamagedContentError(
                    "read", rel_path,
                    f"its stored content is damaged ({row.damage}); upload it again",
                )
            try:
                return self._blobs.open_blob(row.blob_id), _file_meta(row)
            except PathNotFoundError:
                continue
        raise StorageError(f"the stored bytes of {rel_path!r} kept vanishing")

    def writer(
        self, rel_path: str, *, exclusive: bool,
        precondition: Precondition | None = None,
    ) -> _HomeWriter:
        """Start an upload; it becomes visible on `commit`.

        `precondition` is checked now and again in the transaction that
        publishes the file.
        """
        if parse_user_path("write", rel_path).must_be_dir:
            reason = "a final '/' or '/.' names a folder; a file needs a file name"
            raise InvalidPathError("write", rel_path, reason)
        key = _file_key("write", rel_path)
        check = _row_check(precondition, "upload", rel_path)
        if check is not None or exclusive:
            existing = self._meta.get_file(self.owner_id, key)
            if check is not None:
                check(existing)
            if exclusive and existing is not None:
                raise PathExistsError("write", rel_path, "the name is already taken")
        entry = self._meta.get_entry(self.owner_id, key)
        if entry is not None and entry.kind == "dir":
            raise IsADirectoryPathError("write", rel_path, "a folder has that name")
        return _HomeWriter(self, key, self._blobs.create_blob(), exclusive, check)

    def mkdir(self, rel_path: str) -> FileMeta:
        """Create a folder and its missing parents."""
        key = _dir_key("mkdir", rel_path)
        self._meta.add_dir(self.owner_id, key, parents=True)
        return self.meta(key)

    def delete(
        self, rel_path: str, *, precondition: Precondition | None = None
    ) -> None:
        """Remove a file (and its blob) or an empty folder.

        With `precondition`, only a file that meets it (checked in the
        transaction that removes its row).
        """
        key = _key("delete", rel_path)
        check = _row_check(precondition, "delete", rel_path)
        if key.endswith("/"):
            if check is not None:
                check(None)  # it names a folder: a conditional delete takes files
            self._meta.remove_dir(self.owner_id, key.rstrip("/"))
            return
        try:
            blob_id = self._meta.remove_file(self.owner_id, key, check=check)
        except IsADirectoryPathError:
            self._meta.remove_dir(self.owner_id, key)
            return
        self._drop_blob(blob_id)

    def move(self, src: str, dst: str, *, overwrite: bool) -> FileMeta:
        """Move a file or folder; replaced files' blobs are deleted afterwards."""
        src_key, dst_key = _key("move", src), _key("move", dst)
        if src_key.endswith("/") or dst_key.endswith("/"):
            # Like rename(2): a trailing '/' on either side demands a folder.
            if self._meta.get_file(self.owner_id, src_key.rstrip("/")) is not None:
                reason = "a final '/' or '/.' names a folder, and the source is a file"
                raise NotADirectoryPathError("move", src, reason)
            src_key, dst_key = src_key.rstrip("/"), dst_key.rstrip("/")
        for blob_id in self._meta.move(
            self.owner_id, src_key, dst_key, overwrite=overwrite
        ):
            self._drop_blob(blob_id)
        return self.meta(dst_key)

    def _publish(
        self, key: str, blob_id: str, size: int, sha256: str, exclusive: bool,
        check: RowCheck | None = None,
    ) -> tuple[FileMeta, bool]:
        try:
            result = self._meta.put_file(
                self.owner_id, key, blob_id=blob_id, size=size, sha256=sha256,
                content_type=guess_content_type(key), create_only=exclusive,
                quota_bytes=self.quota_bytes, check=check,
            )
        except BaseException:
            self._blobs.delete_blob(blob_id)
            raise
        if result.replaced_blob_id is not None:
            self._drop_blob(result.replaced_blob_id)
        return _file_meta(result.file), result.created

    def _drop_blob(self, blob_id: str) -> None:
        # Called once no row refers to the blob any more: the change the client
        # asked for is done, so a store that fails now (an S3 outage) leaves an
        # orphan for `strongroom check --repair`, not an error for the client.
        try:
            self._blobs.delete_blob(blob_id)
        except StorageError as exc:
            log.warning("blob_delete_failed", extra={"blob_id": blob_id,
                                                     "reason": str(exc)})


class _HomeWriter:
    def __init__(
        self, home: HomeSpace, key: str, blob: BlobWriter, exclusive: bool,
        check: RowCheck | None = None,
    ) -> None:
        self._home = home
        self._key = key
        self._blob = blob
        self._exclusive = exclusive
        self._check = check
        self.size = 0

    def write(self, data: bytes) -> None:
        self._blob.write(data)
        self.size += len(data)

    def commit(self) -> tuple[FileMeta, bool]:
        stored = self._blob.commit()
        return self._home._publish(
            self._key, stored.blob_id, stored.size, stored.sha256, self._exclusive,
            self._check,
        )

    def abort(self) -> None:
        self._blob.abort()


def _key(op: str, rel_path: str, *, top_ok: bool = False) -> str:
    """Turn a user path into the row key: the name rules, then `..` lexically.

    There are no links in a home space, so `..` has only its lexical meaning here;
    the name rules already refused any `..` that climbs above the top. A trailing
    `/` (which names a folder) is kept as a final "/" so callers can refuse it
    where a file is meant; see `_file_key`.
    """
    if top_ok and rel_path.strip("/") in ("", "."):
        return ""
    up = parse_user_path(op, rel_path)
    parts: list[str] = []
    for part in up.parts:
        if part == "..":
            parts.pop()
        else:
            parts.append(part)
    if not parts and not top_ok:
        raise InvalidPathError(op, rel_path, "the path names the space itself")
    return "/".join(parts) + ("/" if up.must_be_dir and parts else "")


def _file_key(op: str, rel_path: str) -> str:
    """Return the key of a path that must name a file (no trailing `/`)."""
    key = _key(op, rel_path)
    if key.endswith("/"):
        reason = "a final '/' or '/.' names a folder, and a file is meant here"
        raise NotADirectoryPathError(op, rel_path, reason)
    return key


def _dir_key(op: str, rel_path: str, *, top_ok: bool = False) -> str:
    """Return the key of a path that names a folder (a trailing `/` is fine)."""
    return _key(op, rel_path, top_ok=top_ok).rstrip("/")


def _row_check(
    precondition: Precondition | None, op: str, rel_path: str
) -> RowCheck | None:
    """Turn a request's precondition into a check of the file row it acts on."""
    if precondition is None:
        return None

    def check(row: FileRow | None) -> None:
        precondition.require(op, rel_path, None if row is None else _file_meta(row))

    return check


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)


def _file_meta(row: FileRow) -> FileMeta:
    return FileMeta(
        name=row.name,
        path=row.rel_path,
        kind="file",
        size=row.size,
        mtime_ns=_ns(row.modified),
        etag=f'"{row.sha256}"',
        content_type=row.content_type,
    )


def _entry_meta(path: str, entry: DirEntry) -> FileMeta:
    return FileMeta(
        name=entry.name or path.rsplit("/", 1)[-1],
        path=path,
        kind=entry.kind,
        size=entry.size,
        mtime_ns=_ns(entry.modified),
        etag="",
        content_type=guess_content_type(entry.name) if entry.kind == "file" else None,
    )

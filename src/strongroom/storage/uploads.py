"""Resumable uploads in storage: rows, staged bytes, and publishing when complete.

The protocol (tus 1.0, in `strongroom.api.uploads`) needs four things from
storage: an upload that outlives a request and a server restart, an offset that
only moves when the bytes before it are on disk, one writer at a time, and a
file that appears at its path all at once, and only when complete.

Design note. The obvious design keeps the space's own atomic writer open
across requests and appends to it. It fails twice: a writer lives in one
process's memory (its staging file has a random name and a held descriptor),
so a restart or a second worker loses it; and a staging file in a directory
space sits in the target folder for days. Instead:

- State is a database row (`_schema.uploads`, reached through `_upload_rows`):
  owner, target, length, bytes received, expiry. Every server process sharing
  the database sees it.
- Bytes go to a private staging file per upload (`_staging`), outside every
  space, named by the upload id. A PATCH takes an exclusive flock on it (a
  second writer gets `UploadLockedError` at once), re-reads the row under the
  lock, cuts off anything past the recorded offset (a crashed or refused chunk),
  writes the chunk with pwrite, fsyncs, and only then moves the row's offset
  with a conditional UPDATE. The row therefore never claims bytes the disk
  does not hold.
- When the last byte is in, the staged file is copied through the target
  space's own writer (`Space.writer`: the confined root's staging file in a
  directory space, a new blob in a home) and committed, so every path rule and
  policy of that space applies again, and the file appears atomically. The row
  is marked complete only after the commit: `received == length` always means
  "published", so a client that lost the last answer and asks again learns
  the truth. A failed publish discards only the last chunk.

What we deliberately do not do: keep staged bytes inside a space (a hidden
file would sit in the user's folder for up to a day, and the confined root
cannot reopen one by name in another process), rename the staged file into
place (the data directory and a space are usually different file systems, and
the space's writer would be bypassed), or let a retry publish a completed
upload again (a complete upload takes no more bytes).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from strongroom.confine import parse_user_path
from strongroom.errors import (
    ChecksumMismatchError,
    HardlinkRefusedError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    NotRegularFileError,
    PathExistsError,
    PathNotFoundError,
    PermissionDeniedError,
    StorageError,
    SymlinkRefusedError,
    UploadGoneError,
    UploadLockedError,
    UploadNotFoundError,
    UploadOffsetError,
)
from strongroom.storage._staging import UPLOAD_ID, StagedFile, StagingArea
from strongroom.storage._upload_rows import UploadRecord, UploadRows
from strongroom.storage.home import HomeSpace
from strongroom.storage.metadata import MetadataStore
from strongroom.storage.spaces import DirectorySpace, FileMeta, Space

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "COMPLETED_KEEP_SECONDS",
    "MAX_LIVE_UPLOADS",
    "UPLOADS_DIR_NAME",
    "Append",
    "ChunkChecksum",
    "UploadLimits",
    "UploadRecord",
    "Uploads",
    "check_upload_target",
]

# The staging folder inside data_dir.
UPLOADS_DIR_NAME = "uploads"
# Issue #5 asks for a bound per user until a quota system exists: a hundred
# unfinished uploads is more than any person or sync client keeps open.
MAX_LIVE_UPLOADS = 100
# A finished upload's row is kept this long, so a client whose last answer was
# lost can still ask (HEAD) and learn that the upload completed.
COMPLETED_KEEP_SECONDS = 3600
# Staged files with no row are crash leftovers once this old; a new upload's
# file exists only for the moment between its creation and its row's insert.
ORPHAN_AGE_SECONDS = 3600
# Per-chunk checksums we offer (tus checksum extension; SHA-1 is mandatory).
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "sha512")

log = logging.getLogger("strongroom.uploads")


@dataclass(frozen=True, slots=True)
class UploadLimits:
    """How long unfinished uploads live and how much one user may keep open."""

    expiry_seconds: int
    max_reserved_bytes: int
    max_live: int = MAX_LIVE_UPLOADS


@dataclass(frozen=True, slots=True)
class ChunkChecksum:
    """A chunk's expected digest: an algorithm of `CHECKSUM_ALGORITHMS` and bytes."""

    algorithm: str
    digest: bytes


class Uploads:
    """Resumable uploads: create, append under a lock, publish, end, expire.

    Thread- and multi-process-safe (see the module's design note). Every method
    raises `StorageError` when the database or the staging folder fails.
    """

    def __init__(
        self,
        engine: Engine,
        staging: StagingArea,
        limits: UploadLimits,
        *,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._rows = UploadRows(engine)
        self._staging = staging
        self.limits = limits
        self._now = now or _utc_now

    @classmethod
    def open(
        cls,
        meta: MetadataStore,
        data_dir: Path,
        limits: UploadLimits,
        *,
        now: Callable[[], datetime] | None = None,
    ) -> Uploads:
        """Return the uploads on the metadata store's engine and `data_dir`.

        Never a second engine for one database (see `ShareStore.of`); the
        caller closes `meta`. The `uploads` table is created with the others.
        """
        staging = StagingArea.open_dir(data_dir / UPLOADS_DIR_NAME)
        return cls(meta._engine, staging, limits, now=now)

    def create(
        self,
        owner_id: int,
        space: Space,
        rel_path: str,
        length: int,
        *,
        metadata: str = "",
        sha256: str | None = None,
        create_only: bool = False,
    ) -> UploadRecord:
        """Start an upload of `length` bytes to `rel_path` of `space`.

        The target is checked now (`check_upload_target`) and again when the
        upload completes. An upload of 0 bytes is published at once.
        `create_only` refuses a name that is taken, now and at completion
        (the caller passes it again to `Append.finish`).

        Raises:
            PathError, PermissionDeniedError: as `check_upload_target`.
            PathExistsError: `create_only` and the name is taken.
            UploadQuotaError: the owner's unfinished uploads are at their bound.
            StorageQuotaError: the file would not fit the home's quota.
        """
        check_upload_target(space, rel_path, create_only=create_only)
        if isinstance(space, HomeSpace):
            space.check_room(rel_path, length)
        now = self._now()
        record = UploadRecord(
            id=secrets.token_hex(16), owner_id=owner_id, space=space.name,
            rel_path=rel_path, length=length, received=0, metadata=metadata,
            sha256=sha256, created=now,
            expires_at=now + timedelta(seconds=self.limits.expiry_seconds),
            completed=None,
        )

        if length == 0:
            _publish(record, None, space, exclusive=create_only)
            record = _completed(record, self._now())
            self._rows.insert(record)
        else:
            self._staging.create(record.id)
            try:
                self._rows.insert_within_bounds(
                    record, max_live=self.limits.max_live,
                    max_reserved_bytes=self.limits.max_reserved_bytes,
                )
            except BaseException:
                self._staging.remove(record.id)
                raise
        log.info("upload_created", extra=_fields(record))
        return record

    def status(self, owner_id: int, upload_id: str) -> UploadRecord:
        """Return the owner's upload.

        Raises:
            UploadNotFoundError: no such upload, or another user's.
            UploadGoneError: it expired (it is removed now).
        """
        return self._live(owner_id, upload_id)

    def begin_append(
        self,
        owner_id: int,
        upload_id: str,
        offset: int,
        checksum: ChunkChecksum | None = None,
    ) -> Append:
        """Lock the upload for one chunk that starts at `offset`.

        The caller writes the chunk to the returned `Append`, then calls
        `finish` (or `keep_partial` when the client went away) and `close`.

        Raises:
            UploadNotFoundError, UploadGoneError: as `status`; also gone when
                the staged bytes were lost.
            UploadOffsetError: `offset` is not the bytes received so far.
            UploadLockedError: another request is appending.
        """
        record = self._live(owner_id, upload_id)
        _check_offset(record, offset)
        if record.is_complete:
            return Append(self, record, None, checksum)

        staged = self._staging.lock(upload_id)
        if staged is None:
            raise self._lost(owner_id, upload_id)
        try:
            record = self._live(owner_id, upload_id)
            _check_offset(record, offset)
            if staged.size() < record.received:
                raise self._drop_damaged(record)
            staged.truncate(record.received)
        except BaseException:
            staged.close()
            raise
        return Append(self, record, staged, checksum)

    def terminate(self, owner_id: int, upload_id: str) -> None:
        """End an upload and free its staged bytes (tus termination).

        A completed upload's file stays where it was published; only the
        record goes.

        Raises:
            UploadNotFoundError: no such upload, or another user's.
            UploadLockedError: a chunk is being written to it right now.
        """
        record = self._get(owner_id, upload_id)
        staged = None if record.is_complete else self._staging.lock(upload_id)
        try:
            self._forget(upload_id)
        finally:
            if staged is not None:
                staged.close()
        log.info("upload_terminated", extra=_fields(record))

    def sweep_expired(self, limit: int) -> int:
        """Remove up to `limit` expired uploads; return how many went.

        An upload whose staging file is locked is being written right now and
        is left for a later sweep.
        """
        now = self._now()
        expired = self._rows.expired_ids(now, limit)
        removed = sum(self._expire(upload_id, now) for upload_id in expired)
        if removed:
            log.info("uploads_expired", extra={"count": removed})
        return removed

    def remove_orphans(self, limit: int) -> int:
        """Delete up to `limit` staged files that no row names (crash leftovers).

        Only files untouched for `ORPHAN_AGE_SECONDS` are candidates.
        """
        cutoff_ns = int(
            (self._now().timestamp() - ORPHAN_AGE_SECONDS) * 1_000_000_000
        )
        stale = [
            upload_id for upload_id, mtime_ns in self._staging.staged_ids(limit)
            if mtime_ns < cutoff_ns
        ]
        if not stale:
            return 0
        known = self._rows.known_ids(stale)
        orphans = [upload_id for upload_id in stale if upload_id not in known]
        for upload_id in orphans:
            self._staging.remove(upload_id)
        if orphans:
            log.warning("upload_staging_removed", extra={"count": len(orphans)})
        return len(orphans)

    # Steps that `Append` takes under the upload's lock

    def _record_received(self, record: UploadRecord, received: int) -> UploadRecord:
        expires_at = self._now() + timedelta(seconds=self.limits.expiry_seconds)
        moved = replace(record, received=received, expires_at=expires_at)
        self._move_row(record, moved)
        return moved

    def _complete(
        self, record: UploadRecord, staged: StagedFile, space: Space, *,
        exclusive: bool,
    ) -> UploadRecord:
        try:
            meta = _publish(record, staged, space, exclusive=exclusive)
        except ChecksumMismatchError:
            # The whole file is wrong: no chunk can be resent to fix it.
            self._forget(record.id)
            log.warning("upload_checksum_mismatch", extra=_fields(record))
            raise
        done = _completed(record, self._now())
        try:
            self._move_row(record, done)
            self._staging.remove(record.id)
        except (StorageError, UploadNotFoundError) as exc:
            # The file is in place, so that is the answer: a 507 now (the disk
            # filled up between the file and its row, say) would tell the client
            # a stored file was refused. The staged bytes are only a copy of the
            # published file now, and the disk may be full: they go at once. The
            # row goes too if the database can still write; if not, the expiry
            # sweep takes it, and until then a resent chunk hears the upload
            # lost its staged bytes (410), never that a stored file was refused.
            with contextlib.suppress(StorageError):
                self._staging.remove(record.id)
            with contextlib.suppress(StorageError):
                self._rows.delete(record.id)
            log.warning("upload_completion_unrecorded",
                        extra={**_fields(record), "reason": str(exc)})
        log.info("upload_completed", extra={**_fields(record), "size": meta.size})
        return done

    # Rows

    def _get(self, owner_id: int, upload_id: str) -> UploadRecord:
        if UPLOAD_ID.fullmatch(upload_id) is None:
            raise UploadNotFoundError(_NOT_FOUND)
        record = self._rows.get(upload_id)
        # Another user's upload answers exactly like one that does not exist.
        if record is None or record.owner_id != owner_id:
            raise UploadNotFoundError(_NOT_FOUND)
        return record

    def _live(self, owner_id: int, upload_id: str) -> UploadRecord:
        record = self._get(owner_id, upload_id)
        now = self._now()
        if record.has_expired(now):
            self._expire(upload_id, now)
            raise UploadGoneError(
                f"upload {upload_id} expired at {record.expires_at:%Y-%m-%d %H:%M} "
                "UTC; start a new one"
            )
        return record

    def _move_row(self, old: UploadRecord, new: UploadRecord) -> None:
        # A second guard beside the lock: the row moves only from the offset
        # this writer started from.
        if not self._rows.move(old, new):
            raise UploadNotFoundError(
                f"upload {old.id} was ended while this chunk was written"
            )

    def _expire(self, upload_id: str, now: datetime) -> bool:
        try:
            staged = self._staging.lock(upload_id)
        except UploadLockedError:  # being written: a later sweep takes it
            return False
        try:
            gone = self._rows.delete(upload_id, expired_at=now)
            if gone:
                self._staging.remove(upload_id)
            return gone
        finally:
            if staged is not None:
                staged.close()

    def _forget(self, upload_id: str) -> None:
        self._rows.delete(upload_id)
        self._staging.remove(upload_id)

    def _lost(self, owner_id: int, upload_id: str) -> Exception:
        # The file is gone: either the upload ended meanwhile (no row now), or
        # the staged bytes were lost (the row stays only until we drop it).
        try:
            record = self._get(owner_id, upload_id)
        except UploadNotFoundError as exc:
            return exc
        return self._drop_damaged(record)

    def _drop_damaged(self, record: UploadRecord) -> Exception:
        # Staged bytes that are missing or shorter than the row says cannot be
        # resumed: someone removed or cut the file. We refuse, never guess.
        self._forget(record.id)
        log.error("upload_staging_lost", extra=_fields(record))
        return UploadGoneError(
            f"upload {record.id} lost its staged bytes on the server; start again"
        )


class Append:
    """One chunk being appended to a locked upload; not shared between threads.

    `write` stages bytes past the recorded offset; nothing counts as received
    until `finish` (checksum checked, fsync-ed, row moved) or `keep_partial`.
    `close` releases the lock and cuts off whatever was not recorded.
    """

    def __init__(
        self,
        uploads: Uploads,
        record: UploadRecord,
        staged: StagedFile | None,
        checksum: ChunkChecksum | None,
    ) -> None:
        self.record = record
        self.written = 0
        self._uploads = uploads
        self._staged = staged
        self._checksum = checksum
        self._hash = hashlib.new(checksum.algorithm) if checksum else None

    @property
    def remaining(self) -> int:
        """How many bytes the upload still takes."""
        return self.record.length - self.record.received - self.written

    def write(self, data: bytes) -> None:
        """Stage `data` after what was written so far.

        Raises `StorageError` when the disk fails, and `ValueError` past
        `remaining` (the caller bounds the chunk by it before writing). Empty
        data is fine anywhere, a finished upload included: a client resending
        an empty last chunk whose answer it lost.
        """
        if not data:
            return
        if self._staged is None or len(data) > self.remaining:
            raise ValueError("the chunk is longer than the upload's remaining bytes")
        self._staged.write_at(self.record.received + self.written, data)
        if self._hash is not None:
            self._hash.update(data)
        self.written += len(data)

    def finish(
        self, space_for: Callable[[str], Space], *, create_only: bool = False
    ) -> UploadRecord:
        """Record the chunk; publish the file when it was the last one.

        `space_for(name)` returns the target space for the owner, checked anew.
        `create_only` publishes only if the name is still free (PathExistsError
        otherwise, and the last chunk is discarded like any refusal).

        Raises:
            ChecksumMismatchError: the chunk failed its checksum (discarded), or
                the whole file failed its SHA-256 (the upload is discarded).
            PathError, SpaceNotFoundError, PermissionDeniedError: the target
                refused the file; the last chunk is discarded, the rest kept.
        """
        if self._staged is None or (self.written == 0 and self.remaining):
            return self.record
        self._check_chunk()
        self._staged.sync()
        received = self.record.received + self.written
        if received < self.record.length:
            self.record = self._uploads._record_received(self.record, received)
        else:
            space = space_for(self.record.space)
            self.record = self._uploads._complete(
                self.record, self._staged, space, exclusive=create_only
            )
        self.written = 0
        return self.record

    def keep_partial(self) -> UploadRecord:
        """Record what arrived before the client went away (tus core: keep it).

        A chunk with a checksum cannot be verified when cut short and is
        discarded. The last byte is never recorded this way: `received ==
        length` means published, and publishing waits for a client to ask.
        """
        if self._staged is None or self._checksum is not None:
            return self.record
        keep = min(self.written, self.record.length - self.record.received - 1)
        if keep <= 0:
            return self.record
        self._staged.sync()
        self.record = self._uploads._record_received(
            self.record, self.record.received + keep
        )
        self.written = 0
        return self.record

    def close(self) -> None:
        """Cut off unrecorded bytes and release the lock (idempotent)."""
        if self._staged is None:
            return
        try:
            if not self.record.is_complete:
                self._staged.truncate(self.record.received)
        finally:
            self._staged.close()
            self._staged = None

    def _check_chunk(self) -> None:
        if self._checksum is None or self._hash is None:
            return
        if secrets.compare_digest(self._hash.digest(), self._checksum.digest):
            return
        log.warning("upload_chunk_refused", extra={
            **_fields(self.record), "reason": "checksum", "bytes": self.written,
        })
        raise ChecksumMismatchError(
            f"the chunk's {self._checksum.algorithm} checksum does not match its "
            f"{self.written} bytes; they were discarded: send the chunk again "
            f"from offset {self.record.received}"
        )


def check_upload_target(
    space: Space, rel_path: str, *, create_only: bool = False
) -> None:
    """Refuse now what publishing to `rel_path` would refuse later; change nothing.

    Checks that the space is writable, that the path passes the name rules and
    names a file (not the top, not ending in `/`), that no folder or special
    file has its name, and that the nearest existing parent is a folder. A
    directory space looks at the name itself, never through a final link, as
    its writer does. Missing folders are fine (they are made on publishing),
    except in a directory space under a `..`, where the writer makes none.

    Raises:
        PermissionDeniedError: the space is read-only.
        InvalidPathError, PathEscapeError: the path breaks the name rules.
        IsADirectoryPathError: a folder has the name.
        NotADirectoryPathError: a parent is a file.
        SymlinkRefusedError: a link has the name (directory space).
        PathNotFoundError: a parent is missing under a `..` (directory space).
        PathExistsError: `create_only` and a file has the name.
        PathError: another refusal of the space (a link on the way, say).
    """
    if not space.writable:
        raise PermissionDeniedError(
            f"cannot upload to space {space.name!r}: it is read-only"
        )
    up = parse_user_path("upload", rel_path)
    if not up.parts or up.must_be_dir or up.final == "..":
        reason = "name a file: the path must end in a file name"
        raise InvalidPathError("upload", rel_path, reason)

    kind = _kind_at(space, rel_path)
    if kind == "dir":
        raise IsADirectoryPathError("upload", rel_path, "a folder has that name")
    if kind is not None and kind != "file":
        reason = f"a {kind} has that name, and uploads replace only files"
        raise NotRegularFileError("upload", rel_path, reason)
    if kind == "file" and create_only:
        raise PathExistsError("upload", rel_path, "a file has that name")
    if kind is None:
        _check_parents(space, rel_path, up.parts)


# Helpers

_NOT_FOUND = "there is no upload with this id for you"


def _publish(
    record: UploadRecord, staged: StagedFile | None, space: Space, *, exclusive: bool
) -> FileMeta:
    writer = space.writer(record.rel_path, exclusive=exclusive)
    digest = hashlib.sha256()
    try:
        for piece in staged.chunks(record.length) if staged else ():
            if record.sha256:
                digest.update(piece)
            writer.write(piece)
        if record.sha256 and digest.hexdigest() != record.sha256:
            raise ChecksumMismatchError(
                f"the file's SHA-256 is {digest.hexdigest()}, not the "
                f"{record.sha256} given at creation; the upload was discarded"
            )
        meta, _ = writer.commit()
    except BaseException:
        writer.abort()
        raise
    return meta


def _kind_at(space: Space, rel_path: str) -> str | None:
    # In a directory space the name itself, as its writer sees it: the writer
    # never writes through a link and replaces a multiply-linked file only
    # where hard links are allowed.
    try:
        if not isinstance(space, DirectorySpace):
            return space.meta(rel_path).kind
        entry = space.root.lstat(rel_path)
    except PathNotFoundError:
        return None
    if entry.kind == "symlink":
        reason = "it is a symbolic link; uploads never write through links"
        raise SymlinkRefusedError("upload", rel_path, reason)
    if entry.kind == "file" and entry.nlink > 1 and space.root.hardlinks == "deny":
        reason = "the file has more than one hard link, which this space refuses"
        raise HardlinkRefusedError("upload", rel_path, reason)
    return entry.kind


def _check_parents(space: Space, rel_path: str, parts: tuple[str, ...]) -> None:
    # Walk up from the parent to the first folder that exists: at most one
    # lookup per path part (MAX_PATH_DEPTH bounds them), usually one.
    for depth in range(len(parts) - 1, 0, -1):
        parent = "/".join(parts[:depth])
        try:
            kind = space.meta(parent).kind
        except PathNotFoundError:
            if ".." in parts and isinstance(space, DirectorySpace):
                reason = f"folder {parent!r} does not exist, and a path with '..' "
                raise PathNotFoundError(
                    "upload", rel_path, reason + "gets no missing folders"
                ) from None
            continue
        if kind != "dir":
            raise NotADirectoryPathError("upload", rel_path, f"{parent!r} is a file")
        return


def _check_offset(record: UploadRecord, offset: int) -> None:
    if offset != record.received:
        raise UploadOffsetError(
            f"Upload-Offset is {offset}, but the upload holds {record.received} "
            "bytes; ask with HEAD and send from there"
        )


def _completed(record: UploadRecord, now: datetime) -> UploadRecord:
    expires_at = now + timedelta(seconds=COMPLETED_KEEP_SECONDS)
    return replace(
        record, received=record.length, completed=now, expires_at=expires_at
    )


def _fields(record: UploadRecord) -> dict[str, object]:
    return {
        "upload_id": record.id, "user_id": record.owner_id, "space": record.space,
        "rel_path": record.rel_path, "length": record.length,
    }


def _utc_now() -> datetime:
    return datetime.now(UTC)

"""Blob storage: the contents of home-space files, under random names.

A blob id is 32 random hex digits (128 bits, from `secrets`), so ids cannot be
guessed and never collide in practice; a blob is written once and never changed.
On disk a blob lives at "ab/cd/<id>" (the first two pairs of its digits), which
keeps every directory small: 65,536 shard folders hold millions of blobs with a
few dozen entries each.

Blobs are reached only through a `strongroom.confine.Root` opened on the blob
directory, with symlinks refused, so a blob id that somehow holds a path can
still not leave that directory. Hard links are allowed there: the folder is the
service's own (no user can make a link in it), and a blob is never written in
place, so a second link, say from a `cp -al` or rsnapshot backup, can neither
change what is served nor be changed by it.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self, runtime_checkable

from strongroom.confine import AtomicWriter, Entry, ReadHandle, Root
from strongroom.errors import (
    ConfigError,
    LimitExceededError,
    PathError,
    PathNotFoundError,
    StorageError,
)

__all__ = [
    "BLOBS_DIR_NAME",
    "BlobInfo",
    "BlobReader",
    "BlobStore",
    "BlobWriter",
    "LocalBlobStore",
    "LocalBlobWriter",
    "SignableReader",
    "StrayReporter",
    "new_blob_id",
    "over_limit_error",
]

# The blob folder inside data_dir, shared by the API and the CLI.
BLOBS_DIR_NAME = "blobs"

# Chunks from this size on are hashed on a second thread while they are written;
# below it, starting a thread costs more than the overlap saves.
PARALLEL_HASH_BYTES = 256 * 1024
# `LocalBlobWriter.copy_range` hashes what the kernel copies in reads of this size.
HASH_READ_BYTES = 1024 * 1024

# A staging file nobody wrote to for an hour belongs to a writer that died: live
# uploads touch theirs with every batch (at most a few seconds apart).
STALE_STAGING_SECONDS = 3600.0

log = logging.getLogger("strongroom.storage")

_BLOB_ID = re.compile(r"[0-9a-f]{32}")
_SHARD_DIGITS = 4  # "ab/cd": see _blob_key


def new_blob_id(near: str | None = None) -> str:
    """Return a fresh random blob id (32 lowercase hex digits).

    With `near` (another blob id) the new id shares its first four digits, and so
    its shard folder: a batch of many small blobs then makes one folder per run
    instead of one for nearly every blob (a mkdir costs as much as the file). The
    other 112 bits stay random, still far beyond guessing.
    """
    if near is None:
        return secrets.token_hex(16)
    if not _BLOB_ID.fullmatch(near):
        raise ValueError("near must be a blob id")
    return near[:_SHARD_DIGITS] + secrets.token_hex(16 - _SHARD_DIGITS // 2)


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """What a finished blob write produced: its id, size and SHA-256 (hex)."""

    blob_id: str
    size: int
    sha256: str


class BlobWriter(Protocol):
    """A blob being written; nothing is stored under its id before `commit`."""

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`; raise LimitExceededError past the writer's limit."""

    def commit(self) -> BlobInfo:
        """Store the blob durably and return its id, size and hash."""

    def abort(self) -> None:
        """Discard what was written (idempotent; a no-op after `commit`)."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class BlobReader(Protocol):
    """An open blob of a store without file descriptors (an object store).

    The local store hands out the confined root's `ReadHandle` itself, so a
    download of a local blob keeps its pread path; `open_blob` returns this
    instead where there is no descriptor. Owns its connections until `close`.
    """

    @property
    def size(self) -> int:
        """The blob's size in bytes, as the store reported it on open."""

    def read(self, n: int = -1) -> bytes:
        """Read up to `n` bytes from where the last read ended (-1: to the end).

        An empty result means the end of the blob.
        """

    def read_range(self, offset: int, length: int) -> Iterator[bytes]:
        """Yield the `length` bytes from `offset` on, in bounded chunks.

        Each call is one request for exactly that range; nothing is fetched
        before the first chunk is asked for. Raises StorageError (or
        PathNotFoundError, when the blob was deleted since the open) while
        iterating.
        """

    def close(self) -> None:
        """Release the reader's connections (idempotent)."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class StrayReporter(Protocol):
    """A store that can tell of files where no blob of its layout belongs."""

    def stray_files(self) -> Iterator[tuple[str, str, str]]:
        """Yield (name, where it lies, its kind) for each entry out of place.

        The kind is an `Entry` kind: "file" for a blob-named file in the wrong
        shard folder, "symlink", "fifo" and so on for what no store holds.
        """


@runtime_checkable
class SignableReader(Protocol):
    """A blob that its store can serve itself, through a short-lived signed URL."""

    def presigned_url(
        self, ttl_seconds: int, content_type: str, content_disposition: str
    ) -> str:
        """Return a URL that lets its holder GET the blob for `ttl_seconds`."""


class BlobStore(Protocol):
    """Where home-space file contents live, addressed by blob id."""

    def create_blob(
        self,
        *,
        max_bytes: int | None = None,
        durable: bool = True,
        near: str | None = None,
    ) -> BlobWriter:
        """Start writing a new blob under a fresh id (`durable=False`: see `sync`).

        `near` names an earlier blob of the same batch: a store with folders
        puts the new blob beside it.
        """

    def sync(self) -> None:
        """Make every blob written so far durable."""

    def create_blob_with_id(
        self, blob_id: str, *, durable: bool = True
    ) -> BlobWriter:
        """Start writing a blob under a given id (copying blobs between stores).

        The write never replaces a blob already stored under the id.
        """

    def open_blob(self, blob_id: str) -> ReadHandle | BlobReader:
        """Open a blob for reading: a descriptor where the store has one."""

    def delete_blob(self, blob_id: str) -> None:
        """Delete a blob; deleting a missing blob is not an error."""

    def blob_ids(self) -> Iterator[tuple[str, int, int]]:
        """Yield (blob id, size, mtime in ns) for every stored blob."""

    def identity(self) -> tuple[object, ...]:
        """Return what tells this store apart from every other one.

        Two stores with equal identities are the same place, however their
        URLs were spelled: a migration must never copy a store onto itself.
        """

    def close(self) -> None:
        """Release the store's descriptors or connections."""

    def check(self) -> None:
        """Raise StorageError if the store is unreachable (cheap; for /readyz)."""


class LocalBlobStore:
    """A `BlobStore` in a local directory, reached through a confined root.

    Thread-safe: writers, handles and deletes are independent of each other.
    Errors: a failure of the file system raises StorageError (never a host path
    in its message); `open_blob` raises PathNotFoundError when the blob is gone,
    which happens when its file was replaced or deleted after the caller read
    the row: re-read the row and try again.
    """

    def __init__(self, root: Root) -> None:
        self._root = root

    @classmethod
    def open_dir(
        cls,
        host_path: str | os.PathLike[str],
        *,
        resolver: Literal["auto", "openat2", "walk"] = "auto",
        create: bool = True,
        sweep: bool = True,
    ) -> LocalBlobStore:
        """Open a store on a folder.

        `create` makes the folder (mode 0700) when it is missing; without it a
        missing folder is refused, so a mistyped path is reported instead of
        becoming an empty store that seems to have lost every blob. `sweep`
        removes staging files of writers that died (see
        `remove_crash_leftovers`); a command that only reads or compares the
        store passes False and changes nothing in it on open.

        Raises:
            ConfigError: the folder is missing (without `create`) or the path
                is not a folder.
        """
        if create:
            Path(host_path).mkdir(mode=0o700, parents=True, exist_ok=True)
        else:
            _require_folder(host_path)
        store = cls(
            Root(host_path, symlinks="deny", hardlinks="allow", resolver=resolver)
        )
        if sweep:
            store.remove_crash_leftovers()
        return store

    def identity(self) -> tuple[object, ...]:
        """Return ("file", device, inode) of the blob folder.

        The folder's own numbers, not its path: a trailing slash, a symlink or
        a bind mount leading to the same folder give the same identity.

        Raises:
            StorageError: the folder cannot be read.
        """
        with _storage_errors("the blob folder cannot be read"):
            folder = self._root.stat(".")
        return ("file", folder.dev, folder.ino)

    def blob_ids(self) -> Iterator[tuple[str, int, int]]:
        """Yield (blob id, size, mtime in ns) for every stored blob.

        Only a regular file named by a blob id in the shard folder that id
        belongs in is a blob: staging files, symlinks and strays are left out
        (`stray_files` names the blob-named ones).

        Raises:
            StorageError: a folder cannot be listed.
        """
        for shard, entry in self._blob_named_files():
            if _blob_key(entry.name) == f"{shard}/{entry.name}":
                yield entry.name, entry.size, entry.mtime_ns

    def stray_files(self) -> Iterator[tuple[str, str, str]]:
        """Yield (name, its path in the store, its kind) for each entry out of place.

        Two sorts: a blob-named regular file in the wrong shard folder (copied
        or restored there by hand), and anything that is neither a regular
        file nor a folder (a symlink, FIFO, socket or device) at the top, in a
        shard folder or among the blobs. Neither is ever served, since a blob
        is looked up where its id puts it and opened only if it is a regular
        file; neither is removed by us: only its owner knows what it is.

        Raises:
            StorageError: a folder cannot be listed.
        """
        with _storage_errors("the blob folder cannot be listed"):
            for folder in (".", *self._first_shards()):
                for entry in self._root.list_dir(folder):
                    if entry.kind not in ("file", "dir"):
                        yield entry.name, _inside(folder, entry.name), entry.kind
            for shard in self._shards():
                for entry in self._root.list_dir(shard):
                    where = f"{shard}/{entry.name}"
                    if entry.kind not in ("file", "dir"):
                        yield entry.name, where, entry.kind
                    elif (entry.kind == "file" and _BLOB_ID.fullmatch(entry.name)
                          and _blob_key(entry.name) != where):
                        yield entry.name, where, "file"

    def _blob_named_files(self) -> Iterator[tuple[str, Entry]]:
        # Regular files named like blobs, with the shard folder they are in.
        with _storage_errors("the blob folder cannot be listed"):
            for shard in self._shards():
                for entry in self._root.list_dir(shard):
                    if entry.kind == "file" and _BLOB_ID.fullmatch(entry.name):
                        yield shard, entry

    def remove_crash_leftovers(self) -> int:
        """Delete staging files that a crashed writer left in the shard folders.

        Only files untouched for `STALE_STAGING_SECONDS` go, so a write still in
        progress in another process sharing this store is never cut short.
        Returns how many were removed.
        """
        removed = sum(
            self._root.remove_stale_staging(shard, STALE_STAGING_SECONDS)
            for shard in self._shards()
        )
        if removed:
            log.warning("blob_staging_removed", extra={"count": removed})
        return removed

    def _first_shards(self) -> Iterator[str]:
        # The first shard level ("ab"), listed through the root.
        for first in self._root.list_dir("."):
            if first.kind == "dir" and len(first.name) == 2:
                yield first.name

    def _shards(self) -> Iterator[str]:
        # The two shard levels ("ab/cd") that `_blob_key` lays blobs out in.
        for first in self._first_shards():
            for second in self._root.list_dir(first):
                if second.kind == "dir" and len(second.name) == 2:
                    yield f"{first}/{second.name}"

    def close(self) -> None:
        """Close the root; later calls fail."""
        self._root.close()

    def check(self) -> None:
        """Raise StorageError unless the blob folder is still there (one fstat).

        The store works through a descriptor, so a folder removed under a running
        server looks present until a write fails; its link count of 0 shows it.
        """
        try:
            removed = self._root.stat(".").nlink == 0
        except PathError as exc:
            raise StorageError(f"the blob folder cannot be read: {exc.reason}") from exc
        if removed:
            raise StorageError("the blob folder was removed; restore it and restart")

    def create_blob(
        self,
        *,
        max_bytes: int | None = None,
        durable: bool = True,
        near: str | None = None,
    ) -> LocalBlobWriter:
        """Start writing a new blob; see `LocalBlobWriter`.

        `durable=False` skips the per-blob fsyncs, for a batch of blobs that the
        caller makes durable at once with `sync` before any row refers to them.
        Such a blob is also written under its fresh id from the first byte (no
        staging name to link and unlink): nothing can refer to it before
        `sync`, so one half-written when the process died is an orphan like any
        blob written for a batch that never finished, and `strongroom check
        --repair` removes it after the grace period. `near` (an earlier blob's
        id) puts the blob in that blob's shard folder.

        Raises:
            StorageError: the staging file cannot be created.
        """
        return self._writer(new_blob_id(near), max_bytes, durable,
                            in_place=not durable)

    def create_blob_with_id(
        self, blob_id: str, *, durable: bool = True
    ) -> LocalBlobWriter:
        """Start writing a blob under `blob_id`, for `strongroom storage migrate`.

        A copy keeps its id, since the rows name it. Like every blob write it is
        exclusive: committing fails if a blob already has the id.

        Raises:
            StorageError: the id is malformed or the staging file cannot be
                created; at `commit`, the id is taken.
        """
        return self._writer(blob_id, None, durable)

    def _writer(
        self, blob_id: str, max_bytes: int | None, durable: bool,
        *, in_place: bool = False,
    ) -> LocalBlobWriter:
        key = _blob_key(blob_id)
        open_writer = partial(self._root.open_writer, key, exclusive=True,
                              durable=durable, in_place=in_place)
        with _storage_errors(f"blob {blob_id} cannot be created"):
            try:
                writer = open_writer()
            except PathNotFoundError:
                # Shard folders are made on first use and kept: removing an empty
                # one when a write aborts could pull it from under another writer
                # about to use it. Trying the open first saves a mkdir per blob.
                self._root.mkdir(key.rsplit("/", 1)[0], parents=True, exist_ok=True)
                writer = open_writer()
        return LocalBlobWriter(blob_id, writer, max_bytes)

    def sync(self) -> None:
        """Make every blob written so far durable (one syncfs of the store).

        Raises:
            StorageError: the file system failed.
        """
        try:
            self._root.sync()
        except PathError as exc:
            reason = exc.reason
            raise StorageError(f"the blob store cannot be synced: {reason}") from exc

    def write_blob(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        """Write all of `chunks` as one new blob and return its id, size and hash.

        Raises:
            LimitExceededError: the chunks add up to more than `max_bytes`.
            StorageError: the file system failed.
        """
        with self.create_blob(max_bytes=max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def open_blob(self, blob_id: str) -> ReadHandle:
        """Open a blob for reading; the handle owns its descriptor.

        Raises:
            PathNotFoundError: no blob has this id (any more).
            StorageError: the id is malformed or the file system failed.
        """
        key = _blob_key(blob_id)
        try:
            return self._root.open_read(key)
        except PathNotFoundError:
            raise PathNotFoundError("read", blob_id, "the blob is gone") from None
        except PathError as exc:
            raise StorageError(f"blob {blob_id} cannot be read: {exc.reason}") from exc

    def delete_blob(self, blob_id: str) -> None:
        """Delete a blob; a missing blob is not an error.

        Raises:
            StorageError: the id is malformed or the file system failed.
        """
        key = _blob_key(blob_id)
        try:
            self._root.remove(key)
        except PathNotFoundError:
            return
        except PathError as exc:
            raise StorageError(
                f"blob {blob_id} cannot be deleted: {exc.reason}"
            ) from exc


class LocalBlobWriter:
    """A blob being written through the root's atomic writer.

    The SHA-256 and the size are computed from the bytes as they pass, so the
    content is never read twice. The blob becomes visible under its id only at
    `commit` (after fsync); `abort`, or leaving a `with` block without `commit`,
    removes the staging file. A batch blob (`create_blob(durable=False)`) is
    written under its id from the start, and `abort` removes it there.
    """

    def __init__(
        self, blob_id: str, writer: AtomicWriter, max_bytes: int | None
    ) -> None:
        self.blob_id = blob_id
        self.size = 0
        self._writer = writer
        self._max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        """Append `data` to the blob.

        Raises:
            LimitExceededError: the blob would exceed `max_bytes`; the writer is
                aborted and nothing is kept.
            StorageError: the file system failed (the writer is aborted).
        """
        self._check_limit(len(data))
        try:
            self._write_and_hash(data)
        except OSError as exc:
            self.abort()
            raise StorageError(f"blob {self.blob_id} cannot be written") from exc
        self.size += len(data)

    def copy_range(self, src_fd: int, offset: int, length: int) -> None:
        """Append `length` bytes of the open file `src_fd`, from `offset` on.

        The kernel copies them into the blob (see `AtomicWriter.copy_range`)
        while a helper thread reads the same range for the hash: the two run
        side by side, and neither copy passes the bytes through Python objects
        larger than one chunk.

        Raises:
            LimitExceededError: as for `write`.
            StorageError: the file system failed, or the source ended early.
        """
        self._check_limit(length)
        hasher = _HashThread(
            partial(_hash_range, self._hash.update, src_fd, offset, length)
        )
        hasher.start()
        try:
            with _storage_errors(f"blob {self.blob_id} cannot be written"):
                self._writer.copy_range(src_fd, offset, length)
        except BaseException:
            hasher.join()  # the copy's own error is the one to report
            self.abort()
            raise
        failure = hasher.failure()
        if failure is not None:
            self.abort()
            raise failure
        self.size += length

    def _check_limit(self, more: int) -> None:
        if self._max_bytes is not None and self.size + more > self._max_bytes:
            self.abort()
            raise over_limit_error(self._max_bytes)

    def _write_and_hash(self, data: bytes | memoryview) -> None:
        # Both os.write and hashlib release the GIL on large buffers, so a big
        # chunk is hashed on a helper thread while it is written: the upload
        # then costs the slower of the two instead of their sum.
        if len(data) < PARALLEL_HASH_BYTES:
            self._writer.write(data)
            self._hash.update(data)
            return
        hasher = _HashThread(partial(self._hash.update, data))
        hasher.start()
        try:
            self._writer.write(data)
        except BaseException:
            hasher.join()  # the write's own error is the one to report
            raise
        failure = hasher.failure()
        if failure is not None:
            self.abort()
            raise failure

    def commit(self) -> BlobInfo:
        """Store the blob durably and return its id, size and SHA-256.

        Raises:
            StorageError: the file system failed; nothing is kept.
        """
        with _storage_errors(f"blob {self.blob_id} cannot be stored"):
            self._writer.commit()
        self._done = True
        return BlobInfo(self.blob_id, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        """Discard the staging file (idempotent; a no-op after `commit`)."""
        if not self._done:
            self._writer.abort()
            self._done = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


def over_limit_error(max_bytes: int) -> LimitExceededError:
    """The error of a blob write that would pass its writer's `max_bytes`."""
    return LimitExceededError(
        f"upload refused: it is over the {max_bytes}-byte limit; "
        "raise max_upload_bytes or send a smaller file"
    )


def _inside(folder: str, name: str) -> str:
    return name if folder == "." else f"{folder}/{name}"


class _HashThread(threading.Thread):
    """Runs one step of a blob's hashing on a thread of its own.

    Whatever stops the step (an error of any kind, or a source that ends
    before its range does) is kept, and `failure` hands it over once the
    thread is joined, so a hash is never silently short of bytes that the
    blob holds.
    """

    def __init__(self, step: Callable[[], object]) -> None:
        super().__init__(name="blob-hash", daemon=True)
        self._step = step
        self._failure: BaseException | None = None

    def run(self) -> None:
        try:
            self._step()
        except BaseException as exc:  # handed to the joining thread, never lost
            self._failure = exc

    def failure(self) -> StorageError | None:
        """Join the thread; return what stopped the hash, as a StorageError."""
        self.join()
        if self._failure is None:
            return None
        error = StorageError("the data to store could not be hashed")
        error.__cause__ = self._failure
        return error


def _hash_range(
    update: Callable[[memoryview], object], fd: int, offset: int, length: int
) -> None:
    """Feed `length` bytes of file `fd` from `offset` into `update`."""
    view = memoryview(bytearray(min(HASH_READ_BYTES, length)))
    end = offset + length
    while offset < end:
        got = os.preadv(fd, [view[: end - offset]], offset)
        if not got:
            raise OSError(errno.EIO, "the source ended before the range")
        update(view[:got])
        offset += got


@contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    # Blobs are ours, not the user's: a refusal here is a storage failure.
    try:
        yield
    except PathError as exc:
        raise StorageError(f"{what}: {exc.reason}") from exc
    except OSError as exc:
        raise StorageError(what) from exc


def _require_folder(host_path: str | os.PathLike[str]) -> None:
    # The message names the path: only the admin running a command sees it.
    shown = os.fspath(host_path)
    if not os.path.exists(host_path):
        raise ConfigError(
            f"the blob folder {shown!r} does not exist and was not created; "
            "check the blob store URL (and data_dir)"
        )
    if not os.path.isdir(host_path):
        raise ConfigError(f"the blob store path {shown!r} is not a folder")


def _blob_key(blob_id: str) -> str:
    # Ids come from our own database, yet a malformed one must not become a path.
    if _BLOB_ID.fullmatch(blob_id) is None:
        raise StorageError(f"blob id {blob_id[:40]!r} is malformed")
    return f"{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"

"""The staging folder of resumable uploads: one file per upload, named by its id.

Names. Every name used here is an upload id this service made (32 hex digits),
checked against that shape before any system call, so no text from a client
ever becomes a file name. The folder is private to the service (mode 0700 in
the data directory), outside every space, so nothing staged is visible at any
path a user can name. It is opened for each operation with O_DIRECTORY |
O_NOFOLLOW, and each file is opened relative to that descriptor with
O_NOFOLLOW; a file that is not a regular file with exactly one link is refused.

Locking. A writer holds `flock(LOCK_EX)` on the open file for as long as it
writes or publishes. flock locks belong to the open file description, so two
requests in one process exclude each other just as two processes sharing the
data directory do, and the kernel drops a lock when its holder dies: a server
that crashes mid-write never leaves an upload locked. Known limit: flock on a
network file system is only as good as that file system's lock support.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from strongroom.errors import StorageError, UploadLockedError

__all__ = ["COPY_CHUNK_BYTES", "UPLOAD_ID", "StagedFile", "StagingArea"]

# An upload id as `new_upload_id` makes it: 128 random bits in hex.
UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
# Staged bytes are read back for publishing in pieces of this size: the same
# batch size the API writes in, so a copy holds one MiB in memory at a time.
COPY_CHUNK_BYTES = 1 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_MODE = 0o600


class StagingArea:
    """The folder holding the staged bytes of every unfinished upload.

    Thread- and process-safe: each call opens what it needs and closes it again,
    and writers exclude each other with `lock`. Every method raises
    `StorageError` when the file system fails (never with a host path).
    """

    def __init__(self, host_path: Path) -> None:
        self._host_path = host_path

    @classmethod
    def open_dir(cls, host_path: Path) -> StagingArea:
        """Create the folder if missing (mode 0700) and return the area on it."""
        with _storage_errors("the upload staging folder cannot be created"):
            host_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return cls(host_path)

    def create(self, upload_id: str) -> None:
        """Create the empty staging file of a new upload, durably.

        Raises `StorageError` if the file exists already or cannot be made.
        """
        name = _name(upload_id)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with self._folder() as folder, _storage_errors(f"upload {name} cannot start"):
            os.close(os.open(name, flags, _FILE_MODE, dir_fd=folder))
            os.fsync(folder)

    def lock(self, upload_id: str) -> StagedFile | None:
        """Open an upload's staging file and lock it; None when there is none.

        Never waits: raises `UploadLockedError` when another request holds the
        lock. The caller closes the returned file, which releases the lock.
        """
        name = _name(upload_id)
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        with self._folder() as folder, _storage_errors(f"upload {name} cannot open"):
            try:
                fd = os.open(name, flags, dir_fd=folder)
            except FileNotFoundError:
                return None
        try:
            _check_private_file(fd, name)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UploadLockedError(
                "another request is writing this upload; try again once it ends"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        return StagedFile(fd, name)

    def remove(self, upload_id: str) -> None:
        """Delete an upload's staging file; a missing file is not an error."""
        name = _name(upload_id)
        with (
            self._folder() as folder,
            _storage_errors(f"upload {name} cannot go"),
            contextlib.suppress(FileNotFoundError),
        ):
            os.unlink(name, dir_fd=folder)

    def staged_ids(self, limit: int) -> list[tuple[str, int]]:
        """Return up to `limit` (upload id, mtime in ns) pairs of staged files.

        Names that are not upload ids (strays an operator left) are skipped.
        """
        found: list[tuple[str, int]] = []
        with self._folder() as folder, _storage_errors("the staging folder failed"):
            for name in _names(folder):
                if len(found) >= limit:
                    break
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=folder, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        found.append((name, st.st_mtime_ns))
        return found

    @contextlib.contextmanager
    def _folder(self) -> Iterator[int]:
        with _storage_errors("the upload staging folder cannot be opened"):
            fd = os.open(self._host_path, _DIR_FLAGS)
        try:
            yield fd
        finally:
            os.close(fd)


class StagedFile:
    """One upload's staging file, open and locked until `close`.

    Writes and reads take explicit offsets (pwrite, pread), so where a chunk
    lands never depends on a file position another step may have moved.
    """

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self._name = name

    def size(self) -> int:
        """Return the staged size in bytes."""
        with self._errors("cannot be read"):
            return os.fstat(self._fd).st_size

    def truncate(self, size: int) -> None:
        """Cut the file to `size` bytes (bytes not recorded as received)."""
        with self._errors("cannot be cut back"):
            os.ftruncate(self._fd, size)

    def write_at(self, offset: int, data: bytes | memoryview) -> None:
        """Write all of `data` at `offset`."""
        view = memoryview(data)
        with self._errors("cannot be written"):
            while view:
                written = os.pwrite(self._fd, view, offset)
                view, offset = view[written:], offset + written

    def sync(self) -> None:
        """Flush the staged bytes to disk before they are recorded as received."""
        with self._errors("cannot be flushed"):
            os.fsync(self._fd)

    def chunks(self, length: int) -> Iterator[bytes]:
        """Yield the first `length` bytes in pieces of `COPY_CHUNK_BYTES`.

        Raises `StorageError` if the file ends early.
        """
        offset = 0
        while offset < length:
            with self._errors("cannot be read"):
                piece = os.pread(
                    self._fd, min(COPY_CHUNK_BYTES, length - offset), offset
                )
            if not piece:
                raise StorageError(f"upload {self._name} ended early at {offset}")
            yield piece
            offset += len(piece)

    def close(self) -> None:
        """Close the file, which releases the lock (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        with _storage_errors(f"upload {self._name} {what}"):
            yield


def _name(upload_id: str) -> str:
    # Ids come from our own database or URL routes that checked them, yet a
    # malformed one must never become a file name.
    if UPLOAD_ID.fullmatch(upload_id) is None:
        raise StorageError(f"upload id {upload_id[:40]!r} is malformed")
    return upload_id


def _names(folder: int) -> Iterator[str]:
    with os.scandir(folder) as entries:
        for entry in entries:
            if UPLOAD_ID.fullmatch(entry.name):
                yield entry.name


def _check_private_file(fd: int, name: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        raise StorageError(f"upload {name} is not a private regular file")


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    # Staged files are ours, not the user's: a failure here is ours too.
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageError(f"{what}: the disk is full") from exc
        raise StorageError(what) from exc

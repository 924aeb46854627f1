"""Syscalls that Python's standard library does not wrap: openat2(2), renameat2(2),
syncfs(2), sync_file_range(2), statx(2) and inotify(7).

All are called through ctypes. Nothing here decides policy; the resolvers do.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import platform
import struct
import threading
from collections.abc import Callable, Iterator

__all__ = [
    "RENAME_NOREPLACE",
    "RESOLVE_BENEATH",
    "RESOLVE_NO_MAGICLINKS",
    "RESOLVE_NO_SYMLINKS",
    "LINK_WATCH",
    "LinkCountWatch",
    "RESOLVE_NO_XDEV",
    "openat2",
    "mode_and_mount_id",
    "mount_id",
    "openat2_available",
    "renameat2",
    "start_writeback",
    "syncfs",
]

# Resolve flags from linux/openat2.h.
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

# renameat2 flag from linux/fs.h: fail with EEXIST instead of replacing.
RENAME_NOREPLACE = 0x1

# openat2 has the same number on every architecture that gained it after the
# syscall-table unification in Linux 5.6 (asm-generic and x86 alike).
_SYS_OPENAT2 = 437

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.restype = ctypes.c_int
    _renameat2.argtypes = [
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint
    ]


# sync_file_range flag from linux/fs.h: start writing the range out, do not wait.
_SYNC_FILE_RANGE_WRITE = 0x2
_sync_file_range = getattr(_libc, "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.restype = ctypes.c_int
    _sync_file_range.argtypes = [
        ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint
    ]

_statx = getattr(_libc, "statx", None)
if _statx is not None:
    _statx.restype = ctypes.c_int
    _statx.argtypes = [
        ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p
    ]
_AT_EMPTY_PATH = 0x1000
_STATX_TYPE = 0x1
_STATX_MODE = 0x2
_STATX_MNT_ID = 0x1000
_STATX_WANTED = _STATX_TYPE | _STATX_MODE | _STATX_MNT_ID
_STATX_MODE_OFFSET = 28
_local = threading.local()
# struct statx is 256 bytes; stx_mask is its first u32 and stx_mnt_id the u64 at
# byte 144 (linux/stat.h).
_STATX_SIZE = 256
_STATX_MNT_ID_OFFSET = 144


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_HOW_SIZE = ctypes.c_size_t(ctypes.sizeof(_OpenHow))
_NR_OPENAT2 = ctypes.c_long(_SYS_OPENAT2)


@functools.lru_cache(maxsize=64)
def _how(flags: int, mode: int, resolve: int) -> object:
    # Building the struct and its pointer costs more than the syscall's own
    # overhead; the few (flags, resolve) pairs we use are built once. Sharing one
    # struct between threads is safe: the kernel only reads it.
    how = _OpenHow(flags, mode, resolve)
    pointer = ctypes.pointer(how)
    pointer._keep = how  # type: ignore[attr-defined]
    return pointer


def openat2(dir_fd: int, path: bytes, flags: int, resolve: int, mode: int = 0) -> int:
    """Open `path` relative to `dir_fd` with openat2(2); raise `OSError` on failure."""
    how = _how(flags, mode if flags & os.O_CREAT else 0, resolve)
    # A plain int travels as a C int and bytes as a char pointer: no wrappers.
    fd = _syscall(_NR_OPENAT2, dir_fd, path, how, _HOW_SIZE)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


def renameat2(
    src_dir_fd: int, src: str, dst_dir_fd: int, dst: str, flags: int
) -> None:
    """Rename with renameat2(2); raise `OSError` (ENOSYS when libc lacks it)."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    rc = _renameat2(
        src_dir_fd, os.fsencode(src), dst_dir_fd, os.fsencode(dst), flags
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def syncfs(fd: int) -> None:
    """Write out every dirty page and inode of the file system holding `fd`.

    One call instead of an fsync per file, for many small files written at once
    (an archive import): Linux syncfs(2), which waits for the writes to finish.

    Raises:
        OSError: the call failed (EIO, EBADF...).
    """
    if _libc.syncfs(ctypes.c_int(fd)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing `length` bytes at `offset` of `fd` to the disk; do not wait.

    A hint (sync_file_range(2) with SYNC_FILE_RANGE_WRITE): it makes nothing
    durable, so a failure, or a libc without the call, is ignored; the fsync
    that follows still writes, and reports, everything. Started while a large
    file is being written, it leaves that fsync little to do.
    """
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def mount_id(fd: int) -> int | None:
    """Return the id of the mount that `fd` lives on, or None if unknown.

    Two directories of one file system share st_dev even when one is a bind mount
    of the other, so only the mount id tells the walk that it crossed a mount.
    """
    return mode_and_mount_id(fd)[1]


def mode_and_mount_id(fd: int) -> tuple[int, int | None]:
    """Return (st_mode, mount id or None) of `fd` in one statx(2) call."""
    if _statx is None:
        return os.fstat(fd).st_mode, None
    buf = _statx_buffer()
    if _statx(fd, b"", _AT_EMPTY_PATH, _STATX_WANTED, buf) != 0:
        return os.fstat(fd).st_mode, None
    mask, = struct.unpack_from("<I", buf, 0)
    mode, = struct.unpack_from("<H", buf, _STATX_MODE_OFFSET)
    if not mask & _STATX_MNT_ID:
        return mode, None
    mnt, = struct.unpack_from("<Q", buf, _STATX_MNT_ID_OFFSET)
    return mode, mnt


def _statx_buffer() -> ctypes.Array[ctypes.c_char]:
    # One buffer per thread: statx writes into it, and threads must not share.
    buf: ctypes.Array[ctypes.c_char] | None = getattr(_local, "buf", None)
    if buf is None:
        buf = _local.buf = ctypes.create_string_buffer(_STATX_SIZE)
    return buf


def openat2_available() -> bool:
    """Tell whether this kernel and sandbox let us call openat2(2).

    ENOSYS means an old kernel; EPERM (or ENOSYS) is what seccomp filters in some
    container runtimes answer. Either way the component walk takes over.
    """
    return _probe()


_probe_result: bool | None = None


def _probe() -> bool:
    global _probe_result
    if _probe_result is None:
        _probe_result = platform.system() == "Linux" and _try_openat2()
    return _probe_result


def _try_openat2() -> bool:
    try:
        fd = openat2(-100, b".", os.O_PATH | os.O_CLOEXEC, RESOLVE_BENEATH)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EINVAL):
            return False
        raise
    os.close(fd)
    return True


# inotify(7): IN_ATTRIB is raised on an inode whose link count changes (link,
# unlink, a rename over one of its names), as well as on chmod, chown and utimes.
_IN_ATTRIB = 0x4
_IN_Q_OVERFLOW = 0x4000  # events were lost: assume ours was among them
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT_HEADER = struct.Struct("<iIII")  # wd, mask, cookie, len (then a name)
for _name, _restype, _argtypes in (
    ("inotify_init1", ctypes.c_int, [ctypes.c_int]),
    ("inotify_add_watch", ctypes.c_int,
     [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]),
    ("inotify_rm_watch", ctypes.c_int, [ctypes.c_int, ctypes.c_int]),
):
    _function = getattr(_libc, _name, None)
    if _function is not None:
        _function.restype = _restype
        _function.argtypes = _argtypes


class LinkCountWatch:
    """Tell, without trusting any clock, whether a file's links changed meanwhile.

    One inotify instance serves the whole process (the kernel allows a user only
    a few instances), so watches are taken one at a time under a lock:

        with LINK_WATCH.watching(fd) as changed:
            ...                   # look at the file and its name
            if changed(): ...     # a link was added or removed since `watching`

    `watching` yields None when inotify is unavailable (no /proc, a seccomp
    filter, the watch limit reached); the caller then needs another check.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._broken = False

    @contextlib.contextmanager
    def watching(self, fd: int) -> Iterator[Callable[[], bool] | None]:
        with self._lock:
            inotify = self._instance()
            if inotify is None:
                yield None
                return
            self._drain(inotify, -1)
            path = f"/proc/self/fd/{fd}".encode()
            wd = _libc.inotify_add_watch(inotify, path, _IN_ATTRIB)
            if wd < 0:
                yield None
                return
            try:
                yield lambda: self._drain(inotify, wd)
            finally:
                _libc.inotify_rm_watch(inotify, wd)

    def _instance(self) -> int | None:
        if self._fd is None and not self._broken:
            init = getattr(_libc, "inotify_init1", None)
            fd = init(_IN_NONBLOCK | _IN_CLOEXEC) if init is not None else -1
            if fd < 0:
                self._broken = True
            else:
                self._fd = fd
        return self._fd

    @staticmethod
    def _drain(inotify: int, wd: int) -> bool:
        """Read every queued event; tell whether one was IN_ATTRIB on `wd`."""
        seen = False
        while True:
            try:
                data = os.read(inotify, 4096)
            except BlockingIOError:
                return seen
            offset = 0
            while offset + _EVENT_HEADER.size <= len(data):
                event_wd, mask, _cookie, size = _EVENT_HEADER.unpack_from(data, offset)
                ours = event_wd == wd and bool(mask & _IN_ATTRIB)
                seen = seen or ours or bool(mask & _IN_Q_OVERFLOW)
                offset += _EVENT_HEADER.size + size


LINK_WATCH = LinkCountWatch()

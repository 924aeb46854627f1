"""Whole-tree work beneath a root: removing a folder, sweeping crash leftovers.

Both walk with directory descriptors only. Each folder is opened relative to its
parent with O_NOFOLLOW | O_DIRECTORY and checked against the (dev, ino) that lstat
reported and against the root's mount, so a link, a folder swapped in during the
walk, or a mount point beneath the root is never entered.
"""

from __future__ import annotations

import errno
import os
import stat
import time

from strongroom.confine import _resolve
from strongroom.confine._names import STAGING_PREFIX, staging_kind

__all__ = ["Mount", "remove_stale_staging", "remove_tree"]

Mount = tuple[int, int | None]
# The deepest folder the sweep descends into: the name rules' bound on user paths,
# so nothing deeper can hold a staging name a request made.
MAX_SWEEP_DEPTH = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def remove_tree(parent: int, name: str, root_mount: Mount) -> None:
    """Remove `name` in folder `parent` and everything beneath it, following no link.

    Raises `OSError` when an entry cannot be removed, including a folder that an
    attacker swapped for a link or a mount point mid-walk (it is left in place).
    """
    # Design note: an explicit stack of (parent fd, name, fd) instead of recursion,
    # so depth is bounded by memory rather than Python's recursion limit.
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    fd = _open_child_dir(parent, name, st, root_mount)
    stack: list[tuple[int, str, int]] = [(parent, name, fd)]
    try:
        while stack:
            dir_parent, dir_name, dir_fd = stack[-1]
            child = _next_child(dir_fd, root_mount)
            if child is None:
                stack.pop()
                os.close(dir_fd)
                os.rmdir(dir_name, dir_fd=dir_parent)
            else:
                stack.append((dir_fd, child[0], child[1]))
    finally:
        for _, _, dir_fd in stack:
            os.close(dir_fd)


def remove_stale_staging(
    top_fd: int, root_mount: Mount, older_than_seconds: float
) -> list[str]:
    """Remove every staging entry untouched for `older_than_seconds`; return them.

    Staging entries are the temporary files of uploads and the staging folders of
    archive imports, exactly as `new_staging_name` names them. A process killed
    mid-write leaves them behind: hidden from listings and unreachable by any user
    path, but holding disk space. One that is still being written is kept: a file's
    mtime moves with every write, and a folder counts as touched when anything in
    it was. Anything else under the reserved prefix (a file put there by hand, a
    link, a folder named like a temporary file) is not ours and is left alone.
    Entries that vanish or change during the sweep are skipped. Returns the
    root-relative paths removed.
    """
    cutoff = time.time() - older_than_seconds
    removed: list[str] = []
    # The root's own descriptor may be O_PATH, which cannot be listed.
    top = os.open(".", _DIR_FLAGS, dir_fd=top_fd)
    stack: list[tuple[int, str, int]] = [(top, "", 0)]
    try:
        while stack:
            dir_fd, prefix, depth = stack.pop()
            try:
                for name in os.listdir(dir_fd):
                    child = _sweep_entry(dir_fd, name, root_mount, cutoff)
                    if child == "removed":
                        removed.append(prefix + name)
                    elif isinstance(child, int):
                        if depth + 1 < MAX_SWEEP_DEPTH:
                            stack.append((child, f"{prefix}{name}/", depth + 1))
                        else:
                            os.close(child)
            finally:
                os.close(dir_fd)
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)
    return removed


def _sweep_entry(dir_fd: int, name: str, root_mount: Mount, cutoff: float
                 ) -> int | str | None:
    """Remove a stale staging entry ("removed"), or open a folder to descend (fd)."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if not name.startswith(STAGING_PREFIX):
            if stat.S_ISDIR(st.st_mode):
                return _open_child_dir(dir_fd, name, st, root_mount)
            return None
        if not _is_own_staging(name, st):
            return None  # The reserved prefix, but not a name or kind we make.
        if _newest_mtime(dir_fd, name, st, root_mount) >= cutoff:
            return None
        remove_tree(dir_fd, name, root_mount)
    except OSError:
        return None  # Gone, swapped or unreadable since the listing: left alone.
    return "removed"


def _is_own_staging(name: str, st: os.stat_result) -> bool:
    """Tell whether `name` is a staging file or folder this service made."""
    kind = staging_kind(name)
    if kind == "file":
        return stat.S_ISREG(st.st_mode)
    return kind == "folder" and stat.S_ISDIR(st.st_mode)


def _newest_mtime(dir_fd: int, name: str, st: os.stat_result, root_mount: Mount
                  ) -> float:
    """The latest mtime of `name` and, for a folder, of everything beneath it."""
    newest = st.st_mtime
    if not stat.S_ISDIR(st.st_mode):
        return newest
    stack = [_open_child_dir(dir_fd, name, st, root_mount)]
    try:
        while stack:
            fd = stack.pop()
            try:
                for child in os.listdir(fd):
                    cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
                    newest = max(newest, cst.st_mtime)
                    if stat.S_ISDIR(cst.st_mode):
                        stack.append(_open_child_dir(fd, child, cst, root_mount))
            finally:
                os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return newest


def _next_child(dir_fd: int, root_mount: Mount) -> tuple[str, int] | None:
    """Remove non-directory children; return the next subdirectory to descend."""
    for name in os.listdir(dir_fd):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(name, dir_fd=dir_fd)
            continue
        try:
            return name, _open_child_dir(dir_fd, name, st, root_mount)
        except OSError as exc:
            # Swapped for a link or another entry since the lstat: never descend.
            # Whatever is there now is left; the final rmdir then reports the
            # folder as not empty instead of chasing an attacker forever.
            if exc.errno not in (errno.ENOTDIR, errno.ELOOP, errno.EAGAIN):
                raise
    return None


def _open_child_dir(
    parent: int, name: str, st: os.stat_result, root_mount: Mount
) -> int:
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise OSError(errno.EAGAIN, "directory changed during the walk")
    if not _resolve.same_mount(fd, now, root_mount):
        os.close(fd)
        raise OSError(errno.EXDEV, "mount point beneath the root")
    return fd

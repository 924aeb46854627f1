"""The two resolvers: one openat2(2) call, or a walk one component at a time.

Both open a user path relative to the root's directory descriptor and answer with a
new descriptor or an `OSError` whose errno means the same thing for both:

- `EXDEV`: the path would leave the root (a `..` above it, an absolute symlink, a
  relative symlink that climbs out even briefly) or cross a mount point;
- `ELOOP`: a symlink that the policy forbids, or more than `MAX_SYMLINK_HOPS`;
- `EAGAIN`: the kernel saw a rename race on every one of `MAX_EAGAIN_RETRIES` tries;
- anything else: what open(2) said about the final object (`ENOENT`, `ENOTDIR`...).

Design note for the walk. The obvious fallback, checking a resolved string and then
opening it, loses to anyone who swaps a component for a symlink between the check and
the open. The walk instead keeps a stack of descriptors, one per directory it entered,
and opens each next component relative to the top of the stack with O_NOFOLLOW, so a
name is looked up exactly once and a swap after that lookup cannot redirect us. `..`
pops the stack instead of opening `..` on disk, so it can only return to a directory
we already walked through, and popping past the root is an escape. A symlink (only
under the `within` policy) is read with readlinkat and its components are pushed in
front of the remaining ones, which gives the same physical meaning as the kernel. What
it does not do: it does not notice that a directory it already entered was moved out
of the root by someone else mid-walk (openat2 reports that case as EAGAIN for `..`);
after such a move, components resolved downward land in the moved directory. That is
the limitation every descriptor-based design shares; a dedicated mount for each space
removes it, because rename(2) cannot cross mounts.
"""

from __future__ import annotations

import errno
import os
import stat

from strongroom.confine._sys import (
    RESOLVE_BENEATH,
    RESOLVE_NO_MAGICLINKS,
    RESOLVE_NO_SYMLINKS,
    RESOLVE_NO_XDEV,
    mode_and_mount_id,
    mount_id,
    openat2,
)

__all__ = [
    "MAX_EAGAIN_RETRIES",
    "MAX_SYMLINK_HOPS",
    "open_kernel",
    "open_walk",
    "root_mount_of",
    "same_mount",
]

# Linux follows at most 40 symlinks in one lookup (MAXSYMLINKS); the walk matches it
# so both resolvers agree on which chains are too long.
MAX_SYMLINK_HOPS = 40
# openat2 answers EAGAIN when a rename or mount raced with a `..` step. A handful of
# retries absorbs honest concurrency; an attacker looping renames gets a refusal.
MAX_EAGAIN_RETRIES = 16

_KERNEL_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV
_WALK_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_kernel(
    root_fd: int,
    parts: tuple[str, ...],
    flags: int,
    *,
    follow_final: bool,
    allow_symlinks: bool,
    root_mount: tuple[int, int | None],
) -> int:
    """Open `parts` beneath `root_fd` in one openat2(2) call."""
    path = "/".join(parts).encode("utf-8") or b"."
    resolve = _KERNEL_RESOLVE
    if not allow_symlinks:
        # RESOLVE_NO_SYMLINKS refuses a final link with ELOOP by itself; adding
        # O_NOFOLLOW would turn that into ENOTDIR (with O_DIRECTORY) or hand back
        # the link itself (with O_PATH).
        resolve |= RESOLVE_NO_SYMLINKS
    elif not follow_final:
        flags |= os.O_NOFOLLOW
    for _ in range(MAX_EAGAIN_RETRIES):
        try:
            return openat2(root_fd, path, flags | os.O_CLOEXEC, resolve)
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                raise
    raise OSError(errno.EAGAIN, "path resolution kept racing with renames")


def open_walk(
    root_fd: int,
    parts: tuple[str, ...],
    flags: int,
    *,
    follow_final: bool,
    allow_symlinks: bool,
    root_mount: tuple[int, int | None],
) -> int:
    """Open `parts` beneath `root_fd` by walking one component at a time.

    See the module's design note. The object handed back is checked to be on the
    root's mount (the mount id where statx reports it, else the device), which
    stands in for RESOLVE_NO_XDEV; symlink targets that are
    absolute are refused outright, which covers magic links such as /proc/self/root.
    """
    stack: list[int] = []
    pending = list(reversed(parts))
    hops = 0
    try:
        while True:
            cur = stack[-1] if stack else root_fd
            if not pending:
                # The path ended on a directory already entered (the root, or
                # after a `..`): reopen it with the caller's flags.
                return _checked(os.open(".", flags | os.O_CLOEXEC, dir_fd=cur),
                                root_mount)
            name = pending.pop()
            if name == "..":
                if not stack:
                    raise OSError(errno.EXDEV, "'..' leaves the root")
                os.close(stack.pop())
                continue
            if pending:
                fd = _open_directory(cur, name)
                if fd >= 0:
                    stack.append(fd)
                    continue
            else:
                fd = _open_final(cur, name, flags, root_mount)
                if fd >= 0:
                    return fd
            # The component is a symlink: follow it only when the policy says so.
            if not allow_symlinks or (not pending and not follow_final):
                raise OSError(errno.ELOOP, "symlink refused by policy")
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links")
            pending.extend(reversed(_link_parts(cur, name)))
    finally:
        for fd in stack:
            os.close(fd)


def _open_directory(dir_fd: int, name: str) -> int:
    """Open a directory to walk through; return -1 if `name` is a symlink.

    O_DIRECTORY | O_NOFOLLOW opens a directory and refuses anything else with
    ENOTDIR, a symlink included, so the common case costs one syscall; only a
    refusal needs an lstat to tell a symlink from a file. The mount is checked
    on the object the walk finally hands back (the file, or the parent of a name
    to act on), the only thing ever read or written: passing through a mount
    point on the way, then `..` back out of it, reaches nothing on that mount.
    """
    try:
        return os.open(name, _WALK_DIR_FLAGS, dir_fd=dir_fd)
    except NotADirectoryError:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            return -1
        raise


def _open_final(
    dir_fd: int, name: str, flags: int, root_mount: tuple[int, int | None]
) -> int:
    """Open the last component without following it; return -1 if it is a symlink."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        # O_NOFOLLOW answers ELOOP for a symlink, or ENOTDIR with O_DIRECTORY.
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            return -1
        raise
    mode, mnt = mode_and_mount_id(fd)
    if stat.S_ISLNK(mode):
        # Only O_PATH opens get here: they return the link itself.
        os.close(fd)
        return -1
    return _checked(fd, root_mount, mnt)


def _checked(
    fd: int, root_mount: tuple[int, int | None], mnt: int | None = None
) -> int:
    """Return `fd` if it lives on the root's mount; else close it, raise EXDEV."""
    if mnt is None:
        mnt = mount_id(fd)
    if not _on_root_mount(fd, mnt, root_mount):
        os.close(fd)
        raise OSError(errno.EXDEV, "mount point beneath the root")
    return fd


def same_mount(
    fd: int, st: os.stat_result, root_mount: tuple[int, int | None]
) -> bool:
    """Tell whether `fd` is on the root's mount (device, and mount id if known)."""
    return st.st_dev == root_mount[0] and _on_root_mount(fd, None, root_mount)


def _on_root_mount(
    fd: int, mnt: int | None, root_mount: tuple[int, int | None]
) -> bool:
    # The mount id identifies a mount exactly; without statx, fall back to the
    # device number, which cannot see a bind mount from the same file system.
    root_dev, root_mnt = root_mount
    if root_mnt is not None:
        return (mnt if mnt is not None else mount_id(fd)) == root_mnt
    return os.fstat(fd).st_dev == root_dev


def root_mount_of(fd: int) -> tuple[int, int | None]:
    """Return what `same_mount` compares against for the root at `fd`."""
    return os.fstat(fd).st_dev, mount_id(fd)


def _link_parts(dir_fd: int, name: str) -> list[str]:
    """Read a symlink's text and split it; an absolute target is an escape."""
    try:
        target = os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            # Swapped for a non-link since we looked: resolve the name once more.
            return [name]
        raise
    if target.startswith("/"):
        raise OSError(errno.EXDEV, "absolute symlink")
    return [p for p in target.split("/") if p not in ("", ".")]

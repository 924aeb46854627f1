"""`Root`: every file operation of a space, confined beneath one directory fd."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from strongroom.confine import _resolve
from strongroom.confine._errors import path_error
from strongroom.confine._names import (
    STAGING_IMPORT_PREFIX,
    STAGING_PREFIX,
    UserPath,
    new_staging_name,
    parse_user_path,
    staging_kind,
)
from strongroom.confine._sys import (
    LINK_WATCH,
    RENAME_NOREPLACE,
    openat2_available,
    renameat2,
    start_writeback,
    syncfs,
)
from strongroom.confine._trees import remove_stale_staging, remove_tree
from strongroom.errors import (
    ConfigError,
    HardlinkRefusedError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    NotRegularFileError,
    PathError,
    PathExistsError,
    SymlinkRefusedError,
)

__all__ = [
    "STAGING_IMPORT_PREFIX",
    "STAGING_PREFIX",
    "AtomicWriter",
    "Entry",
    "EntryKind",
    "ReadHandle",
    "Root",
]

SymlinkPolicy = Literal["deny", "within"]
HardlinkPolicy = Literal["deny", "allow"]
ResolverChoice = Literal["auto", "openat2", "walk"]
EntryKind = Literal[
    "file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev", "other"
]


_KINDS: dict[int, EntryKind] = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}
# O_NONBLOCK: a FIFO swapped in must not hang the request. O_NOCTTY: a terminal
# device must never become our controlling terminal.
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NONBLOCK
_Mount = tuple[int, int | None]
# File timestamps come from a coarse clock that may lag the real time by a tick
# (a few ms); one second of slack keeps the ctime shortcut below on the safe side.
CTIME_SLACK_NS = 1_000_000_000
_MANY_LINKS = "the file has more than one hard link, which this space refuses"
_NEW_FILE_MODE = 0o644
# A writer starts the disk writes of each run of this many bytes as soon as it is
# written, so that its fsync (or the caller's syncfs) overlaps the writing: the
# durable write of 1 GiB took 0.45 s here instead of 0.68 s (0.33 s to the page
# cache, then 0.35 s of fsync). Smaller files never reach it.
WRITE_BEHIND_BYTES = 8 * 1024 * 1024
# `AtomicWriter.copy_range` without the kernel's help reads this much at a time.
COPY_CHUNK_BYTES = 1024 * 1024
# What copy_file_range(2) answers when it cannot copy between these two files:
# another file system (EXDEV), a file system without support (EOPNOTSUPP,
# EINVAL), a kernel without the call (ENOSYS). The copy is done by hand then.
_NO_KERNEL_COPY = frozenset(
    {errno.EXDEV, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}
)
_NEW_DIR_MODE = 0o755


@dataclass(frozen=True, slots=True)
class Entry:
    """What a stat says about one object in a root, safe to show to its user."""

    name: str
    kind: EntryKind
    size: int
    mtime_ns: int
    mode: int
    ino: int
    dev: int
    nlink: int

    @classmethod
    def from_stat(cls, name: str, st: os.stat_result) -> Entry:
        """Build an entry from a stat result (lstat-style for listings)."""
        return cls(
            name=name,
            kind=_KINDS.get(stat.S_IFMT(st.st_mode), "other"),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            mode=stat.S_IMODE(st.st_mode),
            ino=st.st_ino,
            dev=st.st_dev,
            nlink=st.st_nlink,
        )


class Root:
    """A directory that every operation stays beneath, whatever path it is given.

    Guarantees: each operation resolves its user path relative to the descriptor
    opened on the root at construction, either in one openat2(2) call with
    RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV (plus
    RESOLVE_NO_SYMLINKS under the `deny` policy) or, where the kernel or a seccomp
    filter lacks openat2, by a walk that opens one component at a time with
    O_NOFOLLOW and applies the same rules by hand. A name is looked up once, so a
    component swapped for a symlink mid-request cannot redirect the operation.
    Escapes are refused, never clamped, and the answer does not depend on whether
    anything exists outside. Reads are of regular files only; a file with more than
    one hard link is refused unless `hardlinks="allow"`. Writes go to a staging file
    in the target directory and are renamed into place after fsync.

    Symlink policy: `deny` refuses any symlink anywhere in a path, including the last
    component; `within` follows a symlink only while every step stays beneath the
    root (absolute links are always refused). Operations that act on a name (remove,
    rename, the last component of a write) never follow it under either policy.

    Limits: a directory that someone else moves out of the root while a request is
    inside it takes that request's downward steps with it (both resolvers share this;
    a dedicated mount per space removes it). A device node inside the root is refused
    only after it was opened, and opening some devices has side effects: keep spaces
    on `nodev` mounts. Crossing a mount point beneath the root is refused, so a space
    cannot span file systems. Not thread-hostile: one `Root` may serve many threads.
    """

    def __init__(
        self,
        host_path: str | os.PathLike[str],
        *,
        symlinks: SymlinkPolicy = "deny",
        hardlinks: HardlinkPolicy = "deny",
        resolver: ResolverChoice = "auto",
    ) -> None:
        """Open the root directory once and choose the resolver.

        Raises `ConfigError` when the directory is missing or is not a directory,
        when a policy value is unknown, or when `resolver="openat2"` is asked for on
        a kernel without it.
        """
        if symlinks not in ("deny", "within"):
            raise ConfigError(f"symlinks = {symlinks!r}; use 'deny' or 'within'")
        if hardlinks not in ("deny", "allow"):
            raise ConfigError(f"hardlinks = {hardlinks!r}; use 'deny' or 'allow'")
        self.symlinks: SymlinkPolicy = symlinks
        self.hardlinks: HardlinkPolicy = hardlinks
        self.resolver = _choose_resolver(resolver)
        self._open: Callable[..., int] = (
            _resolve.open_kernel if self.resolver == "openat2" else _resolve.open_walk
        )
        self._allow_symlinks = symlinks == "within"
        self._fd = _open_root_dir(host_path)
        self._mount = _resolve.root_mount_of(self._fd)

    # Lifecycle

    def close(self) -> None:
        """Close the root descriptor; later operations fail."""
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

    def sync(self) -> None:
        """Make every write on this root's file system durable (syncfs(2)).

        What `open_writer(durable=False)` wrote, and renames, survive a crash
        once this returns.

        Raises:
            PathError: the file system reported an error (EIO...).
        """
        try:
            # The root's own descriptor is O_PATH, which syncfs(2) refuses.
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                         dir_fd=self._fd)
            try:
                syncfs(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise path_error("sync", ".", exc, symlinks=self.symlinks) from exc

    # Reading

    def stat(self, rel_path: str = ".") -> Entry:
        """Return metadata of the object at `rel_path`, following links as allowed.

        The root itself is `"."`. A regular file with more than one hard link is
        refused (as it would be for reading) unless hardlinks are allowed.
        """
        up = self._parse("stat", rel_path, root_ok=True)
        opened_ns = time.time_ns()
        fd = self._open_path(up, os.O_PATH, op="stat")
        try:
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                # Only the walk gets here: O_PATH | O_NOFOLLOW opens the link.
                reason = "it is a symbolic link, which this space refuses"
                raise SymlinkRefusedError("stat", up.text, reason)
            self._check_hardlinks("stat", up, fd, st, opened_ns)
        finally:
            os.close(fd)
        return Entry.from_stat(up.final if up.parts else "", st)

    def lstat(self, rel_path: str) -> Entry:
        """Return metadata of the name itself: a symlink is described, not followed.

        The parent is resolved like any path; the last component is stat-ed with
        AT_SYMLINK_NOFOLLOW relative to the parent's descriptor.
        """
        up = self._parse("stat", rel_path, root_ok=True)
        if not up.parts:
            return self.stat(".")
        _refuse_final_dotdot(up, "stat")
        parent = self._open_parent(up, "stat")
        try:
            st = os.stat(up.final, dir_fd=parent, follow_symlinks=False)
            if up.must_be_dir and not stat.S_ISDIR(st.st_mode):
                # "a.txt/" names a folder; the file (or link) there is not one.
                raise OSError(errno.ENOTDIR, "not a directory")
        except OSError as exc:
            raise self._error("stat", up, exc) from exc
        finally:
            os.close(parent)
        return Entry.from_stat(up.final, st)

    def remove_stale_staging(self, rel_path: str, older_than_s: float) -> int:
        """Delete staging files in one folder untouched for `older_than_s` seconds.

        Staging files are left behind only when a process dies mid-write; a live
        write keeps its file's mtime fresh. Returns how many were removed.
        """
        up = self._parse("delete", rel_path, root_ok=True)
        fd = self._open_path(up, _DIR_FLAGS, op="delete")
        cutoff_ns = time.time_ns() - int(older_than_s * 1e9)
        removed = 0
        try:
            for name in os.listdir(fd):
                if staging_kind(name) != "file":
                    continue
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode) and st.st_mtime_ns < cutoff_ns:
                        os.unlink(name, dir_fd=fd)
                        removed += 1
        finally:
            os.close(fd)
        return removed

    def list_dir(self, rel_path: str = ".") -> list[Entry]:
        """List a directory; each entry is lstat-ed relative to its descriptor.

        Symlinks are reported as kind `symlink` with the size of their text and are
        never followed. Staging files of in-flight writes are hidden. Entries that
        vanish while listing are skipped.
        """
        up = self._parse("list", rel_path, root_ok=True)
        fd = self._open_path(up, _DIR_FLAGS, op="list")
        try:
            return list(_scan(fd))
        finally:
            os.close(fd)

    def open_read(self, rel_path: str) -> ReadHandle:
        """Open a regular file for reading and return a handle that owns the fd.

        Raises `IsADirectoryPathError` for a directory, `NotRegularFileError` for a
        FIFO, socket or device (opened without blocking, then refused) and
        `HardlinkRefusedError` for a multiply-linked file under `hardlinks="deny"`.
        """
        up = self._parse("read", rel_path)
        opened_ns = time.time_ns()
        fd = self._open_path(up, _READ_FLAGS, op="read")
        try:
            st = os.fstat(fd)
            self._check_readable(up, fd, st, opened_ns)
        except BaseException:
            os.close(fd)
            raise
        return ReadHandle(fd, up.final, st)

    def read_bytes(self, rel_path: str) -> bytes:
        """Return the whole content of a regular file (see `open_read`)."""
        with self.open_read(rel_path) as handle:
            return handle.read()

    # Writing

    def open_writer(
        self,
        rel_path: str,
        *,
        exclusive: bool = False,
        make_parents: bool = False,
        durable: bool = True,
        in_place: bool = False,
    ) -> AtomicWriter:
        """Start an atomic write of `rel_path`; nothing is visible before `commit`.

        The existing object (if any) is checked first: a symlink, directory, FIFO,
        device or multiply-linked file is refused before anything is written, and
        with `exclusive=True` any existing name (a dangling symlink too) is refused.
        `make_parents=True` creates missing folders, each through the root.
        `durable=False` skips the fsyncs of the file and its folder: for a batch
        of files the caller makes durable at once with `sync`, before anyone
        relies on them. `in_place=True` (which implies `exclusive`) creates the
        file under its own name from the first byte, with O_EXCL: only for a
        folder that no one else reads, like an import's stage, where nobody
        can see a half-written file and a staging name would cost a link and
        an unlink for nothing.
        """
        up = self._parse("write", rel_path)
        if up.must_be_dir:
            # The path's own form is wrong, whatever is on disk: a 400, not a
            # conflict with a folder that may not even exist.
            reason = "a final '/' or '/.' names a folder; a file needs a file name"
            raise InvalidPathError("write", rel_path, reason)
        _refuse_final_dotdot(up, "write")
        if make_parents:
            parent, made = self._open_or_make_parent(up, "write")
        else:
            parent, made = self._open_parent(up, "write"), []
        try:
            if not in_place:  # in place, O_EXCL refuses any existing name
                self._check_write_target(up, parent, exclusive)
            return AtomicWriter(self, up, parent, exclusive or in_place, made,
                                durable=durable, in_place=in_place)
        except BaseException:
            os.close(parent)
            self._remove_made(made)
            raise

    def write_bytes(
        self,
        rel_path: str,
        data: bytes,
        *,
        exclusive: bool = False,
        make_parents: bool = False,
    ) -> Entry:
        """Write `data` to `rel_path` atomically (see `open_writer`)."""
        with self.open_writer(
            rel_path, exclusive=exclusive, make_parents=make_parents
        ) as writer:
            writer.write(data)
            entry, _ = writer.commit()
        return entry

    def mkdir(
        self, rel_path: str, *, parents: bool = False, exist_ok: bool = False
    ) -> None:
        """Create a directory; an existing name (even a dangling link) is refused.

        With `exist_ok=True`, an existing directory (not a link to one) is fine.
        """
        up = self._parse("mkdir", rel_path)
        _refuse_final_dotdot(up, "mkdir")
        if parents:
            parent, made = self._open_or_make_parent(up, "mkdir")
        else:
            parent, made = self._open_parent(up, "mkdir"), []
        try:
            os.mkdir(up.final, _NEW_DIR_MODE, dir_fd=parent)
        except FileExistsError as exc:
            st = os.stat(up.final, dir_fd=parent, follow_symlinks=False)
            if not (exist_ok and stat.S_ISDIR(st.st_mode)):
                self._remove_made(made)
                raise self._error("mkdir", up, exc) from exc
        except OSError as exc:
            self._remove_made(made)
            raise self._error("mkdir", up, exc) from exc
        finally:
            os.close(parent)

    def remove(self, rel_path: str) -> None:
        """Remove a file, a symlink itself, or an empty directory.

        Never follows the last component: removing a link removes the link. A
        trailing `/` demands a real directory.
        """
        up = self._parse("delete", rel_path)
        _refuse_final_dotdot(up, "delete")
        parent = self._open_parent(up, "delete")
        try:
            _remove_name(parent, up.final, must_be_dir=up.must_be_dir)
        except OSError as exc:
            raise self._error("delete", up, exc) from exc
        finally:
            os.close(parent)

    def remove_tree(self, rel_path: str) -> None:
        """Remove a directory and everything beneath it, or a single non-directory.

        Descends with O_NOFOLLOW | O_DIRECTORY and checks each child's (dev, ino)
        against the entry it lstat-ed, so a link swapped in is unlinked, never
        followed. Mount points are not crossed. A trailing `/` demands a real
        directory, as for `remove`: a file or a link with that name is left alone.
        """
        up = self._parse("delete", rel_path)
        _refuse_final_dotdot(up, "delete")
        parent = self._open_parent(up, "delete")
        try:
            if up.must_be_dir:
                _require_dir(parent, up.final)
            remove_tree(parent, up.final, self._mount)
        except OSError as exc:
            raise self._error("delete", up, exc) from exc
        finally:
            os.close(parent)

    def rename(self, src: str, dst: str, *, overwrite: bool = False) -> None:
        """Move `src` to `dst` inside the root, never following either last link.

        With `overwrite=False` an existing destination is refused atomically
        (renameat2 RENAME_NOREPLACE). A trailing `/` on either side demands that
        `src` is a directory.
        """
        self._move_from(self, src, dst, overwrite=overwrite)

    # Staging folders (archive import)

    def make_staging_dir(self) -> tuple[str, Root]:
        """Create a hidden staging folder at the top and return (name, a Root on it).

        The name starts with `STAGING_PREFIX`, so listings hide it and no user path
        can name it. The returned root is confined to the folder, denies symlinks
        and hard links whatever this root allows, and must be closed by the
        caller; `remove_staging_dir` deletes the folder again.
        """
        name = new_staging_name("folder")
        try:
            os.mkdir(name, 0o700, dir_fd=self._fd)
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self._fd)
        except OSError as exc:
            raise path_error("mkdir", ".", exc, symlinks=self.symlinks) from exc
        # Held until the returned root is closed: `claim_staging_dir` in another
        # thread or process then knows that this folder is in use.
        fcntl.flock(fd, fcntl.LOCK_EX)
        return name, self._staging_root(fd)

    def staging_dir_names(self) -> list[str]:
        """Return the names of the staging folders at the top (in use or not)."""
        try:
            # The root's own descriptor may be O_PATH, which cannot be listed.
            fd = os.open(".", _DIR_FLAGS | os.O_CLOEXEC, dir_fd=self._fd)
            try:
                return [n for n in os.listdir(fd)
                        if staging_kind(n) == "folder" and _is_dir_entry(fd, n)]
            finally:
                os.close(fd)
        except OSError as exc:
            raise path_error("list", ".", exc, symlinks=self.symlinks) from exc

    def claim_staging_dir(self, name: str) -> Root | None:
        """Open a staging folder that nobody uses any more; None if one does.

        "In use" means that a live `make_staging_dir` root (in any process) still
        holds it: the lock it holds is dropped by the kernel when its process
        dies, so the folder of a killed import can be claimed at once. The
        returned root holds the lock in turn; the caller closes it.
        """
        if staging_kind(name) != "folder":
            raise InvalidPathError("open", name, "not a staging folder name")
        try:
            fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=self._fd)
        except OSError as exc:
            raise path_error("open", ".", exc, symlinks=self.symlinks) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return self._staging_root(fd)

    def _staging_root(self, fd: int) -> Root:
        child = Root.__new__(Root)
        child.symlinks, child.hardlinks = "deny", "deny"
        child.resolver, child._open = self.resolver, self._open
        child._allow_symlinks = False
        child._fd, child._mount = fd, self._mount
        return child

    def remove_staging_dir(self, name: str) -> None:
        """Delete a folder made by `make_staging_dir`, never following a link."""
        if staging_kind(name) != "folder":
            raise InvalidPathError("delete", name, "not a staging folder name")
        try:
            remove_tree(self._fd, name, self._mount)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise path_error("delete", ".", exc, symlinks=self.symlinks) from exc

    def remove_staging_leftovers(self, older_than_seconds: float) -> list[str]:
        """Delete staging entries a killed process left; return their paths.

        Temporary upload files and import staging folders anywhere beneath the
        root that nothing has touched for `older_than_seconds` are removed,
        without following a link or crossing a mount point. Entries still being
        written are younger than that and kept, so several processes serving the
        same tree may each call this.
        """
        return remove_stale_staging(self._fd, self._mount, older_than_seconds)

    def adopt(self, other: Root, src: str, dst: str) -> None:
        """Move `src` of `other` (a root on the same mount) to `dst` here.

        Each side is resolved beneath its own root; neither final name is
        followed, and an existing `dst` is refused (RENAME_NOREPLACE).
        """
        self._move_from(other, src, dst, overwrite=False)

    # Sub-folders (share links)

    def subroot(self, rel_path: str) -> Root:
        """Open the folder at `rel_path` as a root of its own, with this one's policies.

        The folder is resolved once, like any path here (so a symlink on the way
        is followed only as the symlink policy allows), and the new root holds a
        descriptor of the folder itself. Everything later resolved beneath it
        stays beneath that folder: `..` at its top is an escape, and so is a link
        inside it that points to a sibling or a parent, even one that stays
        inside this root. Both resolvers give that, since each resolves beneath
        the descriptor it is handed. The caller closes the new root; closing this
        one does not close it.

        Raises `NotADirectoryPathError` when `rel_path` is not a folder, and the
        same `PathError`s as `stat` when it cannot be reached.
        """
        up = self._parse("open", rel_path, root_ok=True)
        fd = self._open_path(up, os.O_PATH | os.O_DIRECTORY, op="open")
        child = Root.__new__(Root)
        child.symlinks, child.hardlinks = self.symlinks, self.hardlinks
        child.resolver, child._open = self.resolver, self._open
        child._allow_symlinks = self._allow_symlinks
        # Same mount: the resolvers never cross a mount point to reach `fd`.
        child._fd, child._mount = fd, self._mount
        return child

    # Internals shared by the operations

    def _move_from(self, other: Root, src: str, dst: str, *, overwrite: bool) -> None:
        # Each side resolves its parent beneath its own root: a rename inside one
        # root passes `self` as `other`.
        src_up = other._parse("rename", src)
        dst_up = self._parse("rename", dst)
        _refuse_final_dotdot(src_up, "rename")
        _refuse_final_dotdot(dst_up, "rename")
        src_parent = other._open_parent(src_up, "rename")
        try:
            dst_parent = self._open_parent(dst_up, "rename")
            try:
                self._rename(src_up, src_parent, dst_up, dst_parent, overwrite)
            finally:
                os.close(dst_parent)
        finally:
            os.close(src_parent)

    def _parse(self, op: str, rel_path: str, *, root_ok: bool = False) -> UserPath:
        if self._fd < 0:
            raise ValueError("operation on a closed Root")
        if root_ok and rel_path in ("", "."):
            rel_path = "."
            return UserPath(".", (), True)
        up = parse_user_path(op, rel_path)
        if not up.parts and not root_ok:
            raise InvalidPathError(op, rel_path, "the path names the space itself")
        return up

    def _open_path(self, up: UserPath, flags: int, *, op: str) -> int:
        # The last component is followed exactly when any symlink may be.
        if up.must_be_dir:
            flags |= os.O_DIRECTORY
        try:
            return self._open(
                self._fd,
                up.parts,
                flags,
                follow_final=self._allow_symlinks,
                allow_symlinks=self._allow_symlinks,
                root_mount=self._mount,
            )
        except OSError as exc:
            raise self._error(op, up, exc) from exc

    def _open_parent(self, up: UserPath, op: str) -> int:
        parent = UserPath(up.text, up.parent_parts, True)
        return self._open_path(parent, _DIR_FLAGS, op=op)

    def _open_or_make_parent(
        self, up: UserPath, op: str
    ) -> tuple[int, list[tuple[str, ...]]]:
        """Open the parent, creating missing folders; return (fd, folders made).

        Missing folders are only created for a path without `..`: with `..` the
        folders made on the way would not be the parent that the path names, and
        a refused request must leave nothing behind.
        """
        try:
            return self._open_parent(up, op), []
        except PathError as exc:
            if not _is_missing(exc) or ".." in up.parent_parts:
                raise
        made = self._make_dirs(up)
        try:
            return self._open_parent(up, op), made
        except BaseException:
            self._remove_made(made)
            raise

    def _make_dirs(self, up: UserPath) -> list[tuple[str, ...]]:
        # Create the parent folders one at a time; each mkdirat runs in a directory
        # that was itself opened through the resolver, so no step can leave the root.
        made: list[tuple[str, ...]] = []
        try:
            for depth in range(1, len(up.parent_parts) + 1):
                step = UserPath(up.text, up.parent_parts[:depth], True)
                parent = self._open_parent(step, "mkdir")
                try:
                    os.mkdir(step.final, _NEW_DIR_MODE, dir_fd=parent)
                    made.append(step.parts)
                except FileExistsError:
                    continue
                except OSError as exc:
                    raise self._error("mkdir", up, exc) from exc
                finally:
                    os.close(parent)
        except BaseException:
            self._remove_made(made)
            raise
        return made

    def _remove_made(self, made: list[tuple[str, ...]]) -> None:
        """Remove folders this request created, deepest first, if still empty."""
        for parts in reversed(made):
            up = UserPath("/".join(parts), parts, False)
            try:
                parent = self._open_parent(up, "delete")
            except PathError:
                continue
            try:
                os.rmdir(up.final, dir_fd=parent)
            except OSError:
                pass  # Someone put something there meanwhile: it stays.
            finally:
                os.close(parent)

    def _check_readable(
        self, up: UserPath, fd: int, st: os.stat_result, opened_ns: int
    ) -> None:
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryPathError("read", up.text, "it is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            reason = "only regular files are served (this is a FIFO, socket or device)"
            raise NotRegularFileError("read", up.text, reason)
        self._check_hardlinks("read", up, fd, st, opened_ns)

    def _check_hardlinks(
        self,
        op: str,
        up: UserPath,
        fd: int,
        st: os.stat_result,
        opened_ns: int = 0,
    ) -> None:
        """Refuse a multiply-linked file, and one whose links moved under us.

        Design note. The link count is read from the opened descriptor, but an
        attacker who can hard-link an outside file to a name in the root can also
        remove that name again between our open and our fstat, so the count reads
        1 while the descriptor holds the outside file. What we need is one moment
        at which the name led to the file and the file had one link: then that
        link was the name, inside the root. `_confirm_only_link` finds it.

        The shortcut: link(2) and unlink(2) set ctime to "now", so a file whose
        ctime is well older than our open had no link added or removed since, and
        the count we read is the count it had when the name led to it. The kernel
        itself closes the window for good with fs.protected_hardlinks=1 (nobody
        can link a file they cannot read and write) or a space on its own mount
        (links across mounts fail with EXDEV).
        """
        if self.hardlinks == "allow" or not stat.S_ISREG(st.st_mode):
            return
        if st.st_nlink > 1:
            raise HardlinkRefusedError(op, up.text, _MANY_LINKS)
        if fd < 0 or st.st_ctime_ns < opened_ns - CTIME_SLACK_NS:
            return
        self._confirm_only_link(op, up, fd, st)

    def _confirm_only_link(
        self, op: str, up: UserPath, fd: int, st: os.stat_result
    ) -> None:
        """Prove that `fd`'s file had one link, and `up` named it, at one moment.

        An inotify watch on the file reports every change of its link count, so:
        watch, read the count (1), resolve the name again (through the resolver,
        so still confined) to the same inode, and find no change reported. The
        count was then 1 while the name led to the file. Comparing ctimes instead
        fails when two changes share one timestamp (coarse clocks, a clock
        stepped back); it is used only where inotify is unavailable.
        """
        with LINK_WATCH.watching(fd) as changed:
            now = os.fstat(fd)
            if now.st_nlink != 1:
                raise HardlinkRefusedError(op, up.text, _MANY_LINKS)
            probe = self._open_path(up, os.O_PATH, op=op)
            try:
                named = os.fstat(probe)
            finally:
                os.close(probe)
            if changed is not None:
                moved = changed()
            else:
                after = os.fstat(fd)
                moved = after.st_nlink != 1 or after.st_ctime_ns != st.st_ctime_ns
        if moved or (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino):
            reason = "the file's links changed while it was opened; try again"
            raise HardlinkRefusedError(op, up.text, reason)

    def _check_write_target(self, up: UserPath, parent: int, exclusive: bool) -> None:
        try:
            st = os.stat(up.final, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._error("write", up, exc) from exc
        if exclusive:
            raise PathExistsError("write", up.text, "the name is already taken")
        if stat.S_ISLNK(st.st_mode):
            reason = "it is a symbolic link; writes never go through links"
            raise SymlinkRefusedError("write", up.text, reason)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryPathError("write", up.text, "a folder has that name")
        if not stat.S_ISREG(st.st_mode):
            reason = "a FIFO, socket or device has that name"
            raise NotRegularFileError("write", up.text, reason)
        # The write never opens the old file (it renames over the name), so only
        # the count matters here.
        self._check_hardlinks("write", up, -1, st)

    def _rename(
        self,
        src: UserPath,
        src_parent: int,
        dst: UserPath,
        dst_parent: int,
        overwrite: bool,
    ) -> None:
        try:
            if src.must_be_dir or dst.must_be_dir:
                st = os.stat(src.final, dir_fd=src_parent, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    reason = ("a final '/' or '/.' names a folder, and the source "
                              "is not one")
                    raise NotADirectoryPathError("rename", src.text, reason)
            if overwrite:
                os.rename(
                    src.final, dst.final, src_dir_fd=src_parent, dst_dir_fd=dst_parent
                )
            else:
                _rename_noreplace(src_parent, src.final, dst_parent, dst.final)
        except OSError as exc:
            culprit = dst if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) else src
            raise self._error("rename", culprit, exc) from exc

    def _error(self, op: str, up: UserPath, exc: OSError) -> PathError:
        return path_error(op, up.text, exc, symlinks=self.symlinks)


class ReadHandle:
    """An open regular file of a root; owns its descriptor until `close`.

    `entry` describes the file as fstat saw it right after the open.
    """

    def __init__(self, fd: int, name: str, st: os.stat_result) -> None:
        self.fd = fd
        self._name = name
        self._st = st
        self._entry: Entry | None = None

    @property
    def entry(self) -> Entry:
        """The opened file's metadata (built on first use: most reads never ask)."""
        if self._entry is None:
            self._entry = Entry.from_stat(self._name, self._st)
        return self._entry

    def read(self, n: int = -1) -> bytes:
        """Read up to `n` bytes from the current offset (all of it when -1)."""
        if n >= 0:
            return os.read(self.fd, n)
        # One read usually does it: ask for one byte more than the known size so
        # that a file that grew meanwhile is noticed and read to its end.
        size = self._st.st_size
        first = os.read(self.fd, size + 1)
        if len(first) <= size:
            return first
        chunks = [first]
        while chunk := os.read(self.fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def pread(self, n: int, offset: int) -> bytes:
        """Read up to `n` bytes at `offset` without moving the file offset."""
        return os.pread(self.fd, n, offset)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        # A safety net for a handle dropped unread (a client that went away
        # mid-stream): the descriptor must not outlive its last reference.
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AtomicWriter:
    """A staging file that becomes `rel_path` on `commit`, or vanishes on `abort`.

    The staging file is created with O_EXCL | O_NOFOLLOW in the target's own
    directory (opened through the root), written, fsync-ed, and renamed over the
    name; then the directory is fsync-ed so the rename survives a crash. An
    exclusive writer links instead of renaming, so it never replaces anything.
    An in-place writer's staging file is the name itself (see `open_writer`).
    """

    def __init__(
        self,
        root: Root,
        up: UserPath,
        parent_fd: int,
        exclusive: bool,
        made_dirs: list[tuple[str, ...]] | None = None,
        *,
        durable: bool = True,
        in_place: bool = False,
    ) -> None:
        self._root = root
        self._durable = durable
        self._in_place = in_place
        self._up = up
        self._parent = parent_fd
        self._exclusive = exclusive
        # Folders created for this write; an abort removes them again if empty.
        self._made_dirs = made_dirs or []
        self._tmp = up.final if in_place else new_staging_name("file")
        self.size = 0
        self._written_back = 0  # bytes whose writeback has been started
        self._kernel_copy = True  # until copy_file_range(2) says it cannot
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(self._tmp, flags, _NEW_FILE_MODE, dir_fd=parent_fd)
        except OSError as exc:
            raise root._error("write", up, exc) from exc

    def write(self, data: bytes | memoryview) -> None:
        """Append `data` to the staging file.

        Raises `InsufficientStorageError` when the disk is full (ENOSPC, EDQUOT)
        and `StorageError` for other write failures, like every other method; the
        caller aborts the writer, which removes the staging file.
        """
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self.size += written
        except OSError as exc:
            raise self._root._error("write", self._up, exc) from exc
        self._write_behind()

    def copy_range(self, src_fd: int, offset: int, length: int) -> None:
        """Append `length` bytes of the open file `src_fd`, from `offset` on.

        The kernel copies them (copy_file_range(2)), so they never pass
        through this process; where it cannot (the source is on another file
        system, or this one does not support it), they are read and written a
        chunk at a time. `src_fd`'s own offset is left alone. A source that ends
        before `length` bytes is a `StorageError`; other failures raise as in
        `write`.
        """
        end = offset + length
        try:
            while offset < end:
                copied = self._copy_once(src_fd, offset, end - offset)
                if not copied:
                    reason = "the source file ended before the range did"
                    raise OSError(errno.EIO, reason)
                offset += copied
                self.size += copied
                self._write_behind()
        except OSError as exc:
            raise self._root._error("write", self._up, exc) from exc

    def _copy_once(self, src_fd: int, offset: int, length: int) -> int:
        if self._kernel_copy:
            try:
                copied = os.copy_file_range(src_fd, self._fd, length, offset)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                self._kernel_copy = False  # and read and write from here on
            else:
                if copied:
                    return copied
                # Some file systems answer 0 rather than an error for a copy
                # they will not do: the read below tells that from the end.
                self._kernel_copy = False
        data = os.pread(src_fd, min(length, COPY_CHUNK_BYTES), offset)
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        return len(data)

    def _write_behind(self) -> None:
        pending = self.size - self._written_back
        if pending >= WRITE_BEHIND_BYTES:
            start_writeback(self._fd, self._written_back, pending)
            self._written_back = self.size

    def commit(self) -> tuple[Entry, bool]:
        """Make the content visible under its name; return (entry, created)."""
        try:
            if self._durable:
                os.fsync(self._fd)
            st = os.fstat(self._fd)
            created = self._publish()
            if self._durable:
                os.fsync(self._parent)
        except OSError as exc:
            self.abort()
            raise self._root._error("write", self._up, exc) from exc
        except BaseException:
            self.abort()
            raise
        self._close_all()
        return Entry.from_stat(self._up.final, st), created

    def abort(self) -> None:
        """Discard the staging file (idempotent)."""
        if self._parent < 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp, dir_fd=self._parent)
        self._close_all()
        self._root._remove_made(self._made_dirs)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.abort()

    def _publish(self) -> bool:
        name, parent = self._up.final, self._parent
        if self._in_place:
            return True  # created under its name, exclusively
        if self._exclusive:
            # link(2) fails with EEXIST for any existing name, a dangling link too.
            os.link(
                self._tmp, name, src_dir_fd=parent, dst_dir_fd=parent,
                follow_symlinks=False,
            )
            os.unlink(self._tmp, dir_fd=parent)
            return True
        existed = _name_exists(parent, name)
        os.rename(self._tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
        return not existed

    def _close_all(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._parent >= 0:
            os.close(self._parent)
            self._parent = -1


def _choose_resolver(choice: str) -> Literal["openat2", "walk"]:
    if choice == "walk":
        return "walk"
    if choice not in ("auto", "openat2"):
        raise ConfigError(f"resolver = {choice!r}; use 'auto', 'openat2' or 'walk'")
    if openat2_available():
        return "openat2"
    if choice == "openat2":
        raise ConfigError("resolver = 'openat2', but this kernel does not offer it")
    return "walk"


def _open_root_dir(host_path: str | os.PathLike[str]) -> int:
    shown = os.fspath(host_path)
    try:
        return os.open(host_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError(f"space directory {shown!r} does not exist") from None
    except NotADirectoryError:
        raise ConfigError(f"space path {shown!r} is not a directory") from None
    except OSError as exc:
        reason = f"cannot open space directory {shown!r}: {exc.strerror}"
        raise ConfigError(reason) from exc


def _scan(dir_fd: int) -> Iterator[Entry]:
    for name in os.listdir(dir_fd):
        if name.startswith(STAGING_PREFIX):
            continue
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        yield Entry.from_stat(name, st)


def _is_dir_entry(dir_fd: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode)


def _refuse_final_dotdot(up: UserPath, op: str) -> None:
    if up.final == "..":
        reason = "the path must end in a name, not '..'"
        raise InvalidPathError(op, up.text, reason)


def _is_missing(exc: PathError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno == errno.ENOENT


def _name_exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _require_dir(parent: int, name: str) -> None:
    # A folder swapped in for a file after this check is still inside the root,
    # so the race can only change which entry of the root is removed.
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ENOTDIR, "not a directory")


def _remove_name(parent: int, name: str, *, must_be_dir: bool) -> None:
    st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if stat.S_ISDIR(st.st_mode):
        os.rmdir(name, dir_fd=parent)
    elif must_be_dir:
        raise OSError(errno.ENOTDIR, "not a directory")
    else:
        # unlinkat never follows: a symlink is removed, its target is not.
        os.unlink(name, dir_fd=parent)


def _rename_noreplace(src_dir: int, src: str, dst_dir: int, dst: str) -> None:
    try:
        renameat2(src_dir, src, dst_dir, dst, RENAME_NOREPLACE)
    except OSError as exc:
        if exc.errno not in (errno.ENOSYS, errno.EINVAL):
            raise
        # A file system without RENAME_NOREPLACE: check, then rename. The window can
        # only replace an entry inside the same root, never reach outside it.
        if _name_exists(dst_dir, dst):
            raise OSError(errno.EEXIST, "destination exists") from None
        os.rename(src, dst, src_dir_fd=src_dir, dst_dir_fd=dst_dir)

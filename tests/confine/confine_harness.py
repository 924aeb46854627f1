"""Case trees, snapshots and bounded runs for the confined-root tests.

Every tree follows Part A of the shared case conventions (`tests/data/` holds the
copy): a fresh directory `T` holding `T/root`, the directory handed to `Root`, and
`T/outside`, a sibling that no operation may read, write or remove. Entries are made
with directory-descriptor-relative calls, because one corpus tree is longer than
PATH_MAX once joined to `T`.

Three detectors decide whether anything left the root:

- a no-follow snapshot of `T/outside` (type, permission bits, size, bytes, link text;
  link counts and timestamps are ignored), taken before and after;
- an inotify watch on every directory and regular file under `T/outside`, which sees
  reads, writes, creations and removals even when a later step undoes them;
- the bytes, entries and error messages an operation hands back, which must never
  carry `OUTSIDE-SECRET` or a line of `/etc/passwd`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import socket
import stat
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from strongroom.confine import Root
from strongroom.errors import PathError, PathNotFoundError

RESOLVERS = ("openat2", "walk")
# Part A: "Every request finishes within 5 s"; FIFO cases catch blocking opens.
OP_TIMEOUT_SECONDS = 5.0
SECRET_MARKERS = ("OUTSIDE-SECRET", "root:x:0:0")
# Set to the parent's mount namespace when a privileged case re-runs under
# `unshare -m`; the child mounts only when its own namespace differs.
IN_MOUNT_NS_ENV = "STRONGROOM_TEST_PARENT_MOUNT_NS"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL (unix(7)).
MAX_SOCKET_PATH_BYTES = 107

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KIND_BY_FORMAT = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}

# inotify(7) event bits that mean an outside object was read or changed. Left out
# on purpose, because a correct server can cause them through an inside hard link to
# an outside inode: IN_OPEN and IN_CLOSE_WRITE (opening it to check its link count),
# IN_ATTRIB (unlinking the inside name changes the link count) and IN_MOVE_SELF
# (renaming the inside name). A real move of an outside name still shows as
# IN_MOVED_FROM on its parent directory.
_IN_EVENTS = {
    0x001: "IN_ACCESS",
    0x002: "IN_MODIFY",
    0x040: "IN_MOVED_FROM",
    0x080: "IN_MOVED_TO",
    0x100: "IN_CREATE",
    0x200: "IN_DELETE",
    0x400: "IN_DELETE_SELF",
    0x4000: "IN_Q_OVERFLOW",
}
_IN_WATCH_MASK = sum(_IN_EVENTS) & ~0x4000
_IN_NONBLOCK_CLOEXEC = os.O_NONBLOCK | os.O_CLOEXEC
_IN_EVENT_HEADER = struct.Struct("iIII")

_MS_BIND = 4096
_MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class Outcome:
    """How one confined operation ended: `ok`, `not_found` or `refused`."""

    kind: str
    value: object = None
    error: PathError | None = None
    seconds: float = 0.0

    def describe(self) -> str:
        """Return a one-line account for assertion messages."""
        if self.error is None:
            return f"ok after {self.seconds:.3f}s -> {self.value!r:.200}"
        return f"{self.kind}: {type(self.error).__name__}: {self.error}"

    def leaked_text(self) -> str:
        """Return everything the operation handed back, as text to search."""
        parts = [repr(self.value)]
        if isinstance(self.value, bytes):
            parts.append(self.value.decode("utf-8", "replace"))
        if self.error is not None:
            parts.append(str(self.error))
        return "\n".join(parts)


def classify(error: PathError) -> str:
    """Map a refusal onto the case classes of Part A."""
    return "not_found" if isinstance(error, PathNotFoundError) else "refused"


class OutsideWatch:
    """An inotify watch on every directory and file under some host trees."""

    def __init__(self, tops: Iterable[tuple[int, str]]) -> None:
        self._fd = _libc.inotify_init1(_IN_NONBLOCK_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._names: dict[int, str] = {}
        self.events: list[str] = []
        for dir_fd, name in tops:
            self._watch_tree(dir_fd, name, name)
        # Listing the trees to watch them was itself a read; start from zero.
        self.collect()
        self.events.clear()

    def __enter__(self) -> OutsideWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def collect(self) -> list[str]:
        """Drain pending events into `self.events` and return them."""
        while self._fd >= 0:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return self.events
            self.events.extend(self._decode(data))
        return self.events

    def close(self) -> None:
        """Collect what is pending and stop watching."""
        if self._fd >= 0:
            self.collect()
            os.close(self._fd)
            self._fd = -1

    def _watch_tree(self, dir_fd: int, name: str, label: str) -> None:
        try:
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
                self._add(f"/proc/self/fd/{fd}", label)
            if stat.S_ISDIR(mode):
                for child in _list_names(fd):
                    self._watch_tree(fd, child, f"{label}/{child}")
        finally:
            os.close(fd)

    def _add(self, proc_path: str, label: str) -> None:
        wd = _libc.inotify_add_watch(self._fd, proc_path.encode(), _IN_WATCH_MASK)
        if wd < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {label}")
        self._names[wd] = label

    def _decode(self, data: bytes) -> Iterator[str]:
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = _IN_EVENT_HEADER.unpack_from(data, offset)
            offset += _IN_EVENT_HEADER.size
            child = (
                data[offset : offset + length].rstrip(b"\0").decode(errors="replace")
            )
            offset += length
            bits = "|".join(n for bit, n in _IN_EVENTS.items() if mask & bit)
            if bits:
                where = self._names.get(wd, "?")
                yield f"{bits} on {where}{'/' + child if child else ''}"


class CaseTree:
    """One `T` with `root` and `outside`, built and inspected through descriptors.

    Every lookup here is no-follow and relative to a directory descriptor, so the
    helpers neither traverse the links a case plants nor trip over PATH_MAX.
    """

    def __init__(self, t_path: Path) -> None:
        self.t_path = t_path
        self.root_path = t_path / "root"
        self.outside_path = t_path / "outside"
        for path in (t_path, self.root_path, self.outside_path):
            path.mkdir()
        self.t_fd = os.open(t_path, _DIR_FLAGS)
        self.root_fd = os.open(self.root_path, _DIR_FLAGS)
        self.outside_fd = os.open(self.outside_path, _DIR_FLAGS)
        self._mounts: list[str] = []
        self.outcomes: list[Outcome] = []

    # Building ---------------------------------------------------------------

    def substitute(self, text: str) -> str:
        """Replace the `{ROOT}` and `{OUTSIDE}` placeholders with host paths."""
        return text.replace("{ROOT}", str(self.root_path)).replace(
            "{OUTSIDE}", str(self.outside_path)
        )

    def build(
        self, entries: Iterable[Mapping[str, Any]], *, allow_mounts: bool = False
    ) -> None:
        """Create entries in list order, as Part A describes them."""
        for entry in entries:
            self.add(entry, allow_mounts=allow_mounts)

    def add(self, entry: Mapping[str, Any], *, allow_mounts: bool = False) -> None:
        """Create one entry, making missing parent directories first."""
        outside = bool(entry.get("outside", False))
        rel = entry["path"]
        kind = entry["type"]
        with self._parent(outside, rel, create=True) as (fd, name):
            if kind in ("bindmount", "procmount", "tmpfsmount"):
                self._mount(entry, fd, name, outside, allow_mounts)
            else:
                self._make(entry, fd, name, outside)

    def _make(
        self, entry: Mapping[str, Any], fd: int, name: str, outside: bool
    ) -> None:
        kind = entry["type"]
        if kind == "file":
            default = "OUTSIDE-SECRET:" if outside else "inside:"
            content = entry.get("content", default + entry["path"])
            _write_new_file(fd, name, content.encode())
        elif kind == "dir":
            os.mkdir(name, 0o755, dir_fd=fd)
        elif kind == "symlink":
            os.symlink(self.substitute(entry["target"]), name, dir_fd=fd)
        elif kind == "hardlink":
            self._hardlink(entry["target"], fd, name)
        elif kind == "fifo":
            os.mkfifo(name, 0o644, dir_fd=fd)
        elif kind == "socket":
            _bind_socket(fd, name, entry["path"])
        elif kind == "chardev":
            device = os.makedev(int(entry["major"]), int(entry["minor"]))
            os.mknod(name, stat.S_IFCHR | 0o644, device, dir_fd=fd)
        else:
            raise ValueError(f"unknown tree entry type {kind!r}")

    def _hardlink(self, target: str, dst_fd: int, dst_name: str) -> None:
        # linkat(2) without AT_SYMLINK_FOLLOW: a link to a symlink is a symlink.
        for marker, outside in (("{ROOT}/", False), ("{OUTSIDE}/", True)):
            if target.startswith(marker):
                rel = target[len(marker) :]
                with self._parent(outside, rel, create=False) as (src_fd, src_name):
                    os.link(
                        src_name,
                        dst_name,
                        src_dir_fd=src_fd,
                        dst_dir_fd=dst_fd,
                        follow_symlinks=False,
                    )
                return
        os.link(target, dst_name, dst_dir_fd=dst_fd, follow_symlinks=False)

    def _mount(
        self,
        entry: Mapping[str, Any],
        fd: int,
        name: str,
        outside: bool,
        allow_mounts: bool,
    ) -> None:
        if not allow_mounts or not in_private_mount_namespace():
            raise RuntimeError("mount entries are built only inside `unshare -m`")
        os.mkdir(name, 0o755, dir_fd=fd)
        base = self.outside_path if outside else self.root_path
        target = str(base / entry["path"])
        kind = entry["type"]
        if kind == "bindmount":
            _mount(self.substitute(entry["source"]), target, None, _MS_BIND)
        elif kind == "procmount":
            _mount("proc", target, "proc", 0)
        else:
            _mount("tmpfs", target, "tmpfs", 0)
        self._mounts.append(target)

    # Inspecting -------------------------------------------------------------

    def lstat(self, rel: str, *, outside: bool = False) -> os.stat_result | None:
        """Return the no-follow status of an entry, or None when it is missing."""
        try:
            with self._parent(outside, rel, create=False) as (fd, name):
                return os.stat(name, dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def read_file(self, rel: str, *, outside: bool = False) -> bytes:
        """Return the bytes of a regular file, never following a link."""
        with self._parent(outside, rel, create=False) as (dir_fd, name):
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=dir_fd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise AssertionError(f"{rel!r} is not a regular file")
            return _read_all(fd)
        finally:
            os.close(fd)

    def read_link(self, rel: str, *, outside: bool = False) -> str:
        """Return the text of a symlink."""
        with self._parent(outside, rel, create=False) as (fd, name):
            return os.readlink(name, dir_fd=fd)

    def snapshot(self, *, outside: bool = True) -> dict[str, tuple[object, ...]]:
        """Return a no-follow picture of `T/outside` (or `T/root`).

        Each entry maps its relative path to (type, permission bits, size, bytes or
        link text). Link counts and timestamps are left out, as Part A says.
        """
        base = self.outside_fd if outside else self.root_fd
        fd = os.open(".", _READ_DIR_FLAGS, dir_fd=base)
        try:
            picture: dict[str, tuple[object, ...]] = {}
            _snapshot_into(fd, "", picture)
            return picture
        finally:
            os.close(fd)

    def names_in_t(self) -> set[str]:
        """Return the names directly inside `T`."""
        return set(os.listdir(self.t_path))

    def watch_outside(self, *extra: tuple[int, str]) -> OutsideWatch:
        """Start an inotify watch on `T/outside` and on extra (dir fd, name) pairs."""
        return OutsideWatch([(self.t_fd, "outside"), *extra])

    # Running ----------------------------------------------------------------

    def run_op(
        self, operation: Callable[[], object], timeout: float = OP_TIMEOUT_SECONDS
    ) -> Outcome:
        """Run one operation in a worker thread and classify how it ended.

        A PathError becomes `not_found` or `refused`; any other exception fails
        the test, and so does an operation still running after `timeout`.
        """
        result: dict[str, Any] = {}

        def work() -> None:
            started = time.monotonic()
            try:
                result["value"] = operation()
            except BaseException as exc:  # handed back to the test thread
                result["error"] = exc
            result["seconds"] = time.monotonic() - started

        worker = threading.Thread(target=work, name="confined-op", daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            self._unblock_fifos(worker)
            pytest.fail(f"operation still running after {timeout:.0f} s (it blocked)")
        outcome = _outcome_from(result)
        self.outcomes.append(outcome)
        return outcome

    @contextlib.contextmanager
    def guard_outside(self, *extra: tuple[int, str]) -> Iterator[OutsideWatch]:
        """Watch `T/outside` around a block, then assert the Part A invariants.

        Every outcome that `run_op` produced meanwhile is searched for outside
        content as well.
        """
        before = self.snapshot()
        first = len(self.outcomes)
        with self.watch_outside(*extra) as watch:
            yield watch
        self.assert_contained(before, watch, self.outcomes[first:])

    def _unblock_fifos(self, worker: threading.Thread) -> None:
        # Opening each FIFO read-write releases a thread stuck opening it, so a
        # blocking bug fails one test instead of leaving a thread behind.
        held = []
        for base in (self.root_fd, self.outside_fd):
            held.extend(_open_fifos(base))
        worker.join(1.0)
        for fd in held:
            os.close(fd)

    # Checking ---------------------------------------------------------------

    def assert_contained(
        self,
        before: Mapping[str, tuple[object, ...]],
        watch: OutsideWatch,
        outcomes: Iterable[Outcome] = (),
        t_names: Iterable[str] = ("root", "outside"),
    ) -> None:
        """Assert the global invariants of Part A (the escape detectors)."""
        touched = watch.collect()
        assert not touched, f"outside was read or changed: {touched[:5]}"
        after = self.snapshot()
        assert after == before, f"outside changed: {describe_diff(before, after)}"
        assert self.names_in_t() == set(t_names), f"T now holds {self.names_in_t()}"
        for outcome in outcomes:
            text = outcome.leaked_text()
            leaked = [marker for marker in SECRET_MARKERS if marker in text]
            assert not leaked, f"outside content handed back: {outcome.describe()}"

    def assert_no_host_path(self, outcome: Outcome) -> None:
        """Assert that a refusal message does not show where the root lives."""
        if outcome.error is not None:
            message = str(outcome.error)
            assert str(self.t_path) not in message, f"host path in {message!r}"

    def close(self) -> None:
        """Undo mounts and close the directory descriptors."""
        for target in reversed(self._mounts):
            _libc.umount2(target.encode(), _MNT_DETACH)
        for fd in (self.t_fd, self.root_fd, self.outside_fd):
            os.close(fd)

    @contextlib.contextmanager
    def _parent(
        self, outside: bool, rel: str, *, create: bool
    ) -> Iterator[tuple[int, str]]:
        parts = [part for part in rel.split("/") if part not in ("", ".")]
        base = self.outside_fd if outside else self.root_fd
        fd = os.open(".", _DIR_FLAGS, dir_fd=base)
        try:
            for part in parts[:-1]:
                child = _open_child_dir(fd, part, create)
                os.close(fd)
                fd = child
            yield fd, (parts[-1] if parts else ".")
        finally:
            os.close(fd)


def describe_diff(
    before: Mapping[str, tuple[object, ...]], after: Mapping[str, tuple[object, ...]]
) -> str:
    """Name what appeared, vanished or changed between two snapshots."""
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return f"added {added[:5]} removed {removed[:5]} changed {changed[:5]}"


def kind_of(mode: int) -> str:
    """Return the Entry kind name for an st_mode."""
    return _KIND_BY_FORMAT.get(stat.S_IFMT(mode), "other")


def current_mount_namespace() -> str:
    """Return this process's mount namespace id, as in `/proc/self/ns/mnt`."""
    return os.readlink("/proc/self/ns/mnt")


def in_private_mount_namespace() -> bool:
    """Tell whether this is a child re-run in a mount namespace of its own."""
    parent = os.environ.get(IN_MOUNT_NS_ENV, "")
    return bool(parent) and parent != current_mount_namespace()


@functools.cache
def mount_namespace_unavailable_reason() -> str | None:
    """Return why privileged cases cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "privileged cases need root for a private mount namespace"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "privileged cases need util-linux `unshare`, which is not installed"
    probe = [unshare, "-m", "--propagation", "private", "true"]
    done = subprocess.run(probe, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"`unshare -m` is not permitted here: {done.stderr.strip()}"
    return None


# Shared by the Root behaviour tests ---------------------------------------------

OpenRoot = Callable[..., Root]
POLICIES = ("deny", "within")
# A small tree with outside secrets beside it; tests add entries on top.
BASIC_TREE: list[dict[str, Any]] = [
    {"path": "secret.txt", "type": "file", "outside": True},
    {"path": "odir/secret.txt", "type": "file", "outside": True},
    {"path": "a.txt", "type": "file"},
    {"path": "sub/b.txt", "type": "file"},
    {"path": "sub/deep/c.txt", "type": "file"},
]


def build_basic(tree: CaseTree, *extra: Mapping[str, Any]) -> None:
    """Lay out BASIC_TREE plus extra entries."""
    tree.build([*BASIC_TREE, *extra])


def symlink(path: str, target: str) -> dict[str, Any]:
    """Return a symlink tree entry; placeholders in `target` are substituted."""
    return {"path": path, "type": "symlink", "target": target}


def listed_names(root: Root, rel_path: str = ".") -> set[str]:
    """Return the names that list_dir reports."""
    return {entry.name for entry in root.list_dir(rel_path)}


def call_with_path(root: Root, operation: str, path: str) -> object:
    """Run one named operation on `path`; the other name of a rename is fixed."""
    if operation == "open_read":
        with root.open_read(path) as handle:
            return handle.read()
    if operation == "open_writer":
        with root.open_writer(path) as writer:
            writer.write(b"x")
            return writer.commit()
    if operation == "write_bytes":
        return root.write_bytes(path, b"x")
    if operation == "rename_to":
        return root.rename("a.txt", path)
    if operation == "rename_from":
        return root.rename(path, "moved.txt")
    method: Callable[[str], object] = getattr(root, operation)
    return method(path)


def make_null_device(tree: CaseTree, name: str) -> None:
    """Plant a character device with /dev/null's numbers, or skip unprivileged."""
    try:
        tree.add({"path": name, "type": "chardev", "major": 1, "minor": 3})
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD; run as root to cover device nodes")


def _outcome_from(result: Mapping[str, Any]) -> Outcome:
    seconds = float(result.get("seconds", 0.0))
    error = result.get("error")
    if error is None:
        return Outcome("ok", result.get("value"), None, seconds)
    if isinstance(error, PathError):
        return Outcome(classify(error), None, error, seconds)
    raise AssertionError(
        f"raised {type(error).__name__}: {error}; only PathError may leave the root"
    ) from error


def _open_child_dir(fd: int, part: str, create: bool) -> int:
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise
    os.mkdir(part, 0o755, dir_fd=fd)
    return os.open(part, _DIR_FLAGS, dir_fd=fd)


def _write_new_file(dir_fd: int, name: str, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o644, dir_fd=dir_fd)
    try:
        os.fchmod(fd, 0o644)
        os.write(fd, data)
    finally:
        os.close(fd)


def _bind_socket(dir_fd: int, name: str, rel: str) -> None:
    address = f"/proc/self/fd/{dir_fd}/{name}"
    if len(os.fsencode(address)) > MAX_SOCKET_PATH_BYTES:
        pytest.skip(f"socket entry {rel!r}: {address!r} is over the AF_UNIX limit")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(address)


def _mount(source: str, target: str, fstype: str | None, flags: int) -> None:
    kind = fstype.encode() if fstype else None
    if _libc.mount(source.encode(), target.encode(), kind, flags, None) != 0:
        raise OSError(ctypes.get_errno(), f"mount {source} on {target}")


def _list_names(dir_fd: int) -> list[str]:
    fd = os.open(".", _READ_DIR_FLAGS, dir_fd=dir_fd)
    try:
        return sorted(os.listdir(fd))
    finally:
        os.close(fd)


def _open_fifos(dir_fd: int) -> list[int]:
    held: list[int] = []
    for name in _list_names(dir_fd):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISFIFO(info.st_mode):
            flags = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC
            held.append(os.open(name, flags, dir_fd=dir_fd))
        elif stat.S_ISDIR(info.st_mode):
            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                held.extend(_open_fifos(child))
            finally:
                os.close(child)
    return held


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _snapshot_into(
    dir_fd: int, prefix: str, picture: dict[str, tuple[object, ...]]
) -> None:
    for name in sorted(os.listdir(dir_fd)):
        rel = prefix + name
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        kind = kind_of(info.st_mode)
        perms = stat.S_IMODE(info.st_mode)
        if kind == "file":
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            fd = os.open(name, flags, dir_fd=dir_fd)
            try:
                picture[rel] = (kind, perms, info.st_size, _read_all(fd))
            finally:
                os.close(fd)
        elif kind == "symlink":
            picture[rel] = (kind, perms, info.st_size, os.readlink(name, dir_fd=dir_fd))
        elif kind == "dir":
            picture[rel] = (kind, perms, info.st_size, None)
            child = os.open(name, _READ_DIR_FLAGS, dir_fd=dir_fd)
            try:
                _snapshot_into(child, rel + "/", picture)
            finally:
                os.close(child)
        else:
            picture[rel] = (kind, perms, info.st_size, None)

"""Audit a directory tree for what a file service must not trust.

`audit_tree` walks a tree without following a single link and reports symlinks that
leave it (or would, if moved), absolute and dangling symlinks, hard-linked files,
FIFOs, sockets and devices, world-writable folders, and entries owned by another
user than the service. It never opens a file (so a FIFO cannot hang it), never
follows a link (so a cycle cannot loop it), works from directory descriptors (so a
rename during the walk cannot send it elsewhere) and stops at `MAX_AUDIT_DEPTH`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from strongroom.confine import Root
from strongroom.errors import (
    PathError,
    PathEscapeError,
    PathNotFoundError,
    SymlinkRefusedError,
)

__all__ = [
    "FINDING_KINDS",
    "MAX_AUDIT_DEPTH",
    "AuditReport",
    "Finding",
    "audit_tree",
]

# The same bound the name rules put on user paths: nothing deeper can be served.
MAX_AUDIT_DEPTH = 256

# Every kind of finding, in the order reports list them.
FINDING_KINDS = (
    "escaping_link",
    "absolute_link",
    "parent_step_link",
    "dangling_link",
    "link_loop",
    "hardlink",
    "fifo",
    "socket",
    "device",
    "world_writable_dir",
    "foreign_owner",
    "too_deep",
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing worth an admin's look; `path` is relative to the audited tree."""

    kind: str
    path: str
    detail: str


@dataclass(frozen=True, slots=True)
class AuditReport:
    """All findings of one audit, sorted by kind (as in FINDING_KINDS) and path."""

    findings: tuple[Finding, ...]
    entries: int

    @property
    def clean(self) -> bool:
        """Whether nothing was found."""
        return not self.findings

    def as_json(self) -> dict[str, object]:
        """Return the report as JSON-ready data."""
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.kind] = counts.get(finding.kind, 0) + 1
        return {
            "entries": self.entries,
            "counts": counts,
            "findings": [asdict(f) for f in self.findings],
        }

    def as_table(self) -> str:
        """Return the report as an aligned text table."""
        if self.clean:
            return f"no findings in {self.entries} entries"
        kind_width = max(len(f.kind) for f in self.findings)
        path_width = min(60, max(len(_shown(f.path)) for f in self.findings))
        lines = [f"{'kind':<{kind_width}}  {'path':<{path_width}}  detail"]
        lines += [
            f"{f.kind:<{kind_width}}  {_shown(f.path):<{path_width}}  {f.detail}"
            for f in self.findings
        ]
        lines.append(f"{len(self.findings)} findings in {self.entries} entries")
        return "\n".join(lines)


def audit_tree(
    top: str | os.PathLike[str], *, owner_uid: int | None = None
) -> AuditReport:
    """Audit the tree at `top`; `owner_uid` defaults to this process's user.

    Raises `OSError` (`NotADirectoryError`, `FileNotFoundError`, or ELOOP for a
    symlink) when `top` is not a real directory: the audit never follows links.
    """
    uid = os.geteuid() if owner_uid is None else owner_uid
    top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    findings: list[Finding] = []
    entries = 0
    try:
        with Root(f"/proc/self/fd/{top_fd}", symlinks="within") as root:
            for rel_path, st, link_text in _walk(top_fd, findings):
                entries += 1
                findings.extend(_check(root, rel_path, st, link_text, uid))
    finally:
        os.close(top_fd)
    order = {kind: n for n, kind in enumerate(FINDING_KINDS)}
    findings.sort(key=lambda f: (order[f.kind], f.path))
    return AuditReport(tuple(findings), entries)


def _walk(
    top_fd: int, findings: list[Finding]
) -> Iterator[tuple[str, os.stat_result, str | None]]:
    """Yield (relative path, lstat, link text or None) for every entry.

    An explicit stack of directory descriptors, each child folder opened with
    O_NOFOLLOW | O_DIRECTORY relative to its parent and checked against the
    (dev, ino) that lstat reported, so a link is never entered, even one swapped
    in during the walk. Folders at `MAX_AUDIT_DEPTH` are reported, not entered.
    """
    stack: list[tuple[int, str, int]] = [(os.dup(top_fd), "", 0)]
    try:
        while stack:
            dir_fd, prefix, depth = stack.pop()
            try:
                for name in sorted(os.listdir(dir_fd)):
                    found = _lstat(dir_fd, name)
                    if found is None:
                        continue
                    st, link_text = found
                    rel_path = prefix + name
                    yield rel_path, st, link_text
                    if not stat.S_ISDIR(st.st_mode):
                        continue
                    if depth + 1 >= MAX_AUDIT_DEPTH:
                        detail = f"not entered: deeper than {MAX_AUDIT_DEPTH} levels"
                        findings.append(Finding("too_deep", rel_path, detail))
                        continue
                    child = _open_child(dir_fd, name, st)
                    if child is not None:
                        stack.append((child, rel_path + "/", depth + 1))
            finally:
                os.close(dir_fd)
    finally:
        for dir_fd, _, _ in stack:
            os.close(dir_fd)


def _lstat(dir_fd: int, name: str) -> tuple[os.stat_result, str | None] | None:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        link_text = (
            os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
        )
    except (FileNotFoundError, NotADirectoryError, OSError):
        return None  # Gone (or changed) since the listing.
    return st, link_text


def _open_child(dir_fd: int, name: str, st: os.stat_result) -> int | None:
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None  # Swapped for a link or removed: never entered.
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        return None
    return fd


def _check(
    root: Root, rel_path: str, st: os.stat_result, link_text: str | None, uid: int
) -> list[Finding]:
    mode = st.st_mode
    found: list[Finding] = []
    if link_text is not None:
        found += _check_link(root, rel_path, link_text)
    elif stat.S_ISREG(mode) and st.st_nlink > 1:
        found.append(Finding("hardlink", rel_path, f"{st.st_nlink} links"))
    elif stat.S_ISFIFO(mode):
        found.append(Finding("fifo", rel_path, "a named pipe"))
    elif stat.S_ISSOCK(mode):
        found.append(Finding("socket", rel_path, "a unix socket"))
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "character" if stat.S_ISCHR(mode) else "block"
        detail = f"{kind} device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        found.append(Finding("device", rel_path, detail))
    elif stat.S_ISDIR(mode) and mode & stat.S_IWOTH:
        detail = f"mode {stat.S_IMODE(mode):04o}; anyone may add or swap entries"
        found.append(Finding("world_writable_dir", rel_path, detail))
    if st.st_uid != uid:
        found.append(Finding("foreign_owner", rel_path, f"owned by uid {st.st_uid}"))
    return found


def _check_link(root: Root, rel_path: str, text: str) -> list[Finding]:
    shown = f"-> {_shown(text)}"
    if text.startswith("/"):
        return [Finding("absolute_link", rel_path, shown)]
    if _climbs_out(rel_path, text):
        return [Finding("escaping_link", rel_path, shown)]
    found = []
    if ".." in text.split("/"):
        detail = f"{shown}; leaves the tree if moved closer to the top"
        found.append(Finding("parent_step_link", rel_path, detail))
    # Resolve it the way the service would under `within`: beneath the tree.
    try:
        root.stat(rel_path)
    except PathNotFoundError:
        found.append(Finding("dangling_link", rel_path, shown))
    except PathEscapeError:
        found.append(Finding("escaping_link", rel_path, f"{shown} (through a link)"))
    except SymlinkRefusedError:
        found.append(Finding("link_loop", rel_path, f"{shown}; links loop"))
    except PathError:
        pass  # Resolves to something the other checks report (a FIFO, say).
    return found


def _climbs_out(rel_path: str, text: str) -> bool:
    # Where the link's text leads from its own folder, by text alone.
    depth = rel_path.count("/")
    for part in text.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _shown(path: str) -> str:
    return path.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")

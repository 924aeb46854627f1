r"""Audit a directory tree for what a file service must not trust.

`audit_tree` walks a tree without following a single link and reports symlinks that
leave it (or would, if moved), absolute, dangling and looping symlinks, hard-linked
files, FIFOs, sockets and devices, world-writable folders, entries owned by another
user than the service, names the service refuses to serve, and whatever it could
not read. It never opens a file (so a FIFO cannot hang it), never follows a link
inside the tree (so a cycle cannot loop it), works from directory descriptors (so a
rename during the walk cannot send it elsewhere) and stops at `MAX_AUDIT_DEPTH`.

Every entry is checked whatever its name: names are handled as the `os` module
gives them, with bytes that are not valid UTF-8 as lone surrogates (PEP 383), so
`os.fsencode` returns the exact bytes on disk. An entry is never skipped because
of its name or because it could not be read: either is itself a finding.

Names are shown (`shown`) in an unambiguous, reversible form: `\\` is a
backslash, `\xNN` an ASCII control character or a byte that is not valid UTF-8,
`\uNNNN` / `\UNNNNNNNN` any other character that is not printable (C1 controls,
bidi and other format controls, line separators...); everything else is itself.
"""

from __future__ import annotations

import base64
import errno
import os
import stat
from dataclasses import dataclass

from strongroom.confine import STAGING_PREFIX, parse_user_path

# The resolver itself, beneath the name rules: `Root` refuses a name such as
# b"loop\xff" before resolving anything, but the audit must resolve every link it
# finds, whatever its name. The walk resolver takes any name and follows links
# exactly as a space with `symlinks = "within"` does.
from strongroom.confine._resolve import open_walk, root_mount_of
from strongroom.errors import PathError

__all__ = [
    "FINDING_KINDS",
    "MAX_AUDIT_DEPTH",
    "AuditReport",
    "Finding",
    "audit_tree",
    "shown",
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
    "unservable_name",
    "unreadable",
    "too_deep",
)

# What resolving a link beneath the tree can answer, as (kind, detail suffix);
# any other error makes the link `unreadable`.
_LINK_OUTCOMES = {
    errno.ENOENT: ("dangling_link", ""),
    errno.ENOTDIR: ("dangling_link", "; a part of it is not a folder"),
    errno.EXDEV: ("escaping_link", " (through a link, or across a mount point)"),
    errno.ELOOP: ("link_loop", "; links loop, or chain too long to follow"),
}


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing worth an admin's look.

    `path` (relative to the audited tree) and a link's `target` text are in the
    `os` module's form (see the module docstring); `detail` is printable text.
    """

    kind: str
    path: str
    detail: str
    target: str | None = None

    @property
    def shown_path(self) -> str:
        """Return `path` in the escaped form that is safe to print."""
        return shown(self.path)

    def as_json(self) -> dict[str, str]:
        """Return the finding as JSON-ready data that keeps the names exact."""
        data = {"kind": self.kind, **_json_name("path", self.path)}
        if self.target is not None:
            data.update(_json_name("target", self.target))
        data["detail"] = self.detail
        return data


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
            "findings": [f.as_json() for f in self.findings],
        }

    def as_table(self) -> str:
        """Return the report as an aligned text table, names escaped."""
        if self.clean:
            return f"no findings in {self.entries} entries"
        kind_width = max(len(f.kind) for f in self.findings)
        path_width = min(60, max(len(f.shown_path) for f in self.findings))
        lines = [f"{'kind':<{kind_width}}  {'path':<{path_width}}  detail"]
        lines += [
            f"{f.kind:<{kind_width}}  {f.shown_path:<{path_width}}  {f.detail}"
            for f in self.findings
        ]
        lines.append(f"{len(self.findings)} findings in {self.entries} entries")
        return "\n".join(lines)


def audit_tree(
    top: str | os.PathLike[str], *, owner_uid: int | None = None
) -> AuditReport:
    """Audit the tree at `top`; `owner_uid` defaults to this process's user.

    `top` is opened the way a space opens its configured path: links on the way
    to it, and `top` itself, are followed, so a space whose path is a symlink is
    audited in the folder it serves. Nothing inside the tree is followed.
    Raises `OSError` when `top` is missing, not a directory or cannot be listed.
    """
    uid = os.geteuid() if owner_uid is None else owner_uid
    top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        auditor = _Auditor(top_fd, uid)
        auditor.audit_folder(top_fd, "", 0)
    finally:
        os.close(top_fd)
    order = {kind: n for n, kind in enumerate(FINDING_KINDS)}
    findings = sorted(auditor.findings, key=lambda f: (order[f.kind], f.path))
    return AuditReport(tuple(findings), auditor.entries)


class _Auditor:
    """The state of one audit: the tree, the expected owner, what was found."""

    def __init__(self, top_fd: int, uid: int) -> None:
        self.top_fd = top_fd
        self.mount = root_mount_of(top_fd)
        self.uid = uid
        self.findings: list[Finding] = []
        self.entries = 0

    def add(self, kind: str, path: str, detail: str, target: str | None = None) -> None:
        """Record one finding."""
        self.findings.append(Finding(kind, path, detail, target))

    def audit_folder(self, dir_fd: int, rel_dir: str, depth: int) -> None:
        """Check every entry of one folder, then walk into its subfolders.

        Its subfolders are entered one at a time, after the listing, so the walk
        holds at most one descriptor per level, however wide the tree is.
        """
        subfolders = []
        for name in self._names(dir_fd, rel_dir):
            rel_path = f"{rel_dir}/{name}" if rel_dir else name
            st = self._check_entry(dir_fd, name, rel_path)
            if st is not None and stat.S_ISDIR(st.st_mode):
                subfolders.append((name, rel_path, st))
        for name, rel_path, st in subfolders:
            if depth + 1 >= MAX_AUDIT_DEPTH:
                detail = f"not entered: deeper than {MAX_AUDIT_DEPTH} levels"
                self.add("too_deep", rel_path, detail)
                continue
            child = self._open_folder(dir_fd, name, rel_path, st)
            if child is not None:
                try:
                    self.audit_folder(child, rel_path, depth + 1)
                finally:
                    os.close(child)

    def _names(self, dir_fd: int, rel_dir: str) -> list[str]:
        """List a folder; one that cannot be listed is a finding, the top an error."""
        try:
            return sorted(os.listdir(dir_fd))
        except OSError as exc:
            if not rel_dir:
                raise  # The tree itself cannot be read: there is no audit.
            self.add("unreadable", rel_dir, _failed("not listed", exc))
            return []

    def _check_entry(
        self, dir_fd: int, name: str, rel_path: str
    ) -> os.stat_result | None:
        """Check one entry (never following it); return its lstat if it has one."""
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None  # Removed since the listing: nothing is left to check.
        except OSError as exc:
            self.entries += 1
            self.add("unreadable", rel_path, _failed("not checked", exc))
            return None
        self.entries += 1
        self._check_name(name, rel_path)
        if stat.S_ISLNK(st.st_mode):
            self._check_link(dir_fd, name, rel_path)
        else:
            self.findings += _check_object(rel_path, st)
        if st.st_uid != self.uid:
            self.add("foreign_owner", rel_path, f"owned by uid {st.st_uid}")
        return st

    def _check_name(self, name: str, rel_path: str) -> None:
        """Report a name the service's path rules refuse: no client can reach it.

        Staging names are the service's own and hidden on purpose, not findings.
        """
        if name.startswith(STAGING_PREFIX):
            return
        try:
            parse_user_path("audit", name)
        except PathError as exc:
            detail = f"the service refuses the name: {exc.reason}"
            self.add("unservable_name", rel_path, detail)

    def _check_link(self, dir_fd: int, name: str, rel_path: str) -> None:
        """Report where a link leads: by its text first, then by resolving it."""
        try:
            text = os.readlink(name, dir_fd=dir_fd)
        except OSError as exc:
            self.add("unreadable", rel_path, _failed("link not read", exc))
            return
        arrow = f"-> {shown(text)}"
        if text.startswith("/"):
            self.add("absolute_link", rel_path, arrow, text)
            return
        if _climbs_out(rel_path, text):
            self.add("escaping_link", rel_path, arrow, text)
            return
        if ".." in text.split("/"):
            detail = f"{arrow}; leaves the tree if moved closer to the top"
            self.add("parent_step_link", rel_path, detail, text)
        self._resolve_link(rel_path, text, arrow)

    def _resolve_link(self, rel_path: str, text: str, arrow: str) -> None:
        """Resolve the link beneath the tree, as a `within` space would follow it."""
        try:
            fd = open_walk(
                self.top_fd, tuple(rel_path.split("/")), os.O_PATH,
                follow_final=True, allow_symlinks=True, root_mount=self.mount,
            )
        except OSError as exc:
            kind, suffix = _LINK_OUTCOMES.get(
                exc.errno or 0, ("unreadable", f"; {_failed('not resolved', exc)}")
            )
            self.add(kind, rel_path, arrow + suffix, text)
        else:
            os.close(fd)  # It resolves; what it leads to is checked on its own.

    def _open_folder(
        self, dir_fd: int, name: str, rel_path: str, st: os.stat_result
    ) -> int | None:
        """Open a subfolder to walk into, or report why it is not entered.

        O_NOFOLLOW | O_DIRECTORY, then a check against the (dev, ino) that lstat
        reported: a folder swapped for a link (or anything else) during the walk
        is never entered.
        """
        flags = (os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_CLOEXEC)
        try:
            fd = os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            self.add("unreadable", rel_path, _failed("not entered", exc))
            return None
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            self.add("unreadable", rel_path, "not entered: replaced during the audit")
            return None
        return fd


def _check_object(rel_path: str, st: os.stat_result) -> list[Finding]:
    """Report what is wrong with a file, folder or special file by its lstat."""
    mode = st.st_mode
    if stat.S_ISREG(mode) and st.st_nlink > 1:
        return [Finding("hardlink", rel_path, f"{st.st_nlink} links")]
    if stat.S_ISFIFO(mode):
        return [Finding("fifo", rel_path, "a named pipe")]
    if stat.S_ISSOCK(mode):
        return [Finding("socket", rel_path, "a unix socket")]
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "character" if stat.S_ISCHR(mode) else "block"
        detail = f"{kind} device {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        return [Finding("device", rel_path, detail)]
    if stat.S_ISDIR(mode) and mode & stat.S_IWOTH:
        detail = f"mode {stat.S_IMODE(mode):04o}; anyone may add or swap entries"
        return [Finding("world_writable_dir", rel_path, detail)]
    return []


def _climbs_out(rel_path: str, text: str) -> bool:
    """Tell whether a link's text leads above the tree from its folder, by text."""
    depth = rel_path.count("/")
    for part in text.split("/"):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def _failed(what: str, exc: OSError) -> str:
    """Say what was not done and the system's reason, never the host path."""
    return f"{what}: {exc.strerror or exc}"


def shown(name: str) -> str:
    """Return `name` escaped as the module docstring says: printable, reversible.

    A raw control character would reach the terminal that prints a table (ESC
    sequences can retitle or rewrite it) and a line break would split a row.
    """
    text = os.fsencode(name).decode("utf-8", "surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(_shown_char(char) for char in text)


def _shown_char(char: str) -> str:
    """Escape one character of `shown`; surrogates stand for undecodable bytes."""
    if char == "\\":
        return "\\\\"
    if char.isprintable():
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # A byte that is not valid UTF-8.
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _json_name(key: str, name: str) -> dict[str, str]:
    """Return `{key: name}`, or for a name that is not valid UTF-8 its escaped form
    under `key` and the exact bytes, base64-encoded, under `key_bytes`.

    JSON strings are Unicode: a lone surrogate for an undecodable byte is not
    valid JSON text, and readers such as jq replace it with U+FFFD.
    """
    raw = os.fsencode(name)
    try:
        return {key: raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {key: shown(name), f"{key}_bytes": base64.b64encode(raw).decode()}

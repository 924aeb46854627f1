"""Name rules for user-supplied root-relative paths, applied before any syscall.

The rules only look at the string; they never decide containment on their own. Their
job is to turn a user path into components that the resolvers can hand to the kernel
one directory descriptor at a time, and to refuse shapes that have no safe meaning.
"""

from __future__ import annotations

import functools
import re
import secrets
from dataclasses import dataclass
from typing import Literal

from strongroom.errors import InvalidPathError, PathEscapeError

__all__ = [
    "MAX_NAME_BYTES",
    "MAX_PATH_BYTES",
    "MAX_PATH_DEPTH",
    "STAGING_IMPORT_PREFIX",
    "STAGING_PREFIX",
    "StagingKind",
    "UserPath",
    "new_staging_name",
    "parse_user_path",
    "staging_kind",
]

# Linux's NAME_MAX: no file system we support stores a longer component.
MAX_NAME_BYTES = 255
# Linux's PATH_MAX less the terminating NUL: the longest path a syscall accepts.
MAX_PATH_BYTES = 4095

# No file system limits depth below PATH_MAX, but no real tree nests this deep, and
# every level costs a syscall per request in the walk and a folder per upload
# that creates missing parents: deeper paths are refused rather than served.
MAX_PATH_DEPTH = 256

# Temporary files of in-flight writes start with this prefix. Listings hide them and
# the name rules refuse them, so a user can neither see nor race a staging file.
STAGING_PREFIX = ".~sr-"
# An archive import's staging folder, at the top of a root (`Root.make_staging_dir`);
# a writer's temporary file has the bare prefix.
STAGING_IMPORT_PREFIX = f"{STAGING_PREFIX}import-"
StagingKind = Literal["file", "folder"]
# Exactly the names `new_staging_name` makes. Only entries with such a name (and of
# the matching kind) are ever treated as the service's own: a file someone else put
# in a space under the reserved prefix is hidden and unreachable, but never removed.
_STAGING_TOKEN_BYTES = 12
_STAGING_NAMES: dict[StagingKind, re.Pattern[str]] = {
    "file": re.compile(
        rf"{re.escape(STAGING_PREFIX)}[0-9a-f]{{{2 * _STAGING_TOKEN_BYTES}}}"),
    "folder": re.compile(
        rf"{re.escape(STAGING_IMPORT_PREFIX)}[0-9a-f]{{{2 * _STAGING_TOKEN_BYTES}}}"),
}

# C0 controls, DEL and C1 controls: they break logs and headers and never belong in a
# file name that people type. NUL is among them.
_CONTROL = frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))


def new_staging_name(kind: StagingKind) -> str:
    """Return a fresh, unguessable name for a staging file or folder."""
    prefix = STAGING_IMPORT_PREFIX if kind == "folder" else STAGING_PREFIX
    return f"{prefix}{secrets.token_hex(_STAGING_TOKEN_BYTES)}"


def staging_kind(name: str) -> StagingKind | None:
    """Tell which kind of staging entry `name` is, if `new_staging_name` made it."""
    for kind, pattern in _STAGING_NAMES.items():
        if pattern.fullmatch(name):
            return kind
    return None


@dataclass(frozen=True, slots=True)
class UserPath:
    """A user path split into components, checked against the name rules.

    `parts` holds every component in order, `..` included: the resolvers apply `..`
    physically beneath the root, never by string. `must_be_dir` records a trailing `/`
    or `/.`, which only ever adds a requirement and never turns a no-follow open into a
    follow. An empty `parts` means the root itself.
    """

    text: str
    parts: tuple[str, ...]
    must_be_dir: bool

    @property
    def final(self) -> str:
        """Return the last component (the root is never a final component)."""
        return self.parts[-1]

    @property
    def parent_parts(self) -> tuple[str, ...]:
        """Return the components of the parent directory."""
        return self.parts[:-1]


def parse_user_path(op: str, rel_path: str) -> UserPath:
    """Check `rel_path` against the name rules and split it into components.

    Raises `InvalidPathError` for a path that is not a string, empty, absolute, not
    valid UTF-8, holds a control character, or is too long in a component or in
    total; raises `PathEscapeError` when a `..` would climb above the root at any
    point, whatever exists on disk (so no existence oracle). `.` components and
    repeated slashes are dropped. Backslashes are ordinary characters.
    """
    if not isinstance(rel_path, str):
        raise InvalidPathError(op, repr(rel_path), "the path must be text")
    return _parse_cached(op, rel_path)


@functools.lru_cache(maxsize=4096)
def _parse_cached(op: str, rel_path: str) -> UserPath:
    # The cache only holds successful parses; a refusal raises and is not stored.
    _check_text(op, rel_path)
    raw_parts = rel_path.split("/")
    must_be_dir = len(raw_parts) > 1 and raw_parts[-1] in ("", ".")
    parts = tuple(p for p in raw_parts if p not in ("", "."))
    _check_parts(op, rel_path, parts)
    return UserPath(rel_path, parts, must_be_dir)


def _check_text(op: str, rel_path: str) -> None:
    if rel_path == "":
        raise InvalidPathError(op, rel_path, "the path is empty; name a file or folder")
    try:
        encoded = rel_path.encode("utf-8")
    except UnicodeEncodeError:
        reason = "the path is not valid UTF-8"
        raise InvalidPathError(op, _printable(rel_path), reason) from None
    if not _CONTROL.isdisjoint(rel_path):
        raise InvalidPathError(
            op, _printable(rel_path), "control characters (such as NUL or a line "
            "break) are not accepted in names"
        )
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPathError(
            op, rel_path[:64] + "...", f"the path is {len(encoded)} bytes; "
            f"at most {MAX_PATH_BYTES} are accepted"
        )
    if rel_path.startswith("/"):
        raise InvalidPathError(
            op, rel_path, "absolute paths are not accepted; send a path relative "
            "to the space"
        )


def _check_parts(op: str, rel_path: str, parts: tuple[str, ...]) -> None:
    if len(parts) > MAX_PATH_DEPTH:
        reason = (
            f"the path has {len(parts)} parts; at most {MAX_PATH_DEPTH} are allowed"
        )
        raise InvalidPathError(op, rel_path[:64] + "...", reason)
    depth = 0
    for part in parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            reason = f"a name is longer than {MAX_NAME_BYTES} bytes"
            raise InvalidPathError(op, rel_path[:64] + "...", reason)
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            raise PathEscapeError(op, rel_path, "'..' would climb above the space")
        if part.startswith(STAGING_PREFIX):
            reason = f"names starting with {STAGING_PREFIX!r} are reserved"
            raise InvalidPathError(op, rel_path, reason)


def _printable(text: str) -> str:
    # Show the offending value without letting control characters or lone
    # surrogates into messages, logs or headers.
    return text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")

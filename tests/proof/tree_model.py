"""A model of a directory tree that says what `Root` must answer, in pure Python.

`TreeModel` holds folders, files, symlinks and FIFOs as plain objects (a file
object under two names is a hard link) and answers each operation of
`strongroom.confine.Root` the way its docstrings and the name rules promise: a
value, or `Expect(cls)` for a refusal of exactly that `PathError` class. It never
looks at the disk; the `fuzz_model` family (test_model_root.py) runs it beside a
real root and compares.

Where the kernel decides (the order of rename(2)'s checks, `..` and symlink
resolution beneath the root), the model follows Linux's documented behaviour for
openat2(2) with RESOLVE_BENEATH and rename(2).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field

from strongroom.confine import MAX_NAME_BYTES, MAX_PATH_BYTES, STAGING_PREFIX
from strongroom.errors import (
    DirectoryNotEmptyError,
    HardlinkRefusedError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    NotRegularFileError,
    PathError,
    PathEscapeError,
    PathExistsError,
    PathNotFoundError,
    SymlinkRefusedError,
)

__all__ = [
    "MAX_PATH_DEPTH",
    "Expect",
    "MDir",
    "MFifo",
    "MFile",
    "MLink",
    "Node",
    "TreeModel",
    "parse",
]

# `Root`'s name rules: deeper paths are refused (strongroom.confine._names).
MAX_PATH_DEPTH = 256
# Linux's MAXSYMLINKS, which both resolvers follow.
MAX_SYMLINK_HOPS = 40


class Expect(Exception):
    """The model's answer: the root must refuse with exactly this class.

    Raised by the model, never by the product: an answer, not an error of ours.
    """

    def __init__(self, error: type[PathError]) -> None:
        super().__init__(error.__name__)
        self.error = error


class MFile:
    """A regular file; the same object under two names is a hard link."""

    def __init__(self, data: bytes) -> None:
        self.data = data


class MFifo:
    """A FIFO planted by the attacker."""


@dataclass(frozen=True)
class MLink:
    """A symlink and its text, exactly as planted."""

    target: str


@dataclass(eq=False)
class MDir:
    """A directory: its entries by name."""

    children: dict[str, Node] = field(default_factory=dict)


Node = MFile | MFifo | MLink | MDir
Made = list[tuple[MDir, str, MDir]]


class TreeModel:
    """What `Root` must answer, derived from its docstrings and the name rules.

    Paths resolve physically from the top, as the root promises: `..` returns to
    the folder the walk came from and is an escape at the top; under `within` a
    symlink's text is walked from the folder holding it (an absolute one is an
    escape); under `deny` any symlink met is refused. Operations on a name never
    follow its last component.
    """

    def __init__(self, policy: str, outside_files: list[MFile]) -> None:
        self.top = MDir()
        self.policy = policy
        # Files with one link outside the root, which hard links inside may share.
        self.outside_files = outside_files

    # Reading

    def stat(self, text: str) -> tuple[str, str, int | None]:
        parts, must_be_dir = parse(text, root_ok=True)
        node = self._resolve(parts, want_dir=must_be_dir)
        self._refuse_linked(node)
        size = len(node.data) if isinstance(node, MFile) else None
        return (parts[-1] if parts else "", _kind(node), size)

    def list_dir(self, text: str) -> dict[str, tuple[str, int | None]]:
        parts, _ = parse(text, root_ok=True)
        node = self._resolve(parts, want_dir=True)
        assert isinstance(node, MDir)
        return {name: _listed(child) for name, child in node.children.items()}

    def read_bytes(self, text: str) -> bytes:
        parts, must_be_dir = parse(text)
        node = self._resolve(parts, want_dir=must_be_dir)
        if isinstance(node, MDir):
            raise Expect(IsADirectoryPathError)
        if not isinstance(node, MFile):
            raise Expect(NotRegularFileError)
        self._refuse_linked(node)
        return node.data

    # Writing

    def write_bytes(
        self, text: str, data: bytes, *, exclusive: bool, make_parents: bool
    ) -> tuple[str, str, int]:
        parts, must_be_dir = parse(text)
        if must_be_dir:
            # The path's form is wrong whatever is there (a 400 over HTTP).
            raise Expect(InvalidPathError)
        _refuse_final_dotdot(parts)
        parent, made = self._parent(parts, make=make_parents)
        try:
            self._check_write_target(parent.children.get(parts[-1]), exclusive)
        except Expect:
            _undo(made)
            raise
        parent.children[parts[-1]] = MFile(data)
        return (parts[-1], "file", len(data))

    def mkdir(self, text: str, *, parents: bool, exist_ok: bool) -> None:
        parts, _ = parse(text)
        _refuse_final_dotdot(parts)
        parent, made = self._parent(parts, make=parents)
        existing = parent.children.get(parts[-1])
        if existing is None:
            parent.children[parts[-1]] = MDir()
        elif not (exist_ok and isinstance(existing, MDir)):
            _undo(made)
            raise Expect(PathExistsError)

    def remove(self, text: str, *, tree: bool) -> None:
        parts, must_be_dir = parse(text)
        _refuse_final_dotdot(parts)
        parent = self._parent(parts)[0]
        node = parent.children.get(parts[-1])
        if node is None:
            raise Expect(PathNotFoundError)
        if isinstance(node, MDir):
            if node.children and not tree:
                raise Expect(DirectoryNotEmptyError)
        elif must_be_dir:
            # A trailing '/' only ever adds a requirement: the name is a folder.
            raise Expect(NotADirectoryPathError)
        del parent.children[parts[-1]]

    def rename(self, src: str, dst: str, *, overwrite: bool) -> None:
        src_parts, src_dir_only = parse(src)
        dst_parts, dst_dir_only = parse(dst)
        _refuse_final_dotdot(src_parts)
        _refuse_final_dotdot(dst_parts)
        src_parent = self._parent(src_parts)[0]
        dst_parent = self._parent(dst_parts)[0]
        moving = src_parent.children.get(src_parts[-1])
        if moving is None:
            raise Expect(PathNotFoundError)
        if (src_dir_only or dst_dir_only) and not isinstance(moving, MDir):
            raise Expect(NotADirectoryPathError)
        replaced = dst_parent.children.get(dst_parts[-1])
        _check_rename(moving, src_parent, replaced, dst_parent, overwrite)
        if moving is replaced:
            return  # rename(2) leaves two names of one object alone
        del src_parent.children[src_parts[-1]]
        dst_parent.children[dst_parts[-1]] = moving

    # The attacker

    def plant(self, dir_parts: tuple[str, ...], name: str, node: Node) -> None:
        """Put `node` at `name` in a folder named by its canonical path."""
        self.folder(dir_parts).children[name] = node

    def folder(self, dir_parts: tuple[str, ...]) -> MDir:
        """Return the folder at a canonical path (no links, no `..`)."""
        node = self.top
        for name in dir_parts:
            child = node.children[name]
            assert isinstance(child, MDir)
            node = child
        return node

    def folders(self) -> list[tuple[str, ...]]:
        """Return the canonical path of every folder, the top first."""
        return [rel for rel, node in self._walk() if isinstance(node, MDir)]

    def entries(self) -> list[tuple[str, ...]]:
        """Return the canonical path of every entry but the top, sorted."""
        return sorted(rel for rel, _ in self._walk() if rel)

    def files(self) -> list[tuple[str, ...]]:
        """Return the canonical path of every regular file."""
        return [rel for rel, node in self._walk() if isinstance(node, MFile)]

    def picture(self) -> dict[str, tuple[str, object]]:
        """Return (kind, bytes or link text) by path, like a snapshot of the root."""
        picture: dict[str, tuple[str, object]] = {}
        for rel, node in self._walk():
            if rel:
                content: object = node.data if isinstance(node, MFile) else None
                if isinstance(node, MLink):
                    content = node.target
                picture["/".join(rel)] = (_kind(node), content)
        return picture

    # Resolution

    def _resolve(self, parts: tuple[str, ...], *, want_dir: bool) -> Node:
        # The folders entered so far, the top first: `..` pops one.
        entered = [self.top]
        pending = list(reversed(parts))
        hops = 0
        while pending:
            name = pending.pop()
            here = entered[-1]
            if name == "..":
                if len(entered) == 1:
                    raise Expect(PathEscapeError)
                entered.pop()
                continue
            node = here.children.get(name)
            if node is None:
                raise Expect(PathNotFoundError)
            if isinstance(node, MLink):
                pending.extend(reversed(self._follow(node, hops := hops + 1)))
                continue
            if not pending:
                if want_dir and not isinstance(node, MDir):
                    raise Expect(NotADirectoryPathError)
                return node
            if not isinstance(node, MDir):
                raise Expect(NotADirectoryPathError)
            entered.append(node)
        return entered[-1]

    def _follow(self, link: MLink, hops: int) -> list[str]:
        if self.policy == "deny" or hops > MAX_SYMLINK_HOPS:
            raise Expect(SymlinkRefusedError)
        if link.target.startswith("/"):
            raise Expect(PathEscapeError)
        return [part for part in link.target.split("/") if part not in ("", ".")]

    def _parent(
        self, parts: tuple[str, ...], *, make: bool = False
    ) -> tuple[MDir, Made]:
        """Return the folder that holds `parts[-1]`, making missing ones if asked."""
        try:
            return self._parent_dir(parts), []
        except Expect as refusal:
            if not make or refusal.error is not PathNotFoundError or ".." in parts:
                raise
        made: Made = []
        try:
            for depth in range(1, len(parts)):
                holder = self._parent_dir(parts[:depth])
                if parts[depth - 1] not in holder.children:
                    new = holder.children[parts[depth - 1]] = MDir()
                    made.append((holder, parts[depth - 1], new))
            return self._parent_dir(parts), made
        except Expect:
            _undo(made)
            raise

    def _parent_dir(self, parts: tuple[str, ...]) -> MDir:
        node = self._resolve(parts[:-1], want_dir=True)
        assert isinstance(node, MDir)
        return node

    def _check_write_target(self, node: Node | None, exclusive: bool) -> None:
        if node is None:
            return
        if exclusive:
            raise Expect(PathExistsError)
        if isinstance(node, MLink):
            raise Expect(SymlinkRefusedError)
        if isinstance(node, MDir):
            raise Expect(IsADirectoryPathError)
        if isinstance(node, MFifo):
            raise Expect(NotRegularFileError)
        self._refuse_linked(node)

    def _refuse_linked(self, node: Node) -> None:
        if isinstance(node, MFile) and self._links(node) > 1:
            raise Expect(HardlinkRefusedError)

    def _links(self, file: MFile) -> int:
        outside = any(file is other for other in self.outside_files)
        return int(outside) + sum(1 for _, node in self._walk() if node is file)

    def _walk(self) -> Iterator[tuple[tuple[str, ...], Node]]:
        stack: list[tuple[tuple[str, ...], Node]] = [((), self.top)]
        while stack:
            rel, node = stack.pop()
            yield rel, node
            if isinstance(node, MDir):
                children = node.children.items()
                stack.extend(((*rel, name), child) for name, child in children)


def parse(text: str, *, root_ok: bool = False) -> tuple[tuple[str, ...], bool]:
    """Apply the name rules: return (components, trailing '/') or raise `Expect`."""
    if root_ok and text in ("", "."):
        return (), True
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        raise Expect(InvalidPathError) from None
    bad_char = any(unicodedata.category(char) == "Cc" for char in text)
    if not text or bad_char or len(encoded) > MAX_PATH_BYTES or text.startswith("/"):
        raise Expect(InvalidPathError)
    raw = text.split("/")
    parts = tuple(part for part in raw if part not in ("", "."))
    if len(parts) > MAX_PATH_DEPTH:
        raise Expect(InvalidPathError)
    depth = 0
    for part in parts:
        if len(part.encode("utf-8")) > MAX_NAME_BYTES:
            raise Expect(InvalidPathError)
        depth += -1 if part == ".." else 1
        if depth < 0:
            raise Expect(PathEscapeError)
        if part.startswith(STAGING_PREFIX):
            raise Expect(InvalidPathError)
    if not parts and not root_ok:
        raise Expect(InvalidPathError)
    return parts, len(raw) > 1 and raw[-1] in ("", ".")


def _check_rename(
    moving: Node, src_parent: MDir, replaced: Node | None, dst_parent: MDir,
    overwrite: bool,
) -> None:
    # The order of rename(2)'s own checks: an existing name under NOREPLACE, a
    # folder moved beneath itself, a destination that holds the source, then the
    # kinds of the two objects (unless both names are one object).
    if replaced is not None and not overwrite:
        raise Expect(PathExistsError)
    if src_parent is not dst_parent:
        if isinstance(moving, MDir) and _holds(moving, dst_parent):
            raise Expect(InvalidPathError)
        if isinstance(replaced, MDir) and _holds(replaced, src_parent):
            raise Expect(DirectoryNotEmptyError)
    if replaced is None or replaced is moving:
        return
    if isinstance(moving, MDir) and not isinstance(replaced, MDir):
        raise Expect(NotADirectoryPathError)
    if not isinstance(moving, MDir) and isinstance(replaced, MDir):
        raise Expect(IsADirectoryPathError)
    if isinstance(replaced, MDir) and replaced.children:
        raise Expect(DirectoryNotEmptyError)


def _holds(folder: MDir, inner: MDir) -> bool:
    """Tell whether `inner` is `folder` or lies somewhere beneath it."""
    stack = [folder]
    while stack:
        node = stack.pop()
        if node is inner:
            return True
        stack.extend(c for c in node.children.values() if isinstance(c, MDir))
    return False


def _refuse_final_dotdot(parts: tuple[str, ...]) -> None:
    if parts[-1] == "..":
        raise Expect(InvalidPathError)


def _undo(made: Made) -> None:
    for holder, name, new in reversed(made):
        if holder.children.get(name) is new and not new.children:
            del holder.children[name]


def _kind(node: Node) -> str:
    kinds = {MFile: "file", MDir: "dir", MLink: "symlink", MFifo: "fifo"}
    return kinds[type(node)]


def _listed(node: Node) -> tuple[str, int | None]:
    if isinstance(node, MFile):
        return "file", len(node.data)
    if isinstance(node, MLink):
        return "symlink", len(node.target.encode())
    return _kind(node), None

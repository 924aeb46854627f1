"""The path rules of the confined root, as every operation applies them.

Relative, "/"-separated names; "." and repeated slashes dropped; ".." resolved
physically and refused above the root; NUL and control characters, components over
255 bytes, totals over 4095 bytes and invalid UTF-8 refused; a trailing "/" means
"must be a directory". Unusual but valid names are stored literally.
"""

from __future__ import annotations

import os

import pytest
from confine_harness import (
    POLICIES,
    CaseTree,
    OpenRoot,
    build_basic,
    call_with_path,
    listed_names,
    symlink,
)

from strongroom.errors import (
    InvalidPathError,
    PathError,
    PathEscapeError,
    PathNotFoundError,
)

# (id, path): names that break the rules, refused with InvalidPathError.
INVALID_NAMES = [
    ("nul", "a\x00b"),
    ("nul-after-real-name", "a.txt\x00"),
    ("newline", "a\nb"),
    ("carriage-return", "a\rb"),
    ("tab", "a\tb"),
    ("escape-char", "a\x1bb"),
    ("delete-char", "a\x7fb"),
    ("component-256-bytes", "x" * 256),
    ("component-256-bytes-in-2-byte-chars", "é" * 128),
    ("component-256-bytes-below-a-dir", "sub/" + "x" * 256),
    ("total-4096-bytes", "/".join(["x" * 240] * 17)),
    ("total-4096-bytes-in-2-byte-chars", "/".join(["é" * 120] * 17)),
    ("absolute", "/a.txt"),
    ("absolute-slash-only", "/"),
    ("absolute-double-slash", "//a.txt"),
    ("invalid-utf8", b"bad\xff.txt".decode("utf-8", "surrogateescape")),
    ("lone-surrogate", "a\ud800b"),
]
EVERY_OPERATION = [
    "read_bytes",
    "open_read",
    "stat",
    "list_dir",
    "write_bytes",
    "open_writer",
    "mkdir",
    "remove",
    "remove_tree",
    "rename_from",
    "rename_to",
]
# (id, path): `..` that would climb above the root; refused however it is spelt.
ABOVE_ROOT = [
    ("dotdot-alone", ".."),
    ("dotdot-start", "../a.txt"),
    ("dotdot-after-dot", "./../a.txt"),
    ("dotdot-middle", "sub/../../a.txt"),
    ("dotdot-end", "sub/../.."),
    ("dotdot-deep", "sub/deep/../../../a.txt"),
    ("dotdot-trailing-slash", "sub/../../"),
]
# (id, name): unusual names that are valid and must be stored literally.
LITERAL_NAMES = [
    ("three-dots", "..."),
    ("dotdot-space", ".. "),
    ("dot-space", ". "),
    ("dotdot-prefix", "..a"),
    ("dotdot-suffix", "a.."),
    ("leading-dot", ".hidden"),
    ("backslash", "..\\a.txt"),
    ("percent-encoded-dots", "%2e%2e"),
    ("fullwidth-dots", "\uff0e\uff0e"),
    ("spaces", "my report.txt"),
    ("leading-space", " lead"),
    ("trailing-dot", "trail."),
    ("component-255-bytes", "x" * 255),
    ("component-255-bytes-multibyte", "é" * 127 + "x"),
    ("colon", "c:name"),
    ("leading-dash", "-rf"),
    ("glob-chars", "*?[x]"),
    ("emoji", "\U0001f600.txt"),
]


@pytest.mark.parametrize(
    "path", [p for _, p in INVALID_NAMES], ids=[i for i, _ in INVALID_NAMES]
)
@pytest.mark.parametrize("operation", EVERY_OPERATION)
def test_invalid_name_is_refused_before_any_side_effect(
    tree: CaseTree, open_root: OpenRoot, path: str, operation: str
) -> None:
    build_basic(tree)
    root = open_root()
    before = tree.snapshot(outside=False)

    outcome = tree.run_op(lambda: call_with_path(root, operation, path))

    assert isinstance(outcome.error, InvalidPathError), outcome.describe()
    assert tree.snapshot(outside=False) == before


@pytest.mark.parametrize(
    "path", [p for _, p in ABOVE_ROOT], ids=[i for i, _ in ABOVE_ROOT]
)
@pytest.mark.parametrize("policy", POLICIES)
def test_dotdot_above_the_root_is_refused(
    tree: CaseTree, open_root: OpenRoot, policy: str, path: str
) -> None:
    """Never clamped to the root as URL normalisation would: `../a.txt` exists."""
    build_basic(tree)
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.read_bytes(path))

    assert isinstance(outcome.error, InvalidPathError | PathEscapeError), (
        outcome.describe()
    )


def test_empty_path_is_refused_where_it_does_not_mean_the_root(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(InvalidPathError):
        root.read_bytes("")


@pytest.mark.parametrize("spelling", ["", ".", "./", "sub/..", "sub/deep/../.."])
def test_spellings_of_the_root_list_and_stat_the_root(
    tree: CaseTree, open_root: OpenRoot, spelling: str
) -> None:
    build_basic(tree)
    root = open_root(symlinks="deny")

    names = listed_names(root, spelling)
    entry = root.stat(spelling)

    assert names == {"a.txt", "sub"}
    assert entry.kind == "dir"
    assert entry.ino == os.stat(tree.root_path).st_ino


@pytest.mark.parametrize(
    "path",
    ["./sub/./b.txt", "sub//b.txt", ".//sub///b.txt", "sub/deep/../b.txt"],
)
def test_dot_components_and_repeated_slashes_are_dropped(
    tree: CaseTree, open_root: OpenRoot, path: str
) -> None:
    build_basic(tree)
    root = open_root(symlinks="deny")

    content = root.read_bytes(path)

    assert content == b"inside:sub/b.txt"


@pytest.mark.parametrize(
    "name", [n for _, n in LITERAL_NAMES], ids=[i for i, _ in LITERAL_NAMES]
)
def test_unusual_valid_name_is_stored_literally(
    tree: CaseTree, open_root: OpenRoot, name: str
) -> None:
    build_basic(tree)
    root = open_root(symlinks="deny")

    root.write_bytes(name, b"literal")

    assert tree.read_file(name) == b"literal"
    assert root.read_bytes(name) == b"literal"
    assert name in listed_names(root)


def test_path_of_4095_bytes_passes_the_name_rules(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    """4095 bytes is the kernel's own limit (PATH_MAX less the NUL); not refused."""
    build_basic(tree)
    root = open_root()
    path = "/".join(["x" * 255] * 16)
    assert len(path.encode()) == 4095

    with pytest.raises(PathNotFoundError):
        root.read_bytes(path)


@pytest.mark.parametrize("path", ["a.txt/", "a.txt/.", "a.txt//"])
@pytest.mark.parametrize("policy", POLICIES)
def test_file_named_as_a_directory_is_not_served(
    tree: CaseTree, open_root: OpenRoot, policy: str, path: str
) -> None:
    build_basic(tree)
    root = open_root(symlinks=policy)

    read = tree.run_op(lambda: root.read_bytes(path))
    write = tree.run_op(lambda: root.write_bytes(path, b"x"))

    assert read.kind in ("refused", "not_found"), read.describe()
    assert write.kind in ("refused", "not_found"), write.describe()
    assert tree.read_file("a.txt") == b"inside:a.txt"


def test_refusal_carries_the_operation_and_the_path_as_sent(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(PathError) as caught:
        root.read_bytes("sub/../../outside/secret.txt")

    assert caught.value.rel_path == "sub/../../outside/secret.txt"
    assert isinstance(caught.value.op, str)
    assert caught.value.op
    assert str(tree.t_path) not in str(caught.value)


@pytest.mark.parametrize(
    ("present", "absent"),
    [
        ("odirlink/secret.txt", "odirlink/missing.txt"),
        ("outlink", "danglink"),
        ("../outside/secret.txt", "../outside/missing.txt"),
    ],
    ids=["through-dir-link", "final-link", "dotdot"],
)
@pytest.mark.parametrize("policy", POLICIES)
def test_refusal_does_not_reveal_whether_the_outside_target_exists(
    tree: CaseTree, open_root: OpenRoot, policy: str, present: str, absent: str
) -> None:
    build_basic(
        tree,
        symlink("odirlink", "../outside/odir"),
        symlink("outlink", "../outside/secret.txt"),
        symlink("danglink", "../outside/missing.txt"),
    )
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        first = tree.run_op(lambda: root.read_bytes(present))
        second = tree.run_op(lambda: root.read_bytes(absent))

    assert first.kind == second.kind == "refused"
    assert type(first.error) is type(second.error)

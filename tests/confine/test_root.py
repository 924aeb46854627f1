"""Behaviour of `strongroom.confine.Root`, operation by operation.

The shared corpus (`test_escape_cases.py`) holds samples gathered from real bugs;
these tests cover the kinds around them: the name rules, the objects that are never
served, hard links, the atomic writer, and the semantics of each operation. Every
test runs once per resolver (see `conftest.py`). Where a test could reach outside,
it runs under `tree.guard_outside()`, which fails when anything under `T/outside`
was read, written or removed.

The hostile-layout table that runs against every operation is in
`test_hostile_layouts.py`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from typing import Any

import pytest
from confine_harness import CaseTree, kind_of

from strongroom.confine import Root
from strongroom.errors import (
    ConfigError,
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

OpenRoot = Callable[..., Root]

BASIC_TREE: list[dict[str, Any]] = [
    {"path": "secret.txt", "type": "file", "outside": True},
    {"path": "odir/secret.txt", "type": "file", "outside": True},
    {"path": "a.txt", "type": "file"},
    {"path": "sub/b.txt", "type": "file"},
    {"path": "sub/deep/c.txt", "type": "file"},
]
POLICIES = ("deny", "within")


def build(tree: CaseTree, *extra: dict[str, Any]) -> None:
    """Lay out the basic tree plus extra entries."""
    tree.build([*BASIC_TREE, *extra])


def link(path: str, target: str) -> dict[str, Any]:
    """Return a symlink entry."""
    return {"path": path, "type": "symlink", "target": target}


def root_names(root: Root, rel_path: str = ".") -> set[str]:
    """Return the names that list_dir reports."""
    return {entry.name for entry in root.list_dir(rel_path)}


# Construction ---------------------------------------------------------------


def test_missing_root_directory_is_a_config_error(
    tree: CaseTree, resolver: str
) -> None:
    with pytest.raises(ConfigError):
        Root(str(tree.t_path / "nope"), symlinks="deny", resolver=resolver)


def test_regular_file_as_root_is_a_config_error(tree: CaseTree, resolver: str) -> None:
    build(tree)

    with pytest.raises(ConfigError):
        Root(str(tree.root_path / "a.txt"), symlinks="deny", resolver=resolver)


def test_root_reports_the_resolver_it_was_asked_for(
    tree: CaseTree, open_root: OpenRoot, resolver: str
) -> None:
    root = open_root()

    assert root.resolver == resolver


def test_auto_resolver_prefers_openat2_when_the_kernel_has_it(tree: CaseTree) -> None:
    from strongroom.confine import openat2_available

    with Root(str(tree.root_path), symlinks="deny", resolver="auto") as root:
        chosen = root.resolver

    assert chosen == ("openat2" if openat2_available() else "walk")


def test_closing_the_root_releases_its_descriptor(
    tree: CaseTree, resolver: str
) -> None:
    before = open_descriptor_count()

    with Root(str(tree.root_path), symlinks="deny", resolver=resolver) as root:
        root.list_dir()

    assert open_descriptor_count() == before


def test_operations_leak_no_descriptors_on_success_or_refusal(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree, link("outlink", "../outside/secret.txt"), {"path": "p", "type": "fifo"})
    root = open_root(symlinks="within")
    root.list_dir()
    before = open_descriptor_count()

    run_every_operation_once(root)

    assert open_descriptor_count() == before


# Name rules -------------------------------------------------------------------


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
    ("total-4096-bytes", "a/" * 2047 + "ab"),
    ("total-4096-bytes-in-2-byte-chars", "é/" * 1365 + "a"),
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
    build(tree)
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
    build(tree, {"path": "a.txt", "type": "file", "outside": True})
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.read_bytes(path))

    assert isinstance(outcome.error, InvalidPathError | PathEscapeError), (
        outcome.describe()
    )


def test_empty_path_is_refused_where_it_does_not_mean_the_root(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(InvalidPathError):
        root.read_bytes("")


@pytest.mark.parametrize("spelling", ["", ".", "./", "sub/..", "sub/deep/../.."])
def test_spellings_of_the_root_list_and_stat_the_root(
    tree: CaseTree, open_root: OpenRoot, spelling: str
) -> None:
    build(tree)
    root = open_root(symlinks="deny")

    names = root_names(root, spelling)
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
    build(tree)
    root = open_root(symlinks="deny")

    content = root.read_bytes(path)

    assert content == b"inside:sub/b.txt"


@pytest.mark.parametrize(
    "name", [n for _, n in LITERAL_NAMES], ids=[i for i, _ in LITERAL_NAMES]
)
def test_unusual_valid_name_is_stored_literally(
    tree: CaseTree, open_root: OpenRoot, name: str
) -> None:
    build(tree)
    root = open_root(symlinks="deny")

    root.write_bytes(name, b"literal")

    assert tree.read_file(name) == b"literal"
    assert root.read_bytes(name) == b"literal"
    assert name in root_names(root)


def test_path_of_4095_bytes_passes_the_name_rules(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    """4095 bytes is the kernel's own limit (PATH_MAX less the NUL); not refused."""
    build(tree)
    root = open_root()
    path = "a/" * 2047 + "a"

    with pytest.raises(PathNotFoundError):
        root.read_bytes(path)


@pytest.mark.parametrize("path", ["a.txt/", "a.txt/.", "a.txt//"])
@pytest.mark.parametrize("policy", POLICIES)
def test_file_named_as_a_directory_is_not_served(
    tree: CaseTree, open_root: OpenRoot, policy: str, path: str
) -> None:
    build(tree)
    root = open_root(symlinks=policy)

    read = tree.run_op(lambda: root.read_bytes(path))
    write = tree.run_op(lambda: root.write_bytes(path, b"x"))

    assert read.kind in ("refused", "not_found"), read.describe()
    assert write.kind in ("refused", "not_found"), write.describe()
    assert tree.read_file("a.txt") == b"inside:a.txt"


def test_refusal_carries_the_operation_and_the_path_as_sent(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
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
    build(
        tree,
        link("odirlink", "../outside/odir"),
        link("outlink", "../outside/secret.txt"),
        link("danglink", "../outside/missing.txt"),
    )
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        first = tree.run_op(lambda: root.read_bytes(present))
        second = tree.run_op(lambda: root.read_bytes(absent))

    assert first.kind == second.kind == "refused"
    assert type(first.error) is type(second.error)


# Objects that are never served -----------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "socket"])
@pytest.mark.parametrize("operation", ["read_bytes", "open_read"])
def test_read_refuses_fifo_and_socket_without_blocking(
    tree: CaseTree, open_root: OpenRoot, kind: str, operation: str
) -> None:
    build(tree, {"path": "special", "type": kind})
    root = open_root(symlinks="deny")

    outcome = tree.run_op(lambda: call_with_path(root, operation, "special"))

    assert isinstance(outcome.error, NotRegularFileError), outcome.describe()


@pytest.mark.parametrize("operation", ["write_bytes", "open_writer"])
def test_write_refuses_fifo_without_blocking_or_replacing_it(
    tree: CaseTree, open_root: OpenRoot, operation: str
) -> None:
    build(tree, {"path": "pipe", "type": "fifo"})
    root = open_root(symlinks="deny")

    outcome = tree.run_op(lambda: call_with_path(root, operation, "pipe"))

    assert outcome.kind == "refused", outcome.describe()
    info = tree.lstat("pipe")
    assert info is not None and stat.S_ISFIFO(info.st_mode)


@pytest.mark.parametrize(
    "target", ["/dev/null", "../../../../../../../../dev/null"], ids=["abs", "rel"]
)
@pytest.mark.parametrize("operation", ["read_bytes", "write_bytes", "open_read"])
@pytest.mark.parametrize("policy", POLICIES)
def test_link_to_a_host_device_is_refused_without_blocking(
    tree: CaseTree, open_root: OpenRoot, policy: str, operation: str, target: str
) -> None:
    build(tree, link("null", target))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: call_with_path(root, operation, "null"))

    assert outcome.kind == "refused", outcome.describe()


@pytest.mark.parametrize("operation", ["read_bytes", "write_bytes", "open_read"])
def test_device_node_inside_the_root_is_never_opened_for_data(
    tree: CaseTree, open_root: OpenRoot, operation: str
) -> None:
    build(tree)
    make_null_device(tree, "null")
    root = open_root(symlinks="deny")

    outcome = tree.run_op(lambda: call_with_path(root, operation, "null"))

    assert isinstance(outcome.error, NotRegularFileError), outcome.describe()
    info = tree.lstat("null")
    assert info is not None and stat.S_ISCHR(info.st_mode)


# Hard links -------------------------------------------------------------------


HARDLINKS = [
    {"path": "orig.txt", "type": "file"},
    {"path": "twin.txt", "type": "hardlink", "target": "{ROOT}/orig.txt"},
    {"path": "hl", "type": "hardlink", "target": "{OUTSIDE}/secret.txt"},
]


@pytest.mark.parametrize("path", ["twin.txt", "orig.txt", "hl"])
@pytest.mark.parametrize("operation", ["read_bytes", "open_read", "stat"])
def test_file_with_a_second_hard_link_is_refused_by_default(
    tree: CaseTree, open_root: OpenRoot, operation: str, path: str
) -> None:
    build(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="deny")

    with tree.guard_outside():
        outcome = tree.run_op(lambda: call_with_path(root, operation, path))

    assert isinstance(outcome.error, HardlinkRefusedError), outcome.describe()


def test_write_to_a_hard_linked_name_is_refused_and_changes_nothing(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="deny")

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.write_bytes("hl", b"pwned"))

    assert isinstance(outcome.error, HardlinkRefusedError), outcome.describe()
    assert tree.lstat("hl") is not None


def test_hard_linked_file_is_served_when_hard_links_are_allowed(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="allow")

    content = root.read_bytes("twin.txt")

    assert content == b"inside:orig.txt"
    assert root.stat("twin.txt").nlink == 2


def test_remove_of_a_hard_linked_name_removes_only_that_name(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="deny")

    with tree.guard_outside():
        root.remove("hl")

    assert tree.lstat("hl") is None


# Atomic writer ----------------------------------------------------------------


def test_write_bytes_creates_a_file_and_returns_its_entry(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    entry = root.write_bytes("sub/new.txt", b"fresh")

    assert tree.read_file("sub/new.txt") == b"fresh"
    assert (entry.name, entry.kind, entry.size) == ("new.txt", "file", 5)


def test_commit_reports_whether_the_file_was_created(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with root.open_writer("new.txt") as writer:
        writer.write(b"one")
        _, created_new = writer.commit()
    with root.open_writer("a.txt") as writer:
        writer.write(b"two")
        _, created_existing = writer.commit()

    assert (created_new, created_existing) == (True, False)


def test_existing_file_keeps_old_content_until_commit(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()
    writer = root.open_writer("a.txt")
    writer.write(b"new content")

    during = (root.read_bytes("a.txt"), tree.read_file("a.txt"))
    writer.commit()

    assert during == (b"inside:a.txt", b"inside:a.txt")
    assert tree.read_file("a.txt") == b"new content"


@pytest.mark.parametrize("target", ["new.txt", "a.txt", "sub/deep/new.txt"])
def test_abort_leaves_no_file_and_no_temporary(
    tree: CaseTree, open_root: OpenRoot, target: str
) -> None:
    build(tree)
    root = open_root()
    before = tree.snapshot(outside=False)
    writer = root.open_writer(target)
    writer.write(b"half")

    writer.abort()

    assert tree.snapshot(outside=False) == before


@pytest.mark.parametrize("target", ["new.txt", "a.txt"])
def test_exception_in_writer_block_aborts_and_leaves_no_temporary(
    tree: CaseTree, open_root: OpenRoot, target: str
) -> None:
    build(tree)
    root = open_root()
    before = tree.snapshot(outside=False)

    with (
        pytest.raises(RuntimeError, match="client went away"),
        root.open_writer(target) as writer,
    ):
        writer.write(b"half")
        raise RuntimeError("client went away")

    assert tree.snapshot(outside=False) == before


def test_make_parents_creates_missing_directories(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    root.write_bytes("x/y/z.txt", b"deep", make_parents=True)

    assert tree.read_file("x/y/z.txt") == b"deep"


def test_write_without_make_parents_reports_the_missing_parent(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.write_bytes("x/z.txt", b"deep")

    assert tree.lstat("x") is None


def test_write_onto_a_directory_is_refused(tree: CaseTree, open_root: OpenRoot) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(IsADirectoryPathError):
        root.write_bytes("sub", b"x")

    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


def test_write_below_a_regular_file_is_refused(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(NotADirectoryPathError):
        root.write_bytes("a.txt/x", b"x")


@pytest.mark.parametrize(
    "target", ["newtarget.txt", "../outside/created.txt"], ids=["inside", "outside"]
)
@pytest.mark.parametrize("policy", POLICIES)
def test_exclusive_create_fails_on_a_dangling_symlink(
    tree: CaseTree, open_root: OpenRoot, policy: str, target: str
) -> None:
    build(tree, link("dangling", target))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(
            lambda: root.write_bytes("dangling", b"x", exclusive=True)
        )

    assert isinstance(outcome.error, PathExistsError), outcome.describe()
    assert tree.lstat("newtarget.txt") is None
    assert tree.read_link("dangling") == target


def test_exclusive_create_fails_on_an_existing_file(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(PathExistsError):
        root.write_bytes("a.txt", b"x", exclusive=True)

    assert tree.read_file("a.txt") == b"inside:a.txt"


def test_exclusive_commit_never_replaces_a_name_taken_meanwhile(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()
    writer = root.open_writer("late.txt", exclusive=True)
    writer.write(b"mine")
    tree.add({"path": "late.txt", "type": "file", "content": "theirs"})

    with pytest.raises(PathExistsError):
        writer.commit()

    assert tree.read_file("late.txt") == b"theirs"


def test_write_under_deny_never_writes_through_an_inside_link(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree, link("inlink", "a.txt"))
    root = open_root(symlinks="deny")

    outcome = tree.run_op(lambda: root.write_bytes("inlink", b"new"))

    assert outcome.kind in ("ok", "refused"), outcome.describe()
    assert tree.read_file("a.txt") == b"inside:a.txt"


# mkdir --------------------------------------------------------------------------


def test_mkdir_creates_one_directory(tree: CaseTree, open_root: OpenRoot) -> None:
    build(tree)
    root = open_root()

    root.mkdir("sub/new")

    info = tree.lstat("sub/new")
    assert info is not None and stat.S_ISDIR(info.st_mode)


def test_mkdir_without_parents_reports_the_missing_parent(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.mkdir("x/y")

    assert tree.lstat("x") is None


def test_mkdir_with_parents_creates_the_whole_chain(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    root.mkdir("x/y/z", parents=True)

    info = tree.lstat("x/y/z")
    assert info is not None and stat.S_ISDIR(info.st_mode)


def test_mkdir_of_an_existing_directory_needs_exist_ok(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(PathExistsError):
        root.mkdir("sub")
    root.mkdir("sub", exist_ok=True)

    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


def test_mkdir_exist_ok_does_not_accept_a_file(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    outcome = tree.run_op(lambda: root.mkdir("a.txt", exist_ok=True))

    assert outcome.kind == "refused", outcome.describe()


@pytest.mark.parametrize("link_target", ["../outside/odir", "{OUTSIDE}/odir"])
@pytest.mark.parametrize("policy", POLICIES)
def test_mkdir_exist_ok_does_not_accept_a_link_to_an_outside_directory(
    tree: CaseTree, open_root: OpenRoot, policy: str, link_target: str
) -> None:
    build(tree, link("odirlink", link_target))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.mkdir("odirlink", exist_ok=True))

    assert outcome.kind == "refused", outcome.describe()


@pytest.mark.parametrize("policy", POLICIES)
def test_mkdir_parents_never_builds_through_a_link_out(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build(tree, link("odirlink", "../outside/odir"))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.mkdir("odirlink/x/y", parents=True))

    assert outcome.kind == "refused", outcome.describe()


# remove and remove_tree -------------------------------------------------------


def test_remove_deletes_a_file(tree: CaseTree, open_root: OpenRoot) -> None:
    build(tree)
    root = open_root()

    root.remove("a.txt")

    assert tree.lstat("a.txt") is None


def test_remove_deletes_an_empty_directory(tree: CaseTree, open_root: OpenRoot) -> None:
    build(tree, {"path": "empty", "type": "dir"})
    root = open_root()

    root.remove("empty")

    assert tree.lstat("empty") is None


def test_remove_of_a_non_empty_directory_is_refused(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(DirectoryNotEmptyError):
        root.remove("sub")

    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


def test_remove_of_a_missing_name_is_not_found(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.remove("nope.txt")


@pytest.mark.parametrize(
    "target",
    ["a.txt", "sub", "../outside/secret.txt", "../outside/odir", "{OUTSIDE}/odir"],
)
@pytest.mark.parametrize("policy", POLICIES)
def test_remove_of_a_symlink_removes_the_link_not_its_target(
    tree: CaseTree, open_root: OpenRoot, policy: str, target: str
) -> None:
    build(tree, link("lnk", target))
    root = open_root(symlinks=policy)
    inside_before = tree.snapshot(outside=False)

    with tree.guard_outside():
        root.remove("lnk")

    expected = {k: v for k, v in inside_before.items() if k != "lnk"}
    assert tree.snapshot(outside=False) == expected


@pytest.mark.parametrize("policy", POLICIES)
def test_remove_with_a_trailing_slash_never_empties_the_link_target(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build(
        tree,
        {"path": "emptyin", "type": "dir"},
        link("inlink", "emptyin"),
        {"path": "emptyo", "type": "dir", "outside": True},
        link("outlink", "../outside/emptyo"),
    )
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        inside = tree.run_op(lambda: root.remove("inlink/"))
        outside = tree.run_op(lambda: root.remove("outlink/"))

    assert inside.kind in ("ok", "refused"), inside.describe()
    assert outside.kind in ("ok", "refused"), outside.describe()
    assert tree.lstat("emptyin") is not None


@pytest.mark.parametrize("spelling", ["", ".", "sub/.."])
def test_remove_never_removes_the_root_itself(
    tree: CaseTree, open_root: OpenRoot, spelling: str
) -> None:
    build(tree)
    root = open_root()

    removed = tree.run_op(lambda: root.remove(spelling))
    removed_tree = tree.run_op(lambda: root.remove_tree(spelling))

    assert removed.kind == "refused", removed.describe()
    assert removed_tree.kind == "refused", removed_tree.describe()
    assert tree.root_path.is_dir()


def test_remove_tree_removes_a_nested_tree(tree: CaseTree, open_root: OpenRoot) -> None:
    build(tree, {"path": "sub/pipe", "type": "fifo"}, link("sub/deep/l", "../b.txt"))
    root = open_root()

    outcome = tree.run_op(lambda: root.remove_tree("sub"))

    assert outcome.kind == "ok", outcome.describe()
    assert tree.lstat("sub") is None
    assert tree.read_file("a.txt") == b"inside:a.txt"


@pytest.mark.parametrize(
    "target", ["../../outside/odir", "{OUTSIDE}/odir", "../../keep"]
)
@pytest.mark.parametrize("policy", POLICIES)
def test_remove_tree_never_descends_a_link(
    tree: CaseTree, open_root: OpenRoot, policy: str, target: str
) -> None:
    build(
        tree,
        {"path": "keep/k.txt", "type": "file"},
        link("sub/deep/lnk", target),
    )
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.remove_tree("sub"))

    assert outcome.kind == "ok", outcome.describe()
    assert tree.lstat("sub") is None
    assert tree.read_file("keep/k.txt") == b"inside:keep/k.txt"


@pytest.mark.parametrize("policy", POLICIES)
def test_remove_tree_on_a_link_leaves_the_target_alone(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build(tree, link("odirlink", "../outside/odir"), link("indir", "sub"))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outside = tree.run_op(lambda: root.remove_tree("odirlink"))
        inside = tree.run_op(lambda: root.remove_tree("indir"))

    assert outside.kind in ("ok", "refused"), outside.describe()
    assert inside.kind in ("ok", "refused"), inside.describe()
    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


def test_remove_tree_handles_a_tree_deeper_than_path_max(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    """Twenty 250-byte levels: only a descriptor-based walk can remove them."""
    build(tree)
    deep = "/".join(["d" * 250] * 20)
    tree.add({"path": deep + "/leaf.txt", "type": "file"})
    root = open_root()

    outcome = tree.run_op(lambda: root.remove_tree("d" * 250))

    assert outcome.kind == "ok", outcome.describe()
    assert tree.lstat("d" * 250) is None


def test_remove_tree_of_a_missing_name_is_not_found(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.remove_tree("nope")


# rename -------------------------------------------------------------------------


def test_rename_moves_a_file(tree: CaseTree, open_root: OpenRoot) -> None:
    build(tree)
    root = open_root()

    root.rename("a.txt", "sub/deep/a2.txt")

    assert tree.lstat("a.txt") is None
    assert tree.read_file("sub/deep/a2.txt") == b"inside:a.txt"


def test_rename_refuses_an_existing_destination_without_overwrite(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(PathExistsError):
        root.rename("a.txt", "sub/b.txt")

    assert tree.read_file("a.txt") == b"inside:a.txt"
    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


def test_rename_with_overwrite_replaces_the_destination(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    root.rename("a.txt", "sub/b.txt", overwrite=True)

    assert tree.lstat("a.txt") is None
    assert tree.read_file("sub/b.txt") == b"inside:a.txt"


@pytest.mark.parametrize("policy", POLICIES)
def test_rename_moves_a_symlink_itself(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build(tree, link("outlink", "../outside/secret.txt"))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        root.rename("outlink", "sub/moved")

    assert tree.read_link("sub/moved") == "../outside/secret.txt"


@pytest.mark.parametrize(
    "dest", ["outlink", "dangling", "abslink"], ids=["link", "dangling", "absolute"]
)
@pytest.mark.parametrize("policy", POLICIES)
def test_rename_overwrite_replaces_a_destination_link_not_its_target(
    tree: CaseTree, open_root: OpenRoot, policy: str, dest: str
) -> None:
    build(
        tree,
        link("outlink", "../outside/secret.txt"),
        link("dangling", "../outside/created.txt"),
        link("abslink", "{OUTSIDE}/secret.txt"),
    )
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        root.rename("a.txt", dest, overwrite=True)

    assert tree.read_file(dest) == b"inside:a.txt"


@pytest.mark.parametrize("policy", POLICIES)
def test_rename_without_overwrite_refuses_a_dangling_destination_link(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build(tree, link("dangling", "../outside/created.txt"))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.rename("a.txt", "dangling"))

    assert isinstance(outcome.error, PathExistsError), outcome.describe()


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("../outside/secret.txt", "stolen.txt"),
        ("odirlink/secret.txt", "stolen.txt"),
        ("a.txt", "../outside/planted.txt"),
        ("a.txt", "odirlink/planted.txt"),
        ("a.txt", "odirlink/"),
        ("sub", "../outside/moved"),
    ],
    ids=[
        "src-dotdot",
        "src-through-link",
        "dst-dotdot",
        "dst-through-link",
        "dst-link-slash",
        "dir-out",
    ],
)
@pytest.mark.parametrize("policy", POLICIES)
def test_rename_confines_both_sides(
    tree: CaseTree, open_root: OpenRoot, policy: str, src: str, dst: str
) -> None:
    build(tree, link("odirlink", "../outside/odir"))
    root = open_root(symlinks=policy)
    inside_before = tree.snapshot(outside=False)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.rename(src, dst))

    assert outcome.kind == "refused", outcome.describe()
    assert tree.snapshot(outside=False) == inside_before


def test_rename_of_a_directory_into_itself_is_refused(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    outcome = tree.run_op(lambda: root.rename("sub", "sub/deep/sub"))

    assert outcome.kind == "refused", outcome.describe()
    assert tree.lstat("sub/deep/c.txt") is not None


def test_rename_of_a_missing_source_is_not_found(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.rename("nope.txt", "x.txt")


# list_dir -----------------------------------------------------------------------


def test_list_dir_reports_each_kind_with_lstat_metadata(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(
        tree,
        link("outlink", "../outside/secret.txt"),
        link("dangling", "nowhere"),
        {"path": "pipe", "type": "fifo"},
        {"path": "sock", "type": "socket"},
    )
    root = open_root(symlinks="deny")

    entries = {entry.name: entry for entry in root.list_dir(".")}

    assert set(entries) == {"a.txt", "sub", "outlink", "dangling", "pipe", "sock"}
    for name, entry in entries.items():
        info = tree.lstat(name)
        assert info is not None
        assert entry.kind == kind_of(info.st_mode), name
        assert (entry.size, entry.ino, entry.dev) == (
            info.st_size,
            info.st_ino,
            info.st_dev,
        )
        assert stat.S_IMODE(entry.mode) == stat.S_IMODE(info.st_mode)
    assert entries["outlink"].size == len("../outside/secret.txt")


def test_list_dir_reports_a_device_node_as_chardev(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    make_null_device(tree, "null")
    root = open_root(symlinks="deny")

    entries = {entry.name: entry for entry in root.list_dir(".")}

    assert entries["null"].kind == "chardev"


@pytest.mark.parametrize("policy", POLICIES)
def test_list_dir_never_reports_metadata_of_a_link_target(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    """The static form of Go CVE-2026-27139: entries are lstat-ed beside the fd."""
    tree.add({"path": "big", "type": "file", "outside": True, "content": "x" * 31337})
    build(tree, link("sub/big", "../../outside/big"))
    root = open_root(symlinks=policy)
    outside_ino = os.stat(tree.outside_path / "big").st_ino

    with tree.guard_outside():
        entries = {entry.name: entry for entry in root.list_dir("sub")}

    assert entries["big"].kind == "symlink"
    assert entries["big"].size != 31337
    assert entries["big"].ino != outside_ino


def test_list_dir_of_a_file_is_refused(tree: CaseTree, open_root: OpenRoot) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(NotADirectoryPathError):
        root.list_dir("a.txt")


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("within", "ok"), ("deny", "refused")],
    ids=["within-follows", "deny-refuses"],
)
def test_list_dir_through_an_inside_link_follows_the_policy(
    tree: CaseTree, open_root: OpenRoot, policy: str, expected: str
) -> None:
    build(tree, link("indir", "sub"))
    root = open_root(symlinks=policy)

    outcome = tree.run_op(lambda: root.list_dir("indir"))

    assert outcome.kind == expected, outcome.describe()
    if expected == "ok":
        assert isinstance(outcome.value, list)
        assert {entry.name for entry in outcome.value} == {"b.txt", "deep"}
    else:
        assert isinstance(outcome.error, SymlinkRefusedError), outcome.describe()


# stat and open_read ---------------------------------------------------------------


def test_stat_reports_the_fields_of_the_object(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root(symlinks="deny")
    info = os.stat(tree.root_path / "sub" / "b.txt")

    entry = root.stat("sub/b.txt")

    assert (entry.name, entry.kind, entry.size) == ("b.txt", "file", info.st_size)
    assert (entry.ino, entry.dev, entry.nlink) == (info.st_ino, info.st_dev, 1)
    assert entry.mtime_ns == info.st_mtime_ns
    assert stat.S_IMODE(entry.mode) == stat.S_IMODE(info.st_mode)


def test_stat_under_within_follows_an_inside_link(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree, link("inlink", "sub/../a.txt"))
    root = open_root(symlinks="within")

    entry = root.stat("inlink")

    assert entry.kind == "file"
    assert entry.ino == os.stat(tree.root_path / "a.txt").st_ino


def test_stat_under_deny_refuses_an_inside_link(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree, link("inlink", "a.txt"))
    root = open_root(symlinks="deny")

    with pytest.raises(SymlinkRefusedError):
        root.stat("inlink")


@pytest.mark.parametrize("policy", POLICIES)
def test_stat_of_a_missing_name_is_not_found(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build(tree)
    root = open_root(symlinks=policy)

    with pytest.raises(PathNotFoundError):
        root.stat("sub/nope")


def test_open_read_hands_back_a_handle_on_the_file(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with root.open_read("sub/b.txt") as handle:
        fd = handle.fd
        whole = handle.read()
        middle = handle.pread(3, 2)
        entry = handle.entry

    assert whole == b"inside:sub/b.txt"
    assert middle == b"sid"
    assert (entry.kind, entry.size) == ("file", len(whole))
    with pytest.raises(OSError):
        os.fstat(fd)


def test_open_read_of_a_directory_is_refused(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build(tree)
    root = open_root()

    with pytest.raises(IsADirectoryPathError):
        root.open_read("sub")


# Helpers ----------------------------------------------------------------------------


def call_with_path(root: Root, operation: str, path: str) -> object:
    """Run one named operation on `path`; the second name of a rename is fixed."""
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
    method = getattr(root, operation)
    return method(path)


def run_every_operation_once(root: Root) -> None:
    """Call each operation on a good path and on refused ones."""
    for path in ("a.txt", "outlink", "../x", "p", "nope/x"):
        for operation in ("read_bytes", "open_read", "stat", "list_dir"):
            _ignore_refusal(lambda o=operation, p=path: call_with_path(root, o, p))
    _ignore_refusal(lambda: root.write_bytes("n.txt", b"x", exclusive=True))
    _ignore_refusal(lambda: root.write_bytes("outlink", b"x"))
    _ignore_refusal(lambda: root.mkdir("d/e", parents=True))
    _ignore_refusal(lambda: root.rename("n.txt", "d/n.txt"))
    _ignore_refusal(lambda: root.rename("n.txt", "outlink"))
    _ignore_refusal(lambda: root.remove("d/n.txt"))
    _ignore_refusal(lambda: root.remove_tree("d"))
    _ignore_refusal(lambda: root.remove_tree("outlink"))


def _ignore_refusal(operation: Callable[[], object]) -> None:
    with contextlib.suppress(PathError):
        operation()


def open_descriptor_count() -> int:
    """Return how many descriptors this process holds."""
    return len(os.listdir("/proc/self/fd"))


def make_null_device(tree: CaseTree, name: str) -> None:
    """Plant a character device for /dev/null's numbers, or skip unprivileged."""
    try:
        tree.add({"path": name, "type": "chardev", "major": 1, "minor": 3})
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD; run as root to cover device nodes")

"""Behaviour of `strongroom.confine.Root`: opening, reading, listing and stat.

The shared corpus (`test_escape_cases.py`) holds samples gathered from real bugs;
these tests cover the kinds around them. Every test runs once per resolver (see
`conftest.py`). Where a test could reach outside, it runs under
`tree.guard_outside()`, which fails when anything under `T/outside` was read,
written or removed.

Name rules are in `test_names.py`, the operations that change the tree in
`test_root_writes.py`, and the hostile-layout table that runs against every
operation in `test_hostile_layouts.py`.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from confine_harness import (
    POLICIES,
    CaseTree,
    OpenRoot,
    build_basic,
    call_with_path,
    kind_of,
    make_null_device,
    symlink,
)

from strongroom.confine import Root, openat2_available
from strongroom.confine._sys import LINK_WATCH
from strongroom.errors import (
    ConfigError,
    HardlinkRefusedError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    NotRegularFileError,
    PathError,
    PathNotFoundError,
    SymlinkRefusedError,
)

# Construction ---------------------------------------------------------------


def test_missing_root_directory_is_a_config_error(
    tree: CaseTree, resolver: str
) -> None:
    with pytest.raises(ConfigError):
        Root(str(tree.t_path / "nope"), symlinks="deny", resolver=resolver)


def test_regular_file_as_root_is_a_config_error(tree: CaseTree, resolver: str) -> None:
    build_basic(tree)

    with pytest.raises(ConfigError):
        Root(str(tree.root_path / "a.txt"), symlinks="deny", resolver=resolver)


def test_root_reports_the_resolver_it_was_asked_for(
    tree: CaseTree, open_root: OpenRoot, resolver: str
) -> None:
    root = open_root()

    assert root.resolver == resolver


def test_auto_resolver_prefers_openat2_when_the_kernel_has_it(tree: CaseTree) -> None:
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
    build_basic(
        tree, symlink("outlink", "../outside/secret.txt"), {"path": "p", "type": "fifo"}
    )
    root = open_root(symlinks="within")
    root.list_dir()
    before = open_descriptor_count()

    tree.run_op(lambda: run_every_operation_once(root))

    assert open_descriptor_count() == before


# Objects that are never served -----------------------------------------------


@pytest.mark.parametrize("kind", ["fifo", "socket"])
@pytest.mark.parametrize("operation", ["read_bytes", "open_read"])
def test_read_refuses_fifo_and_socket_without_blocking(
    tree: CaseTree, open_root: OpenRoot, kind: str, operation: str
) -> None:
    build_basic(tree, {"path": "special", "type": kind})
    root = open_root(symlinks="deny")

    outcome = tree.run_op(lambda: call_with_path(root, operation, "special"))

    assert isinstance(outcome.error, NotRegularFileError), outcome.describe()


@pytest.mark.parametrize("operation", ["write_bytes", "open_writer"])
def test_write_refuses_fifo_without_blocking_or_replacing_it(
    tree: CaseTree, open_root: OpenRoot, operation: str
) -> None:
    build_basic(tree, {"path": "pipe", "type": "fifo"})
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
    build_basic(tree, symlink("null", target))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: call_with_path(root, operation, "null"))

    assert outcome.kind == "refused", outcome.describe()


@pytest.mark.parametrize("operation", ["read_bytes", "write_bytes", "open_read"])
def test_device_node_inside_the_root_is_never_opened_for_data(
    tree: CaseTree, open_root: OpenRoot, operation: str
) -> None:
    build_basic(tree)
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
    build_basic(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="deny")

    with tree.guard_outside():
        outcome = tree.run_op(lambda: call_with_path(root, operation, path))

    assert isinstance(outcome.error, HardlinkRefusedError), outcome.describe()


class LinkFlipper:
    """Play the attacker at the two moments the product resolves `hl`.

    At the first resolve (the open) the name leads to the outside secret, which
    then loses its inside link; at the second (the re-check) the link is put back
    just for the lookup and taken away again. The descriptor's count reads 1 both
    times and the name led to the same file: only a watch on the link count sees
    that the count was 2 in between.
    """

    def __init__(self, tree: CaseTree, root: Root) -> None:
        self.tree, self.calls = tree, 0
        self.real_open = root._open_path

    def __call__(self, *args: object, **kwargs: object) -> int:
        self.calls += 1
        if self.calls == 2:
            self.link_secret_in()
        fd = self.real_open(*args, **kwargs)
        self.replace_with_public()
        return fd

    def link_secret_in(self) -> None:
        root_fd = self.tree.root_fd
        os.link("secret.txt", "hl-tmp", src_dir_fd=self.tree.outside_fd,
                dst_dir_fd=root_fd)
        os.rename("hl-tmp", "hl", src_dir_fd=root_fd, dst_dir_fd=root_fd)

    def replace_with_public(self) -> None:
        root_fd = self.tree.root_fd
        fd = os.open("pub-tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644,
                     dir_fd=root_fd)
        os.close(fd)
        os.rename("pub-tmp", "hl", src_dir_fd=root_fd, dst_dir_fd=root_fd)


@pytest.mark.parametrize("watch", ["inotify", "ctime"])
@pytest.mark.parametrize("operation", ["read_bytes", "stat"])
def test_a_link_flipped_in_and_out_around_each_lookup_is_refused(
    tree: CaseTree,
    open_root: OpenRoot,
    monkeypatch: pytest.MonkeyPatch,
    operation: str,
    watch: str,
) -> None:
    """The hard-link window: count 1 at both looks, yet an outside file."""
    build_basic(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="deny")
    if watch == "ctime":  # inotify unavailable: the timestamp comparison
        monkeypatch.setattr(LINK_WATCH, "_instance", lambda: None)
    flipper = LinkFlipper(tree, root)
    monkeypatch.setattr(root, "_open_path", flipper)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: call_with_path(root, operation, "hl"))

    assert flipper.calls == 2, "the re-check did not resolve the name again"
    assert isinstance(outcome.error, HardlinkRefusedError), outcome.describe()


def test_the_link_watch_reports_link_changes_and_nothing_else(
    tmp_path: Path,
) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fd = os.open(tmp_path / "f", os.O_PATH)
    try:
        with LINK_WATCH.watching(fd) as changed:
            assert changed is not None, "inotify is unavailable on this machine"
            (tmp_path / "f").read_bytes()
            os.fstat(fd)
            assert not changed()
            os.link(tmp_path / "f", tmp_path / "g")
            assert changed()
            assert not changed()
            os.unlink(tmp_path / "g")
            assert changed()
        with LINK_WATCH.watching(fd) as changed:
            assert changed is not None and not changed()
    finally:
        os.close(fd)


def test_write_to_a_hard_linked_name_is_refused_and_changes_nothing(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="deny")

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.write_bytes("hl", b"pwned"))

    assert isinstance(outcome.error, HardlinkRefusedError), outcome.describe()
    assert tree.lstat("hl") is not None


def test_hard_linked_file_is_served_when_hard_links_are_allowed(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="allow")

    content = root.read_bytes("twin.txt")

    assert content == b"inside:orig.txt"
    assert root.stat("twin.txt").nlink == 2


def test_remove_of_a_hard_linked_name_removes_only_that_name(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree, *HARDLINKS)
    root = open_root(symlinks="deny", hardlinks="deny")

    with tree.guard_outside():
        root.remove("hl")

    assert tree.lstat("hl") is None


# lstat ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a.txt/", "link-to-sub/", "pipe/"])
def test_lstat_with_a_trailing_slash_names_a_folder_only(
    tree: CaseTree, open_root: OpenRoot, name: str
) -> None:
    build_basic(tree, symlink("link-to-sub", "sub"), {"path": "pipe", "type": "fifo"})
    root = open_root(symlinks="deny")

    with pytest.raises(NotADirectoryPathError):
        root.lstat(name)
    assert root.lstat("sub/").kind == "dir"


# list_dir -----------------------------------------------------------------------


def test_list_dir_reports_each_kind_with_lstat_metadata(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(
        tree,
        symlink("outlink", "../outside/secret.txt"),
        symlink("dangling", "nowhere"),
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
    build_basic(tree)
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
    build_basic(tree, symlink("sub/big", "../../outside/big"))
    root = open_root(symlinks=policy)
    outside_ino = os.stat(tree.outside_path / "big").st_ino

    with tree.guard_outside():
        entries = {entry.name: entry for entry in root.list_dir("sub")}

    assert entries["big"].kind == "symlink"
    assert entries["big"].size != 31337
    assert entries["big"].ino != outside_ino


def test_list_dir_of_a_file_is_refused(tree: CaseTree, open_root: OpenRoot) -> None:
    build_basic(tree)
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
    build_basic(tree, symlink("indir", "sub"))
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
    build_basic(tree)
    root = open_root(symlinks="deny")
    info = os.stat(tree.root_path / "sub" / "b.txt")

    entry = root.stat("sub/b.txt")

    assert (entry.name, entry.kind, entry.size) == ("b.txt", "file", info.st_size)
    assert (entry.ino, entry.dev, entry.nlink) == (info.st_ino, info.st_dev, 1)
    assert entry.mtime_ns == info.st_mtime_ns
    assert stat.S_IMODE(entry.mode) == stat.S_IMODE(info.st_mode)


def test_stat_under_within_follows_an_inside_symlink(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree, symlink("inlink", "sub/../a.txt"))
    root = open_root(symlinks="within")

    entry = root.stat("inlink")

    assert entry.kind == "file"
    assert entry.ino == os.stat(tree.root_path / "a.txt").st_ino


def test_stat_under_deny_refuses_an_inside_symlink(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree, symlink("inlink", "a.txt"))
    root = open_root(symlinks="deny")

    with pytest.raises(SymlinkRefusedError):
        root.stat("inlink")


@pytest.mark.parametrize("policy", POLICIES)
def test_stat_of_a_missing_name_is_not_found(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build_basic(tree)
    root = open_root(symlinks=policy)

    with pytest.raises(PathNotFoundError):
        root.stat("sub/nope")


def test_open_read_hands_back_a_handle_on_the_file(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
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
    build_basic(tree)
    root = open_root()

    with pytest.raises(IsADirectoryPathError):
        root.open_read("sub")


# Helpers ----------------------------------------------------------------------------


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

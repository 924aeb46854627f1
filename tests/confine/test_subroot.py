"""`Root.subroot`: a folder of a root opened as a root of its own (share links).

A share of a folder must reach nothing beside it: no sibling, no parent, even
where the parent root would allow the step (a symlink that stays inside the
space but leaves the folder). Each test runs once per resolver (see
`conftest.py`); the hostile reads run under a watch of `T/outside` and of the
shared folder's sibling `root/sibling`. The shared table of hostile layouts
(`test_hostile_layouts.py`) runs against `subroot` itself as well.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from confine_harness import POLICIES, CaseTree, OpenRoot, listed_names, symlink
from test_hostile_layouts import HOSTILE, HOSTILE_TREE, NOT_FOUND, Hostile

from strongroom.confine import Root
from strongroom.errors import (
    NotADirectoryPathError,
    PathEscapeError,
    PathNotFoundError,
    SymlinkRefusedError,
)

SHARED_TREE: list[dict[str, Any]] = [
    {"path": "secret.txt", "type": "file", "outside": True},
    {"path": "top.txt", "type": "file", "content": "TOP-OF-SPACE"},
    {"path": "sibling/secret.txt", "type": "file", "content": "SIBLING-SECRET"},
    {"path": "share/a.txt", "type": "file", "content": "SHARED-A"},
    {"path": "share/sub/b.txt", "type": "file", "content": "SHARED-B"},
    symlink("share/to_sibling", "../sibling/secret.txt"),
    symlink("share/to_sibling_dir", "../sibling"),
    symlink("share/to_top", "../top.txt"),
    symlink("share/to_outside", "../../outside/secret.txt"),
    symlink("share/absolute", "{OUTSIDE}/secret.txt"),
    symlink("share/sub/climb", "../../sibling/secret.txt"),
    symlink("share/dotdot_hop", "sub/../../sibling/secret.txt"),
    symlink("share/inner", "sub/b.txt"),
]

ESCAPES = [
    "../sibling/secret.txt",
    "../top.txt",
    "sub/../../top.txt",
    "sub/../../sibling/secret.txt",
    "../share/../sibling/secret.txt",
    "../../outside/secret.txt",
    "to_sibling",
    "to_sibling_dir/secret.txt",
    "to_top",
    "to_outside",
    "absolute",
    "sub/climb",
    "dotdot_hop",
    "/etc/passwd",
]


@pytest.fixture
def shared(tree: CaseTree, open_root: OpenRoot) -> CaseTree:
    tree.build(SHARED_TREE)
    return tree


def open_share(open_root: OpenRoot, policy: str = "within") -> Root:
    parent = open_root(symlinks=policy)
    return parent.subroot("share")


def sibling_watch(tree: CaseTree) -> tuple[int, str]:
    return (tree.root_fd, "sibling")


def test_subroot_reads_files_beneath_the_folder(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    with open_share(open_root) as share:
        found = (share.read_bytes("a.txt"), share.read_bytes("sub/b.txt"))

    assert found == (b"SHARED-A", b"SHARED-B")


def test_subroot_lists_the_folder_itself(shared: CaseTree, open_root: OpenRoot) -> None:
    with open_share(open_root) as share:
        names = listed_names(share)

    assert {"a.txt", "sub", "to_sibling", "inner"} <= names
    assert "sibling" not in names and "top.txt" not in names


def test_subroot_describes_the_folder_it_holds(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    with open_share(open_root) as share:
        entry = share.stat(".")

    on_disk = os.stat(shared.root_path / "share")
    assert (entry.kind, entry.dev, entry.ino) == ("dir", on_disk.st_dev, on_disk.st_ino)


@pytest.mark.parametrize("path", ESCAPES)
@pytest.mark.parametrize("policy", POLICIES)
def test_subroot_refuses_siblings_parents_and_links_out_of_the_folder(
    shared: CaseTree, open_root: OpenRoot, policy: str, path: str
) -> None:
    share = open_share(open_root, policy)

    with shared.guard_outside(sibling_watch(shared)):
        outcome = shared.run_op(lambda: share.read_bytes(path))

    share.close()
    assert outcome.kind == "refused", outcome.describe()
    assert b"SIBLING" not in repr(outcome.value).encode()


@pytest.mark.parametrize("path", ["..", "../sibling", "to_sibling_dir", "sub/../.."])
def test_subroot_lists_nothing_above_the_folder(
    shared: CaseTree, open_root: OpenRoot, path: str
) -> None:
    share = open_share(open_root)

    with shared.guard_outside(sibling_watch(shared)):
        outcome = shared.run_op(lambda: listed_names(share, path))

    share.close()
    assert outcome.kind == "refused", outcome.describe()


def test_dotdot_that_stays_inside_the_folder_is_resolved(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    with open_share(open_root) as share:
        names = listed_names(share, "sub/..")

    assert "a.txt" in names and "sibling" not in names


def test_a_link_inside_the_folder_is_followed_under_within(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    with open_share(open_root, "within") as share:
        data = share.read_bytes("inner")

    assert data == b"SHARED-B"


def test_a_link_inside_the_folder_is_refused_under_deny(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    share = open_share(open_root, "deny")

    outcome = shared.run_op(lambda: share.read_bytes("inner"))

    share.close()
    assert isinstance(outcome.error, SymlinkRefusedError), outcome.describe()


def test_subroot_keeps_the_parent_policies(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    with open_root(symlinks="deny", hardlinks="allow").subroot("share") as share:
        policies = (share.symlinks, share.hardlinks)

    assert policies == ("deny", "allow")


def test_subroot_of_a_file_is_refused(shared: CaseTree, open_root: OpenRoot) -> None:
    with pytest.raises(NotADirectoryPathError):
        open_root().subroot("share/a.txt")


def test_subroot_of_a_missing_folder_is_not_found(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    with pytest.raises(PathNotFoundError):
        open_root().subroot("nothing")


@pytest.mark.parametrize("path", ["..", "share/../..", "../outside"])
def test_subroot_above_the_parent_root_is_an_escape(
    shared: CaseTree, open_root: OpenRoot, path: str
) -> None:
    with pytest.raises(PathEscapeError):
        open_root().subroot(path)


def test_subroot_through_a_link_follows_it_only_under_within(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    shared.add(symlink("share_link", "share"))

    with open_root(symlinks="within").subroot("share_link") as share:
        names = listed_names(share)
    with pytest.raises(SymlinkRefusedError):
        open_root(symlinks="deny").subroot("share_link")

    assert "a.txt" in names


def test_a_link_swapped_in_after_opening_still_cannot_leave_the_folder(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    share = open_share(open_root)
    os.rename(shared.root_path / "share" / "sub", shared.root_path / "old-sub")
    os.symlink("../sibling", shared.root_path / "share" / "sub")

    with shared.guard_outside(sibling_watch(shared)):
        outcome = shared.run_op(lambda: share.read_bytes("sub/secret.txt"))

    share.close()
    assert isinstance(outcome.error, PathEscapeError), outcome.describe()


def test_subroot_outlives_its_parent_and_closes_on_its_own(
    shared: CaseTree, open_root: OpenRoot
) -> None:
    parent = open_root()
    share = parent.subroot("share")
    parent.close()

    data = share.read_bytes("a.txt")
    share.close()

    assert data == b"SHARED-A"
    with pytest.raises(ValueError, match="closed"):
        share.read_bytes("a.txt")


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda row: row.id)
@pytest.mark.parametrize("policy", POLICIES)
def test_subroot_of_a_hostile_path_is_refused(
    tree: CaseTree, open_root: OpenRoot, policy: str, hostile: Hostile
) -> None:
    tree.build(HOSTILE_TREE)
    root = open_root(symlinks=policy)
    path = tree.substitute(hostile.path)

    def open_and_list() -> set[str]:
        with root.subroot(path) as sub:
            return listed_names(sub)

    with tree.guard_outside():
        outcome = tree.run_op(open_and_list)

    wanted = "not_found" if hostile.default == NOT_FOUND else "refused"
    assert outcome.kind == wanted, outcome.describe()

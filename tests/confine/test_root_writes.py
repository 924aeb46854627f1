"""Operations of `Root` that change the tree: writes, mkdir, remove, rename.

Covers the atomic writer (old content until commit, nothing left behind on abort or
exception, exclusive create that no name can satisfy), directory creation, removal
that never follows a final link or descends one, and renames confined on both
sides. Every test runs once per resolver.
"""

from __future__ import annotations

import os
import stat

import pytest
from confine_harness import (
    POLICIES,
    CaseTree,
    OpenRoot,
    build_basic,
    symlink,
)

from strongroom.confine import root as root_module
from strongroom.confine._sys import start_writeback
from strongroom.errors import (
    DirectoryNotEmptyError,
    InvalidPathError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathExistsError,
    PathNotFoundError,
)

# Atomic writer ----------------------------------------------------------------


def test_write_bytes_creates_a_file_and_returns_its_entry(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    entry = root.write_bytes("sub/new.txt", b"fresh")

    assert tree.read_file("sub/new.txt") == b"fresh"
    assert (entry.name, entry.kind, entry.size) == ("new.txt", "file", 5)


def test_commit_reports_whether_the_file_was_created(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
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
    build_basic(tree)
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
    build_basic(tree)
    root = open_root()
    before = tree.snapshot(outside=False)
    writer = root.open_writer(target)
    writer.write(b"half")

    writer.abort()

    assert tree.snapshot(outside=False) == before


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "batched"])
def test_a_large_write_starts_its_writeback_run_by_run_and_keeps_every_byte(
    tree: CaseTree, open_root: OpenRoot, monkeypatch: pytest.MonkeyPatch,
    durable: bool,
) -> None:
    build_basic(tree)
    root = open_root()
    started: list[tuple[int, int]] = []

    def record(fd: int, offset: int, length: int) -> None:
        started.append((offset, length))
        start_writeback(fd, offset, length)

    monkeypatch.setattr(root_module, "start_writeback", record)
    # A small run keeps the test quick; the bookkeeping is the same at 8 MiB.
    window = 64 * 1024
    monkeypatch.setattr(root_module, "WRITE_BEHIND_BYTES", window)
    # Pieces of an odd size, so the runs never line up with a piece.
    piece = os.urandom(window // 3 + 4097)
    pieces = 10

    with root.open_writer("big.bin", durable=durable) as writer:
        for _ in range(pieces):
            writer.write(piece)
        writer.commit()

    assert tree.read_file("big.bin") == piece * pieces
    assert started, "no writeback was started for a file of several runs"
    ends = [offset + length for offset, length in started]
    assert [offset for offset, _ in started] == [0, *ends[:-1]]  # no gap, no overlap
    assert all(length >= window for _, length in started)
    assert len(piece) * pieces - ends[-1] < window


def test_start_writeback_is_only_a_hint() -> None:
    # A descriptor that cannot be written back (closed, or not a file) is
    # ignored: the fsync after it is what reports a failure.
    read_end, write_end = os.pipe()
    os.close(write_end)
    os.close(read_end)

    assert start_writeback(read_end, 0, 1 << 20) is None


@pytest.mark.parametrize("target", ["new.txt", "a.txt"])
def test_exception_in_writer_block_aborts_and_leaves_no_temporary(
    tree: CaseTree, open_root: OpenRoot, target: str
) -> None:
    build_basic(tree)
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
    build_basic(tree)
    root = open_root()

    root.write_bytes("x/y/z.txt", b"deep", make_parents=True)

    assert tree.read_file("x/y/z.txt") == b"deep"


def test_write_without_make_parents_reports_the_missing_parent(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.write_bytes("x/z.txt", b"deep")

    assert tree.lstat("x") is None


def test_write_onto_a_directory_is_refused(tree: CaseTree, open_root: OpenRoot) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(IsADirectoryPathError):
        root.write_bytes("sub", b"x")

    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


@pytest.mark.parametrize("rel_path", ["sub/", "a.txt/", "new/", "new/."])
def test_a_write_to_a_path_that_names_a_folder_is_an_invalid_path(
    tree: CaseTree, open_root: OpenRoot, rel_path: str
) -> None:
    # A final '/' or '/.' can never name a file, whatever is on disk there.
    build_basic(tree)
    root = open_root()

    with pytest.raises(InvalidPathError):
        root.write_bytes(rel_path, b"x")

    assert tree.read_file("a.txt") == b"inside:a.txt"
    assert tree.lstat("new") is None


def test_write_below_a_regular_file_is_refused(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
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
    build_basic(tree, symlink("dangling", target))
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
    build_basic(tree)
    root = open_root()

    with pytest.raises(PathExistsError):
        root.write_bytes("a.txt", b"x", exclusive=True)

    assert tree.read_file("a.txt") == b"inside:a.txt"


def test_exclusive_commit_never_replaces_a_name_taken_meanwhile(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()
    writer = root.open_writer("late.txt", exclusive=True)
    writer.write(b"mine")
    tree.add({"path": "late.txt", "type": "file", "content": "theirs"})

    with pytest.raises(PathExistsError):
        writer.commit()

    assert tree.read_file("late.txt") == b"theirs"


# What an in-place writer may find already under its name: it must refuse
# each one without writing through it or replacing it.
TAKEN = {
    "file": {"path": "taken", "type": "file"},
    "folder": {"path": "taken", "type": "dir"},
    "link-inside": symlink("taken", "a.txt"),
    "link-outside": symlink("taken", "../outside/secret.txt"),
    "dangling-link-outside": symlink("taken", "../outside/new.txt"),
    "fifo": {"path": "taken", "type": "fifo"},
}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("taken", TAKEN)
def test_an_in_place_write_refuses_any_name_already_taken(
    tree: CaseTree, open_root: OpenRoot, policy: str, taken: str
) -> None:
    build_basic(tree, TAKEN[taken])
    root = open_root(symlinks=policy)
    before = tree.snapshot(outside=False)

    with tree.guard_outside():
        outcome = tree.run_op(
            lambda: root.open_writer("taken", in_place=True).abort()
        )

    assert isinstance(outcome.error, PathExistsError), outcome.describe()
    assert tree.snapshot(outside=False) == before


def test_an_in_place_write_is_under_its_name_at_once_and_abort_removes_it(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()
    before = tree.snapshot(outside=False)
    writer = root.open_writer("sub/new.bin", in_place=True)
    writer.write(b"half")
    assert tree.read_file("sub/new.bin") == b"half"

    writer.abort()

    assert tree.snapshot(outside=False) == before


def test_an_in_place_commit_keeps_the_file_and_uses_no_staging_name(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()
    writer = root.open_writer("new.bin", in_place=True, durable=False)
    writer.write(b"whole")

    _, created = writer.commit()
    writer.abort()  # after commit: a no-op, never a removal

    assert created
    assert tree.read_file("new.bin") == b"whole"
    assert sorted(os.listdir(tree.root_path)) == ["a.txt", "new.bin", "sub"]


def test_write_under_deny_never_writes_through_an_inside_symlink(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree, symlink("inlink", "a.txt"))
    root = open_root(symlinks="deny")

    outcome = tree.run_op(lambda: root.write_bytes("inlink", b"new"))

    assert outcome.kind in ("ok", "refused"), outcome.describe()
    assert tree.read_file("a.txt") == b"inside:a.txt"


# mkdir --------------------------------------------------------------------------


def test_mkdir_creates_one_directory(tree: CaseTree, open_root: OpenRoot) -> None:
    build_basic(tree)
    root = open_root()

    root.mkdir("sub/new")

    info = tree.lstat("sub/new")
    assert info is not None and stat.S_ISDIR(info.st_mode)


def test_mkdir_without_parents_reports_the_missing_parent(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.mkdir("x/y")

    assert tree.lstat("x") is None


def test_mkdir_with_parents_creates_the_whole_chain(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    root.mkdir("x/y/z", parents=True)

    info = tree.lstat("x/y/z")
    assert info is not None and stat.S_ISDIR(info.st_mode)


def test_mkdir_of_an_existing_directory_needs_exist_ok(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(PathExistsError):
        root.mkdir("sub")
    root.mkdir("sub", exist_ok=True)

    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


def test_mkdir_exist_ok_does_not_accept_a_file(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    outcome = tree.run_op(lambda: root.mkdir("a.txt", exist_ok=True))

    assert outcome.kind == "refused", outcome.describe()


@pytest.mark.parametrize("link_target", ["../outside/odir", "{OUTSIDE}/odir"])
@pytest.mark.parametrize("policy", POLICIES)
def test_mkdir_exist_ok_does_not_accept_a_link_to_an_outside_directory(
    tree: CaseTree, open_root: OpenRoot, policy: str, link_target: str
) -> None:
    build_basic(tree, symlink("odirlink", link_target))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.mkdir("odirlink", exist_ok=True))

    assert outcome.kind == "refused", outcome.describe()


@pytest.mark.parametrize("policy", POLICIES)
def test_mkdir_parents_never_builds_through_a_link_out(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build_basic(tree, symlink("odirlink", "../outside/odir"))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.mkdir("odirlink/x/y", parents=True))

    assert outcome.kind == "refused", outcome.describe()


# remove and remove_tree -------------------------------------------------------


def test_remove_deletes_a_file(tree: CaseTree, open_root: OpenRoot) -> None:
    build_basic(tree)
    root = open_root()

    root.remove("a.txt")

    assert tree.lstat("a.txt") is None


def test_remove_deletes_an_empty_directory(tree: CaseTree, open_root: OpenRoot) -> None:
    build_basic(tree, {"path": "empty", "type": "dir"})
    root = open_root()

    root.remove("empty")

    assert tree.lstat("empty") is None


def test_remove_of_a_non_empty_directory_is_refused(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(DirectoryNotEmptyError):
        root.remove("sub")

    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


def test_remove_of_a_missing_name_is_not_found(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
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
    build_basic(tree, symlink("lnk", target))
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
    build_basic(
        tree,
        {"path": "emptyin", "type": "dir"},
        symlink("inlink", "emptyin"),
        {"path": "emptyo", "type": "dir", "outside": True},
        symlink("outlink", "../outside/emptyo"),
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
    build_basic(tree)
    root = open_root()

    removed = tree.run_op(lambda: root.remove(spelling))
    removed_tree = tree.run_op(lambda: root.remove_tree(spelling))

    assert removed.kind == "refused", removed.describe()
    assert removed_tree.kind == "refused", removed_tree.describe()
    assert tree.root_path.is_dir()


def test_remove_tree_removes_a_nested_tree(tree: CaseTree, open_root: OpenRoot) -> None:
    build_basic(
        tree, {"path": "sub/pipe", "type": "fifo"}, symlink("sub/deep/l", "../b.txt")
    )
    root = open_root()

    outcome = tree.run_op(lambda: root.remove_tree("sub"))

    assert outcome.kind == "ok", outcome.describe()
    assert tree.lstat("sub") is None
    assert tree.read_file("a.txt") == b"inside:a.txt"


@pytest.mark.parametrize(
    "target", ["../../outside/odir", "{OUTSIDE}/odir", "../../keep"]
)
@pytest.mark.parametrize("policy", POLICIES)
def test_remove_tree_never_descends_a_symlink(
    tree: CaseTree, open_root: OpenRoot, policy: str, target: str
) -> None:
    build_basic(
        tree,
        {"path": "keep/k.txt", "type": "file"},
        symlink("sub/deep/lnk", target),
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
    build_basic(tree, symlink("odirlink", "../outside/odir"), symlink("indir", "sub"))
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        outside = tree.run_op(lambda: root.remove_tree("odirlink"))
        inside = tree.run_op(lambda: root.remove_tree("indir"))

    assert outside.kind in ("ok", "refused"), outside.describe()
    assert inside.kind in ("ok", "refused"), inside.describe()
    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


@pytest.mark.parametrize("spelling", ["a.txt/", "a.txt/.", "indir/"])
@pytest.mark.parametrize("policy", POLICIES)
def test_remove_tree_with_a_trailing_slash_leaves_a_non_directory_alone(
    tree: CaseTree, open_root: OpenRoot, policy: str, spelling: str
) -> None:
    """A trailing '/' names a folder, as for `remove` (found by fuzz_model, #7)."""
    build_basic(tree, symlink("indir", "sub"))
    root = open_root(symlinks=policy)
    inside_before = tree.snapshot(outside=False)

    with pytest.raises(NotADirectoryPathError):
        root.remove_tree(spelling)

    assert tree.snapshot(outside=False) == inside_before


def test_remove_tree_handles_a_tree_deeper_than_path_max(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    """Twenty 250-byte levels: only a descriptor-based walk can remove them."""
    build_basic(tree)
    deep = "/".join(["d" * 250] * 20)
    tree.add({"path": deep + "/leaf.txt", "type": "file"})
    root = open_root()

    outcome = tree.run_op(lambda: root.remove_tree("d" * 250))

    assert outcome.kind == "ok", outcome.describe()
    assert tree.lstat("d" * 250) is None


def test_remove_tree_of_a_missing_name_is_not_found(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.remove_tree("nope")


# rename -------------------------------------------------------------------------


def test_rename_moves_a_file(tree: CaseTree, open_root: OpenRoot) -> None:
    build_basic(tree)
    root = open_root()

    root.rename("a.txt", "sub/deep/a2.txt")

    assert tree.lstat("a.txt") is None
    assert tree.read_file("sub/deep/a2.txt") == b"inside:a.txt"


def test_rename_refuses_an_existing_destination_without_overwrite(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(PathExistsError):
        root.rename("a.txt", "sub/b.txt")

    assert tree.read_file("a.txt") == b"inside:a.txt"
    assert tree.read_file("sub/b.txt") == b"inside:sub/b.txt"


def test_rename_with_overwrite_replaces_the_destination(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    root.rename("a.txt", "sub/b.txt", overwrite=True)

    assert tree.lstat("a.txt") is None
    assert tree.read_file("sub/b.txt") == b"inside:a.txt"


@pytest.mark.parametrize("policy", POLICIES)
def test_rename_moves_a_symlink_itself(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build_basic(tree, symlink("outlink", "../outside/secret.txt"))
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
    build_basic(
        tree,
        symlink("outlink", "../outside/secret.txt"),
        symlink("dangling", "../outside/created.txt"),
        symlink("abslink", "{OUTSIDE}/secret.txt"),
    )
    root = open_root(symlinks=policy)

    with tree.guard_outside():
        root.rename("a.txt", dest, overwrite=True)

    assert tree.read_file(dest) == b"inside:a.txt"


@pytest.mark.parametrize("policy", POLICIES)
def test_rename_without_overwrite_refuses_a_dangling_destination_symlink(
    tree: CaseTree, open_root: OpenRoot, policy: str
) -> None:
    build_basic(tree, symlink("dangling", "../outside/created.txt"))
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
    build_basic(tree, symlink("odirlink", "../outside/odir"))
    root = open_root(symlinks=policy)
    inside_before = tree.snapshot(outside=False)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: root.rename(src, dst))

    assert outcome.kind == "refused", outcome.describe()
    assert tree.snapshot(outside=False) == inside_before


def test_rename_of_a_directory_into_itself_is_refused(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    outcome = tree.run_op(lambda: root.rename("sub", "sub/deep/sub"))

    assert outcome.kind == "refused", outcome.describe()
    assert tree.lstat("sub/deep/c.txt") is not None


def test_rename_of_a_missing_source_is_not_found(
    tree: CaseTree, open_root: OpenRoot
) -> None:
    build_basic(tree)
    root = open_root()

    with pytest.raises(PathNotFoundError):
        root.rename("nope.txt", "x.txt")

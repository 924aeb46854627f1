"""Sweeping what killed writes left: stale staging names go, nothing else does.

A process killed mid-upload leaves its hidden temporary file (`.~sr-` and 24 hex
digits), and one killed mid-import leaves a whole staging folder
(`.~sr-import-` and 24 hex digits). `Root.remove_staging_leftovers`
removes those that nothing has touched for the grace period, anywhere beneath the
root, and must never follow a link out of it, remove a user's file, or disturb a
write still in progress.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from confine_harness import CaseTree

from strongroom.confine import STAGING_PREFIX, Root
from strongroom.confine._names import new_staging_name

GRACE_SECONDS = 3600.0
STALE = time.time() - 2 * GRACE_SECONDS


def _age(path: Path) -> None:
    os.utime(path, (STALE, STALE), follow_symlinks=False)


def _plant(root: Path, rel_path: str, *, stale: bool, folder: bool = False) -> Path:
    path = root / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        path.mkdir()
        (path / "member.bin").write_bytes(b"staged")
        if stale:
            _age(path / "member.bin")
    else:
        path.write_bytes(b"half an upload")
    if stale:
        _age(path)
    return path


def test_stale_staging_names_are_removed_and_nothing_else(
    tree: CaseTree, open_root: Callable[..., Root]
) -> None:
    top = tree.root_path
    stale_file, deep_file = new_staging_name("file"), new_staging_name("file")
    stale_import = new_staging_name("folder")
    _plant(top, stale_file, stale=True)
    _plant(top, f"deep/er/{deep_file}", stale=True)
    _plant(top, stale_import, stale=True, folder=True)
    fresh_file = _plant(top, new_staging_name("file"), stale=False)
    fresh_import = _plant(top, new_staging_name("folder"), stale=True, folder=True)
    os.utime(fresh_import / "member.bin")  # an import still unpacking into it
    user_file = _plant(top, "notes.txt", stale=True)
    outside_leftover = _plant(tree.outside_path, new_staging_name("file"), stale=True)
    (top / "out").symlink_to(tree.outside_path)

    removed = open_root().remove_staging_leftovers(GRACE_SECONDS)

    assert sorted(removed) == sorted([stale_file, f"deep/er/{deep_file}", stale_import])
    assert not (top / stale_import).exists()
    for kept in (fresh_file, fresh_import / "member.bin", user_file, outside_leftover):
        assert kept.exists(), kept
    assert (top / "deep/er").is_dir()


# Names under the reserved prefix that the service never makes, or of the wrong
# kind: an admin's own file, a folder named like an import's but not made by one,
# a temporary file's name on a folder, an import folder's name on a file.
NOT_OURS = [
    (f"{STAGING_PREFIX}admin-notes.txt", False),
    (f"deep/er/{STAGING_PREFIX}up-handmade", False),
    (f"{STAGING_PREFIX}import-old", True),
    (f"{STAGING_PREFIX}{'0' * 23}", False),
    (f"{STAGING_PREFIX}{'A' * 24}", False),
    (new_staging_name("file"), True),
    (new_staging_name("folder"), False),
]


@pytest.mark.parametrize(("rel_path", "folder"), NOT_OURS,
                         ids=[path for path, _ in NOT_OURS])
def test_reserved_names_the_service_did_not_make_are_never_removed(
    tree: CaseTree, open_root: Callable[..., Root], rel_path: str, folder: bool
) -> None:
    planted = _plant(tree.root_path, rel_path, stale=True, folder=folder)

    removed = open_root().remove_staging_leftovers(GRACE_SECONDS)

    assert removed == []
    assert planted.exists()


def test_a_link_with_a_staging_name_is_left_alone_and_never_followed(
    tree: CaseTree, open_root: Callable[..., Root]
) -> None:
    victim = tree.outside_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_bytes(b"outside")
    link = tree.root_path / new_staging_name("folder")
    link.symlink_to(victim)
    _age(link)

    removed = open_root().remove_staging_leftovers(GRACE_SECONDS)

    assert removed == []
    assert os.path.islink(link)
    assert (victim / "keep.txt").read_bytes() == b"outside"

"""Sweeping what killed writes left: stale staging names go, nothing else does.

A process killed mid-upload leaves its hidden temporary file (`.~sr-…`), and one
killed mid-import leaves a whole staging folder. `Root.remove_staging_leftovers`
removes those that nothing has touched for the grace period, anywhere beneath the
root, and must never follow a link out of it, remove a user's file, or disturb a
write still in progress.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from confine_harness import CaseTree

from strongroom.confine import STAGING_PREFIX, Root

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
    _plant(top, f"{STAGING_PREFIX}0a1b2c", stale=True)
    _plant(top, f"deep/er/{STAGING_PREFIX}3d4e5f", stale=True)
    _plant(top, f"{STAGING_PREFIX}import-aa", stale=True, folder=True)
    fresh_file = _plant(top, f"{STAGING_PREFIX}fresh", stale=False)
    fresh_import = _plant(top, f"{STAGING_PREFIX}import-bb", stale=True, folder=True)
    os.utime(fresh_import / "member.bin")  # an import still unpacking into it
    user_file = _plant(top, "notes.txt", stale=True)
    outside_leftover = _plant(tree.outside_path, f"{STAGING_PREFIX}victim", stale=True)
    (top / "out").symlink_to(tree.outside_path)

    removed = open_root().remove_staging_leftovers(GRACE_SECONDS)

    assert sorted(removed) == sorted([
        f"{STAGING_PREFIX}0a1b2c", f"deep/er/{STAGING_PREFIX}3d4e5f",
        f"{STAGING_PREFIX}import-aa",
    ])
    assert not (top / f"{STAGING_PREFIX}import-aa").exists()
    for kept in (fresh_file, fresh_import / "member.bin", user_file, outside_leftover):
        assert kept.exists(), kept
    assert (top / "deep/er").is_dir()


def test_a_staging_link_is_removed_as_a_link_never_followed(
    tree: CaseTree, open_root: Callable[..., Root]
) -> None:
    victim = tree.outside_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_bytes(b"outside")
    link = tree.root_path / f"{STAGING_PREFIX}planted"
    link.symlink_to(victim)
    _age(link)

    removed = open_root().remove_staging_leftovers(GRACE_SECONDS)

    assert removed == [f"{STAGING_PREFIX}planted"]
    assert not os.path.lexists(link)
    assert (victim / "keep.txt").read_bytes() == b"outside"

"""An import killed while publishing is finished at the next start, whatever the moment.

Publishing into a folder the space already has takes one rename per member, so a
kill between two renames leaves part of the archive in place. Each test here kills
a real import process (`kill_mid_import.py`, which dies like SIGKILL) before each
rename in turn, then runs what start-up runs (`finish_interrupted_imports`) and
compares the whole tree with what an import that was never interrupted leaves.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from api.case_bodies import plain_tar
from strongroom.confine import Root
from strongroom.confine._names import STAGING_PREFIX
from strongroom.storage.imports import finish_interrupted_imports, import_archive
from strongroom.storage.spaces import DirectorySpace

HELPER = Path(__file__).with_name("kill_mid_import.py")
KILLED = 137
RESOLVERS = ["openat2", "walk"]

# Merged into the space's existing `docs` (one replace, two creates, a new folder
# that moves over whole) and, in a second test, into folders that do not exist yet.
MEMBERS = {
    "docs/a.txt": b"new a",
    "docs/b.txt": b"new b",
    "docs/deep/c.txt": b"new c",
    "docs/deep/more/d.txt": b"new d",
    "docs/z.txt": b"new z",
    "top.txt": b"new top",
}


def seed(space_dir: Path) -> None:
    (space_dir / "docs").mkdir()
    (space_dir / "docs" / "a.txt").write_bytes(b"old a")
    (space_dir / "docs" / "keep.txt").write_bytes(b"kept")
    (space_dir / "top.txt").write_bytes(b"old top")


def snapshot(top: Path) -> dict[str, bytes | None]:
    """Every entry beneath `top`: file contents, None for a folder."""
    found: dict[str, bytes | None] = {}
    for path in sorted(top.rglob("*")):
        rel = path.relative_to(top).as_posix()
        found[rel] = None if path.is_dir() else path.read_bytes()
    return found


def visible(top: Path) -> dict[str, bytes | None]:
    """`snapshot` without the hidden staging names."""
    return {rel: data for rel, data in snapshot(top).items()
            if not rel.startswith(STAGING_PREFIX)}


def expected_after_import(
    tmp_path: Path, archive: Path, import_dir: str, overwrite: bool
) -> dict[str, bytes | None]:
    clean = tmp_path / "uninterrupted"
    clean.mkdir()
    seed(clean)
    with Root(clean) as root, archive.open("rb") as body:
        space = DirectorySpace("lab", root, writable=True)
        report = import_archive(space, body, archive.stat().st_size, import_dir,
                                overwrite=overwrite)
    assert report.outcome == "imported", report.detail
    return snapshot(clean)


def run_killed(space_dir: Path, archive: Path, import_dir: str, overwrite: bool,
               resolver: str, when: str) -> int:
    done = subprocess.run(
        [sys.executable, str(HELPER), str(space_dir), str(archive), import_dir,
         "1" if overwrite else "0", resolver, when],
        capture_output=True, timeout=60, check=False,
    )
    assert done.returncode in (0, KILLED), done.stderr.decode()
    return done.returncode


def finish(space_dir: Path, resolver: str) -> list[str]:
    with Root(space_dir, resolver=resolver) as root:
        return finish_interrupted_imports(DirectorySpace("lab", root, writable=True))


@pytest.mark.parametrize("resolver", RESOLVERS)
@pytest.mark.parametrize(("import_dir", "overwrite"),
                         [("", True), ("", False), ("new/inner", True)])
def test_a_kill_before_any_rename_of_publishing_is_finished_at_the_next_start(
    tmp_path: Path, resolver: str, import_dir: str, overwrite: bool
) -> None:
    archive = tmp_path / "in.tar"
    archive.write_bytes(plain_tar(MEMBERS))
    want = expected_after_import(tmp_path, archive, import_dir, overwrite)
    before = tmp_path / "before"
    before.mkdir()
    seed(before)
    untouched = snapshot(before)

    kill_points = 0
    for k in range(20):  # a kill before each rename or mkdir in turn
        space_dir = tmp_path / f"space{k}"
        space_dir.mkdir()
        seed(space_dir)
        if run_killed(space_dir, archive, import_dir, overwrite, resolver,
                      f"step:{k}") == 0:
            break  # the import needs fewer than k renames
        kill_points += 1
        assert visible(space_dir) != want  # the last rename, at least, is missing
        finished = finish(space_dir, resolver)

        assert len(finished) == 1, f"killed before step {k}"
        assert snapshot(space_dir) == want, f"killed before step {k}"
        assert finish(space_dir, resolver) == []  # nothing is left to finish
    assert kill_points >= 3  # each test kills before several different steps
    assert untouched != want


@pytest.mark.parametrize("resolver", RESOLVERS)
def test_a_kill_while_unpacking_leaves_the_space_as_it_was(
    tmp_path: Path, resolver: str
) -> None:
    archive = tmp_path / "in.tar"
    archive.write_bytes(plain_tar(MEMBERS))
    space_dir = tmp_path / "space"
    space_dir.mkdir()
    seed(space_dir)
    before = snapshot(space_dir)

    assert run_killed(space_dir, archive, "", True, resolver, "unpack") == KILLED
    assert finish(space_dir, resolver) == []

    # The stage stays hidden until the age-based sweep takes it; nothing changed.
    assert visible(space_dir) == before
    assert any(name.startswith(STAGING_PREFIX) for name in snapshot(space_dir))


def test_a_staging_folder_of_a_live_import_is_never_claimed(space_dir: Path) -> None:
    with Root(space_dir) as root:
        name, stage = root.make_staging_dir()
        try:
            stage.write_bytes("plan.json", b'{"version": 1, "steps": []}')
            assert root.claim_staging_dir(name) is None
            assert finish_interrupted_imports(
                DirectorySpace("lab", root, writable=True)) == []
            assert root.staging_dir_names() == [name]
        finally:
            stage.close()
        claimed = root.claim_staging_dir(name)
        assert claimed is not None
        claimed.close()


@pytest.mark.parametrize("journal", [
    b"not json", b"[]", b'{"version": 2, "steps": []}',
    b'{"version": 1, "steps": [["chmod", "a", "b"]]}',
    b'{"version": 1, "steps": [["create", "a"]]}',
])
def test_a_journal_that_is_not_ours_is_never_acted_on(
    space_dir: Path, journal: bytes
) -> None:
    (space_dir / "a").write_bytes(b"kept")
    with Root(space_dir) as root:
        name, stage = root.make_staging_dir()
        stage.write_bytes("plan.json", journal)
        stage.close()
        assert finish_interrupted_imports(
            DirectorySpace("lab", root, writable=True)) == []
        assert root.staging_dir_names() == [name]
    assert (space_dir / "a").read_bytes() == b"kept"


def test_a_journal_cannot_move_anything_out_of_the_space(tmp_path: Path) -> None:
    space_dir = tmp_path / "space"
    (space_dir / "docs").mkdir(parents=True)
    (space_dir / "docs" / "secret.txt").write_bytes(b"in the space")
    outside = tmp_path / "outside"
    outside.mkdir()
    steps = [["replace", "x", "../outside/stolen"], ["create", "../../etc", "x"],
             ["mkdir", "", "/tmp/abs"], ["replace", "docs", "docs/secret.txt"]]
    with Root(space_dir) as root:
        name, stage = root.make_staging_dir()
        stage.mkdir("m")
        stage.write_bytes("plan.json",
                          json.dumps({"version": 1, "steps": steps}).encode())
        stage.close()
        assert finish_interrupted_imports(
            DirectorySpace("lab", root, writable=True)) == [name]
    assert list(outside.iterdir()) == []
    assert not Path("/tmp/abs").exists()
    assert (space_dir / "docs" / "secret.txt").read_bytes() == b"in the space"

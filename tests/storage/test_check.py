"""`check_stores` finds every kind of mismatch, repairs only old orphans, and
marks damaged rows so that their files are refused, not served wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import DamagedContentError
from strongroom.storage import MetadataStore, open_metadata_store
from strongroom.storage.blobs import LocalBlobStore
from strongroom.storage.check import ORPHAN_GRACE_SECONDS, check_stores
from strongroom.storage.home import HomeSpace


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[MetadataStore, LocalBlobStore, Path]]:
    meta = open_metadata_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    blobs = LocalBlobStore.open_dir(tmp_path / "blobs")
    yield meta, blobs, tmp_path / "blobs"
    blobs.close()
    meta.close()


def store_file(meta: MetadataStore, blobs: LocalBlobStore, owner: int, name: str,
               data: bytes) -> str:
    info = blobs.write_blob([data])
    meta.put_file(owner, name, blob_id=info.blob_id, size=info.size,
                  sha256=info.sha256, content_type="text/plain")
    return info.blob_id


def blob_path(base: Path, blob_id: str) -> Path:
    return base / blob_id[:2] / blob_id[2:4] / blob_id


def age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def test_stores_that_agree_are_clean(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    meta, blobs, _ = stores
    owner = meta.add_user("alice", "x").id
    store_file(meta, blobs, owner, "a.txt", b"alpha")

    report = check_stores(meta, blobs)

    assert report.clean
    assert (report.rows, report.blobs) == (1, 1)


def test_every_kind_of_mismatch_is_found(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    meta, blobs, base = stores
    owner = meta.add_user("alice", "x").id
    missing = store_file(meta, blobs, owner, "missing.txt", b"gone")
    resized = store_file(meta, blobs, owner, "resized.txt", b"12345")
    altered = store_file(meta, blobs, owner, "altered.txt", b"abcde")
    orphan = blobs.write_blob([b"nobody's"]).blob_id
    blob_path(base, missing).unlink()
    blob_path(base, resized).write_bytes(b"123")
    blob_path(base, altered).write_bytes(b"ABCDE")

    report = check_stores(meta, blobs)

    assert sorted((f.kind, f.blob_id) for f in report.findings) == sorted([
        ("missing_blob", missing),
        ("size_mismatch", resized),
        ("hash_mismatch", altered),
        ("orphan_blob", orphan),
    ])


def test_repair_removes_only_orphans_past_the_grace_period(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    meta, blobs, base = stores
    owner = meta.add_user("alice", "x").id
    kept = store_file(meta, blobs, owner, "kept.txt", b"kept")
    old_orphan = blobs.write_blob([b"old"]).blob_id
    new_orphan = blobs.write_blob([b"new"]).blob_id
    age(blob_path(base, old_orphan), ORPHAN_GRACE_SECONDS + 60)
    age(blob_path(base, kept), ORPHAN_GRACE_SECONDS * 10)

    report = check_stores(meta, blobs, repair=True)

    assert report.removed == (old_orphan,)
    assert not blob_path(base, old_orphan).exists()
    assert blob_path(base, new_orphan).exists()
    assert blob_path(base, kept).read_bytes() == b"kept"


def damaged_home(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> tuple[HomeSpace, dict[str, str]]:
    """alice's home with one sound file and one of each kind of damage."""
    meta, blobs, base = stores
    owner = meta.add_user("alice", "x").id
    ids = {name: store_file(meta, blobs, owner, f"{name}.txt", b"abcde")
           for name in ("sound", "missing", "resized", "altered")}
    blob_path(base, ids["missing"]).unlink()
    blob_path(base, ids["resized"]).write_bytes(b"abc")
    blob_path(base, ids["altered"]).write_bytes(b"ABCDE")
    return HomeSpace(owner, meta, blobs), ids


def test_repair_marks_damaged_rows_and_their_files_are_refused(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    home, ids = damaged_home(stores)
    meta, blobs, _ = stores

    report = check_stores(meta, blobs, repair=True)

    damaged = [ids[n] for n in ("missing", "resized", "altered")]
    assert sorted(report.marked) == sorted(damaged)
    assert meta.damaged_blob_ids() == {
        ids["missing"]: "missing_blob", ids["resized"]: "size_mismatch",
        ids["altered"]: "hash_mismatch"}
    for name in ("missing", "resized", "altered"):
        with pytest.raises(DamagedContentError, match="upload it again"):
            home.open(f"{name}.txt")
    handle, _ = home.open("sound.txt")
    with handle:
        assert handle.read() == b"abcde"


def test_a_check_without_repair_marks_nothing(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    damaged_home(stores)
    meta, blobs, _ = stores

    report = check_stores(meta, blobs)

    assert len(report.findings) == 3 and report.marked == ()
    assert meta.damaged_blob_ids() == {}


def test_uploading_again_replaces_the_damage(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    home, _ = damaged_home(stores)
    meta, blobs, _ = stores
    check_stores(meta, blobs, repair=True)

    writer = home.writer("altered.txt", exclusive=False)
    writer.write(b"fresh")
    writer.commit()

    handle, _ = home.open("altered.txt")
    with handle:
        assert handle.read() == b"fresh"


def test_a_restored_blob_clears_its_mark_but_a_sizes_only_check_keeps_hash_marks(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    _, ids = damaged_home(stores)
    meta, blobs, base = stores
    check_stores(meta, blobs, repair=True)
    blob_path(base, ids["resized"]).write_bytes(b"abcde")
    blob_path(base, ids["altered"]).write_bytes(b"abcde")

    sizes_only = check_stores(meta, blobs, repair=True, verify_hashes=False)
    full = check_stores(meta, blobs, repair=True)

    assert sizes_only.cleared == (ids["resized"],)
    assert full.cleared == (ids["altered"],)
    assert meta.damaged_blob_ids() == {ids["missing"]: "missing_blob"}


def three_files(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> dict[str, str]:
    """alice's three sound files, by name."""
    meta, blobs, _ = stores
    owner = meta.add_user("alice", "x").id
    return {name: store_file(meta, blobs, owner, name, name.encode())
            for name in ("a.txt", "b.txt", "c.txt")}


def test_repair_against_an_empty_store_is_refused_and_changes_nothing(
    stores: tuple[MetadataStore, LocalBlobStore, Path], tmp_path: Path
) -> None:
    """A mistyped store URL: an empty folder where every blob seems missing."""
    meta, _, _ = stores
    three_files(stores)
    wrong = LocalBlobStore.open_dir(tmp_path / "blob")

    report = check_stores(meta, wrong, repair=True)
    wrong.close()

    assert report.refused == (
        "3 of 3 rows have no blob in the store, which holds 0 blobs")
    assert report.marked == () and meta.damaged_blob_ids() == {}
    assert [f.kind for f in report.findings] == ["missing_blob"] * 3


def test_repair_is_refused_when_most_rows_have_no_blob(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    meta, blobs, base = stores
    ids = three_files(stores)
    for name in ("a.txt", "b.txt"):
        blob_path(base, ids[name]).unlink()

    refused = check_stores(meta, blobs, repair=True)
    forced = check_stores(meta, blobs, repair=True, force=True)

    assert refused.refused is not None and refused.marked == ()
    assert forced.refused is None
    assert sorted(forced.marked) == sorted([ids["a.txt"], ids["b.txt"]])


def test_repair_refuses_to_remove_most_of_a_store_as_orphans(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    """Another service's store (or a fresh database): nearly every blob unknown."""
    meta, blobs, base = stores
    three_files(stores)
    others = [blobs.write_blob([b"not ours %d" % i]).blob_id for i in range(4)]
    for blob_id in others:
        age(blob_path(base, blob_id), ORPHAN_GRACE_SECONDS + 60)

    report = check_stores(meta, blobs, repair=True)

    assert report.refused == (
        "4 of the store's 7 blobs have no row and would be removed as orphans")
    assert report.removed == ()
    assert all(blob_path(base, blob_id).exists() for blob_id in others)


def test_a_mark_whose_blob_is_sound_is_a_finding_until_repair_clears_it(
    stores: tuple[MetadataStore, LocalBlobStore, Path], tmp_path: Path
) -> None:
    """A forced repair against the wrong store marked every row; a check of the
    right store must not then call it clean while downloads answer 410."""
    meta, blobs, _ = stores
    ids = three_files(stores)
    wrong = LocalBlobStore.open_dir(tmp_path / "blob")
    check_stores(meta, wrong, repair=True, force=True)
    wrong.close()

    plain = check_stores(meta, blobs)
    repaired = check_stores(meta, blobs, repair=True)
    after = check_stores(meta, blobs)

    assert sorted((f.kind, f.blob_id) for f in plain.findings) == sorted(
        ("marked_damaged", blob_id) for blob_id in ids.values())
    assert "`strongroom check --repair` clears the mark" in plain.findings[0].detail
    assert plain.damaged == 3 and not plain.clean
    assert sorted(repaired.cleared) == sorted(ids.values())
    assert after.clean and after.damaged == 0


def test_a_sizes_only_check_still_reports_a_hash_mark(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    _, ids = damaged_home(stores)
    meta, blobs, base = stores
    check_stores(meta, blobs, repair=True)
    blob_path(base, ids["altered"]).write_bytes(b"abcde")

    report = check_stores(meta, blobs, verify_hashes=False)

    stale = [f for f in report.findings if f.kind == "marked_damaged"]
    assert [f.blob_id for f in stale] == [ids["altered"]]
    assert "a check with hashes" in stale[0].detail


def test_a_stray_file_is_reported_and_never_claimed_removed(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    meta, blobs, base = stores
    three_files(stores)
    stray_id = "1234" + "5" * 28
    stray = base / "aa" / "bb" / stray_id
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"misplaced")
    age(stray, ORPHAN_GRACE_SECONDS * 10)

    first = check_stores(meta, blobs, repair=True)
    second = check_stores(meta, blobs, repair=True)

    for report in (first, second):
        assert report.removed == ()
        assert [(f.kind, f.blob_id) for f in report.findings] == [
            ("stray_file", stray_id)]
        assert f"aa/bb/{stray_id}" in report.findings[0].detail
    assert stray.read_bytes() == b"misplaced"


def test_links_fifos_and_devices_in_the_store_are_reported_and_left(
    stores: tuple[MetadataStore, LocalBlobStore, Path], tmp_path: Path,
) -> None:
    meta, blobs, base = stores
    three_files(stores)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not a blob")
    fifo_id, link_id = "eeee" + "0" * 28, "eeee" + "1" * 28
    shard = base / "ee" / "ee"
    shard.mkdir(parents=True)
    os.mkfifo(shard / fifo_id)
    os.symlink(outside, shard / link_id)
    os.mkfifo(base / "top-fifo")
    os.symlink(tmp_path, base / "ff")  # a "shard folder" that is a link

    report = check_stores(meta, blobs, repair=True)

    assert sorted((f.kind, f.blob_id, f.detail.split(",")[0])
                  for f in report.findings) == [
        ("stray_file", fifo_id, f"a FIFO at ee/ee/{fifo_id}"),
        ("stray_file", link_id, f"a symbolic link at ee/ee/{link_id}"),
        ("stray_file", "ff", "a symbolic link at ff"),
        ("stray_file", "top-fifo", "a FIFO at top-fifo"),
    ]
    assert report.removed == ()
    assert outside.read_bytes() == b"not a blob"
    assert os.path.islink(shard / link_id) and os.path.islink(base / "ff")


# A process that dies while writing a batch blob (as an import writes them, under
# their ids from the first byte), as SIGKILL would leave it: no commit, no abort.
DIES_MID_BLOB = """
import os, sys
from strongroom.storage.blobs import LocalBlobStore
writer = LocalBlobStore.open_dir(sys.argv[1]).create_blob(durable=False)
writer.write(b"half of a blob")
print(writer.blob_id, flush=True)
os._exit(0)
"""


def test_a_batch_blob_left_half_written_is_an_orphan_that_repair_removes(
    stores: tuple[MetadataStore, LocalBlobStore, Path],
) -> None:
    meta, blobs, base = stores
    owner = meta.add_user("alice", "x").id
    kept = store_file(meta, blobs, owner, "kept.txt", b"kept")
    age(blob_path(base, kept), ORPHAN_GRACE_SECONDS * 10)
    done = subprocess.run([sys.executable, "-c", DIES_MID_BLOB, str(base)],
                          capture_output=True, text=True, check=True, timeout=60)
    half = done.stdout.strip()
    assert blob_path(base, half).read_bytes() == b"half of a blob"

    found = check_stores(meta, blobs)
    age(blob_path(base, half), ORPHAN_GRACE_SECONDS + 60)
    repaired = check_stores(meta, blobs, repair=True)

    assert [(f.kind, f.blob_id) for f in found.findings] == [("orphan_blob", half)]
    assert repaired.removed == (half,)
    assert not blob_path(base, half).exists()
    assert blob_path(base, kept).read_bytes() == b"kept"

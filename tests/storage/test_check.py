"""`check_stores` finds every kind of mismatch and repairs only old orphans."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.storage import MetadataStore, open_metadata_store
from strongroom.storage.blobs import LocalBlobStore
from strongroom.storage.check import ORPHAN_GRACE_SECONDS, check_stores


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

"""Staging files left by a crashed writer are cleaned when the store opens."""

from __future__ import annotations

import os
import time
from pathlib import Path

from strongroom.confine._names import new_staging_name
from strongroom.storage.blobs import STALE_STAGING_SECONDS, LocalBlobStore


def plant_staging(base: Path, age_s: float) -> Path:
    shard = base / "ab" / "cd"
    shard.mkdir(parents=True, exist_ok=True)
    path = shard / new_staging_name("file")
    path.write_bytes(b"half-written")
    old = time.time() - age_s
    os.utime(path, (old, old))
    return path


def test_opening_the_store_removes_staging_files_older_than_the_limit(
    tmp_path: Path,
) -> None:
    stale = plant_staging(tmp_path, STALE_STAGING_SECONDS + 60)

    LocalBlobStore.open_dir(tmp_path).close()

    assert not stale.exists()


def test_a_store_opened_without_sweep_changes_nothing(tmp_path: Path) -> None:
    """What `check` and a migration's source do: only look."""
    stale = plant_staging(tmp_path, STALE_STAGING_SECONDS + 60)

    LocalBlobStore.open_dir(tmp_path, create=False, sweep=False).close()

    assert stale.exists()


def test_a_recent_staging_file_of_a_live_writer_is_kept(tmp_path: Path) -> None:
    fresh = plant_staging(tmp_path, 5)

    LocalBlobStore.open_dir(tmp_path).close()

    assert fresh.exists()


def test_blobs_themselves_are_never_touched(tmp_path: Path) -> None:
    store = LocalBlobStore.open_dir(tmp_path)
    info = store.write_blob([b"kept"])
    store.close()
    old = time.time() - STALE_STAGING_SECONDS * 2
    for path in tmp_path.rglob(info.blob_id):
        os.utime(path, (old, old))

    reopened = LocalBlobStore.open_dir(tmp_path)

    with reopened.open_blob(info.blob_id) as handle:
        assert handle.read() == b"kept"
    reopened.close()

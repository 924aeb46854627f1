"""The local blob store, on a real directory through a real confined root."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import (
    ConfigError,
    LimitExceededError,
    PathNotFoundError,
    StorageError,
)
from strongroom.storage.blobs import (
    PARALLEL_HASH_BYTES,
    BlobStore,
    LocalBlobStore,
    new_blob_id,
)


@pytest.fixture(params=["auto", "walk"])
def blob_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where blobs go; `request.param` picks the resolver (openat2 or the walk)."""
    return tmp_path / "data" / "blobs"


@pytest.fixture
def blobs(request: pytest.FixtureRequest, blob_dir: Path) -> Iterator[LocalBlobStore]:
    resolver = request.node.callspec.params["blob_dir"]
    store = LocalBlobStore.open_dir(blob_dir, resolver=resolver)
    yield store
    store.close()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def test_local_blob_store_satisfies_the_protocol(blobs: LocalBlobStore) -> None:
    store: BlobStore = blobs

    assert store is blobs


def test_open_dir_creates_a_private_folder(
    blobs: LocalBlobStore, blob_dir: Path
) -> None:
    assert stat.S_IMODE(blob_dir.stat().st_mode) == 0o700


def test_write_blob_stores_the_bytes_under_a_sharded_random_name(
    blobs: LocalBlobStore, blob_dir: Path
) -> None:
    info = blobs.write_blob([b"hello ", b"world"])

    assert len(info.blob_id) == 32 and int(info.blob_id, 16) >= 0
    on_disk = blob_dir / info.blob_id[:2] / info.blob_id[2:4] / info.blob_id
    assert on_disk.read_bytes() == b"hello world"
    assert files_under(blob_dir) == [on_disk]


def test_write_blob_computes_size_and_sha256_while_streaming(
    blobs: LocalBlobStore,
) -> None:
    chunks = [os.urandom(size) for size in (0, 1, 65536, 100_003)]

    info = blobs.write_blob(chunks)

    joined = b"".join(chunks)
    assert info.size == len(joined)
    assert info.sha256 == hashlib.sha256(joined).hexdigest()


def test_open_blob_returns_a_handle_on_the_content(blobs: LocalBlobStore) -> None:
    info = blobs.write_blob([b"0123456789"])

    with blobs.open_blob(info.blob_id) as handle:
        assert handle.entry.size == 10
        assert handle.pread(4, 3) == b"3456"
        assert handle.read() == b"0123456789"


def test_blob_ids_are_new_each_time(blobs: LocalBlobStore) -> None:
    ids = {blobs.write_blob([b"same"]).blob_id for _ in range(20)}

    assert len(ids) == 20


def test_writer_over_the_limit_raises_and_leaves_nothing(
    blobs: LocalBlobStore, blob_dir: Path
) -> None:
    with pytest.raises(LimitExceededError, match="max_upload_bytes"):
        blobs.write_blob([b"x" * 6, b"y" * 5], max_bytes=10)

    assert files_under(blob_dir) == []


class FailingHash:
    """A SHA-256 whose second update fails, as a MemoryError there would."""

    def __init__(self) -> None:
        self._real = hashlib.sha256()
        self.updates = 0

    def update(self, data: bytes) -> None:
        self.updates += 1
        if self.updates == 2:
            raise MemoryError("no room to hash")
        self._real.update(data)

    def hexdigest(self) -> str:
        return self._real.hexdigest()


def test_a_hash_that_fails_on_its_thread_fails_the_write_and_leaves_nothing(
    blobs: LocalBlobStore, blob_dir: Path
) -> None:
    big = os.urandom(PARALLEL_HASH_BYTES)  # hashed on a thread of its own
    writer = blobs.create_blob()
    writer._hash = FailingHash()  # type: ignore[assignment]
    writer.write(big)

    with pytest.raises(StorageError, match="could not be hashed"):
        writer.write(big)

    writer.abort()
    assert files_under(blob_dir) == []


def test_writer_at_exactly_the_limit_is_kept(blobs: LocalBlobStore) -> None:
    info = blobs.write_blob([b"x" * 6, b"y" * 4], max_bytes=10)

    assert info.size == 10


def test_writer_left_without_commit_leaves_nothing(
    blobs: LocalBlobStore, blob_dir: Path
) -> None:
    with blobs.create_blob() as writer:
        writer.write(b"half an upload")

    assert files_under(blob_dir) == []
    with pytest.raises(PathNotFoundError):
        blobs.open_blob(writer.blob_id)


def test_writer_that_raises_mid_stream_leaves_nothing(
    blobs: LocalBlobStore, blob_dir: Path
) -> None:
    def broken_upload() -> Iterator[bytes]:
        yield b"first chunk"
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        blobs.write_blob(broken_upload())

    assert files_under(blob_dir) == []


def test_nothing_is_visible_under_the_id_before_commit(
    blobs: LocalBlobStore,
) -> None:
    with blobs.create_blob() as writer:
        writer.write(b"pending")
        with pytest.raises(PathNotFoundError):
            blobs.open_blob(writer.blob_id)
        info = writer.commit()

    with blobs.open_blob(info.blob_id) as handle:
        assert handle.read() == b"pending"


def test_delete_blob_removes_it(blobs: LocalBlobStore, blob_dir: Path) -> None:
    info = blobs.write_blob([b"bye"])

    blobs.delete_blob(info.blob_id)

    assert files_under(blob_dir) == []


def test_delete_blob_of_a_missing_blob_is_quiet(blobs: LocalBlobStore) -> None:
    blobs.delete_blob(new_blob_id())


def test_open_blob_of_a_missing_blob_raises_not_found(blobs: LocalBlobStore) -> None:
    with pytest.raises(PathNotFoundError, match="the blob is gone"):
        blobs.open_blob(new_blob_id())


@pytest.mark.parametrize(
    "blob_id",
    ["../../etc/passwd", "ab/cd/" + "0" * 26, "A" * 32, "0" * 31, "0" * 33, ""],
    ids=["traversal", "path", "upper", "short", "long", "empty"],
)
def test_malformed_blob_ids_never_become_paths(
    blobs: LocalBlobStore, blob_id: str
) -> None:
    with pytest.raises(StorageError, match="malformed"):
        blobs.open_blob(blob_id)
    with pytest.raises(StorageError, match="malformed"):
        blobs.delete_blob(blob_id)


def test_a_symlinked_shard_is_refused_not_followed(
    blobs: LocalBlobStore, blob_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    (outside / "cd").mkdir(parents=True)
    blob_id = "abcd" + "0" * 28
    (outside / "cd" / blob_id).write_bytes(b"OUTSIDE-SECRET")
    (blob_dir / "ab").symlink_to(outside)

    with pytest.raises(StorageError):
        blobs.open_blob(blob_id)
    with pytest.raises(StorageError):
        blobs.delete_blob(blob_id)

    assert (outside / "cd" / blob_id).read_bytes() == b"OUTSIDE-SECRET"


def blob_file(blob_dir: Path, blob_id: str) -> Path:
    return blob_dir / blob_id[:2] / blob_id[2:4] / blob_id


def test_a_blob_with_a_second_hard_link_is_served(
    blobs: LocalBlobStore, blob_dir: Path, tmp_path: Path
) -> None:
    """A hard-link backup (cp -al, rsnapshot) gives every blob a second link."""
    info = blobs.write_blob([b"backed up"])
    snapshot = tmp_path / "snap"
    shutil.copytree(blob_dir, snapshot, copy_function=os.link)
    assert blob_file(blob_dir, info.blob_id).stat().st_nlink == 2

    with blobs.open_blob(info.blob_id) as handle:
        assert handle.read() == b"backed up"
    assert [b for b, _, _ in blobs.blob_ids()] == [info.blob_id]


def test_a_symlink_or_fifo_in_place_of_a_blob_is_still_refused(
    blobs: LocalBlobStore, blob_dir: Path, tmp_path: Path
) -> None:
    linked, fifo = blobs.write_blob([b"a"]).blob_id, blobs.write_blob([b"b"]).blob_id
    outside = tmp_path / "outside"
    outside.write_bytes(b"OUTSIDE-SECRET")
    blob_file(blob_dir, linked).unlink()
    blob_file(blob_dir, linked).symlink_to(outside)
    blob_file(blob_dir, fifo).unlink()
    os.mkfifo(blob_file(blob_dir, fifo))

    for blob_id in (linked, fifo):
        with pytest.raises(StorageError, match="cannot be read"):
            blobs.open_blob(blob_id)
    assert list(blobs.blob_ids()) == []


def test_open_dir_without_create_refuses_a_missing_folder_and_makes_none(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "data" / "blob"

    with pytest.raises(ConfigError, match="does not exist and was not created"):
        LocalBlobStore.open_dir(missing, create=False)

    assert not (tmp_path / "data").exists()


def test_a_blob_named_file_in_the_wrong_shard_is_a_stray_not_a_blob(
    blobs: LocalBlobStore, blob_dir: Path
) -> None:
    stray_id = "1234" + "5" * 28
    (blob_dir / "aa" / "bb").mkdir(parents=True)
    (blob_dir / "aa" / "bb" / stray_id).write_bytes(b"misplaced")

    assert list(blobs.blob_ids()) == []
    assert list(blobs.stray_files()) == [(stray_id, f"aa/bb/{stray_id}", "file")]


def test_identity_is_the_folder_however_it_is_reached(
    blobs: LocalBlobStore, blob_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "link").symlink_to(blob_dir)
    other = LocalBlobStore.open_dir(tmp_path / "other")
    spellings = [f"{blob_dir}/", str(tmp_path / "link"), f"{tmp_path}/data/./blobs"]
    same = [LocalBlobStore.open_dir(path, create=False) for path in spellings]
    try:
        assert {store.identity() for store in same} == {blobs.identity()}
        assert other.identity() != blobs.identity()
    finally:
        for store in (*same, other):
            store.close()


def test_concurrent_writers_share_shard_folders(blobs: LocalBlobStore) -> None:
    """Two writers may create the same 'ab/cd' folders at once."""
    written: list[str] = []
    failures: list[BaseException] = []

    def write_many() -> None:
        try:
            for _ in range(50):
                written.append(blobs.write_blob([b"x"]).blob_id)
        except BaseException as exc:  # collected, then asserted on
            failures.append(exc)

    threads = [threading.Thread(target=write_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    for blob_id in written:
        with blobs.open_blob(blob_id) as handle:
            assert handle.read() == b"x"

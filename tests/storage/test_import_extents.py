"""A plain tar in a real file: member data copied by the kernel, and its edges.

An import of a plain tar hands each member's data on as extents of the archive
file, and a writer on local disk copies them with copy_file_range(2) (a home
hashes the same range on a second thread). These tests import from real files
into a real directory space and a real home, and check the bytes and hashes
that arrive, the fallback when the kernel will not copy between two file
systems, archives that end before their members do, the member limit, and
progress as a large member is copied.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.errors import InsufficientStorageError, StorageError
from strongroom.storage import open_metadata_store
from strongroom.storage._unpack import EXTENT_BYTES
from strongroom.storage.blobs import LocalBlobStore
from strongroom.storage.home import HomeSpace
from strongroom.storage.imports import (
    KERNEL_COPY_BYTES,
    ImportLimits,
    ImportProgress,
    ImportReport,
    import_archive,
)
from strongroom.storage.spaces import DirectorySpace, Space

MIB = 1024**2
SHM = Path("/dev/shm")


@pytest.fixture
def blobs_dir(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture(params=["directory", "home"])
def target(
    request: pytest.FixtureRequest, space: DirectorySpace, tmp_path: Path,
    blobs_dir: Path,
) -> Iterator[Space]:
    """Each writable kind of space in turn (a home on SQLite: the rows are
    not what these tests are about)."""
    if request.param == "directory":
        yield space
        return
    store = open_metadata_store(f"sqlite:///{tmp_path}/metadata.db")
    blobs = LocalBlobStore.open_dir(blobs_dir)
    try:
        yield HomeSpace(store.add_user("alice", "unused").id, store, blobs)
    finally:
        blobs.close()
        store.close()


@pytest.fixture
def kernel_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the length of each copy_file_range(2) call (the real call is made)."""
    lengths: list[int] = []
    real = os.copy_file_range

    def counted(src: int, dst: int, count: int, *args: int | None) -> int:
        lengths.append(count)
        return real(src, dst, count, *args)

    monkeypatch.setattr(os, "copy_file_range", counted)
    return lengths


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def import_file(space: Space, path: Path, **options: object) -> ImportReport:
    with path.open("rb") as archive:
        return import_archive(space, archive, path.stat().st_size, "",
                              **options)  # type: ignore[arg-type]


def stored(space: Space, name: str) -> bytes:
    reader, _ = space.open(name)
    try:
        return reader.read(-1)
    finally:
        reader.close()


def nothing_stored(space: Space, space_dir: Path, blobs_dir: Path) -> bool:
    if isinstance(space, HomeSpace):
        leftovers = [f for _, _, files in os.walk(blobs_dir) for f in files]
        return not leftovers and space.list("", None, 10).entries == []
    return os.listdir(space_dir) == []


# Just under and at the kernel-copy size, and a member of two extents with a
# ragged end: what the reader hands on changes at each of these sizes.
SIZES = [KERNEL_COPY_BYTES - 1, KERNEL_COPY_BYTES, EXTENT_BYTES + 7]


@pytest.mark.parametrize("size", SIZES)
def test_a_plain_tar_file_arrives_byte_for_byte(
    target: Space, tmp_path: Path, kernel_copies: list[int], size: int
) -> None:
    data = os.urandom(size)
    archive = write_tar(tmp_path / "a.tar", {"small.txt": b"hello", "d/big.bin": data})

    report = import_file(target, archive)

    assert report.outcome == "imported", report.detail
    assert stored(target, "d/big.bin") == data
    assert stored(target, "small.txt") == b"hello"
    if isinstance(target, HomeSpace):
        row = target.metadata.get_file(target.owner_id, "d/big.bin")
        assert row is not None
        assert row.sha256 == hashlib.sha256(data).hexdigest()
        assert row.size == size
    # Runs of the large member from the kernel-copy size on went through the
    # kernel (a ragged end under it did not), the small member did not.
    runs = [EXTENT_BYTES] * (size // EXTENT_BYTES) + [size % EXTENT_BYTES]
    assert sum(kernel_copies) == sum(n for n in runs if n >= KERNEL_COPY_BYTES)


def kernel_refuses(src: Path, dst_dir: Path) -> bool:
    """Whether copy_file_range(2) refuses to copy from `src` into `dst_dir`."""
    probe = dst_dir / "probe"
    with src.open("rb") as source, probe.open("wb") as sink:
        try:
            os.copy_file_range(source.fileno(), sink.fileno(), 1, 0)
        except OSError as exc:
            return exc.errno == errno.EXDEV
        finally:
            probe.unlink()
    return False


def test_an_archive_on_another_file_system_is_copied_by_hand(
    target: Space, tmp_path: Path, space_dir: Path, blobs_dir: Path
) -> None:
    if not SHM.is_dir():
        pytest.skip("no /dev/shm to hold the archive on a second file system")
    data = os.urandom(EXTENT_BYTES + 3)
    archive = write_tar(SHM / f"strongroom-test-{os.getpid()}.tar", {"big.bin": data})
    try:
        dst_dir = blobs_dir if isinstance(target, HomeSpace) else space_dir
        if not kernel_refuses(archive, dst_dir):
            pytest.skip("this kernel copies between these file systems itself")

        report = import_file(target, archive)
    finally:
        archive.unlink()

    assert report.outcome == "imported", report.detail
    assert stored(target, "big.bin") == data


def truncated(path: Path, members: dict[str, bytes], keep_of_last: int) -> Path:
    """A plain tar cut `keep_of_last` bytes into its last member's data."""
    write_tar(path, members)
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    os.truncate(path, last.offset_data + keep_of_last)
    return path


@pytest.mark.parametrize("last_size", [4000, 3 * EXTENT_BYTES])
def test_a_tar_file_that_ends_inside_a_member_is_unreadable_and_leaves_nothing(
    target: Space, tmp_path: Path, space_dir: Path, blobs_dir: Path, last_size: int
) -> None:
    members = {"first.bin": os.urandom(KERNEL_COPY_BYTES), "last.bin": bytes(last_size)}
    archive = truncated(tmp_path / "cut.tar", members, last_size // 2)

    report = import_file(target, archive)

    assert report.outcome == "unreadable"
    assert "unexpected end of data" in report.detail
    assert nothing_stored(target, space_dir, blobs_dir)


def test_a_member_over_the_size_limit_is_stopped_before_it_is_copied(
    target: Space, tmp_path: Path, space_dir: Path, blobs_dir: Path,
    kernel_copies: list[int],
) -> None:
    archive = write_tar(tmp_path / "big.tar", {"big.bin": bytes(3 * EXTENT_BYTES)})
    limits = ImportLimits(max_member_bytes=2 * EXTENT_BYTES - 1)

    report = import_file(target, archive, limits=limits)

    assert report.outcome == "too_large"
    assert nothing_stored(target, space_dir, blobs_dir)
    # The first extent went in; the second was refused before its copy.
    assert sum(kernel_copies) == EXTENT_BYTES


class StopError(Exception):
    """Raised by a progress callback to stop the import."""


def test_progress_and_stopping_come_per_extent_of_a_large_member(
    target: Space, tmp_path: Path, space_dir: Path, blobs_dir: Path
) -> None:
    size = 2 * EXTENT_BYTES + 5
    archive = write_tar(tmp_path / "big.tar", {"big.bin": bytes(size)})
    seen: list[int] = []

    def stop_at_the_last_extent(progress: ImportProgress) -> None:
        seen.append(progress.unpacked_bytes)
        if progress.unpacked_bytes == size:
            raise StopError

    with pytest.raises(StopError):
        import_file(target, archive, on_progress=stop_at_the_last_extent)

    assert seen == [0, EXTENT_BYTES, 2 * EXTENT_BYTES, size]
    assert nothing_stored(target, space_dir, blobs_dir)



# Faults the disk and the kernel rarely give on demand, injected at the system
# call: what a home's blob writer and the confined writer do with each.


@pytest.fixture
def blob_store(tmp_path: Path) -> Iterator[LocalBlobStore]:
    opened = LocalBlobStore.open_dir(tmp_path / "blobs")
    yield opened
    opened.close()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[tuple[int, bytes]]:
    data = os.urandom(3 * MIB)
    (tmp_path / "source.bin").write_bytes(data)
    fd = os.open(tmp_path / "source.bin", os.O_RDONLY)
    yield fd, data
    os.close(fd)


def blob_files(tmp_path: Path) -> list[str]:
    return [f for _, _, files in os.walk(tmp_path / "blobs") for f in files]


def test_any_failure_of_the_hashing_thread_fails_the_blob(
    blob_store: LocalBlobStore, source: tuple[int, bytes], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fd, data = source
    real_preadv = os.preadv
    reads: list[int] = []

    def second_read_fails(fd: int, buffers: list[memoryview], offset: int) -> int:
        reads.append(offset)
        if len(reads) == 2:
            raise ValueError("not an OSError")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", second_read_fails)
    writer = blob_store.create_blob(durable=False)

    with pytest.raises(StorageError, match="could not be hashed"):
        writer.copy_range(fd, 0, len(data))

    assert blob_files(tmp_path) == []


def test_a_full_disk_stays_the_answer_when_hashing_fails_too(
    blob_store: LocalBlobStore, source: tuple[int, bytes], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fd, data = source

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def unreadable(*args: object) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "copy_file_range", full)
    monkeypatch.setattr(os, "preadv", unreadable)
    writer = blob_store.create_blob(durable=False)

    with pytest.raises(InsufficientStorageError):
        writer.copy_range(fd, 0, len(data))

    assert blob_files(tmp_path) == []


def test_a_kernel_copy_that_answers_zero_falls_back_to_reading(
    space: DirectorySpace, space_dir: Path, source: tuple[int, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fd, data = source
    monkeypatch.setattr(os, "copy_file_range", lambda *args: 0)

    with space.root.open_writer("copied.bin") as writer:
        writer.copy_range(fd, 0, len(data))
        writer.commit()

    assert (space_dir / "copied.bin").read_bytes() == data


def test_a_source_shorter_than_the_range_fails_the_copy(
    space: DirectorySpace, space_dir: Path, source: tuple[int, bytes],
) -> None:
    fd, data = source

    with space.root.open_writer("copied.bin") as writer, \
            pytest.raises(StorageError, match="ended before the range"):
        writer.copy_range(fd, MIB, len(data))

    assert os.listdir(space_dir) == []

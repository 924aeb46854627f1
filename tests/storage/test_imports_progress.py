"""`import_archive` progress, stopping it through the callback, and the reader's bounds.

The streamed import route relies on two promises tested here: progress arrives
as members are read and chunks unpacked, and whatever the callback raises stops
the import with nothing left behind, in a directory space and in a home.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.confine import Root
from strongroom.errors import NotADirectoryPathError, PermissionDeniedError
from strongroom.storage import MetadataStore
from strongroom.storage._unpack import MAX_HEADER_RECORD_BYTES
from strongroom.storage.blobs import LocalBlobStore, new_blob_id
from strongroom.storage.home import HomeSpace
from strongroom.storage.imports import (
    BLOBS_PER_SHARD_RUN,
    ImportProgress,
    check_import_target,
    import_archive,
)
from strongroom.storage.spaces import DirectorySpace, Space

MIB = 1024**2


class StopImportError(Exception):
    """What a test's progress callback raises to stop an import."""


@pytest.fixture
def lab(space: DirectorySpace) -> DirectorySpace:
    """The conftest's read-write directory space, under the name these tests use."""
    return space


@pytest.fixture
def blobs_dir(tmp_path: Path) -> Path:
    return tmp_path / "blobs"


@pytest.fixture
def home(store: MetadataStore, blobs_dir: Path) -> Iterator[HomeSpace]:
    user = store.add_user("alice", "unused")
    blobs = LocalBlobStore.open_dir(blobs_dir)
    yield HomeSpace(user.id, store, blobs)
    blobs.close()


def tar_of(members: dict[str, bytes], compression: str = "") -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}" if compression else "w"
                      ) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def run(space: Space, archive: io.BytesIO, **options: object) -> str:
    size = len(archive.getvalue())
    return import_archive(space, archive, size, "", **options).outcome  # type: ignore[arg-type]


def files_under(top: Path) -> list[str]:
    return sorted(str(Path(d, f).relative_to(top))
                  for d, _, names in os.walk(top) for f in names)


def test_progress_comes_per_member_and_chunk_and_once_for_publishing(
    lab: DirectorySpace,
) -> None:
    seen: list[ImportProgress] = []
    archive = tar_of({"a.txt": b"A", "big.bin": bytes(3 * MIB), "c.txt": b"C"})

    outcome = run(lab, archive, on_progress=seen.append)

    assert outcome == "imported"
    assert [(p.phase, p.members, p.unpacked_bytes) for p in seen] == [
        ("unpack", 1, 0), ("unpack", 1, 1),
        ("unpack", 2, 1), ("unpack", 2, 1 + MIB), ("unpack", 2, 1 + 2 * MIB),
        ("unpack", 2, 1 + 3 * MIB),
        ("unpack", 3, 1 + 3 * MIB), ("unpack", 3, 2 + 3 * MIB),
        ("publish", 3, 2 + 3 * MIB),
    ]


def stop_when(phase: str, unpacked_bytes: int) -> object:
    def on_progress(progress: ImportProgress) -> None:
        if progress.phase == phase and progress.unpacked_bytes >= unpacked_bytes:
            raise StopImportError
    return on_progress


# Stop at the first member, inside big.bin (its first MiB staged, two to come),
# and at the last moment, as publishing starts.
STOP_POINTS = [("unpack", 0), ("unpack", 1 + MIB), ("publish", 0)]
STOP_IDS = ["first-member", "mid-member", "before-publishing"]


@pytest.mark.parametrize(("phase", "unpacked_bytes"), STOP_POINTS, ids=STOP_IDS)
def test_an_error_from_on_progress_stops_a_directory_import_leaving_nothing(
    lab: DirectorySpace, space_dir: Path, phase: str, unpacked_bytes: int
) -> None:
    archive = tar_of({"a/x.txt": b"X", "a/big.bin": bytes(3 * MIB), "b.txt": b"B"})

    with pytest.raises(StopImportError):
        run(lab, archive, on_progress=stop_when(phase, unpacked_bytes))

    assert os.listdir(space_dir) == []


@pytest.mark.parametrize(("phase", "unpacked_bytes"), STOP_POINTS, ids=STOP_IDS)
def test_an_error_from_on_progress_stops_a_home_import_leaving_nothing(
    home: HomeSpace, blobs_dir: Path, phase: str, unpacked_bytes: int
) -> None:
    archive = tar_of({"a/x.txt": b"X", "a/big.bin": bytes(3 * MIB), "b.txt": b"B"})

    with pytest.raises(StopImportError):
        run(home, archive, on_progress=stop_when(phase, unpacked_bytes))

    assert files_under(blobs_dir) == []
    assert home.list("", None, 100).entries == []


def test_check_import_target_refuses_a_file_as_the_import_folder(
    lab: DirectorySpace, space_dir: Path
) -> None:
    (space_dir / "taken").write_bytes(b"T")

    with pytest.raises(NotADirectoryPathError):
        check_import_target(lab, "taken/inside")


def test_check_import_target_refuses_a_read_only_space(space_dir: Path) -> None:
    with Root(space_dir) as root:
        read_only = DirectorySpace("docs", root, writable=False)

        with pytest.raises(PermissionDeniedError):
            check_import_target(read_only, "")


def test_check_import_target_accepts_a_folder_that_does_not_exist_yet(
    lab: DirectorySpace,
) -> None:
    check_import_target(lab, "new/place")


def test_new_folders_arrive_whole_and_existing_ones_are_merged(
    lab: DirectorySpace, space_dir: Path
) -> None:
    (space_dir / "docs").mkdir()
    (space_dir / "docs" / "old.txt").write_bytes(b"OLD")
    archive = tar_of({"docs/new.txt": b"N", "fresh/a.txt": b"A",
                      "fresh/sub/b.txt": b"B", "top.txt": b"T"})

    assert run(lab, archive) == "imported"

    assert files_under(space_dir) == ["docs/new.txt", "docs/old.txt",
                                      "fresh/a.txt", "fresh/sub/b.txt", "top.txt"]
    assert (space_dir / "fresh" / "sub" / "b.txt").read_bytes() == b"B"


def test_a_long_name_record_over_the_bound_is_refused_before_it_is_read(
    lab: DirectorySpace, space_dir: Path
) -> None:
    """A plain tar has no compression ratio to trip; the record bound stops it."""
    size = MAX_HEADER_RECORD_BYTES + 1
    info = tarfile.TarInfo("././@LongLink")
    info.type, info.size = tarfile.GNUTYPE_LONGNAME, size
    record = info.tobuf(format=tarfile.USTAR_FORMAT) + b"n" * size
    archive = io.BytesIO(record + bytes(-len(record) % 512) + bytes(1024))

    assert run(lab, archive) == "too_large"
    assert os.listdir(space_dir) == []


@pytest.mark.parametrize("compression", ["", "gz"], ids=["plain", "gzip"])
def test_the_reader_steps_over_the_data_of_a_member_it_does_not_read(
    lab: DirectorySpace, compression: str
) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}" if compression else "w"
                      ) as tar:  # type: ignore[call-overload]
        odd = tarfile.TarInfo("odd")
        odd.type, odd.size = b"Z", 5000
        tar.addfile(odd, io.BytesIO(b"z" * 5000))
        after = tarfile.TarInfo("after.txt")
        after.size = 5
        tar.addfile(after, io.BytesIO(b"after"))
    out.seek(0)

    report = import_archive(lab, out, len(out.getvalue()), "")

    assert [(m.name, m.status) for m in report.members] == [
        ("odd", "refused"), ("after.txt", "skipped")]


def test_a_home_import_puts_its_blobs_in_a_few_shard_folders(
    home: HomeSpace, blobs_dir: Path, store: MetadataStore
) -> None:
    """A run of blobs shares one shard folder: not a mkdir for nearly every blob."""
    count = 2 * BLOBS_PER_SHARD_RUN + 10
    archive = tar_of({f"d/f{n:04d}.txt": b"x%d" % n for n in range(count)})

    assert run(home, archive) == "imported"

    shards = {Path(name).parent for name in files_under(blobs_dir)}
    assert len(files_under(blobs_dir)) == count
    assert len(shards) == 3
    for n in (0, count - 1):
        row = store.get_file(home.owner_id, f"d/f{n:04d}.txt")
        assert row is not None
        with home.blob_store.open_blob(row.blob_id) as handle:
            assert handle.read() == b"x%d" % n


def test_blob_ids_made_near_another_share_only_its_shard() -> None:
    first = new_blob_id()
    near = [new_blob_id(first) for _ in range(50)]

    assert {blob_id[:4] for blob_id in near} == {first[:4]}
    assert len({blob_id[4:] for blob_id in [first, *near]}) == 51
    with pytest.raises(ValueError):
        new_blob_id("../../etc/passwd")

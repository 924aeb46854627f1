"""`Uploads`: resumable uploads in storage, on SQLite and PostgreSQL, real files.

Each test gets a directory space (`lab`, a real folder beside a sentinel
folder that must never change) and the owner's home (rows and blobs), and the
store's fake clock, which the expiry tests move.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import delete

from strongroom.confine import Root
from strongroom.errors import (
    ChecksumMismatchError,
    HardlinkRefusedError,
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathEscapeError,
    PathNotFoundError,
    PermissionDeniedError,
    StorageError,
    SymlinkRefusedError,
    UploadGoneError,
    UploadLockedError,
    UploadNotFoundError,
    UploadOffsetError,
    UploadQuotaError,
)
from strongroom.storage import LocalBlobStore, MetadataStore
from strongroom.storage._schema import uploads as uploads_table
from strongroom.storage.home import HomeSpace
from strongroom.storage.spaces import DirectorySpace, Space
from strongroom.storage.uploads import (
    COMPLETED_KEEP_SECONDS,
    ChunkChecksum,
    UploadLimits,
    UploadRecord,
    Uploads,
    check_upload_target,
)


class FakeClock(Protocol):
    """The `clock` fixture of tests/storage/conftest.py."""

    current: datetime

    def __call__(self) -> datetime: ...

    def advance(self, seconds: float = 1.0) -> datetime: ...


EXPIRY_SECONDS = 600
LIMITS = UploadLimits(expiry_seconds=EXPIRY_SECONDS, max_reserved_bytes=1000,
                      max_live=3)


@dataclass
class World:
    """The uploads under test, a user, its two spaces, and where they live."""

    uploads: Uploads
    owner: int
    other: int
    lab: DirectorySpace
    home: HomeSpace
    tmp: Path
    clock: FakeClock

    @property
    def staging(self) -> Path:
        return self.tmp / "data" / "uploads"

    def space(self, name: str) -> Space:
        return self.lab if name == "lab" else self.home

    def read(self, name: str, rel_path: str) -> bytes:
        handle, _ = self.space(name).open(rel_path)
        with handle:
            return handle.read()

    def staged(self) -> list[str]:
        return sorted(os.listdir(self.staging))

    def outside(self) -> list[str]:
        return sorted(os.listdir(self.tmp / "outside"))


@pytest.fixture
def world(store: MetadataStore, clock: FakeClock, tmp_path: Path) -> Iterator[World]:
    for name in ("lab", "outside", "blobs"):
        (tmp_path / name).mkdir()
    (tmp_path / "outside" / "sentinel.txt").write_bytes(b"keep me")
    owner = store.add_user("alice", "x").id
    other = store.add_user("bob", "x").id
    blobs = LocalBlobStore.open_dir(tmp_path / "blobs")
    with Root(tmp_path / "lab") as root:
        yield World(
            uploads=Uploads.open(store, tmp_path / "data", LIMITS, now=clock),
            owner=owner, other=other,
            lab=DirectorySpace("lab", root, writable=True),
            home=HomeSpace(owner, store, blobs), tmp=tmp_path, clock=clock,
        )
    blobs.close()


@pytest.fixture(params=["lab", "home"])
def space_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def create(world: World, space: str, rel_path: str, length: int,
           sha256: str | None = None) -> UploadRecord:
    return world.uploads.create(world.owner, world.space(space), rel_path, length,
                                sha256=sha256)


def append(world: World, record: UploadRecord, offset: int, data: bytes,
           checksum: ChunkChecksum | None = None) -> UploadRecord:
    chunk = world.uploads.begin_append(world.owner, record.id, offset, checksum)
    try:
        chunk.write(data)
        return chunk.finish(lambda name: world.space(name))
    finally:
        chunk.close()


def sha1_of(data: bytes) -> ChunkChecksum:
    return ChunkChecksum("sha1", hashlib.sha1(data).digest())


# Creation and appending


def test_create_stages_an_empty_file_and_publishes_nothing(
    world: World, space_name: str
) -> None:
    record = create(world, space_name, "a/b.txt", 10)

    assert world.staged() == [record.id]
    assert (world.staging / record.id).stat().st_size == 0
    assert world.uploads.status(world.owner, record.id).received == 0
    assert os.listdir(world.tmp / "lab") == []


def test_chunks_are_published_only_after_the_last_one(
    world: World, space_name: str
) -> None:
    record = create(world, space_name, "a/b.txt", 6)

    middle = append(world, record, 0, b"abc")
    with pytest.raises(PathNotFoundError):
        world.space(space_name).meta("a/b.txt")
    done = append(world, middle, 3, b"def")

    assert middle.received == 3 and not middle.is_complete
    assert done.received == 6 and done.is_complete
    assert world.read(space_name, "a/b.txt") == b"abcdef"
    assert world.staged() == []


def test_a_published_file_is_the_answer_even_if_its_row_cannot_follow(
    world: World, store: MetadataStore, space_name: str
) -> None:
    # The file is placed first, then the upload's row is marked complete. If
    # that second step fails (the disk filled up in between, or the row was
    # swept by another process meanwhile), the client must still hear that its
    # file is stored, because it is.
    record = create(world, space_name, "a/b.txt", 6)
    chunk = world.uploads.begin_append(world.owner, record.id, 0)
    try:
        chunk.write(b"abcdef")
        with store._engine.begin() as conn:  # noqa: SLF001 (what another process did)
            conn.execute(delete(uploads_table).where(uploads_table.c.id == record.id))
        done = chunk.finish(lambda name: world.space(name))
    finally:
        chunk.close()

    assert done.is_complete and done.received == 6
    assert world.read(space_name, "a/b.txt") == b"abcdef"
    # The staged copy does not wait for the expiry sweep: the disk that refused
    # the row may be full, and the bytes are published.
    assert world.staged() == []


def test_zero_byte_upload_is_published_at_creation(
    world: World, space_name: str
) -> None:
    record = create(world, space_name, "empty.txt", 0)

    assert record.is_complete
    assert world.read(space_name, "empty.txt") == b""
    assert world.staged() == []


def test_offset_other_than_received_is_refused(world: World) -> None:
    record = append(world, create(world, "lab", "a.txt", 6), 0, b"abc")

    with pytest.raises(UploadOffsetError):
        world.uploads.begin_append(world.owner, record.id, 0)


def test_second_writer_is_refused_while_the_first_holds_the_lock(
    world: World,
) -> None:
    record = create(world, "lab", "a.txt", 6)
    first = world.uploads.begin_append(world.owner, record.id, 0)
    try:
        with pytest.raises(UploadLockedError):
            world.uploads.begin_append(world.owner, record.id, 0)
        with pytest.raises(UploadLockedError):
            world.uploads.terminate(world.owner, record.id)
    finally:
        first.close()

    second = world.uploads.begin_append(world.owner, record.id, 0)
    second.close()


def test_unrecorded_bytes_are_cut_off_before_the_next_chunk(world: World) -> None:
    """A server that died mid-chunk left bytes past the recorded offset."""
    record = append(world, create(world, "lab", "a.txt", 6), 0, b"abc")
    with open(world.staging / record.id, "ab") as staged:
        staged.write(b"XYZ")

    append(world, record, 3, b"def")

    assert world.read("lab", "a.txt") == b"abcdef"


def test_closing_without_finishing_keeps_only_recorded_bytes(world: World) -> None:
    record = create(world, "lab", "a.txt", 6)
    chunk = world.uploads.begin_append(world.owner, record.id, 0)
    chunk.write(b"abc")
    chunk.close()

    assert world.uploads.status(world.owner, record.id).received == 0
    assert (world.staging / record.id).stat().st_size == 0


def test_keep_partial_records_what_arrived_but_never_the_last_byte(
    world: World,
) -> None:
    record = create(world, "lab", "a.txt", 6)
    chunk = world.uploads.begin_append(world.owner, record.id, 0)
    chunk.write(b"abcdef")
    kept = chunk.keep_partial()
    chunk.close()

    assert kept.received == 5
    assert not kept.is_complete
    assert (world.tmp / "lab" / "a.txt").exists() is False


def test_keep_partial_of_a_chunk_with_a_checksum_records_nothing(
    world: World,
) -> None:
    record = create(world, "lab", "a.txt", 6)
    chunk = world.uploads.begin_append(world.owner, record.id, 0, sha1_of(b"abc"))
    chunk.write(b"ab")
    kept = chunk.keep_partial()
    chunk.close()

    assert kept.received == 0


# Checksums


def test_chunk_checksum_mismatch_discards_only_the_chunk(world: World) -> None:
    record = append(world, create(world, "lab", "a.txt", 6), 0, b"abc")

    with pytest.raises(ChecksumMismatchError):
        append(world, record, 3, b"def", sha1_of(b"xyz"))

    assert world.uploads.status(world.owner, record.id).received == 3
    assert (world.staging / record.id).stat().st_size == 3


def test_whole_file_checksum_mismatch_discards_the_upload(
    world: World, space_name: str
) -> None:
    wrong = hashlib.sha256(b"other").hexdigest()
    record = create(world, space_name, "a.txt", 3, sha256=wrong)

    with pytest.raises(ChecksumMismatchError):
        append(world, record, 0, b"abc")

    with pytest.raises(UploadNotFoundError):
        world.uploads.status(world.owner, record.id)
    with pytest.raises(PathNotFoundError):
        world.space(space_name).meta("a.txt")
    assert world.staged() == []


def test_whole_file_checksum_match_publishes(world: World, space_name: str) -> None:
    digest = hashlib.sha256(b"abc").hexdigest()
    record = create(world, space_name, "a.txt", 3, sha256=digest)

    append(world, record, 0, b"abc")

    assert world.read(space_name, "a.txt") == b"abc"


# A target that changed before the last chunk


def test_target_refusing_the_file_discards_only_the_last_chunk(
    world: World, space_name: str
) -> None:
    record = append(world, create(world, space_name, "late", 6), 0, b"abc")
    world.space(space_name).mkdir("late")

    with pytest.raises(IsADirectoryPathError):
        append(world, record, 3, b"def")

    assert world.uploads.status(world.owner, record.id).received == 3
    world.space(space_name).delete("late")
    append(world, record, 3, b"def")
    assert world.read(space_name, "late") == b"abcdef"


# Ownership, termination, expiry


def test_another_owner_finds_nothing(world: World) -> None:
    record = create(world, "lab", "a.txt", 6)

    with pytest.raises(UploadNotFoundError):
        world.uploads.status(world.other, record.id)
    with pytest.raises(UploadNotFoundError):
        world.uploads.begin_append(world.other, record.id, 0)
    with pytest.raises(UploadNotFoundError):
        world.uploads.terminate(world.other, record.id)
    assert world.uploads.status(world.owner, record.id).received == 0


@pytest.mark.parametrize("upload_id", ["../../outside/sentinel.txt", "x" * 32,
                                       "0" * 31, "", "A" * 32])
def test_malformed_ids_never_reach_the_file_system(
    world: World, upload_id: str
) -> None:
    with pytest.raises(UploadNotFoundError):
        world.uploads.begin_append(world.owner, upload_id, 0)

    assert world.outside() == ["sentinel.txt"]


def test_termination_removes_the_row_and_the_staged_bytes(world: World) -> None:
    record = append(world, create(world, "lab", "a.txt", 6), 0, b"abc")

    world.uploads.terminate(world.owner, record.id)

    with pytest.raises(UploadNotFoundError):
        world.uploads.status(world.owner, record.id)
    assert world.staged() == []


def test_expired_upload_is_gone_and_removed_on_the_next_request(
    world: World,
) -> None:
    record = append(world, create(world, "lab", "a.txt", 6), 0, b"abc")
    world.clock.advance(EXPIRY_SECONDS)

    with pytest.raises(UploadGoneError):
        world.uploads.begin_append(world.owner, record.id, 3)

    with pytest.raises(UploadNotFoundError):
        world.uploads.status(world.owner, record.id)
    assert world.staged() == []


def test_each_chunk_moves_the_expiry_forward(world: World) -> None:
    record = create(world, "lab", "a.txt", 6)
    world.clock.advance(EXPIRY_SECONDS - 1)

    moved = append(world, record, 0, b"abc")
    world.clock.advance(EXPIRY_SECONDS - 1)

    assert world.uploads.status(world.owner, record.id).received == 3
    assert moved.expires_at > record.expires_at


def test_completed_upload_is_remembered_for_a_while(world: World) -> None:
    record = append(world, create(world, "lab", "a.txt", 3), 0, b"abc")

    world.clock.advance(COMPLETED_KEEP_SECONDS - 1)
    remembered = world.uploads.status(world.owner, record.id)
    world.clock.advance(1)

    assert remembered.is_complete
    with pytest.raises(UploadGoneError):
        world.uploads.status(world.owner, record.id)


def test_sweep_removes_a_bounded_batch_of_expired_uploads(world: World) -> None:
    records = [create(world, "lab", f"{n}.txt", 6) for n in range(3)]
    world.clock.advance(EXPIRY_SECONDS)

    first = world.uploads.sweep_expired(2)
    second = world.uploads.sweep_expired(2)

    assert (first, second) == (2, 1)
    assert world.staged() == []
    assert len(records) == 3


def test_sweep_leaves_an_upload_that_is_being_written(world: World) -> None:
    record = create(world, "lab", "a.txt", 6)
    chunk = world.uploads.begin_append(world.owner, record.id, 0)
    world.clock.advance(EXPIRY_SECONDS)
    try:
        swept = world.uploads.sweep_expired(10)
    finally:
        chunk.close()

    assert swept == 0
    assert world.staged() == [record.id]


def test_remove_orphans_deletes_only_old_files_without_rows(world: World) -> None:
    record = create(world, "lab", "a.txt", 6)
    fake_now = world.clock.current.timestamp()
    old_orphan, young_orphan = "a" * 32, "b" * 32
    for name, age in ((old_orphan, 7200), (young_orphan, 60), (record.id, 7200)):
        (world.staging / name).touch()
        os.utime(world.staging / name, (fake_now - age, fake_now - age))
    (world.staging / "not-an-id").write_bytes(b"stray")

    removed = world.uploads.remove_orphans(100)

    assert removed == 1
    assert world.staged() == sorted([record.id, young_orphan, "not-an-id"])


# Bounds


def test_live_uploads_are_bounded_in_number(world: World) -> None:
    for n in range(LIMITS.max_live):
        create(world, "lab", f"{n}.txt", 1)

    with pytest.raises(UploadQuotaError):
        create(world, "lab", "one-more.txt", 1)

    assert len(world.staged()) == LIMITS.max_live


def test_live_uploads_are_bounded_in_reserved_bytes(world: World) -> None:
    create(world, "lab", "a.bin", 600)

    with pytest.raises(UploadQuotaError):
        create(world, "home", "b.bin", 401)
    create(world, "home", "c.bin", 400)


def test_finished_ended_and_expired_uploads_free_their_share(world: World) -> None:
    done = create(world, "lab", "done.bin", 3)
    append(world, done, 0, b"abc")
    ended = create(world, "lab", "ended.bin", 997)
    world.uploads.terminate(world.owner, ended.id)
    create(world, "lab", "expired.bin", 997)
    world.clock.advance(EXPIRY_SECONDS)

    fresh = create(world, "lab", "fresh.bin", 1000)

    assert fresh.received == 0


def test_bounds_are_per_user(world: World) -> None:
    create(world, "lab", "a.bin", 1000)

    other = world.uploads.create(world.other, world.lab, "b.bin", 1000)

    assert other.owner_id == world.other


# Restart and damage


def test_a_new_uploads_object_continues_where_the_last_one_stopped(
    world: World, store: MetadataStore
) -> None:
    record = append(world, create(world, "home", "a.txt", 6), 0, b"abc")
    restarted = Uploads.open(store, world.tmp / "data", LIMITS, now=world.clock)

    chunk = restarted.begin_append(world.owner, record.id, 3)
    chunk.write(b"def")
    chunk.finish(lambda name: world.space(name))
    chunk.close()

    assert world.read("home", "a.txt") == b"abcdef"


def test_lost_staged_bytes_make_the_upload_gone(world: World) -> None:
    record = append(world, create(world, "lab", "a.txt", 6), 0, b"abc")
    os.truncate(world.staging / record.id, 1)

    with pytest.raises(UploadGoneError):
        world.uploads.begin_append(world.owner, record.id, 3)

    with pytest.raises(UploadNotFoundError):
        world.uploads.status(world.owner, record.id)


@pytest.mark.parametrize("plant", ["symlink", "hardlink"])
def test_planted_link_in_the_staging_folder_is_refused(
    world: World, plant: str
) -> None:
    record = create(world, "lab", "a.txt", 6)
    staged = world.staging / record.id
    staged.unlink()
    sentinel = world.tmp / "outside" / "sentinel.txt"
    if plant == "symlink":
        staged.symlink_to(sentinel)
    else:
        os.link(sentinel, staged)

    with pytest.raises(StorageError):
        world.uploads.begin_append(world.owner, record.id, 0)

    assert sentinel.read_bytes() == b"keep me"


# Checking a target at creation


@pytest.mark.parametrize(
    ("rel_path", "error"),
    [
        ("../outside/x.txt", PathEscapeError),
        ("folder", IsADirectoryPathError),
        ("file.txt/inner.txt", NotADirectoryPathError),
        ("file.txt/deeper/inner.txt", NotADirectoryPathError),
    ],
    ids=["escape", "folder", "parent-is-a-file", "ancestor-is-a-file"],
)
def test_check_upload_target_refuses_what_publishing_would(
    world: World, space_name: str, rel_path: str, error: type[Exception]
) -> None:
    space = world.space(space_name)
    space.mkdir("folder")
    write(space, "file.txt", b"x")

    with pytest.raises(error):
        check_upload_target(space, rel_path)

    assert world.outside() == ["sentinel.txt"]


def test_check_upload_target_refuses_a_read_only_space(world: World) -> None:
    read_only = DirectorySpace("ro", world.lab.root, writable=False)

    with pytest.raises(PermissionDeniedError):
        check_upload_target(read_only, "a.txt")


def test_check_upload_target_refuses_a_link_at_the_name(world: World) -> None:
    (world.tmp / "lab" / "link.txt").symlink_to("../outside/sentinel.txt")

    with pytest.raises(SymlinkRefusedError):
        check_upload_target(world.lab, "link.txt")


def test_check_upload_target_refuses_a_multiply_linked_file(world: World) -> None:
    os.link(world.tmp / "outside" / "sentinel.txt", world.tmp / "lab" / "two.txt")

    with pytest.raises(HardlinkRefusedError):
        check_upload_target(world.lab, "two.txt")


def test_check_upload_target_refuses_missing_folders_under_dotdot(
    world: World,
) -> None:
    with pytest.raises(PathNotFoundError):
        check_upload_target(world.lab, "missing/../gone/a.txt")


def test_check_upload_target_accepts_new_folders_and_changes_nothing(
    world: World, space_name: str
) -> None:
    space = world.space(space_name)
    write(space, "kept.txt", b"x")

    check_upload_target(space, "new/deep/folder/a.txt")
    check_upload_target(space, "kept.txt")

    assert [e.name for e in space.list(".", None, 10).entries] == ["kept.txt"]


def write(space: Space, rel_path: str, data: bytes) -> None:
    writer = space.writer(rel_path, exclusive=False)
    writer.write(data)
    writer.commit()

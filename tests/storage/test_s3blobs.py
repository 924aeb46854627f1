"""The S3 blob store on a real SeaweedFS, side by side with the local store.

The first half runs the local store's contract against both stores; the second
covers what only S3 has: multipart uploads, ranged reads, leftover uploads, keys
and credentials.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from concurrency import run_together
from s3_server import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY, S3Server
from strongroom.config import load_settings
from strongroom.errors import (
    ConfigError,
    LimitExceededError,
    PathNotFoundError,
    StorageError,
)
from strongroom.storage.blob_stores import open_blob_store
from strongroom.storage.blobs import LocalBlobStore, new_blob_id
from strongroom.storage.s3blobs import (
    MIN_PART_BYTES,
    READ_CHUNK_BYTES,
    S3BlobReader,
    S3BlobStore,
)

MiB = 1 << 20
PART = MIN_PART_BYTES  # the smallest part S3 takes: multipart tests stay cheap

Store = LocalBlobStore | S3BlobStore


@dataclass
class Subject:
    """A store under test and a way to see everything it holds."""

    store: Store
    # Every file, object or unfinished upload the store holds, by name.
    leftovers: Callable[[], list[str]]


class Requests:
    """Every request a boto3 client sends, as (operation, Range header).

    Recorded by botocore's own event hook, as the request goes on the wire.
    """

    def __init__(self, client: Any) -> None:
        self.sent: list[tuple[str, str | None]] = []
        client.meta.events.register("before-send.s3", self._record)

    def _record(self, request: Any, event_name: str, **_: object) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        byte_range = request.headers.get("Range")
        if isinstance(byte_range, bytes):
            byte_range = byte_range.decode("ascii")
        self.sent.append((operation, byte_range))

    def named(self, operation: str) -> list[str | None]:
        return [rng for op, rng in self.sent if op == operation]


@pytest.fixture
def s3_client(s3_server: S3Server) -> Iterator[Any]:
    client = s3_server.client()
    yield client
    client.close()


@pytest.fixture
def s3_store(s3_client: Any, s3_bucket: str) -> S3BlobStore:
    """An S3 store on a fresh bucket, with the smallest part size S3 allows."""
    return S3BlobStore(s3_client, s3_bucket, part_bytes=PART)


@pytest.fixture
def requests(s3_client: Any) -> Requests:
    return Requests(s3_client)


@pytest.fixture(params=["local", "s3"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    """Each store in turn, for the behaviours both must share."""
    if request.param == "local":
        blob_dir = tmp_path / "blobs"
        local = LocalBlobStore.open_dir(blob_dir)
        yield Subject(local, lambda: sorted(
            str(p.relative_to(blob_dir)) for p in blob_dir.rglob("*") if p.is_file()
        ))
        local.close()
        return
    store: S3BlobStore = request.getfixturevalue("s3_store")
    client = request.getfixturevalue("s3_client")
    yield Subject(store, lambda: s3_contents(client, store.bucket))


def s3_contents(client: Any, bucket: str) -> list[str]:
    """Every object key and every unfinished upload ("upload:KEY") of a bucket."""
    objects = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    keys = [o["Key"] for o in objects] + [f"upload:{u['Key']}" for u in uploads]
    return sorted(keys)


def read_all(store: Store, blob_id: str) -> bytes:
    with store.open_blob(blob_id) as reader:
        return b"".join(iter(lambda: reader.read(64 << 10), b""))


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes that differ from part to part, so misordered parts show."""
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


# The contract both stores share.


@pytest.mark.parametrize(
    "sizes", [(), (0,), (0, 1, 65536, 100_003), (PART + 1,)],
    ids=["nothing", "empty-chunk", "mixed", "over-one-part"],
)
def test_written_blob_reads_back_with_its_size_and_sha256(
    subject: Subject, sizes: tuple[int, ...]
) -> None:
    chunks = [os.urandom(size) for size in sizes]

    info = subject.store.write_blob(chunks)

    joined = b"".join(chunks)
    assert (info.size, info.sha256) == (len(joined), hashlib.sha256(joined).hexdigest())
    assert read_all(subject.store, info.blob_id) == joined


def test_blob_ids_are_new_each_time(subject: Subject) -> None:
    ids = {subject.store.write_blob([b"same"]).blob_id for _ in range(10)}

    assert len(ids) == 10


def test_writer_over_the_limit_raises_and_leaves_nothing(subject: Subject) -> None:
    with pytest.raises(LimitExceededError, match="max_upload_bytes"):
        subject.store.write_blob([b"x" * 6, b"y" * 5], max_bytes=10)

    assert subject.leftovers() == []


def test_writer_at_exactly_the_limit_is_kept(subject: Subject) -> None:
    info = subject.store.write_blob([b"x" * 6, b"y" * 4], max_bytes=10)

    assert info.size == 10


def test_writer_left_without_commit_leaves_nothing(subject: Subject) -> None:
    with subject.store.create_blob() as writer:
        writer.write(b"half an upload")

    assert subject.leftovers() == []
    with pytest.raises(PathNotFoundError):
        subject.store.open_blob(writer.blob_id)


def test_writer_that_raises_mid_stream_leaves_nothing(subject: Subject) -> None:
    def broken_upload() -> Iterator[bytes]:
        yield pattern(PART + 100)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        subject.store.write_blob(broken_upload())

    assert subject.leftovers() == []


def test_nothing_is_visible_under_the_id_before_commit(subject: Subject) -> None:
    with subject.store.create_blob() as writer:
        writer.write(b"pending")
        with pytest.raises(PathNotFoundError):
            subject.store.open_blob(writer.blob_id)
        info = writer.commit()

    assert read_all(subject.store, info.blob_id) == b"pending"


def test_delete_blob_removes_it(subject: Subject) -> None:
    info = subject.store.write_blob([b"bye"])

    subject.store.delete_blob(info.blob_id)

    assert subject.leftovers() == []


def test_delete_blob_of_a_missing_blob_is_quiet(subject: Subject) -> None:
    subject.store.delete_blob(new_blob_id())


def test_open_blob_of_a_missing_blob_raises_not_found(subject: Subject) -> None:
    with pytest.raises(PathNotFoundError, match="the blob is gone"):
        subject.store.open_blob(new_blob_id())


@pytest.mark.parametrize(
    "blob_id",
    ["../../etc/passwd", "ab/cd/" + "0" * 26, "A" * 32, "0" * 31, "0" * 33, ""],
    ids=["traversal", "path", "upper", "short", "long", "empty"],
)
def test_malformed_blob_ids_are_refused(subject: Subject, blob_id: str) -> None:
    with pytest.raises(StorageError, match="malformed"):
        subject.store.open_blob(blob_id)
    with pytest.raises(StorageError, match="malformed"):
        subject.store.delete_blob(blob_id)
    with pytest.raises(StorageError, match="malformed"):
        subject.store.create_blob_with_id(blob_id)


def test_blob_ids_lists_every_blob_with_its_size(subject: Subject) -> None:
    written = {subject.store.write_blob([b"x" * n]).blob_id: n for n in (1, 5, 0)}

    listed = {blob_id: size for blob_id, size, _ in subject.store.blob_ids()}

    assert listed == written


def test_create_blob_with_id_stores_under_that_id(subject: Subject) -> None:
    blob_id = new_blob_id()

    with subject.store.create_blob_with_id(blob_id) as writer:
        writer.write(b"copied")
        info = writer.commit()

    assert info.blob_id == blob_id
    assert read_all(subject.store, blob_id) == b"copied"


def test_create_blob_with_id_never_replaces_a_blob(subject: Subject) -> None:
    first = subject.store.write_blob([b"original"])

    with pytest.raises(StorageError), \
            subject.store.create_blob_with_id(first.blob_id) as writer:
        writer.write(b"intruder")
        writer.commit()

    assert read_all(subject.store, first.blob_id) == b"original"


def test_concurrent_writers_do_not_disturb_each_other(subject: Subject) -> None:
    written: dict[str, bytes] = {}

    def write_many(seed: int) -> None:
        for n in range(8):
            data = f"{seed}-{n}".encode()
            written[subject.store.write_blob([data]).blob_id] = data

    run_together(4, write_many)  # raises what any writer raised

    assert len(written) == 32
    for blob_id, data in written.items():
        assert read_all(subject.store, blob_id) == data


def test_check_passes_while_the_store_is_there(subject: Subject) -> None:
    subject.store.check()


# What only the S3 store has.


def test_a_blob_over_two_parts_is_a_multipart_upload_in_bounded_memory(
    s3_store: S3BlobStore, requests: Requests
) -> None:
    size = 5 * PART + 12345
    expected = hashlib.sha256()

    tracemalloc.start()
    try:
        with s3_store.create_blob() as writer:
            for offset in range(0, size, MiB):
                chunk = pattern(min(MiB, size - offset), seed=offset)
                expected.update(chunk)
                writer.write(chunk)
                del chunk
            info = writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (info.size, info.sha256) == (size, expected.hexdigest())
    assert len(requests.named("UploadPart")) == 6
    assert requests.named("PutObject") == []
    assert peak < 2 * PART, f"writing {size} bytes peaked at {peak} bytes"


def test_a_big_blob_is_read_back_streamed_in_bounded_memory(
    s3_store: S3BlobStore,
) -> None:
    size = 3 * PART
    data = pattern(size)
    info = s3_store.write_blob([data])
    digest = hashlib.sha256()
    del data

    tracemalloc.start()
    try:
        with s3_store.open_blob(info.blob_id) as reader:
            for chunk in reader.read_range(0, size):
                assert len(chunk) <= READ_CHUNK_BYTES
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert digest.hexdigest() == info.sha256
    assert peak < 3 * READ_CHUNK_BYTES, f"reading {size} bytes peaked at {peak}"


def test_a_blob_smaller_than_a_part_is_one_put(
    s3_store: S3BlobStore, requests: Requests
) -> None:
    s3_store.write_blob([b"a" * 1000, b"b" * 1000])

    assert len(requests.named("PutObject")) == 1
    assert requests.named("CreateMultipartUpload") == []


def test_max_bytes_reached_mid_multipart_aborts_the_upload(
    s3_store: S3BlobStore, s3_client: Any, requests: Requests
) -> None:
    limit = 2 * PART + 100

    with pytest.raises(LimitExceededError, match="max_upload_bytes"), \
            s3_store.create_blob(max_bytes=limit) as writer:
        for offset in range(0, 3 * PART, MiB):
            writer.write(pattern(MiB, seed=offset))

    assert len(requests.named("UploadPart")) == 2
    assert len(requests.named("AbortMultipartUpload")) == 1
    assert s3_contents(s3_client, s3_store.bucket) == []


def test_abort_after_parts_were_sent_leaves_no_upload(
    s3_store: S3BlobStore, s3_client: Any
) -> None:
    writer = s3_store.create_blob()
    writer.write(pattern(PART + 1))

    writer.abort()
    writer.abort()

    assert s3_contents(s3_client, s3_store.bucket) == []


def test_read_range_sends_one_get_with_that_range(
    s3_store: S3BlobStore, requests: Requests
) -> None:
    data = pattern(3 * MiB)
    info = s3_store.write_blob([data])

    with s3_store.open_blob(info.blob_id) as reader:
        middle = b"".join(reader.read_range(5, 10))
        tail = b"".join(reader.read_range(len(data) - 7, 7))
        whole = list(reader.read_range(0, len(data)))

    assert (middle, tail) == (data[5:15], data[-7:])
    assert b"".join(whole) == data and len(whole) == 3
    last = len(data) - 1
    assert requests.named("GetObject") == [
        "bytes=5-14", f"bytes={last - 6}-{last}", f"bytes=0-{last}"
    ]


def test_nothing_is_fetched_until_a_range_is_read(
    s3_store: S3BlobStore, requests: Requests
) -> None:
    info = s3_store.write_blob([b"lazy"])

    with s3_store.open_blob(info.blob_id) as reader:
        chunks = reader.read_range(0, 4)
        assert requests.named("GetObject") == []
        assert next(chunks) == b"lazy"

    assert len(requests.named("GetObject")) == 1
    assert len(requests.named("HeadObject")) == 1


def test_open_blob_reports_the_size_and_reads_sequentially(
    s3_store: S3BlobStore,
) -> None:
    info = s3_store.write_blob([b"0123456789"])

    with s3_store.open_blob(info.blob_id) as reader:
        assert isinstance(reader, S3BlobReader)
        parts = [reader.read(4), reader.read(4), reader.read(4), reader.read(4)]

    assert reader.size == 10
    assert parts == [b"0123", b"4567", b"89", b""]


def test_a_blob_deleted_after_open_reads_as_not_found(s3_store: S3BlobStore) -> None:
    info = s3_store.write_blob([b"soon gone"])
    reader = s3_store.open_blob(info.blob_id)

    s3_store.delete_blob(info.blob_id)

    with reader, pytest.raises(PathNotFoundError):
        list(reader.read_range(0, 4))


@pytest.mark.parametrize(
    "blob_id", ["../x", "A" * 32, ""], ids=["dots", "upper", "empty"]
)
def test_a_malformed_id_is_refused_before_any_request(
    s3_store: S3BlobStore, requests: Requests, blob_id: str
) -> None:
    for call in (s3_store.open_blob, s3_store.delete_blob,
                 s3_store.create_blob_with_id):
        with pytest.raises(StorageError, match="malformed"):
            call(blob_id)

    assert requests.sent == []


def test_a_dead_writers_upload_is_aborted_once_stale(
    s3_store: S3BlobStore, s3_client: Any
) -> None:
    dead = s3_store.create_blob()
    dead.write(pattern(PART + 1))  # one part sent, then the process "dies"
    s3_client.put_object(Bucket=s3_store.bucket, Key="notes/a.txt", Body=b"x")
    foreign = s3_client.create_multipart_upload(
        Bucket=s3_store.bucket, Key="notes/b.txt"
    )

    kept = s3_store.remove_crash_leftovers()
    removed = s3_store.remove_crash_leftovers(grace_seconds=0)

    assert (kept, removed) == (0, 1)
    assert s3_contents(s3_client, s3_store.bucket) == [
        "notes/a.txt", "upload:notes/b.txt"
    ]
    s3_client.abort_multipart_upload(
        Bucket=s3_store.bucket, Key="notes/b.txt", UploadId=foreign["UploadId"]
    )


def test_keys_live_under_the_prefix_in_shard_folders(
    s3_client: Any, s3_bucket: str
) -> None:
    store = S3BlobStore(s3_client, s3_bucket, "tenant/blobs/", part_bytes=PART)
    stray = new_blob_id()
    for key in (f"elsewhere/{stray[:2]}/{stray[2:4]}/{stray}", "tenant/blobs/readme"):
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"x")

    info = store.write_blob([b"inside"])

    blob_id = info.blob_id
    assert f"tenant/blobs/{blob_id[:2]}/{blob_id[2:4]}/{blob_id}" in s3_contents(
        s3_client, s3_bucket
    )
    assert [b for b, _, _ in store.blob_ids()] == [blob_id]


def test_check_of_a_missing_bucket_raises_a_storage_error(
    s3_client: Any,
) -> None:
    store = S3BlobStore(s3_client, "no-such-bucket-here")

    with pytest.raises(StorageError, match="no-such-bucket-here"):
        store.check()


def test_a_store_error_names_the_code_and_never_the_secret(
    s3_server: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_secret = "not-" + SECRET_ACCESS_KEY  # the store checks signatures
    store = S3BlobStore.connect(
        s3_server.create_bucket(), endpoint_url=s3_server.endpoint_url,
        region=REGION, access_key_id=ACCESS_KEY_ID, secret_access_key=wrong_secret,
    )

    with pytest.raises(StorageError, match="the S3 store answered") as caught:
        store.write_blob([b"x"])
    store.close()

    assert "SignatureDoesNotMatch" in str(caught.value)
    assert wrong_secret not in str(caught.value)
    assert wrong_secret not in caplog.text


def test_connect_without_credentials_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="s3_secret_access_key"):
        S3BlobStore.connect("bucket", endpoint_url=None, region=REGION,
                            access_key_id="id", secret_access_key="")


# Opening the store the settings name.


def settings_for(tmp_path: Path, lines: str) -> Path:
    config = tmp_path / "strongroom.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n{lines}')
    return config


def test_the_default_store_is_the_blob_folder_of_data_dir(tmp_path: Path) -> None:
    settings = load_settings(str(settings_for(tmp_path, "")))

    store = open_blob_store(settings)
    assert isinstance(store, LocalBlobStore)
    blob_id = store.write_blob([b"here"]).blob_id
    store.close()

    assert (tmp_path / "data" / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id).exists()


def test_a_file_url_opens_that_folder(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    settings = load_settings(
        str(settings_for(tmp_path, f'blob_store_url = "file://{folder}"\n'))
    )

    store = open_blob_store(settings)
    store.close()

    assert isinstance(store, LocalBlobStore) and folder.is_dir()


def test_an_s3_url_opens_the_bucket_under_its_prefix(
    tmp_path: Path, s3_server: S3Server, s3_bucket: str, s3_client: Any
) -> None:
    lines = s3_server.toml(f"s3://{s3_bucket}/pre/fix")
    settings = load_settings(str(settings_for(tmp_path, lines)))

    store = open_blob_store(settings)
    assert isinstance(store, S3BlobStore)
    blob_id = store.write_blob([b"in s3"]).blob_id
    store.close()

    assert s3_contents(s3_client, s3_bucket) == [
        f"pre/fix/{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"
    ]
    assert not (tmp_path / "data" / "blobs").exists()


def test_an_s3_url_without_credentials_fails_naming_the_keys(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        str(settings_for(tmp_path, 'blob_store_url = "s3://some-bucket"\n'))
    )

    with pytest.raises(ConfigError, match="s3_access_key_id"):
        open_blob_store(settings)


@pytest.mark.parametrize(
    "url",
    ["s3://UPPER", "s3://ok-bucket/../up", "file://relative", "ftp://x", "s3://"],
)
def test_a_bad_blob_store_url_is_refused_at_start_up(tmp_path: Path, url: str) -> None:
    config = settings_for(tmp_path, f'blob_store_url = "{url}"\n')

    with pytest.raises(ConfigError, match="blob_store_url"):
        load_settings(str(config))


def test_the_secret_key_is_never_shown(tmp_path: Path) -> None:
    secret = "do-not-show-me-" + "z" * 300
    config = settings_for(tmp_path, f's3_secret_access_key = "{secret}"\n')

    with pytest.raises(ConfigError) as caught:
        load_settings(str(config))
    shown = settings_for(tmp_path, 's3_secret_access_key = "s3cr3t-value"\n')
    settings = load_settings(str(shown))

    assert "do-not-show-me" not in str(caught.value)
    assert "s3cr3t-value" not in repr(settings)

"""A real server whose home blobs live in S3 (SeaweedFS): the same answers as local.

Uploads, downloads (whole, ranged, conditional) and folder zips go through the
S3 store end to end; the bytes land in the bucket and nowhere on local disk, and
the server talks to nothing but loopback.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Iterator

import pytest
from live_server import ALICE_PASSWORD, API, LiveServer, run_server

from s3_server import S3Server
from strongroom.api.archive import MANIFEST_NAME

BIG_BYTES = 12 * (1 << 20) + 777  # over one 8 MiB part: a multipart upload
LIMIT_BYTES = 20 * (1 << 20)  # the server's max_upload_bytes
CONFIG = """\
data_dir = "{data_dir}"
max_upload_bytes = {limit}
{s3}"""


@pytest.fixture(scope="module")
def s3_live(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[tuple[LiveServer, str]]:
    """A server with blob_store_url = s3://BUCKET/home-blobs, and its bucket."""
    parent = tmp_path_factory.mktemp("s3-live")
    bucket = s3_server.create_bucket()
    config = CONFIG.format(
        data_dir=parent / "data", limit=LIMIT_BYTES,
        s3=s3_server.toml(f"s3://{bucket}/home-blobs"),
    )
    users = (("alice", ALICE_PASSWORD, "user"),)
    with run_server(parent, config, "auto", users) as server:
        yield server, bucket


def test_home_files_round_trip_through_s3(
    s3_live: tuple[LiveServer, str], s3_server: S3Server
) -> None:
    server, bucket = s3_live
    big, small = os.urandom(BIG_BYTES), b"small file\n"
    big_url = f"{API}/spaces/home/files/docs/big.bin"

    created = [server.request("PUT", f"{API}/spaces/home/files/docs/{name}",
                              body=data, timeout=60)
               for name, data in (("big.bin", big), ("small.txt", small))]
    whole = server.request("GET", big_url, timeout=60)
    ranged = server.request("GET", big_url, headers={"Range": "bytes=9000000-9000099"})
    suffix = server.request("GET", big_url, headers={"Range": "bytes=-10"})
    cached = server.request("GET", big_url,
                            headers={"If-None-Match": whole.header("ETag") or ""})
    archive = server.request("GET", f"{API}/spaces/home/archive/docs", timeout=60)

    assert [reply.status for reply in created] == [201, 201]
    assert whole.status == 200 and whole.body == big
    assert whole.header("ETag") == f'"{hashlib.sha256(big).hexdigest()}"'
    assert whole.header("Content-Length") == str(BIG_BYTES)
    assert ranged.status == 206 and ranged.body == big[9_000_000:9_000_100]
    assert ranged.header("Content-Range") == f"bytes 9000000-9000099/{BIG_BYTES}"
    assert suffix.status == 206 and suffix.body == big[-10:]
    assert cached.status == 304
    assert archive.status == 200
    with zipfile.ZipFile(io.BytesIO(archive.body)) as zipped:
        assert sorted(zipped.namelist()) == ["big.bin", "small.txt", MANIFEST_NAME]
        assert zipped.read("big.bin") == big and zipped.read("small.txt") == small
    assert_blobs_only_in_bucket(server, s3_server, bucket, {big, small})
    assert_only_loopback(server)


def assert_blobs_only_in_bucket(
    server: LiveServer, s3_server: S3Server, bucket: str, contents: set[bytes]
) -> None:
    client = s3_server.client()
    try:
        listing = client.list_objects_v2(Bucket=bucket, Prefix="home-blobs/")
        stored = {
            client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            for item in listing.get("Contents", [])
        }
    finally:
        client.close()
    assert stored == contents
    local = server.data_dir / "blobs"
    assert not local.exists() or not any(p.is_file() for p in local.rglob("*"))


def assert_only_loopback(server: LiveServer) -> None:
    events = server.network_events()
    assert events, "the audit hook saw no network call at all"
    strays = [e for e in events if "127.0.0.1" not in e or "169.254" in e]
    assert strays == []


def test_an_upload_over_the_limit_aborts_its_multipart_upload(
    s3_live: tuple[LiveServer, str], s3_server: S3Server
) -> None:
    server, bucket = s3_live
    client = s3_server.client()
    before = client.list_objects_v2(Bucket=bucket).get("KeyCount", 0)

    # Chunked, so the limit is found while streaming, after two parts went out.
    reply = server.request("PUT", f"{API}/spaces/home/files/too-big.bin",
                           body=b"x" * (LIMIT_BYTES + 1), chunked=True, timeout=60)

    uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    after = client.list_objects_v2(Bucket=bucket).get("KeyCount", 0)
    client.close()
    assert reply.status == 413
    assert (after, uploads) == (before, [])



def test_an_archive_import_writes_its_members_to_s3(
    s3_live: tuple[LiveServer, str],
) -> None:
    server, _ = s3_live
    members = {f"m{n}.txt": f"member {n}".encode() for n in range(20)}
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)

    reply = server.request("POST", f"{API}/spaces/home/import/imported",
                           body=packed.getvalue(), timeout=60)

    assert reply.status == 200, reply.body[:300]
    for name, data in members.items():
        got = server.request("GET", f"{API}/spaces/home/files/imported/{name}")
        assert (got.status, got.body) == (200, data)

"""A home file that `strongroom check --repair` marked damaged is refused, 410.

The blob is altered on disk behind the service's back, the real CLI marks the
row, and the live server then refuses the file rather than serve wrong bytes,
leaves it out of a folder zip, and takes a new upload that replaces the damage.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import boto3
from live_server import API, PROBLEM_JSON, LiveServer, files_url

from backends import on_s3
from strongroom.config import load_settings
from strongroom.storage import open_metadata_store


def overwrite_blob(server: LiveServer, rel_path: str, data: bytes) -> None:
    """Change a home file's stored bytes behind the service's back."""
    settings = load_settings(str(server.config_path))
    store = open_metadata_store(settings.database_url)
    try:
        alice = store.get_user_by_name("alice")
        assert alice is not None
        row = store.get_file(alice.id, rel_path)
        assert row is not None
    finally:
        store.close()
    blob_id = row.blob_id
    shard = f"{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"
    if not on_s3():
        (server.data_dir / "blobs" / shard).write_bytes(data)
        return
    # The S3 store's documented layout: s3://BUCKET/PREFIX/ab/cd/<blob id>.
    bucket, _, prefix = settings.blob_store_url.removeprefix("s3://").partition("/")
    client = boto3.session.Session(
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        region_name=settings.s3_region,
    ).client("s3", endpoint_url=settings.s3_endpoint_url)
    try:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{shard}", Body=data)
    finally:
        client.close()


def check_repair(server: LiveServer) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).with_name("strongroom")), "check", "--repair",
         "--config", str(server.config_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )


def test_a_marked_file_is_410_until_uploaded_again(server: LiveServer) -> None:
    server.reset_home("alice")
    assert server.put("home", "d/bad.txt", b"original").status == 201
    assert server.put("home", "d/good.txt", b"fine").status == 201
    overwrite_blob(server, "d/bad.txt", b"ORIGINAL")

    repaired = check_repair(server)
    refused = server.request("GET", files_url("home", "d/bad.txt"))
    zipped = server.request("GET", f"{API}/spaces/home/archive/d")
    again = server.put("home", "d/bad.txt", b"again")
    served = server.request("GET", files_url("home", "d/bad.txt"))

    assert repaired.returncode == 1, repaired.stdout + repaired.stderr
    assert "1 rows marked damaged" in repaired.stdout, repaired.stdout
    assert refused.status == 410, repaired.stdout
    assert refused.header("content-type") == PROBLEM_JSON
    assert refused.json()["code"] == "content_damaged"  # type: ignore[index]
    assert b"ORIGINAL" not in refused.body
    names = zipfile.ZipFile(io.BytesIO(zipped.body)).namelist()
    assert "d/good.txt" in names or "good.txt" in names
    assert not any(n.endswith("bad.txt") for n in names)
    assert again.status == 200 and served.body == b"again"

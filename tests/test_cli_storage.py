"""`strongroom storage migrate`: local to S3 and back, every copy checked."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from s3_server import S3Server
from strongroom.cli import main
from strongroom.config import load_settings
from strongroom.storage import open_metadata_store
from strongroom.storage.blobs import LocalBlobStore
from strongroom.storage.s3blobs import PART_BYTES

# Over one part of the S3 store opened from the settings: a multipart copy.
BIG_BYTES = PART_BYTES + 12345


class Service:
    """A data folder with rows and local blobs, and its config file."""

    def __init__(self, top: Path, s3: S3Server) -> None:
        self.top = top
        self.config = top / "strongroom.toml"
        # Only the S3 connection settings: the store itself is the default.
        connection = s3.toml("")
        self.config.write_text(f'data_dir = "{top / "data"}"\n{connection}')
        self.settings = load_settings(str(self.config))
        self.settings.data_dir.mkdir()
        self.blob_dir = top / "data" / "blobs"
        self.files: dict[str, bytes] = {}

    def add_files(self, contents: dict[str, bytes]) -> None:
        """Store each file as a row of user alice with a blob in data_dir/blobs."""
        meta = open_metadata_store(self.settings.database_url)
        blobs = LocalBlobStore.open_dir(self.blob_dir)
        try:
            user = meta.get_user_by_name("alice") or meta.add_user("alice", "x")
            for name, data in contents.items():
                info = blobs.write_blob([data])
                meta.put_file(user.id, name, blob_id=info.blob_id, size=info.size,
                              sha256=info.sha256, content_type="text/plain")
                self.files[info.blob_id] = data
        finally:
            blobs.close()
            meta.close()

    def migrate(self, source: str, target: str, *extra: str) -> int:
        return main(["storage", "migrate", "--config", str(self.config),
                     "--from", source, "--to", target, *extra])

    def local_path(self, blob_id: str) -> Path:
        return self.blob_dir / blob_id[:2] / blob_id[2:4] / blob_id


@pytest.fixture
def service(tmp_path: Path, s3_server: S3Server) -> Service:
    svc = Service(tmp_path, s3_server)
    svc.add_files({"a.txt": b"alpha", "empty.txt": b"",
                   "big.bin": os.urandom(BIG_BYTES)})
    return svc


@pytest.fixture
def s3_client(s3_server: S3Server) -> Iterator[Any]:
    client = s3_server.client()
    yield client
    client.close()


def s3_blobs(client: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every blob under `prefix` of `bucket`, by id, with its content."""
    found = {}
    listing = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    for item in listing.get("Contents", []):
        data = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
        found[item["Key"].rsplit("/", 1)[-1]] = data
    return found


def test_migrate_copies_every_blob_to_s3_and_back(
    service: Service, s3_bucket: str, s3_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    back = service.top / "back"

    to_s3 = service.migrate("", f"s3://{s3_bucket}/blobs")
    from_s3 = service.migrate(f"s3://{s3_bucket}/blobs", f"file://{back}")

    assert (to_s3, from_s3) == (0, 0)
    out = capsys.readouterr().out
    total = sum(len(data) for data in service.files.values())
    assert out.count(f"copied 3 blobs ({total} bytes), skipped 0") == 2
    assert s3_blobs(s3_client, s3_bucket, "blobs/") == service.files
    for blob_id, data in service.files.items():
        assert (back / blob_id[:2] / blob_id[2:4] / blob_id).read_bytes() == data


def test_a_second_run_copies_nothing(
    service: Service, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    service.migrate("", f"s3://{s3_bucket}")
    capsys.readouterr()

    code = service.migrate("", f"s3://{s3_bucket}")

    assert code == 0
    assert "copied 0 blobs (0 bytes), skipped 3 already in the target, 0 failed" in (
        capsys.readouterr().out
    )


def test_a_corrupted_source_blob_is_reported_and_not_copied(
    service: Service, s3_bucket: str, s3_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = next(b for b, data in service.files.items() if data == b"alpha")
    service.local_path(bad).write_bytes(b"ALPHA")  # same size, other bytes

    code = service.migrate("", f"s3://{s3_bucket}")

    assert code == 1
    out = capsys.readouterr().out
    assert f"failed  {bad}  the source blob has sha256 " in out
    assert "copied 2 blobs" in out and "1 failed" in out
    copied = s3_blobs(s3_client, s3_bucket, "")
    assert bad not in copied and len(copied) == 2


def test_a_wrong_copy_in_the_target_is_replaced(
    service: Service, s3_bucket: str, s3_client: Any
) -> None:
    """A copy cut short (or damaged) by an earlier run is found and copied again."""
    big = next(b for b, data in service.files.items() if len(data) == BIG_BYTES)
    alpha = next(b for b, data in service.files.items() if data == b"alpha")
    for blob_id, data in ((big, b"cut short"), (alpha, b"ALPHA")):
        key = f"{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=data)

    code = service.migrate("", f"s3://{s3_bucket}")

    assert code == 0
    assert s3_blobs(s3_client, s3_bucket, "") == service.files


def test_without_hashes_a_same_size_copy_is_trusted(
    service: Service, s3_bucket: str, s3_client: Any
) -> None:
    alpha = next(b for b, data in service.files.items() if data == b"alpha")
    key = f"{alpha[:2]}/{alpha[2:4]}/{alpha}"
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"ALPHA")

    code = service.migrate("", f"s3://{s3_bucket}", "--no-hashes")

    assert code == 0
    assert s3_blobs(s3_client, s3_bucket, "")[alpha] == b"ALPHA"


def test_all_also_copies_blobs_without_rows(
    service: Service, s3_bucket: str, s3_client: Any
) -> None:
    blobs = LocalBlobStore.open_dir(service.blob_dir)
    orphan = blobs.write_blob([b"no row"])
    blobs.close()

    service.migrate("", f"s3://{s3_bucket}/a")
    service.migrate("", f"s3://{s3_bucket}/b", "--all")

    assert orphan.blob_id not in s3_blobs(s3_client, s3_bucket, "a/")
    assert s3_blobs(s3_client, s3_bucket, "b/")[orphan.blob_id] == b"no row"


def test_a_row_whose_blob_is_missing_is_a_failure(
    service: Service, s3_bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    gone = next(iter(service.files))
    service.local_path(gone).unlink()

    code = service.migrate("", f"s3://{s3_bucket}")

    assert code == 1
    assert f"failed  {gone}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("source", "target"),
    [("", ""), ("s3://UPPER", ""), ("", "http://example.invalid/x")],
    ids=["same-store", "bad-from", "bad-to"],
)
def test_bad_arguments_exit_1_before_anything_is_copied(
    service: Service, source: str, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = service.migrate(source, target)

    assert code == 1
    assert "strongroom:" in capsys.readouterr().err


def test_the_copied_blobs_hash_like_their_rows(
    service: Service, s3_bucket: str, s3_client: Any
) -> None:
    service.migrate("", f"s3://{s3_bucket}")

    meta = open_metadata_store(service.settings.database_url)
    rows = meta.blob_references()
    meta.close()
    copied = s3_blobs(s3_client, s3_bucket, "")
    assert {b: (len(d), hashlib.sha256(d).hexdigest()) for b, d in copied.items()} == (
        rows
    )


def test_check_reads_the_s3_store_the_settings_name(
    service: Service, s3_server: S3Server, s3_bucket: str, s3_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service.migrate("", f"s3://{s3_bucket}/live")
    on_s3 = service.top / "on-s3.toml"
    on_s3.write_text(
        f'data_dir = "{service.top / "data"}"\n'
        + s3_server.toml(f"s3://{s3_bucket}/live")
    )
    alpha = next(b for b, data in service.files.items() if data == b"alpha")
    clean = main(["check", "--config", str(on_s3)])
    key = f"live/{alpha[:2]}/{alpha[2:4]}/{alpha}"
    s3_client.delete_object(Bucket=s3_bucket, Key=key)
    s3_client.put_object(Bucket=s3_bucket, Key=key, Body=b"ALPHA")
    capsys.readouterr()

    damaged = main(["check", "--config", str(on_s3), "--json"])

    assert (clean, damaged) == (0, 1)
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["kind"], f["blob_id"]) for f in findings] == [("hash_mismatch", alpha)]

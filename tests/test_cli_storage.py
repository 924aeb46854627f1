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
from strongroom.storage.blob_copy import copy_blobs
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
    assert service.local_path(bad).read_bytes() == b"ALPHA"  # the source is kept


def test_a_different_blob_in_the_target_is_reported_and_kept(
    service: Service, s3_bucket: str, s3_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A blob already in the target under an id (a copy cut short, or the only
    copy of something) is never deleted: the admin decides."""
    big = next(b for b, data in service.files.items() if len(data) == BIG_BYTES)
    alpha = next(b for b, data in service.files.items() if data == b"alpha")
    planted = {big: b"cut short", alpha: b"ALPHA"}
    for blob_id, data in planted.items():
        key = f"{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"
        s3_client.put_object(Bucket=s3_bucket, Key=key, Body=data)

    code = service.migrate("", f"s3://{s3_bucket}")

    assert code == 1
    out = capsys.readouterr().out
    for blob_id in planted:
        assert f"failed  {blob_id}  the target already holds a different blob" in out
    in_target = s3_blobs(s3_client, s3_bucket, "")
    assert {b: in_target[b] for b in planted} == planted
    assert len(in_target) == 3


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


def damage_two_blobs(service: Service) -> dict[Path, bytes]:
    """Truncate one blob and change a byte of another; return what is on disk."""
    big = next(b for b, data in service.files.items() if len(data) == BIG_BYTES)
    alpha = next(b for b, data in service.files.items() if data == b"alpha")
    service.local_path(big).write_bytes(service.files[big][:100])
    service.local_path(alpha).write_bytes(b"alphA")
    return {service.local_path(b): service.local_path(b).read_bytes()
            for b in service.files}


@pytest.mark.parametrize(
    "spelling",
    ["{blobs}/", "{top}/data/./blobs", "{top}/link"],
    ids=["trailing-slash", "dot", "symlink"],
)
def test_the_same_folder_spelled_differently_is_refused_and_kept(
    service: Service, spelling: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (service.top / "link").symlink_to(service.blob_dir)
    on_disk = damage_two_blobs(service)
    target = spelling.format(blobs=service.blob_dir, top=service.top)

    code = service.migrate("", f"file://{target}")

    assert code == 1
    out, err = capsys.readouterr()
    assert "lead to the same store; nothing was copied" in err and out == ""
    assert {path: path.read_bytes() for path in on_disk} == on_disk


def test_a_copy_onto_the_source_itself_deletes_nothing(service: Service) -> None:
    """Past the same-store refusal, the copy itself never deletes: a blob the
    target already holds, even damaged, is reported and left as it is."""
    on_disk = damage_two_blobs(service)
    meta = open_metadata_store(service.settings.database_url)
    source = LocalBlobStore.open_dir(service.blob_dir, create=False)
    target = LocalBlobStore.open_dir(service.blob_dir, create=False)
    try:
        report = copy_blobs(meta, source, target)
    finally:
        for opened in (target, source, meta):
            opened.close()

    assert {path: path.read_bytes() for path in on_disk} == on_disk
    assert len(report.failures) == 2 and report.copied == 0
    assert all("already holds a different blob" in f.reason for f in report.failures)


def test_the_same_bucket_spelled_differently_is_refused(
    service: Service, s3_bucket: str, s3_client: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    service.migrate("", f"s3://{s3_bucket}/blobs")
    before = s3_blobs(s3_client, s3_bucket, "blobs/")

    code = service.migrate(f"s3://{s3_bucket}/blobs", f"s3://{s3_bucket}/blobs/")

    assert code == 1
    assert "lead to the same store" in capsys.readouterr().err
    assert s3_blobs(s3_client, s3_bucket, "blobs/") == before == service.files


def test_a_missing_source_folder_is_refused_and_not_created(
    service: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = service.top / "nonexistent" / "xx"
    target = service.top / "target"

    code = service.migrate(f"file://{missing}", f"file://{target}")

    assert code == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.count("\n") == 1
    assert not (service.top / "nonexistent").exists() and not target.exists()


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

"""`home_quota_bytes`: a home space holds at most that much, whatever way files arrive.

Uploads (PUT), archive imports and resumable uploads are all refused with 507
`storage_quota` when they would take the space past its quota, and leave nothing
behind; concurrent uploads never pass it together. Like every HTTP test this runs
on SQLite and a local folder, and again on PostgreSQL and S3.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator

import pytest
from live_server import API, CONFIG, SPACE_DIRS, LiveServer, files_url, run_server
from tus_support import USERS, create, location, patch

from concurrency import run_together

QUOTA = 1000


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    parent = tmp_path_factory.mktemp("p-quota")
    for name in (*SPACE_DIRS, "outside"):
        (parent / name).mkdir()
    config_text = f"home_quota_bytes = {QUOTA}\n" + CONFIG.format(
        data_dir=parent / "data"
    )
    with run_server(parent, config_text, "auto", USERS) as server:
        yield server


@pytest.fixture
def server(quota_server: LiveServer) -> LiveServer:
    quota_server.reset_home("alice")
    return quota_server


def used(server: LiveServer) -> int:
    account = server.request("GET", f"{API}/account").json()
    assert isinstance(account, dict) and account["quota_bytes"] == QUOTA
    value = account["used_bytes"]
    assert isinstance(value, int)
    return value


def assert_quota_refusal(reply_status: int, content_type: str | None, body: bytes
                         ) -> None:
    assert reply_status == 507, body[:300]
    assert content_type == "application/problem+json"
    assert b'"storage_quota"' in body


def test_an_upload_past_the_quota_is_refused_and_leaves_nothing(
    server: LiveServer,
) -> None:
    assert server.put("home", "a.bin", b"a" * 600).status == 201

    over = server.put("home", "b.bin", b"b" * 401)

    assert_quota_refusal(over.status, over.header("content-type"), over.body)
    assert server.request("GET", files_url("home", "b.bin")).status == 404
    assert used(server) == 600
    assert server.put("home", "b.bin", b"b" * 400).status == 201
    assert used(server) == QUOTA


def test_a_smaller_replacement_passes_at_the_quota(server: LiveServer) -> None:
    server.put("home", "a.bin", b"a" * QUOTA)

    smaller = server.put("home", "a.bin", b"s" * 10)

    assert smaller.status in (200, 204)
    assert used(server) == 10


def test_directory_spaces_have_no_quota(server: LiveServer) -> None:
    assert server.put("lab", "big.bin", b"x" * (QUOTA + 1)).status == 201


def test_an_import_past_the_quota_is_refused_as_a_whole(server: LiveServer) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for n in range(5):
            info = tarfile.TarInfo(f"i/f{n}.bin")
            info.size = 300
            tar.addfile(info, io.BytesIO(b"%d" % n * 300))

    reply = server.request("POST", f"{API}/spaces/home/import", body=out.getvalue())

    assert_quota_refusal(reply.status, reply.header("content-type"), reply.body)
    assert server.request("GET", files_url("home", "i/f0.bin")).status == 404
    assert used(server) == 0


def test_a_resumable_upload_that_cannot_fit_is_refused_when_created(
    server: LiveServer,
) -> None:
    server.put("home", "a.bin", b"a" * 900)

    made = create(server, "home", "t.bin", 200)

    assert_quota_refusal(made.status, made.header("content-type"), made.body)
    assert made.header("location") is None


def test_a_resumable_upload_overtaken_by_other_files_is_refused_at_its_end(
    server: LiveServer,
) -> None:
    url = location(create(server, "home", "t.bin", 200))  # fits now
    server.put("home", "a.bin", b"a" * 900)  # and then no longer

    done = patch(server, url, 0, b"t" * 200)

    assert_quota_refusal(done.status, done.header("content-type"), done.body)
    assert server.request("GET", files_url("home", "t.bin")).status == 404
    assert used(server) == 900


def test_concurrent_uploads_never_pass_the_quota_together(
    server: LiveServer,
) -> None:
    """Ten 300-byte uploads race for room for three."""
    statuses = run_together(
        10, lambda n: server.put("home", f"c{n}.bin", b"c" * 300).status
    )

    assert sorted(statuses) == [201] * 3 + [507] * 7
    assert used(server) == 900

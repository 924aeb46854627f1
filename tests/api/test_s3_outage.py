"""The S3 store goes away under a running server: clear 503s, nothing lost.

Found by an attack session: with the store down, home requests answered 500,
and a delete answered 500 although it had already removed the file.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import ALICE_PASSWORD, API, LiveServer, files_url, run_server

from s3_server import S3Server, run_s3_server

CONFIG = """\
data_dir = "{data_dir}"
{s3}"""


@pytest.fixture
def outage(tmp_path: Path) -> Iterator[tuple[LiveServer, S3Server]]:
    """A server on an S3 store of its own, which the test may stop."""
    (tmp_path / "p").mkdir()
    with run_s3_server(tmp_path / "s3") as s3:
        config = CONFIG.format(data_dir=tmp_path / "p" / "data",
                               s3=s3.toml(f"s3://{s3.create_bucket()}/homes"))
        with run_server(tmp_path / "p", config, "auto",
                        (("alice", ALICE_PASSWORD, "user"),)) as server:
            yield server, s3


def test_requests_get_a_503_to_retry_while_the_store_is_away(
    outage: tuple[LiveServer, S3Server],
) -> None:
    server, s3 = outage
    assert server.put("home", "kept.txt", b"kept").status == 201
    assert server.put("home", "gone.txt", b"gone").status == 201
    s3.process.kill()
    s3.process.wait()

    read = server.request("GET", files_url("home", "kept.txt"), timeout=120)
    write = server.put("home", "new.txt", b"new")
    removed = server.request("DELETE", files_url("home", "gone.txt"), timeout=120)
    listing = server.request("GET", f"{API}/spaces/home/list")

    for reply in (read, write):
        assert reply.status == 503, reply.body[:300]
        assert reply.header("content-type") == "application/problem+json"
        assert reply.json()["code"] == "store_unavailable"  # type: ignore[index]
        assert reply.header("retry-after") == "5"
    # The row is gone, so the delete is done; the blob is an orphan for `check`.
    assert removed.status == 204
    names = [e["name"] for e in listing.json()["entries"]]  # type: ignore[index]
    assert names == ["kept.txt"]


def test_an_instance_starts_while_the_store_is_away_and_says_it_is_not_ready(
    tmp_path: Path,
) -> None:
    """Under an orchestrator, a store outage must not crash-loop every instance."""
    parent = tmp_path / "p"
    (parent / "lab").mkdir(parents=True)
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    config = (
        f'data_dir = "{parent / "data"}"\n'
        f'blob_store_url = "s3://away/homes"\n'
        f's3_endpoint_url = "http://127.0.0.1:{port}"\n'
        's3_access_key_id = "k"\ns3_secret_access_key = "not-a-real-secret"\n'
        '[[spaces]]\nname = "lab"\npath = "lab"\nmode = "rw"\nusers = ["*"]\n'
    )
    with run_server(parent, config, "auto", (("alice", ALICE_PASSWORD, "user"),)) as s:
        ready = s.request("GET", "/readyz", token=None)
        local = s.put("lab", "fine.txt", b"directory spaces still work")
        home = s.put("home", "later.txt", b"not now")

    assert ready.status == 503
    assert ready.json()["checks"]["blobs"] == "failed"  # type: ignore[index]
    assert local.status == 201
    assert home.status == 503
    assert home.json()["code"] == "store_unavailable"  # type: ignore[index]

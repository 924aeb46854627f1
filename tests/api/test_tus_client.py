"""tus conformance: a real tus client from PyPI (tuspy) against a live server.

The client creates the upload, sends a multi-MiB file in chunks with a SHA-1
checksum on each, and resumes with the same URL after it stopped mid-way or
after its connection was cut. The bytes that arrive are compared with the
file that was sent; nothing may be left in the staging folder afterwards.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator

import pytest
from live_server import LiveServer
from tus_support import (
    UPLOADS,
    cut_patch_short,
    leftovers,
    own_server,
    read_file,
)
from tusclient.client import TusClient
from tusclient.exceptions import TusCommunicationError
from tusclient.uploader import Uploader

from strongroom.api.uploads import STAGE_BATCH_BYTES

FILE_BYTES = 5 * (1 << 20) + 12_345
CHUNK_BYTES = 1 << 20


@pytest.fixture(scope="module")
def tus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server of our own that takes uploads of several MiB."""
    with own_server(tmp_path_factory.mktemp("tus-client")) as server:
        yield server


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the client's HTTP library off any proxy the environment names."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


@pytest.fixture(params=["lab", "home"])
def space(request: pytest.FixtureRequest) -> str:
    """A read-write space of each kind: directory and home."""
    name: str = request.param
    return name


def uploader(
    server: LiveServer, data: bytes, space: str, path: str, url: str | None = None
) -> Uploader:
    client = TusClient(
        f"http://127.0.0.1:{server.port}{UPLOADS}",
        headers={"Authorization": f"Bearer {server.tokens['alice']}"},
    )
    name = path.rsplit("/", 1)[-1]
    metadata = {"space": space, "path": path, "filename": name}
    return client.uploader(
        file_stream=io.BytesIO(data), chunk_size=CHUNK_BYTES, metadata=metadata,
        upload_checksum=True, url=url,
    )


def test_tuspy_uploads_a_multi_mib_file_in_chunks(
    tus_server: LiveServer, space: str
) -> None:
    data = secrets.token_bytes(FILE_BYTES)
    path = f"conformance/{space}-whole.bin"

    uploader(tus_server, data, space, path).upload()

    assert read_file(tus_server, space, path).body == data
    assert leftovers(tus_server) == []


def test_tuspy_resumes_with_the_same_url_after_stopping_midway(
    tus_server: LiveServer, space: str
) -> None:
    data = secrets.token_bytes(FILE_BYTES)
    path = f"conformance/{space}-stopped.bin"
    first = uploader(tus_server, data, space, path)
    first.upload(stop_at=2 * CHUNK_BYTES)
    hidden = read_file(tus_server, space, path)

    second = uploader(tus_server, data, space, path, url=first.url)
    resumed_at = second.offset
    second.upload()

    assert hidden.status == 404
    assert resumed_at == 2 * CHUNK_BYTES
    assert read_file(tus_server, space, path).body == data
    assert leftovers(tus_server) == []


def test_tuspy_resumes_with_the_same_url_after_the_connection_is_cut(
    tus_server: LiveServer, space: str
) -> None:
    data = secrets.token_bytes(FILE_BYTES)
    path = f"conformance/{space}-cut.bin"
    first = uploader(tus_server, data, space, path)
    first.set_url(first.create_url())
    url_path = first.url.split(f":{tus_server.port}", 1)[1]
    kept = cut_patch_short(tus_server, url_path, 0, FILE_BYTES,
                           data[:700_000], staged_at_least=STAGE_BATCH_BYTES)

    second = uploader(tus_server, data, space, path, url=first.url)
    resumed_at = second.offset
    second.upload()

    assert STAGE_BATCH_BYTES <= kept <= 700_000
    assert resumed_at == kept
    assert read_file(tus_server, space, path).body == data
    assert leftovers(tus_server) == []


def test_tuspy_uploads_an_empty_file(tus_server: LiveServer, space: str) -> None:
    path = f"conformance/{space}-empty.bin"

    uploader(tus_server, b"", space, path).upload()

    assert read_file(tus_server, space, path).status == 200
    assert read_file(tus_server, space, path).body == b""


def test_tuspy_is_refused_a_read_only_space_at_creation(
    tus_server: LiveServer,
) -> None:
    with pytest.raises(TusCommunicationError) as refused:
        uploader(tus_server, b"abc", "docs-ro", "no.bin").upload()

    assert refused.value.status_code == 403
    assert leftovers(tus_server) == []


def test_tuspy_cannot_resume_another_users_upload(tus_server: LiveServer) -> None:
    data = secrets.token_bytes(3 * CHUNK_BYTES)
    first = uploader(tus_server, data, "lab", "conformance/alice.bin")
    first.upload(stop_at=CHUNK_BYTES)
    bob = TusClient(
        f"http://127.0.0.1:{tus_server.port}{UPLOADS}",
        headers={"Authorization": f"Bearer {tus_server.tokens['bob']}"},
    )

    with pytest.raises(TusCommunicationError) as refused:
        bob.uploader(file_stream=io.BytesIO(data), url=first.url)

    assert refused.value.status_code == 404

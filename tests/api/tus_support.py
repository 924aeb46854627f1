"""What the tus tests share: raw tus requests, a look at the staging folder, and a
server of our own with a bigger upload limit.

Requests are built by hand from the protocol (tus 1.0.0), never by the server's
own helpers, so a test reads as what a client sends.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from live_server import (
    ALICE_PASSWORD,
    API,
    BOB_PASSWORD,
    CONFIG,
    SPACE_DIRS,
    STAGING_PREFIX,
    LiveServer,
    Reply,
    run_server,
    snapshot_tree,
    wait_until,
)
from sqlalchemy import delete, update

from strongroom.config import load_settings
from strongroom.storage import open_metadata_store
from strongroom.storage._schema import uploads

UPLOADS = f"{API}/uploads"
TUS = {"Tus-Resumable": "1.0.0"}
CHUNK_TYPE = {"Content-Type": "application/offset+octet-stream"}
USERS = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))
# Our own servers take uploads of several MiB (the shared fixture's limit is 1 MiB).
BIG_UPLOAD_BYTES = 64 << 20


def encode_metadata(pairs: Mapping[str, str | bytes]) -> str:
    """Return an Upload-Metadata value: `key base64(value)` pairs, comma-separated."""
    encoded = []
    for key, value in pairs.items():
        raw = value.encode() if isinstance(value, str) else value
        encoded.append(f"{key} {base64.b64encode(raw).decode()}")
    return ",".join(encoded)


def create(
    server: LiveServer,
    space: str,
    path: str,
    length: int,
    *,
    token: str = "alice",
    extra: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
) -> Reply:
    """POST a new upload of `length` bytes to `path` of `space`."""
    metadata = encode_metadata({"space": space, "path": path, **(extra or {})})
    sent = {
        **TUS,
        "Upload-Length": str(length),
        "Upload-Metadata": metadata,
        **(headers or {}),
    }
    return server.request("POST", UPLOADS, headers=sent, token=token, body=body)


def location(reply: Reply) -> str:
    """Return the upload URL of a 201 answer (a path on the server)."""
    assert reply.status == 201, (reply.status, reply.body[:300])
    found = reply.header("Location")
    assert found is not None and found.startswith(UPLOADS + "/"), found
    return found


def start(server: LiveServer, space: str, path: str, length: int) -> str:
    """Create an upload and return its URL."""
    return location(create(server, space, path, length))


def patch(
    server: LiveServer,
    url: str,
    offset: int,
    body: bytes,
    *,
    token: str = "alice",
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """PATCH `body` at `offset`."""
    sent = {**TUS, **CHUNK_TYPE, "Upload-Offset": str(offset), **(headers or {})}
    return server.request("PATCH", url, headers=sent, body=body, token=token)


def head(server: LiveServer, url: str, *, token: str = "alice") -> Reply:
    """HEAD the upload."""
    return server.request("HEAD", url, headers=TUS, token=token)


def offset_of(server: LiveServer, url: str) -> int:
    """Return the upload's offset as HEAD reports it."""
    reply = head(server, url)
    assert reply.status == 200, reply.status
    return int(reply.header("Upload-Offset") or "-1")


def upload_all(
    server: LiveServer, space: str, path: str, data: bytes, chunk: int
) -> str:
    """Upload `data` in chunks of `chunk` bytes; return the upload URL."""
    url = start(server, space, path, len(data))
    for offset in range(0, len(data), chunk):
        reply = patch(server, url, offset, data[offset:offset + chunk])
        assert reply.status == 204, (reply.status, reply.body[:300])
    return url


def checksum(algorithm: str, data: bytes) -> str:
    """Return an Upload-Checksum value for `data`."""
    digest = hashlib.new(algorithm, data).digest()
    return f"{algorithm} {base64.b64encode(digest).decode()}"


def staged_files(server: LiveServer) -> list[str]:
    """Return the names in the server's upload staging folder."""
    folder = server.data_dir / "uploads"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def leftovers(server: LiveServer) -> list[str]:
    """Return staging files anywhere: the upload folder, lab, and the blob store."""
    in_spaces = [
        path for top in (server.parent / "lab", server.data_dir / "blobs")
        for path in snapshot_tree(top)
        if path.rsplit("/", 1)[-1].startswith(STAGING_PREFIX)
    ]
    return staged_files(server) + in_spaces


def read_file(server: LiveServer, space: str, path: str) -> Reply:
    """GET a file of a space."""
    return server.request("GET", f"{API}/spaces/{space}/files/{path}")


def expire(server: LiveServer, url: str, *, in_seconds: float = -1.0) -> None:
    """Set an upload's expiry `in_seconds` from now (the past by default).

    Written into the server's own database: the clock is the one edge these
    tests move by hand, since they never sleep.
    """
    when = datetime.now(UTC) + timedelta(seconds=in_seconds)
    with _database(server) as store, store._engine.begin() as conn:
        conn.execute(
            update(uploads).where(uploads.c.id == upload_id_of(url))
            .values(expires_at=when)
        )


def upload_id_of(url: str) -> str:
    """Return the id at the end of an upload URL."""
    return url.rsplit("/", 1)[1]


def is_locked(server: LiveServer, url: str) -> bool:
    """Whether a request holds the upload's lock (a flock on its staged file).

    Read from /proc/locks, never by trying the lock: a probe holding it for a
    moment would make the server refuse the very request the test waits for.
    """
    inode = os.stat(server.data_dir / "uploads" / upload_id_of(url)).st_ino
    with open("/proc/locks") as table:
        return any(
            line.split()[1] == "FLOCK" and line.split()[5].endswith(f":{inode}")
            for line in table
            if len(line.split()) > 5
        )


def staged_size(server: LiveServer, url: str) -> int:
    """Return how many bytes the server has staged for the upload so far."""
    return os.stat(server.data_dir / "uploads" / upload_id_of(url)).st_size


def offset_when_settled(server: LiveServer, url: str) -> int:
    """Return the offset once the request that was cut short has let go.

    The server records a cut-short chunk after the client has gone, which no
    answer can signal; so this waits (bounded) for the upload's lock to free.
    """
    wait_until(lambda: not is_locked(server, url), "the upload's lock to free")
    return offset_of(server, url)


def cut_patch_short(
    server: LiveServer, url: str, offset: int, declared: int, sent: bytes,
    staged_at_least: int,
) -> int:
    """PATCH `sent` of a `declared`-byte chunk, break the connection, and return
    the offset the server kept.

    The connection breaks only once the server has staged `staged_at_least`
    bytes, so the test knows the bytes reached it (uvicorn drops body bytes it
    buffered but the app had not read when a client leaves).
    """
    with open_patch(server, url, offset, declared) as sock:
        sock.sendall(sent)
        wait_until(lambda: staged_size(server, url) >= offset + staged_at_least,
                   "the server to stage the first bytes")
    return offset_when_settled(server, url)


@contextlib.contextmanager
def open_patch(
    server: LiveServer,
    url: str,
    offset: int,
    declared: int,
    *,
    token: str = "alice",
    headers: Mapping[str, str] | None = None,
) -> Iterator[socket.socket]:
    """Send a PATCH's headers and keep its socket open for the body to follow."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    lines = (
        f"PATCH {url} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\nConnection: close\r\n"
        f"Upload-Offset: {offset}\r\nContent-Length: {declared}\r\n{extra}"
        f"Authorization: Bearer {server.tokens[token]}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(lines.encode())
        yield sock


def read_answer(sock: socket.socket) -> bytes:
    """Read what the server sends until it closes the connection."""
    answer = b""
    while chunk := sock.recv(1 << 16):
        answer += chunk
    return answer


def forget_uploads(server: LiveServer) -> None:
    """Remove every upload row and staged file, so each test starts with none."""
    with _database(server) as store, store._engine.begin() as conn:
        conn.execute(delete(uploads))
    for name in staged_files(server):
        (server.data_dir / "uploads" / name).unlink()


@contextmanager
def own_server(
    parent: Path, resolver: str = "openat2", *, add_users: bool = True
) -> Iterator[LiveServer]:
    """Run a server on `parent` (made if missing) that takes uploads of 64 MiB.

    With `add_users=False` the users are already in `parent`'s database (a
    restart); they are logged in again either way.
    """
    for name in (*SPACE_DIRS, "outside", "lab-backup"):
        (parent / name).mkdir(parents=True, exist_ok=True)
    config = CONFIG.format(data_dir=parent / "data").replace(
        "max_upload_bytes = 1048576", f"max_upload_bytes = {BIG_UPLOAD_BYTES}"
    )
    with run_server(parent, config, resolver, USERS if add_users else ()) as server:
        if not add_users:
            for name, password, _ in USERS:
                reply = server.login(name, password)
                assert reply.status == 200, reply.body
                server.tokens[name] = reply.json()["access_token"]  # type: ignore[index]
        yield server


@contextmanager
def _database(server: LiveServer) -> Iterator:
    store = open_metadata_store(load_settings(str(server.config_path)).database_url)
    try:
        yield store
    finally:
        store.close()

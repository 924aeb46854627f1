"""A real Strongroom server on a loopback port, and a raw HTTP client for it.

Layout (the shared HTTP cases' convention): one parent directory P holds the space
roots side by side (P/lab, P/team, P/ops, P/bob), a sibling P/lab-backup whose name
starts with "lab", and P/outside, which no request may ever touch. The server runs
in its own process (uvicorn, as in production), once per resolver, so every HTTP
test runs against both the openat2 path and the forced component walk.
"""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from strongroom.auth import PasswordHasher
from strongroom.config import load_settings
from strongroom.storage import open_metadata_store

ALICE_PASSWORD = "alice-password-1"  # noqa: S105 (test fixture)
BOB_PASSWORD = "bob-password-22"  # noqa: S105 (test fixture)
SPACE_DIRS = ("lab", "team", "ops", "bob", "docs-ro")
CONFIG = """\
data_dir = "{data_dir}"
max_upload_bytes = 1048576

[[spaces]]
name = "lab"
path = "lab"
mode = "rw"
users = ["alice", "bob"]

[[spaces]]
name = "team"
path = "team"
mode = "rw"
users = ["alice"]

[[spaces]]
name = "ops"
path = "ops"
mode = "rw"
users = ["role:admin"]

[[spaces]]
name = "bob"
path = "bob"
mode = "rw"
users = ["bob"]

[[spaces]]
name = "docs-ro"
path = "docs-ro"
mode = "ro"
users = ["*"]
"""
START_TIMEOUT_SECONDS = 20.0


@dataclass
class Reply:
    """One HTTP answer, as received on the wire."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    def header(self, name: str) -> str | None:
        """Return one header's value (None when absent)."""
        return self.headers.get(name)

    def json(self) -> object:
        """Decode the body as JSON."""
        import json

        return json.loads(self.body)


@dataclass
class LiveServer:
    """A running server and the directory tree it serves."""

    parent: Path
    port: int
    resolver: str
    tokens: dict[str, str] = field(default_factory=dict)

    def request(
        self,
        method: str,
        raw_path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
        token: str | None = "alice",
        timeout: float = 10.0,
    ) -> Reply:
        """Send one request with `raw_path` exactly as written (no normalising)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {self.tokens[token]}")
        started = time.monotonic()
        try:
            conn.putrequest(method, raw_path, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            if body is not None or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return Reply(resp.status, resp.headers, data, time.monotonic() - started)
        finally:
            conn.close()

    def login(self, user: str, password: str) -> Reply:
        """POST the password form to /api/v1/token."""
        form = f"username={user}&password={password}".encode()
        return self.request(
            "POST", "/api/v1/token", body=form, token=None,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    def reset_tree(self) -> None:
        """Empty every space and the outside folders, keeping the roots themselves.

        The server holds a descriptor on each root, so the roots are emptied, never
        replaced.
        """
        for name in (*SPACE_DIRS, "outside", "lab-backup"):
            top = self.parent / name
            top.mkdir(exist_ok=True)
            for child in top.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def add_user(config: Path, name: str, password: str, role: str) -> None:
    """Create a user directly in the server's database."""
    settings = load_settings(str(config))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_metadata_store(settings.database_url)
    try:
        store.add_user(name, PasswordHasher().hash(password), role=role)  # type: ignore[arg-type]
    finally:
        store.close()


def wait_until_up(proc: subprocess.Popen[bytes], port: int) -> None:
    """Poll /healthz until the server answers, or fail after a bound."""
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not answer /healthz in time")



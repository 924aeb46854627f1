"""One large HTTP transfer (a download to nowhere, or a PUT of a file), timed.

curl does the transfer when installed: a C client keeps the client's own cost out
of the figure. Without curl, `http.client` streams in 1 MiB blocks. Only loopback
URLs are accepted, and every transfer is bounded by a timeout.
"""

from __future__ import annotations

import http.client
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bench._servers import LOOPBACK

__all__ = ["TransferResult", "transfer"]

_BLOCK_BYTES = 1 << 20


@dataclass(frozen=True)
class TransferResult:
    """Status, bytes moved and wall time of one transfer; `body` is the answer."""

    status: int
    size: int
    seconds: float
    body: bytes


def transfer(
    url: str,
    headers: Mapping[str, str],
    *,
    upload: Path | None,
    timeout: float,
    scratch: Path,
) -> TransferResult:
    """GET `url` (discarding the body) or, with `upload`, PUT that file to it.

    `scratch` is a file the answer body of an upload is written to (curl only).
    Raises `subprocess.TimeoutExpired` or `TimeoutError` past `timeout`.
    """
    if urllib.parse.urlsplit(url).hostname != LOOPBACK:
        raise ValueError(f"transfers only ever go to {LOOPBACK}")
    if shutil.which("curl"):
        return _transfer_curl(url, headers, upload, timeout, scratch)
    return _transfer_python(url, headers, upload, timeout)


def _transfer_curl(
    url: str,
    headers: Mapping[str, str],
    upload: Path | None,
    timeout: float,
    scratch: Path,
) -> TransferResult:
    out = "/dev/null" if upload is None else str(scratch)
    argv = [
        "curl", "--silent", "--show-error", "--noproxy", "*",
        "--max-time", str(round(timeout)), "--output", out,
        "--write-out", "%{http_code} %{size_download} %{size_upload} %{time_total}",
    ]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    if upload is not None:
        # No "Expect: 100-continue" round trip: every peer gets the body at once.
        argv += ["--upload-file", str(upload), "--header", "Expect:"]
    argv.append(url)
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout + 10, check=True
    )

    status, down, up, seconds = done.stdout.split()
    body = scratch.read_bytes() if upload is not None else b""
    moved = int(float(up if upload is not None else down))
    return TransferResult(int(status), moved, float(seconds), body)


def _transfer_python(
    url: str, headers: Mapping[str, str], upload: Path | None, timeout: float
) -> TransferResult:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(
        LOOPBACK, parts.port, timeout=timeout, blocksize=_BLOCK_BYTES
    )
    started = time.monotonic()
    try:
        if upload is None:
            connection.request("GET", parts.path, headers=dict(headers))
            response = connection.getresponse()
            moved = 0
            while block := response.read(_BLOCK_BYTES):
                moved += len(block)
            body = b""
        else:
            size = upload.stat().st_size
            sent = {**headers, "Content-Length": str(size)}
            with upload.open("rb") as source:
                connection.request("PUT", parts.path, body=source, headers=sent)
            response = connection.getresponse()
            body, moved = response.read(), size
    finally:
        connection.close()
    return TransferResult(response.status, moved, time.monotonic() - started, body)

"""Load generators: `wrk` when installed, else a small asyncio HTTP/1.1 client.

Both keep a fixed number of keep-alive connections busy against one URL for a fixed
time and report requests per second. Every loop is bounded twice: by its duration
and by a maximum request count (the asyncio client) or a process timeout (wrk).
Only loopback URLs are accepted.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from bench._servers import LOOPBACK

__all__ = ["LoadResult", "has_wrk", "run_load"]

# wrk runs one thread: the server under test gets the other core of the two.
WRK_THREADS = 1
# A request slower than this counts as a timeout error rather than a sample.
REQUEST_TIMEOUT_SECONDS = 5
# Beyond the measured duration, how long wrk may take to start and report.
WRK_GRACE_SECONDS = 30
# The asyncio client stops at this many requests even if time remains: no server
# here answers a million small requests in one short round, so it never binds
# before the clock, yet it caps the loop.
MAX_PYTHON_REQUESTS = 1_000_000


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured."""

    tool: str
    requests: int
    seconds: float
    requests_per_second: float
    errors: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None

    def as_dict(self) -> dict[str, object]:
        """Return the result as plain JSON values."""
        return asdict(self)


def has_wrk() -> bool:
    """Tell whether wrk is on PATH."""
    return shutil.which("wrk") is not None


def run_load(
    url: str,
    headers: Mapping[str, str],
    *,
    connections: int,
    seconds: float,
    tool: str,
) -> LoadResult:
    """Keep `connections` connections requesting `url` for `seconds`.

    `tool` is "wrk" or "python". Errors (connection failures, timeouts, any status
    other than 200) are counted in `errors`, never hidden in the rate.
    """
    _check_loopback(url)
    if tool == "wrk":
        return _run_wrk(url, headers, connections, seconds)
    return asyncio.run(_run_python(url, headers, connections, seconds))


def _check_loopback(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host != LOOPBACK:
        raise ValueError(f"load is only ever sent to {LOOPBACK}, not {host!r}")


def _run_wrk(
    url: str, headers: Mapping[str, str], connections: int, seconds: float
) -> LoadResult:
    argv = [
        "wrk",
        f"--threads={WRK_THREADS}",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={REQUEST_TIMEOUT_SECONDS}s",
        "--latency",
    ]
    for name, value in headers.items():
        argv += ["--header", f"{name}: {value}"]
    argv.append(url)
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + WRK_GRACE_SECONDS,
        check=True,
    )
    return _parse_wrk(done.stdout)


def _parse_wrk(text: str) -> LoadResult:
    found = re.search(r"(\d+) requests in ([\d.]+)(\w+),", text)
    if found is None:
        raise RuntimeError(f"cannot read wrk's report:\n{text}")
    requests = int(found.group(1))
    seconds = float(found.group(2)) * _TIME_UNITS[found.group(3)]
    # wrk lists socket errors and non-2xx/3xx answers on separate lines.
    socket_errors = re.findall(r"(?:connect|read|write|timeout) (\d+)", text)
    errors = sum(int(n) for n in socket_errors)
    non_ok = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors += int(non_ok.group(1)) if non_ok else 0
    return LoadResult(
        tool="wrk",
        requests=requests,
        seconds=seconds,
        requests_per_second=requests / seconds,
        errors=errors,
        latency_p50_ms=_wrk_percentile(text, "50%"),
        latency_p99_ms=_wrk_percentile(text, "99%"),
    )


_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _wrk_percentile(text: str, label: str) -> float | None:
    found = re.search(rf"^\s+{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    if found is None:
        return None
    return float(found.group(1)) * _TIME_UNITS[found.group(2)] * 1e3


async def _run_python(
    url: str, headers: Mapping[str, str], connections: int, seconds: float
) -> LoadResult:
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    state = _PythonLoadState(deadline=time.monotonic() + seconds)

    started = time.monotonic()
    workers = [
        _python_connection(LOOPBACK, parts.port or 80, request, state)
        for _ in range(connections)
    ]
    await asyncio.gather(*workers)
    elapsed = time.monotonic() - started

    state.latencies.sort()
    count = len(state.latencies)
    return LoadResult(
        tool="python",
        requests=count,
        seconds=elapsed,
        requests_per_second=count / elapsed,
        errors=state.errors,
        latency_p50_ms=state.latencies[count // 2] * 1e3 if count else None,
        latency_p99_ms=state.latencies[int(count * 0.99)] * 1e3 if count else None,
    )


@dataclass
class _PythonLoadState:
    deadline: float
    errors: int = 0

    def __post_init__(self) -> None:
        self.latencies: list[float] = []

    def may_continue(self) -> bool:
        return (
            time.monotonic() < self.deadline
            and len(self.latencies) + self.errors < MAX_PYTHON_REQUESTS
        )


async def _python_connection(
    host: str, port: int, request: bytes, state: _PythonLoadState
) -> None:
    # One keep-alive connection; after an error it reconnects, until time is up.
    while state.may_continue():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            state.errors += 1
            continue
        try:
            while state.may_continue():
                sent = time.monotonic()
                writer.write(request)
                ok = await asyncio.wait_for(
                    _read_response(reader), REQUEST_TIMEOUT_SECONDS
                )
                if ok:
                    state.latencies.append(time.monotonic() - sent)
                else:
                    state.errors += 1
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            state.errors += 1
        finally:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> bool:
    """Read one response (fixed length or chunked); tell whether it was a 200."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, _, header_block = head.partition(b"\r\n")
    fields = {}
    for line in header_block.split(b"\r\n"):
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip().lower()
    if fields.get(b"transfer-encoding") == b"chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        await reader.readexactly(int(fields.get(b"content-length", b"0")))
    return status_line.split(b" ", 2)[1] == b"200"

"""Deadlines for slow and stalled clients (issue 7): 408 answers, nothing stored.

One server with short deadlines (2 s for a head and for a body pause, a floor of
1000 bytes/s, 1 s of keep-alive) serves the whole module. Each slow client here
is driven by hand over a raw socket, because an HTTP library would not pause.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import (
    ALICE_PASSWORD,
    API,
    CONFIG,
    MAX_UPLOAD_BYTES,
    PROBLEM_JSON,
    SPACE_DIRS,
    STAGING_PREFIX,
    LiveServer,
    free_port,
    run_server,
    snapshot_tree,
    wait_until,
    wait_until_up,
)
from raw_http import (
    READ_SECONDS,
    connect,
    header_of,
    problem_of,
    read_answer,
    read_until_closed,
    request_head,
    status_of,
)

from strongroom.api.serving import MAX_HEAD_BYTES
from strongroom.config import load_settings
from strongroom.errors import ConfigError

HEAD_SECONDS = 2
BODY_IDLE_SECONDS = 2
MIN_BYTES_PER_SECOND = 1000
KEEP_ALIVE_SECONDS = 1
DEADLINES = f"""\
request_head_timeout_seconds = {HEAD_SECONDS}
request_body_idle_seconds = {BODY_IDLE_SECONDS}
request_body_min_bytes_per_second = {MIN_BYTES_PER_SECOND}
keep_alive_timeout_seconds = {KEEP_ALIVE_SECONDS}
"""
STRONGROOM = Path(sys.executable).with_name("strongroom")
# How long past a deadline an answer may come on a loaded 2-core machine.
SLACK_SECONDS = 3.0


@pytest.fixture(scope="module")
def timed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server whose deadlines are short enough to wait for in a test."""
    parent = tmp_path_factory.mktemp("p-timeouts")
    for name in (*SPACE_DIRS, "outside", "lab-backup"):
        (parent / name).mkdir()
    config_text = DEADLINES + CONFIG.format(data_dir=parent / "data")
    users = [("alice", ALICE_PASSWORD, "user")]
    with run_server(parent, config_text, "openat2", users) as server:
        yield server


@pytest.fixture
def fresh(timed_server: LiveServer) -> LiveServer:
    """The timed server with alice's spaces emptied."""
    timed_server.reset_tree()
    timed_server.reset_home("alice")
    return timed_server


def test_a_head_sent_a_byte_at_a_time_gets_408_and_a_close(fresh: LiveServer) -> None:
    head = request_head(fresh, "GET", f"{API}/spaces")

    with connect(fresh) as sock:
        started = time.monotonic()
        answer = trickle(sock, head, pause=0.25)
        seconds = time.monotonic() - started

    assert status_of(answer) == 408
    assert HEAD_SECONDS - 0.5 <= seconds <= HEAD_SECONDS + SLACK_SECONDS
    assert header_of(answer, "content-type") == PROBLEM_JSON
    assert header_of(answer, "connection") == "close"
    assert problem_of(answer)["code"] == "request_timeout"


def test_a_timed_out_request_is_logged_as_a_warning(fresh: LiveServer) -> None:
    logged_before = len(fresh.log_text())

    with connect(fresh) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        read_until_closed(sock)

    logged = fresh.log_text()[logged_before:]
    assert "WARNING strongroom.api.serving request_timed_out part=head" in logged


def test_a_head_over_the_size_bound_gets_431_and_a_close(fresh: LiveServer) -> None:
    """httptools holds a head in full; megabytes of headers must not be read."""
    padding = b"X-Pad: " + b"p" * 8000 + b"\r\n"

    with connect(fresh) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(padding * (4 * MAX_HEAD_BYTES // len(padding)))
        answer = read_until_closed(sock)

    assert status_of(answer) == 431
    assert header_of(answer, "connection") == "close"
    assert problem_of(answer)["code"] == "request_head_too_large"


@pytest.mark.parametrize("extra_bytes", [500, 40_000])
def test_a_head_over_the_bound_sent_in_one_write_gets_431_too(
    fresh: LiveServer, extra_bytes: int
) -> None:
    # Arriving whole in one read, the head is parsed before the protocol's
    # running count can see it unfinished; the app measures it instead.
    big = b"X-Big: " + b"b" * (MAX_HEAD_BYTES + extra_bytes) + b"\r\n"
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + big + b"\r\n"

    with connect(fresh) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        answer = read_until_closed(sock)

    assert status_of(answer) == 431
    assert header_of(answer, "connection") == "close"
    assert problem_of(answer)["code"] == "request_head_too_large"
    assert problem_of(answer)["title"] == "Request Header Fields Too Large"


@pytest.mark.parametrize("head", [
    b"FOO / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
    b"Content-Length: 2\r\n\r\nab",
    b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
], ids=["unknown-method", "raw-byte-in-path", "two-lengths", "length-and-chunked"])
def test_a_request_the_parser_cannot_read_gets_a_problem(
    fresh: LiveServer, head: bytes
) -> None:
    with connect(fresh) as sock:
        sock.sendall(head)
        answer = read_until_closed(sock)

    assert status_of(answer) == 400
    assert header_of(answer, "content-type") == "application/problem+json"
    assert problem_of(answer)["code"] == "malformed_request"


def test_a_head_just_under_the_size_bound_is_served(fresh: LiveServer) -> None:
    padding = b"X-Pad: " + b"p" * 8000 + b"\r\n"
    pads = (MAX_HEAD_BYTES - 1024) // len(padding)

    with connect(fresh) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     + padding * pads + b"\r\n")
        answer = read_answer(sock)

    assert status_of(answer) == 200


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(
    fresh: LiveServer,
) -> None:
    with connect(fresh) as sock:
        started = time.monotonic()
        answer = read_until_closed(sock)
        seconds = time.monotonic() - started

    assert answer == b""
    assert seconds <= HEAD_SECONDS + SLACK_SECONDS


def test_an_idle_kept_alive_connection_is_closed(fresh: LiveServer) -> None:
    with connect(fresh) as sock:
        sock.sendall(request_head(fresh, "GET", "/healthz"))
        first = read_answer(sock)
        started = time.monotonic()
        rest = read_until_closed(sock)
        seconds = time.monotonic() - started

    assert status_of(first) == 200
    assert rest == b""
    assert seconds <= KEEP_ALIVE_SECONDS + SLACK_SECONDS


@pytest.mark.parametrize("space", ["lab", "home"])
def test_a_body_that_stalls_gets_408_and_stores_nothing(
    fresh: LiveServer, space: str
) -> None:
    before = snapshot_tree(fresh.parent / "lab")
    head = request_head(fresh, "PUT", f"{API}/spaces/{space}/files/stalled.bin",
                        length=100_000)

    with connect(fresh) as sock:
        sock.sendall(head + b"x" * 5000)
        answer = read_until_closed(sock)

    assert status_of(answer) == 408
    assert problem_of(answer)["code"] == "request_timeout"
    assert_nothing_stored(fresh, space, "stalled.bin", before)


def test_a_body_trickled_below_the_rate_floor_gets_408(fresh: LiveServer) -> None:
    """A byte every quarter second never pauses for 2 s, yet would never end."""
    head = request_head(fresh, "PUT", f"{API}/spaces/lab/files/trickle.bin",
                        length=100_000)

    with connect(fresh) as sock:
        sock.sendall(head)
        started = time.monotonic()
        answer = trickle(sock, b"y" * 100_000, pause=0.25)
        seconds = time.monotonic() - started

    assert status_of(answer) == 408
    assert seconds <= BODY_IDLE_SECONDS + SLACK_SECONDS
    assert_nothing_stored(fresh, "lab", "trickle.bin", {})


def test_a_steady_body_with_short_pauses_is_stored(fresh: LiveServer) -> None:
    """Pauses under the idle bound, at an average far above the floor, are fine."""
    body = bytes(range(256)) * 64
    head = request_head(fresh, "PUT", f"{API}/spaces/lab/files/steady.bin",
                        length=len(body))

    with connect(fresh) as sock:
        sock.sendall(head + body[:8000])
        time.sleep(BODY_IDLE_SECONDS / 2)
        sock.sendall(body[8000:])
        answer = read_answer(sock)

    assert status_of(answer) == 201
    assert (fresh.parent / "lab" / "steady.bin").read_bytes() == body


def test_pipelined_requests_are_all_answered(fresh: LiveServer) -> None:
    """Requests sent back to back on one connection each get their answer."""
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    last = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

    with connect(fresh) as sock:
        sock.sendall(head * 2 + last)
        answers = read_until_closed(sock)

    assert answers.count(b"HTTP/1.1 200 OK\r\n") == 3


def test_an_upload_at_the_size_limit_sent_at_full_speed_is_stored(
    fresh: LiveServer,
) -> None:
    """While the app writes to disk it stops reading; that wait is not the client's."""
    body = bytes(range(256)) * (MAX_UPLOAD_BYTES // 256)

    reply = fresh.put("lab", "full-speed.bin", body)

    assert reply.status == 201, reply.body[:300]
    assert (fresh.parent / "lab" / "full-speed.bin").read_bytes() == body


def test_the_server_answers_others_while_a_client_stalls(fresh: LiveServer) -> None:
    head = request_head(fresh, "GET", f"{API}/spaces")

    with connect(fresh) as slow:
        slow.sendall(head[:10])
        reply = fresh.request("GET", f"{API}/spaces")

    assert reply.status == 200
    assert reply.seconds < 1.0


def test_strongroom_serve_runs_the_deadlines(tmp_path: Path) -> None:
    """`strongroom serve` uses the same handler as these tests' servers."""
    config = tmp_path / "strongroom.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n'
                      f"request_head_timeout_seconds = {HEAD_SECONDS}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRONGROOM_")}

    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [STRONGROOM, "--config", str(config), "serve", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    try:
        wait_until_up(proc, port)
        with socket.create_connection(("127.0.0.1", port),
                                      timeout=READ_SECONDS) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            answer = read_until_closed(sock)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=READ_SECONDS)

    assert status_of(answer) == 408


@pytest.mark.parametrize(
    ("key", "value"),
    [("request_head_timeout_seconds", 0), ("request_head_timeout_seconds", 601),
     ("request_body_idle_seconds", 0), ("request_body_min_bytes_per_second", -1),
     ("keep_alive_timeout_seconds", 0), ("request_head_timeout_seconds", "true")],
)
def test_a_deadline_out_of_range_stops_start_up_naming_it(
    tmp_path: Path, key: str, value: object
) -> None:
    config = tmp_path / "strongroom.toml"
    config.write_text(f"{key} = {value}\n")

    with pytest.raises(ConfigError, match=key):
        load_settings(str(config))


def trickle(sock: socket.socket, data: bytes, pause: float) -> bytes:
    """Send `data` a byte at a time until the server answers; return its answer.

    Stops after READ_SECONDS in all, so a server that waits for ever fails the
    test instead of hanging it.
    """
    sock.setblocking(False)
    deadline = time.monotonic() + READ_SECONDS
    for byte in data:
        if time.monotonic() > deadline:
            break
        try:
            answer = sock.recv(1 << 16)
        except BlockingIOError:
            answer = None
        if answer is not None:
            sock.settimeout(READ_SECONDS)
            return answer + read_until_closed(sock)
        try:
            sock.send(bytes([byte]))
        except OSError:
            break
        time.sleep(pause)
    sock.settimeout(READ_SECONDS)
    return read_until_closed(sock)


def assert_nothing_stored(server: LiveServer, space: str, name: str,
                          lab_before: dict[str, tuple[object, ...]]) -> None:
    """Check that the upload left no file and, soon, no staging file behind."""
    reply = server.request("GET", f"{API}/spaces/{space}/files/{name}")
    assert reply.status == 404
    wait_until(lambda: snapshot_tree(server.parent / "lab") == lab_before,
               "the lab space returning to its state before the upload")
    wait_until(lambda: not list(staged_under(server.data_dir)),
               "the staging files being removed")


def staged_under(top: Path) -> Iterator[Path]:
    """Yield the atomic writer's staging files and tus staging files under `top`."""
    for found in top.rglob("*"):
        in_uploads = found.parent.name == "uploads" and found.is_file()
        if found.name.startswith(STAGING_PREFIX) or in_uploads:
            yield found

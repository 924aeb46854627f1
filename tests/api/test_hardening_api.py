"""Answers to hostile requests found by trying the product as a new user would."""

from __future__ import annotations

import http.client
import os

import pytest
from live_server import LiveServer

API = "/api/v1"


def open_fds(server: LiveServer) -> int:
    assert server.pid is not None
    return len(os.listdir(f"/proc/{server.pid}/fd"))


@pytest.mark.parametrize(
    ("range_header", "status"),
    [("bytes=" + "9" * 4400 + "-", 416), ("bytes=0-" + "9" * 4400, 206),
     ("bytes=-" + "9" * 4400, 206)],
    ids=["huge-start", "huge-end", "huge-suffix"],
)
def test_a_range_with_a_huge_number_is_answered_and_leaks_no_descriptor(
    server: LiveServer, space: str, range_header: str, status: int
) -> None:
    # Past Python's 4,300-digit limit for int(): never parsed, only known to be
    # past every file (a start there is unsatisfiable, an end stops at the end).
    server.put(space, "a.txt", b"0123456789")
    # One answer first, so that whatever its path opens once (and keeps) is
    # not counted: a leak grows with every request.
    server.request("GET", f"{API}/spaces/{space}/files/a.txt",
                   headers={"Range": range_header})
    before = open_fds(server)

    replies = [
        server.request("GET", f"{API}/spaces/{space}/files/a.txt",
                       headers={"Range": range_header})
        for _ in range(20)
    ]

    assert {r.status for r in replies} == {status}
    if status == 206:
        assert replies[0].body == b"0123456789"
    assert open_fds(server) <= before + 2


@pytest.mark.parametrize("route", ["list", "meta", "files", "dirs"])
def test_a_control_character_in_any_path_is_a_400_problem(
    server: LiveServer, route: str
) -> None:
    method = "POST" if route == "dirs" else "GET"

    reply = server.request(method, f"{API}/spaces/lab/{route}/a%0ab")

    assert reply.status == 400
    assert reply.header("Content-Type") == "application/problem+json"


def test_control_characters_reach_the_log_escaped(server: LiveServer) -> None:
    server.request("GET", f"{API}/spaces/lab%1b%5d0%3bTITLE%07/files/x", token=None)

    log = server.log_text()

    assert "\x1b" not in log
    assert "\x07" not in log


def test_json_answers_carry_nosniff(server: LiveServer) -> None:
    reply = server.request("GET", f"{API}/spaces")

    assert reply.header("X-Content-Type-Options") == "nosniff"


@pytest.mark.parametrize("cursor", ["_w", "ZZZZ", "!!!!"])
def test_a_cursor_that_is_not_utf8_text_is_a_400(
    server: LiveServer, space: str, cursor: str
) -> None:
    reply = server.request("GET", f"{API}/spaces/{space}/list?cursor={cursor}")

    assert reply.status == 400


def test_repeated_wrong_passwords_get_429_with_retry_after(
    live_server: LiveServer,
) -> None:
    """The server trusts X-Forwarded-For from loopback (uvicorn's default), so
    this test's failures count against an address no other test uses."""
    form = b"username=carol-nobody&password=wrong-password"
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Forwarded-For": "198.51.100.7"}
    replies = [
        live_server.request("POST", f"{API}/token", body=form, headers=headers,
                            token=None)
        for _ in range(8)
    ]

    assert replies[0].status == 401
    assert replies[-1].status == 429
    assert int(replies[-1].header("Retry-After") or "0") >= 1


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/spaces/home/files"), ("DELETE", "/spaces/home/files"),
     ("GET", "/spaces/home/meta"), ("POST", "/spaces/home/dirs")],
)
def test_a_path_without_its_final_slash_is_no_redirect_to_the_clients_host(
    server: LiveServer, method: str, path: str
) -> None:
    # Starlette used to answer these with a 307 whose Location was built from
    # the Host header the client sent, before any token was looked at.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest(method, API + path, skip_host=True)
        conn.putheader("Host", "evil.example")
        conn.putheader("Content-Length", "0")
        conn.endheaders()
        reply = conn.getresponse()
        reply.read()
    finally:
        conn.close()

    assert reply.status in (401, 404, 405), reply.status
    assert reply.getheader("Location") is None
    assert reply.getheader("Content-Type") == "application/problem+json"

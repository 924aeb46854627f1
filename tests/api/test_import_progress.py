"""The streamed import (Accept: application/x-ndjson): progress, members, result.

Every test runs over the live server, in a directory space and in a home where
it matters, and reads the answer line by line as a client would.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from live_server import (
    API,
    MAX_UPLOAD_BYTES,
    PROBLEM_JSON,
    STAGING_PREFIX,
    LiveServer,
    wait_until,
)
from test_import_api import make_tar, post_import, read

from strongroom.api.imports import JSON_SEQ, NDJSON, PROGRESS_EVERY_MEMBERS

Event = dict[str, object]


@contextmanager
def streamed_import(
    server: LiveServer, space: str, body: bytes, *, accept: str = NDJSON,
    rel_dir: str = "", token: str | None = "alice",
) -> Iterator[http.client.HTTPResponse]:
    """POST an import with `accept` and yield the response, unread."""
    path = f"{API}/spaces/{space}/import" + (f"/{rel_dir}" if rel_dir else "")
    headers = {"Accept": accept, "Content-Length": str(len(body))}
    if token is not None:
        headers["Authorization"] = f"Bearer {server.tokens[token]}"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        conn.request("POST", path, body=body, headers=headers)
        yield conn.getresponse()
    finally:
        conn.close()


def read_events(reply: http.client.HTTPResponse, record_separator: bool = False
                ) -> list[Event]:
    """Read the stream to its end; one JSON object per line."""
    events = []
    while line := reply.readline():
        assert line.endswith(b"\n"), line
        if record_separator:
            assert line.startswith(b"\x1e"), line
            line = line[1:]
        event = json.loads(line)
        assert isinstance(event, dict)
        events.append(event)
    return events


def of_kind(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["event"] == kind]


def staging_leftovers(server: LiveServer) -> list[str]:
    """Names of import stages in lab and of blob staging files in the data dir."""
    found = [p.name for p in (server.parent / "lab").iterdir()
             if p.name.startswith(STAGING_PREFIX)]
    blobs = server.data_dir / "blobs"
    found += [p.name for p in blobs.rglob(f"{STAGING_PREFIX}*")]
    return found


def blob_files(server: LiveServer) -> set[Path]:
    return {p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()}


def test_a_streamed_import_answers_200_with_lines_ending_in_the_result(
    server: LiveServer, space: str
) -> None:
    body = make_tar({"a.txt": b"A", "sub/": None, "sub/b.txt": b"B"})

    with streamed_import(server, space, body) as reply:
        status, content_type = reply.status, reply.getheader("Content-Type")
        events = read_events(reply)

    assert (status, content_type) == (200, NDJSON)
    assert [e["event"] for e in events][-4:] == ["member"] * 3 + ["result"]
    assert events[-1] == {
        "event": "result", "status": 200, "space": space, "path": "",
        "outcome": "imported", "imported": 3, "skipped": 0, "refused": 0,
        "detail": "imported 3 of 3 members",
    }
    assert read(server, space, "sub/b.txt") == (200, b"B")


def test_member_lines_carry_the_same_rows_as_the_plain_report(
    server: LiveServer, space: str
) -> None:
    server.put(space, "keep.txt", b"OLD")
    body = make_tar({"keep.txt": b"NEW", "n.txt": b"N"})

    with streamed_import(server, space, body) as reply:
        events = read_events(reply)

    assert of_kind(events, "member") == [
        {"event": "member", "name": "keep.txt", "status": "skipped",
         "reason": "a file of this name exists and was kept; add ?overwrite=true "
                   "to replace it"},
        {"event": "member", "name": "n.txt", "status": "imported", "reason": ""},
    ]


def test_progress_lines_count_up_and_come_at_least_every_thousand_members(
    server: LiveServer,
) -> None:
    members = 2 * PROGRESS_EVERY_MEMBERS + 100
    body = make_tar({f"d{n}/": None for n in range(members)}, "gz")

    with streamed_import(server, "lab", body) as reply:
        events = read_events(reply)

    progress = of_kind(events, "progress")
    unpacking = [e["members"] for e in progress if e["phase"] == "unpack"]
    assert unpacking[0] == 1
    assert len(unpacking) >= 3
    assert unpacking == sorted(set(unpacking))
    assert progress[-1] == {"event": "progress", "phase": "publish",
                            "members": members, "bytes": 0}
    assert events.index(progress[-1]) < events.index(of_kind(events, "member")[0])


def test_progress_lines_count_the_bytes_unpacked(server: LiveServer) -> None:
    body = make_tar({"a.bin": bytes(300_000), "b.bin": bytes(200_000)}, "gz")

    with streamed_import(server, "lab", body) as reply:
        events = read_events(reply)

    assert of_kind(events, "progress")[-1]["bytes"] == 500_000


def test_the_result_line_of_an_import_over_a_limit_is_a_413_problem(
    server: LiveServer, space: str
) -> None:
    # About 20 KB of gzip that expands past the 16 MiB floor of the ratio check.
    body = make_tar({"ok.txt": b"fine", "zeros.bin": bytes(24 * 1024**2)}, "gz")

    with streamed_import(server, space, body) as reply:
        status = reply.status
        events = read_events(reply)

    assert status == 200
    result = events[-1]
    assert {k: result[k] for k in ("event", "status", "code", "title", "type",
                                   "outcome", "imported")} == {
        "event": "result", "status": 413, "code": "import_too_large",
        "title": "Content Too Large", "type": "about:blank#import_too_large",
        "outcome": "too_large", "imported": 0,
    }
    assert "compression bomb" in str(result["detail"])
    assert read(server, space, "ok.txt")[0] == 404
    assert staging_leftovers(server) == []


def test_the_result_line_of_a_refused_member_is_a_422_problem(
    server: LiveServer, space: str
) -> None:
    body = make_tar({"good.txt": b"G", "../bad.txt": b"B"})

    with streamed_import(server, space, body) as reply:
        events = read_events(reply)

    assert events[-1]["status"] == 422
    assert events[-1]["code"] == "import_refused"
    assert {e["name"]: e["status"] for e in of_kind(events, "member")} == {
        "good.txt": "skipped", "../bad.txt": "refused"}
    assert read(server, space, "good.txt")[0] == 404


def test_json_seq_frames_every_line_with_a_record_separator(
    server: LiveServer, space: str
) -> None:
    with streamed_import(server, space, make_tar({"a.txt": b"A"}),
                         accept=JSON_SEQ) as reply:
        content_type = reply.getheader("Content-Type")
        events = read_events(reply, record_separator=True)

    assert content_type == JSON_SEQ
    assert events[-1]["status"] == 200


@pytest.mark.parametrize("accept", [
    None, "application/json", "*/*", f"{NDJSON};q=0", "text/plain",
], ids=["none", "json", "any", "ndjson-q0", "text"])
def test_without_a_streaming_accept_the_answer_is_the_plain_json_report(
    server: LiveServer, space: str, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}

    reply = server.request("POST", f"{API}/spaces/{space}/import",
                           body=make_tar({"a.txt": b"A"}), headers=headers)

    assert reply.status == 200
    assert reply.header("Content-Type") == "application/json"
    assert reply.json() == {
        "space": space, "path": "", "outcome": "imported", "imported": 1,
        "skipped": 0, "refused": 0, "detail": "imported 1 of 1 members",
        "members": [{"name": "a.txt", "status": "imported", "reason": ""}],
    }


def test_a_streaming_accept_among_others_picks_the_stream(
    server: LiveServer, space: str
) -> None:
    accept = f"application/json;q=0.9, {NDJSON}"

    with streamed_import(server, space, make_tar({"a.txt": b"A"}),
                         accept=accept) as reply:
        content_type = reply.getheader("Content-Type")
        events = read_events(reply)

    assert content_type == NDJSON
    assert events[-1]["status"] == 200


def test_the_plain_failure_answer_is_unchanged(
    server: LiveServer, space: str
) -> None:
    report = post_import(server, space, make_tar({"../bad.txt": b"B"}))

    assert report["_status"] == 422
    assert report["code"] == "import_refused"
    assert report["members"] == [{"name": "../bad.txt", "status": "refused",
                                  "reason": "'..' is not accepted in archive names"}]


@pytest.mark.parametrize(("space", "rel_dir", "token", "status"), [
    ("lab", "", None, 401),
    ("docs-ro", "", "alice", 403),
    ("nowhere", "", "alice", 404),
    ("lab", "a/%2e%2e/%2e%2e/x", "alice", 403),
    ("lab", "taken.txt", "alice", 409),
], ids=["no-token", "read-only", "no-such-space", "escaping-path", "path-is-a-file"])
def test_errors_found_before_unpacking_are_plain_problems_not_streams(
    server: LiveServer, space: str, rel_dir: str, token: str | None, status: int
) -> None:
    server.put("lab", "taken.txt", b"T")

    with streamed_import(server, space, make_tar({"a.txt": b"A"}),
                         rel_dir=rel_dir, token=token) as reply:
        got = (reply.status, reply.getheader("Content-Type"))
        problem = json.loads(reply.read())

    assert got == (status, PROBLEM_JSON)
    assert problem["status"] == status


def test_a_body_over_the_upload_limit_gets_413_before_any_stream(
    server: LiveServer, space: str
) -> None:
    body = make_tar({"big.bin": bytes(MAX_UPLOAD_BYTES)})

    reply = server.request("POST", f"{API}/spaces/{space}/import", body=body,
                           headers={"Accept": NDJSON}, chunked=True)

    assert reply.status == 413
    assert reply.header("Content-Type") == PROBLEM_JSON
    assert read(server, space, "big.bin")[0] == 404


def test_a_client_that_leaves_mid_stream_cancels_the_import_and_leaves_nothing(
    server: LiveServer, space: str
) -> None:
    """Unpacking this many files takes seconds; the client leaves at the first line."""
    blobs_before = blob_files(server)
    body = make_tar({f"d{n % 50}/f{n}.txt": b"x" for n in range(4000)}, "gz")

    first_line = _first_line_then_leave(server, space, body)

    assert json.loads(first_line)["event"] == "progress"
    wait_until(lambda: staging_leftovers(server) == []
               and blob_files(server) == blobs_before,
               "removal of the cancelled import's stage")
    assert server.list_all(space, "") == []
    assert [p.name for p in (server.parent / "lab").iterdir()] == []


def _first_line_then_leave(server: LiveServer, space: str, body: bytes) -> bytes:
    head = (
        f"POST {API}/spaces/{space}/import HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.tokens['alice']}\r\nAccept: {NDJSON}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head + body)
        received = b""
        while b"\n" not in received.partition(b"\r\n\r\n")[2].partition(b"\r\n")[2]:
            chunk = sock.recv(4096)
            assert chunk, received
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK", received
    chunked_body = rest.partition(b"\r\n\r\n")[2]
    return chunked_body.partition(b"\r\n")[2].partition(b"\n")[0]

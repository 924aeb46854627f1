"""Conditional requests: If-Match and If-Unmodified-Since on PUT, DELETE and GET.

A client that read a file and then writes it back must be able to say "only if
nobody changed it meanwhile". Each test runs against a directory space (`lab`)
and a home (`home`) over a real loopback connection; the last one changes the
file while an upload's body is still arriving, so only the check made when the
file is put in place can catch it.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import time

import pytest
from live_server import LiveServer, files_url
from test_files_api import staging_and_blobs

from concurrency import run_together

ORIGINAL = b"version one"
NEWER = b"version two, written by someone else"
MINE = b"my edit of version one"


def etag_of(server: LiveServer, space: str, name: str) -> str:
    """Return the ETag a download of the file carries."""
    reply = server.request("GET", files_url(space, name))
    assert reply.status == 200
    return reply.header("ETag") or ""


def assert_refused(reply_status: int, body: bytes, status: int, code: str) -> None:
    """Check a problem+json refusal by status and code."""
    assert reply_status == status, body[:300]
    assert json.loads(body)["code"] == code


def test_a_put_with_the_current_etag_replaces_the_file(
    server: LiveServer, space: str
) -> None:
    server.put(space, "doc.txt", ORIGINAL)
    tag = etag_of(server, space, "doc.txt")

    reply = server.request("PUT", files_url(space, "doc.txt"), body=MINE,
                           headers={"If-Match": f'"nope", {tag}'})

    assert reply.status == 200, reply.body[:300]
    assert server.request("GET", files_url(space, "doc.txt")).body == MINE


@pytest.mark.parametrize("stale", ["old", "weak", "empty"])
def test_a_put_with_a_stale_etag_changes_nothing(
    server: LiveServer, space: str, stale: str
) -> None:
    server.put(space, "doc.txt", ORIGINAL)
    old_tag = etag_of(server, space, "doc.txt")
    server.put(space, "doc.txt", NEWER)
    if_match = {"old": old_tag, "weak": "W/" + etag_of(server, space, "doc.txt"),
                "empty": ""}[stale]

    reply = server.request("PUT", files_url(space, "doc.txt"), body=MINE,
                           headers={"If-Match": if_match})

    assert_refused(reply.status, reply.body, 412, "precondition_failed")
    assert reply.header("Content-Type") == "application/problem+json"
    assert server.request("GET", files_url(space, "doc.txt")).body == NEWER
    assert staging_and_blobs(server)[0] == []


def test_if_match_star_replaces_only_an_existing_file(
    server: LiveServer, space: str
) -> None:
    server.request("POST", f"/api/v1/spaces/{space}/dirs/folder")

    missing = server.request("PUT", files_url(space, "new.txt"), body=MINE,
                             headers={"If-Match": "*"})
    folder = server.request("PUT", files_url(space, "folder"), body=MINE,
                            headers={"If-Match": "*"})
    server.put(space, "doc.txt", ORIGINAL)
    existing = server.request("PUT", files_url(space, "doc.txt"), body=MINE,
                              headers={"If-Match": "*"})

    assert_refused(missing.status, missing.body, 412, "precondition_failed")
    assert server.request("GET", files_url(space, "new.txt")).status == 404
    assert_refused(folder.status, folder.body, 412, "precondition_failed")
    assert existing.status == 200
    assert server.request("GET", files_url(space, "doc.txt")).body == MINE


def test_if_unmodified_since_guards_a_put(server: LiveServer, space: str) -> None:
    server.put(space, "doc.txt", ORIGINAL)
    before = email.utils.formatdate(time.time() - 3600, usegmt=True)
    after = email.utils.formatdate(time.time() + 3600, usegmt=True)

    refused = server.request("PUT", files_url(space, "doc.txt"), body=MINE,
                             headers={"If-Unmodified-Since": before})
    assert_refused(refused.status, refused.body, 412, "precondition_failed")
    assert server.request("GET", files_url(space, "doc.txt")).body == ORIGINAL

    taken = server.request("PUT", files_url(space, "doc.txt"), body=MINE,
                           headers={"If-Unmodified-Since": after})
    assert taken.status == 200
    assert server.request("GET", files_url(space, "doc.txt")).body == MINE


def test_an_unreadable_if_unmodified_since_is_refused_not_ignored(
    server: LiveServer, space: str
) -> None:
    server.put(space, "doc.txt", ORIGINAL)

    reply = server.request("PUT", files_url(space, "doc.txt"), body=MINE,
                           headers={"If-Unmodified-Since": "yesterday"})

    assert_refused(reply.status, reply.body, 400, "invalid_request")
    assert "If-Unmodified-Since" in json.loads(reply.body)["detail"]
    assert server.request("GET", files_url(space, "doc.txt")).body == ORIGINAL


def test_if_match_wins_over_if_unmodified_since(
    server: LiveServer, space: str
) -> None:
    # RFC 9110, 13.2.2: with If-Match present, If-Unmodified-Since is not read.
    server.put(space, "doc.txt", ORIGINAL)
    tag = etag_of(server, space, "doc.txt")
    before = email.utils.formatdate(time.time() - 3600, usegmt=True)

    reply = server.request("PUT", files_url(space, "doc.txt"), body=MINE,
                           headers={"If-Match": tag, "If-Unmodified-Since": before})

    assert reply.status == 200, reply.body[:300]


def test_a_conditional_delete_takes_only_the_file_it_names(
    server: LiveServer, space: str
) -> None:
    server.put(space, "doc.txt", ORIGINAL)
    old_tag = etag_of(server, space, "doc.txt")
    server.put(space, "doc.txt", NEWER)
    server.request("POST", f"/api/v1/spaces/{space}/dirs/empty")

    stale = server.request("DELETE", files_url(space, "doc.txt"),
                           headers={"If-Match": old_tag})
    folder = server.request("DELETE", files_url(space, "empty"),
                            headers={"If-Match": "*"})
    current = server.request("DELETE", files_url(space, "doc.txt"),
                             headers={"If-Match": etag_of(server, space, "doc.txt")})

    assert_refused(stale.status, stale.body, 412, "precondition_failed")
    assert_refused(folder.status, folder.body, 412, "precondition_failed")
    assert current.status == 204
    assert server.request("GET", files_url(space, "doc.txt")).status == 404
    assert server.request("GET", f"/api/v1/spaces/{space}/meta/empty").status == 200


def test_a_change_made_while_the_body_arrives_is_caught_at_commit(
    server: LiveServer, space: str
) -> None:
    server.put(space, "doc.txt", ORIGINAL)
    tag = etag_of(server, space, "doc.txt")
    body = MINE * 1000
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest("PUT", files_url(space, "doc.txt"), skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {server.tokens['alice']}")
        conn.putheader("Content-Length", str(len(body)))
        conn.putheader("If-Match", tag)
        conn.endheaders()
        conn.send(body[: len(body) // 2])
        # The first check passed when the request arrived; now the file changes.
        assert server.put(space, "doc.txt", NEWER).status == 200
        conn.send(body[len(body) // 2:])
        reply = conn.getresponse()
        answer = reply.read()
    finally:
        conn.close()

    assert_refused(reply.status, answer, 412, "precondition_failed")
    assert server.request("GET", files_url(space, "doc.txt")).body == NEWER
    assert staging_and_blobs(server)[0] == []


def test_a_read_is_conditional_too(server: LiveServer, space: str) -> None:
    # RFC 9110 asks a server to evaluate If-Match before any method, reads too:
    # a client that resumes or assembles a file must not mix two versions.
    server.put(space, "doc.txt", ORIGINAL)
    old_tag = etag_of(server, space, "doc.txt")
    server.put(space, "doc.txt", NEWER)
    tag = etag_of(server, space, "doc.txt")
    url = files_url(space, "doc.txt")
    before = email.utils.formatdate(time.time() - 3600, usegmt=True)

    stale = server.request("GET", url, headers={"If-Match": old_tag})
    head = server.request("HEAD", url, headers={"If-Match": old_tag})
    old_date = server.request("GET", url, headers={"If-Unmodified-Since": before})
    current = server.request("GET", url,
                             headers={"If-Match": tag, "Range": "bytes=0-6"})
    unreadable = server.request("GET", url, headers={"If-Unmodified-Since": "soon"})

    assert_refused(stale.status, stale.body, 412, "precondition_failed")
    assert stale.header("Content-Type") == "application/problem+json"
    assert NEWER not in stale.body
    assert head.status == 412 and head.body == b""
    assert_refused(old_date.status, old_date.body, 412, "precondition_failed")
    assert current.status == 206 and current.body == NEWER[:7]
    # A read ignores a date it cannot read (RFC 9110); only writes refuse it.
    assert unreadable.status == 200 and unreadable.body == NEWER


def send(server: LiveServer, method: str, url: str,
         header_lines: list[tuple[str, str]], body: bytes = b"") -> tuple[int, bytes]:
    """Send a request whose header lines may repeat; return (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.putrequest(method, url, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {server.tokens['alice']}")
        conn.putheader("Content-Length", str(len(body)))
        for name, value in header_lines:
            conn.putheader(name, value)
        conn.endheaders(body)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def test_if_none_match_with_etags_guards_a_put(server: LiveServer, space: str) -> None:
    server.put(space, "doc.txt", ORIGINAL)
    tag = etag_of(server, space, "doc.txt")
    url = files_url(space, "doc.txt")

    # RFC 9110, 13.1.2: the current ETag (weakly compared) or * makes it false.
    for header_lines in ([("If-None-Match", tag)], [("If-None-Match", "W/" + tag)],
                         [("If-None-Match", '"other", *')],
                         [("If-None-Match", '"other"'), ("If-None-Match", "*")]):
        status, body = send(server, "PUT", url, header_lines, MINE)
        assert_refused(status, body, 412, "precondition_failed")
    assert server.request("GET", url).body == ORIGINAL

    status, _ = send(server, "PUT", url, [("If-None-Match", '"other"')], MINE)
    assert status == 200
    assert server.request("GET", url).body == MINE


def test_if_none_match_guards_a_delete(server: LiveServer, space: str) -> None:
    server.put(space, "doc.txt", ORIGINAL)
    url = files_url(space, "doc.txt")

    star = send(server, "DELETE", url, [("If-None-Match", "*")])
    current = send(server, "DELETE", url, [("If-None-Match", etag_of(server, space,
                                                                     "doc.txt"))])
    other = send(server, "DELETE", url, [("If-None-Match", '"other"')])

    assert_refused(*star, 412, "precondition_failed")
    assert_refused(*current, 412, "precondition_failed")
    assert other[0] == 204


def test_repeated_if_match_lines_form_one_list(server: LiveServer, space: str) -> None:
    server.put(space, "doc.txt", ORIGINAL)
    tag = etag_of(server, space, "doc.txt")

    status, body = send(server, "PUT", files_url(space, "doc.txt"),
                        [("If-Match", '"wrong"'), ("If-Match", tag)], MINE)

    assert status == 200, body[:300]


@pytest.mark.parametrize("date", [
    "Sun, 06 Nov 2094 08:49:37 XYZ", "06 Nov 2094 08:49",
    "Sun, 06 Nov 2094 08:49:37 G\u00e9T", "Sun, 31 Feb 2094 08:49:37 GMT",
], ids=["zone", "short", "non-ascii", "no-such-day"])
def test_a_write_refuses_anything_but_an_http_date(
    server: LiveServer, space: str, date: str
) -> None:
    server.put(space, "doc.txt", ORIGINAL)

    status, body = send(server, "PUT", files_url(space, "doc.txt"),
                        [("If-Unmodified-Since", date)], MINE)

    assert_refused(status, body, 400, "invalid_request")
    assert server.request("GET", files_url(space, "doc.txt")).body == ORIGINAL


def test_writers_with_the_same_if_match_take_turns(
    server: LiveServer, space: str
) -> None:
    # Eight clients read the same version and all try to replace it: exactly
    # one may win each round, in a directory space as in a home.
    winners = []
    for round_ in range(5):
        server.put(space, "doc.txt", ORIGINAL + str(round_).encode())
        statuses = race_conditional_puts(server, space, etag_of(server, space,
                                                                "doc.txt"), 8)
        assert set(statuses) <= {200, 412}, statuses
        winners.append(statuses.count(200))

    assert winners == [1] * 5, winners


def race_conditional_puts(
    server: LiveServer, space: str, tag: str, writers: int
) -> list[int]:
    """Start `writers` PUTs with `If-Match: tag` at once; return their statuses."""
    def write(n: int) -> int:
        status, _ = send(server, "PUT", files_url(space, "doc.txt"),
                         [("If-Match", tag)], MINE + str(n).encode() * 2000)
        return status

    return run_together(writers, write)


def test_a_put_answers_with_the_new_etag(server: LiveServer, space: str) -> None:
    created = server.put(space, "doc.txt", ORIGINAL)
    replaced = server.put(space, "doc.txt", MINE)

    assert created.header("ETag") and replaced.header("ETag")
    assert replaced.header("ETag") == etag_of(server, space, "doc.txt")
    assert json.loads(replaced.body)["etag"] == replaced.header("ETag")

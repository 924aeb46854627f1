"""Downloads: validators, conditional requests, Range, HEAD and safe headers.

Every test runs in `lab` (a directory space) and in alice's `home`, once per
resolver; see `strongroom/api/download.py` for the rules under test.
"""

from __future__ import annotations

import email.utils
from urllib.parse import quote

import pytest
from case_checks import disposition, effective_filename
from live_server import LiveServer, files_url


def test_download_sends_validators_length_and_nosniff(
    server: LiveServer, space: str
) -> None:
    server.put(space, "a.txt", b"hello")

    reply = server.request("GET", files_url(space, "a.txt"))

    assert reply.body == b"hello"
    assert reply.header("etag")
    assert email.utils.parsedate_to_datetime(reply.header("last-modified") or "")
    assert reply.header("content-length") == "5"
    assert reply.header("x-content-type-options") == "nosniff"
    assert (reply.header("content-type") or "").startswith("text/plain")


def test_download_names_a_non_ascii_file_with_filename_star(
    server: LiveServer, space: str
) -> None:
    name = "résumé ü 数据.txt"
    server.put(space, quote(name), b"cv")

    reply = server.request("GET", files_url(space, quote(name)))

    parsed = disposition(reply.header("content-disposition"))
    assert parsed is not None
    params = dict(parsed[1])
    assert params["filename"].isascii()
    assert params["filename*"].startswith("UTF-8''")
    assert effective_filename(parsed[1]) == name


@pytest.mark.parametrize("name", ["x.html", "x.htm", "x.svg", "x.xml", "x.js",
                                  "x.xhtml"])
def test_active_content_is_sent_as_an_attachment(
    server: LiveServer, space: str, name: str
) -> None:
    server.put(space, name, b"<script>document.title='XSS-RAN'</script>")

    reply = server.request("GET", files_url(space, name))

    parsed = disposition(reply.header("content-disposition"))
    assert parsed is not None and parsed[0] == "attachment"


def test_plain_text_is_shown_inline(server: LiveServer, space: str) -> None:
    server.put(space, "a.txt", b"hi")

    reply = server.request("GET", files_url(space, "a.txt"))

    assert (reply.header("content-disposition") or "").startswith("inline")


def test_if_none_match_with_the_current_etag_is_304_without_body(
    server: LiveServer, space: str
) -> None:
    server.put(space, "a.txt", b"hello")
    etag = server.request("GET", files_url(space, "a.txt")).header("etag") or ""

    reply = server.request("GET", files_url(space, "a.txt"),
                           headers={"If-None-Match": etag})

    assert reply.status == 304
    assert reply.body == b""


def test_if_none_match_with_another_etag_sends_the_file(
    server: LiveServer, space: str
) -> None:
    server.put(space, "a.txt", b"hello")

    reply = server.request("GET", files_url(space, "a.txt"),
                           headers={"If-None-Match": '"not-the-tag"'})

    assert reply.status == 200


def test_if_modified_since_last_modified_is_304(server: LiveServer, space: str) -> None:
    server.put(space, "a.txt", b"hello")
    first = server.request("GET", files_url(space, "a.txt"))
    stamp = first.header("last-modified") or ""

    reply = server.request("GET", files_url(space, "a.txt"),
                           headers={"If-Modified-Since": stamp})

    assert reply.status == 304


def test_range_is_206_with_content_range(server: LiveServer, space: str) -> None:
    server.put(space, "digits.txt", b"0123456789")

    reply = server.request("GET", files_url(space, "digits.txt"),
                           headers={"Range": "bytes=2-5"})

    assert reply.status == 206
    assert reply.body == b"2345"
    assert reply.header("content-range") == "bytes 2-5/10"


def test_suffix_range_sends_the_last_bytes(server: LiveServer, space: str) -> None:
    server.put(space, "digits.txt", b"0123456789")

    reply = server.request("GET", files_url(space, "digits.txt"),
                           headers={"Range": "bytes=-3"})

    assert reply.status == 206
    assert reply.body == b"789"
    assert reply.header("content-range") == "bytes 7-9/10"


def test_range_past_the_end_is_416_with_the_size(
    server: LiveServer, space: str
) -> None:
    server.put(space, "digits.txt", b"0123456789")

    reply = server.request("GET", files_url(space, "digits.txt"),
                           headers={"Range": "bytes=10-"})

    assert reply.status == 416
    assert reply.header("content-range") == "bytes */10"


@pytest.mark.parametrize(("header", "status", "body"), [
    ("bytes=0-" + "9" * 20, 206, b"0123456789"),
    ("bytes=4-" + "9" * 5000, 206, b"456789"),
    ("bytes=" + "9" * 23 + "-", 416, b""),
    ("bytes=-" + "9" * 30, 206, b"0123456789"),
    ("bytes=000000000000000000000003-4", 206, b"34"),
], ids=["huge-end", "end-of-5000-digits", "huge-start", "huge-suffix", "zero-padded"])
def test_offsets_too_large_for_any_file_are_read_as_such(
    server: LiveServer, space: str, header: str, status: int, body: bytes
) -> None:
    # RFC 9110: a valid range starting past the end is unsatisfiable (416); an
    # end or suffix past it stops at the end. The number of digits changes nothing.
    server.put(space, "digits.txt", b"0123456789")

    reply = server.request("GET", files_url(space, "digits.txt"),
                           headers={"Range": header})

    assert reply.status == status, reply.body[:200]
    if status == 206:
        assert reply.body == body


def test_several_ranges_get_the_whole_file_with_200(
    server: LiveServer, space: str
) -> None:
    server.put(space, "digits.txt", b"0123456789")

    reply = server.request("GET", files_url(space, "digits.txt"),
                           headers={"Range": "bytes=0-1,4-5"})

    assert reply.status == 200
    assert reply.body == b"0123456789"


def test_head_has_the_headers_and_no_body(server: LiveServer, space: str) -> None:
    server.put(space, "a.txt", b"hello")
    token = server.tokens["alice"]

    answer = server.raw(
        f"HEAD {files_url(space, 'a.txt')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())

    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\ncontent-length: 5\r\n" in head.lower()
    assert body == b""


def test_download_of_a_named_folder_is_409(server: LiveServer, space: str) -> None:
    server.put(space, "docs/a.txt", b"A")

    replies = [server.request(m, files_url(space, p))
               for m in ("GET", "HEAD") for p in ("docs", "docs/")]

    assert [r.status for r in replies] == [409, 409, 409, 409]


@pytest.mark.parametrize("top", ["", ".", "/"], ids=["empty", "dot", "slash"])
def test_download_of_the_space_itself_answers_with_its_listing(
    request: pytest.FixtureRequest, server: LiveServer, space: str, top: str
) -> None:
    server.put(space, "docs/a.txt", b"A")

    reply = server.request("GET", files_url(space, top))

    assert reply.status == 200
    assert [e["name"] for e in reply.json()["entries"]] == ["docs"]  # type: ignore[index]

"""Share links (issue 4): creating, listing and revoking them, and shared files.

Every test runs once per resolver; those taking `space` run in `lab` (a
directory space) and in alice's `home`. Folders, escapes, the link's life and
its token are in the other `test_shares_*` modules.
"""

from __future__ import annotations

import os
import secrets

import pytest
from live_server import API, PROBLEM_JSON, LiveServer
from share_links import (
    SHARE_HEADERS,
    basic,
    claims_of,
    create_share,
    get_link,
    new_link,
    seed,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
WEEK_SECONDS = 7 * 24 * 3600
MAX_TTL_SECONDS = 30 * 24 * 3600


def shares_of(server: LiveServer, user: str = "alice") -> list[dict[str, object]]:
    reply = server.request("GET", f"{API}/shares", token=user)
    assert reply.status == 200, reply.body
    listed = reply.json()["shares"]  # type: ignore[index]
    assert isinstance(listed, list)
    return listed


def listed(server: LiveServer, *urls: str) -> list[dict[str, object]]:
    """Return alice's listed shares that these links name, newest first."""
    ids = {claims_of(url)["shr"] for url in urls}
    return [s for s in shares_of(server) if s["id"] in ids]


def scoped_token(server: LiveServer, scope: str) -> str:
    form = f"username=alice&password=alice-password-1&scope={scope}"
    reply = server.request("POST", f"{API}/token", body=form.encode(), token=None,
                           headers=FORM)
    assert reply.status == 200, reply.body
    token = reply.json()["access_token"]  # type: ignore[index]
    assert isinstance(token, str)
    return token


# Creating ----------------------------------------------------------------------


def test_a_new_share_answers_201_with_its_link_and_terms(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"docs/report.txt": b"REPORT-OK"})

    reply = create_share(server, space, {"path": "docs/report.txt"})

    assert reply.status == 201, reply.body
    body = reply.json()
    assert isinstance(body, dict)
    assert set(body) == {"id", "url", "space", "path", "kind", "expires_at",
                         "max_downloads", "has_password"}
    assert body["url"].startswith("/s/") and body["kind"] == "file"
    assert (body["space"], body["path"]) == (space, "docs/report.txt")
    assert (body["max_downloads"], body["has_password"]) == (None, False)


def test_a_share_lives_a_week_unless_asked_otherwise(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"A"})

    url = new_link(server, "lab", "a.txt")

    claims = claims_of(url)
    assert claims["exp"] - claims["iat"] == WEEK_SECONDS


def test_a_folder_share_says_it_is_a_folder(server: LiveServer, space: str) -> None:
    seed(server, space, {"docs/public/a.txt": b"A"})

    reply = create_share(server, space, {"path": "docs/public"})

    assert reply.status == 201, reply.body
    assert reply.json()["kind"] == "dir"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"path": "missing.txt"}, 404, "not_found"),
        ({"path": "a.txt", "expires_in": 0}, 422, "invalid_request"),
        ({"path": "a.txt", "expires_in": -5}, 422, "invalid_request"),
        ({"path": "a.txt", "expires_in": MAX_TTL_SECONDS + 1}, 422, "invalid_share"),
        ({"path": "a.txt", "expires_in": "60"}, 422, "invalid_request"),
        ({"path": "a.txt", "expires_in": True}, 422, "invalid_request"),
        ({"path": "a.txt", "expires_in": 1.5}, 422, "invalid_request"),
        ({"path": "a.txt", "max_downloads": 0}, 422, "invalid_request"),
        ({"path": "a.txt", "max_downloads": 10**7}, 422, "invalid_share"),
        ({"path": "a.txt", "password": "short"}, 400, "password_policy"),
        ({"path": "a.txt", "password": "x" * 2000}, 422, "invalid_request"),
        ({"path": "a.txt", "extra": 1}, 422, "invalid_request"),
        ({"path": ""}, 422, "invalid_request"),
        ({"path": "."}, 400, "invalid_path"),
        ({"path": "/"}, 400, "invalid_path"),
        ({"path": "../outside/secret.txt"}, 403, "path_escape"),
        ({"path": "/etc/passwd"}, 400, "invalid_path"),
        ({"path": "a\x00.txt"}, 400, "invalid_path"),
        ({}, 422, "invalid_request"),
    ],
    ids=["missing", "ttl-0", "ttl-negative", "ttl-over-max", "ttl-string",
         "ttl-bool", "ttl-float", "limit-0", "limit-huge", "password-short",
         "password-long", "extra-field", "empty-path", "top-dot", "top-slash",
         "dotdot", "absolute", "nul", "no-path"],
)
def test_a_bad_share_request_is_a_4xx_problem(
    server: LiveServer, space: str, body: dict[str, object], status: int, code: str
) -> None:
    seed(server, space, {"a.txt": b"A"})
    before = len(shares_of(server))

    reply = create_share(server, space, body)

    assert reply.status == status, reply.body
    assert reply.header("content-type") == PROBLEM_JSON
    assert reply.json()["code"] == code  # type: ignore[index]
    assert len(shares_of(server)) == before


def test_a_fifo_cannot_be_shared(server: LiveServer) -> None:
    os.mkfifo(server.parent / "lab" / "pipe")

    reply = create_share(server, "lab", {"path": "pipe"})

    assert reply.status == 403, reply.body


def test_a_symlink_the_space_refuses_cannot_be_shared(server: LiveServer) -> None:
    (server.parent / "outside" / "secret.txt").write_text("OUTSIDE-SECRET")
    os.symlink("../outside/secret.txt", server.parent / "lab" / "link.txt")

    reply = create_share(server, "lab", {"path": "link.txt"})

    assert reply.status == 403, reply.body


@pytest.mark.parametrize("space_name", ["ops", "bob", "nope"])
def test_a_space_the_user_may_not_use_cannot_be_shared_from(
    server: LiveServer, space_name: str
) -> None:
    (server.parent / "ops" / "a.txt").write_text("OPS")
    (server.parent / "bob" / "a.txt").write_text("BOB")

    reply = create_share(server, space_name, {"path": "a.txt"})

    assert reply.status == 404, reply.body


def test_sharing_needs_the_shares_scope(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"A"})
    token = scoped_token(server, "files:read")

    reply = server.request(
        "POST", f"{API}/spaces/lab/shares", body=b'{"path": "a.txt"}',
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {token}"},
    )

    assert reply.status == 403, reply.body
    assert 'scope="shares"' in (reply.header("www-authenticate") or "")


def test_sharing_also_needs_files_read(server: LiveServer) -> None:
    """A link gives the file away, so a token that may not read files cannot."""
    seed(server, "lab", {"a.txt": b"A"})
    token = scoped_token(server, "shares")

    reply = server.request(
        "POST", f"{API}/spaces/lab/shares", body=b'{"path": "a.txt"}',
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {token}"},
    )

    assert reply.status == 403, reply.body
    assert 'scope="files:read"' in (reply.header("www-authenticate") or "")


def test_sharing_without_a_login_is_401(server: LiveServer) -> None:
    reply = server.request("POST", f"{API}/spaces/lab/shares",
                           body=b'{"path": "a.txt"}', token=None,
                           headers={"Content-Type": "application/json"})

    assert reply.status == 401


# Listing and revoking ----------------------------------------------------------


def test_the_list_shows_each_share_with_its_counters(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"A", "b.txt": b"B"})
    first = new_link(server, space, "a.txt", max_downloads=5)
    second = new_link(server, space, "b.txt", password="a-long-password")
    get_link(server, first)
    get_link(server, first)

    found = listed(server, first, second)

    assert [s["path"] for s in found] == ["b.txt", "a.txt"]
    newest, oldest = found
    assert (oldest["downloads"], oldest["max_downloads"]) == (2, 5)
    assert (newest["has_password"], newest["revoked"]) == (True, False)
    assert {s["space"] for s in found} == {space}
    assert all("url" not in s and "password_hash" not in s for s in found)


def test_users_see_only_their_own_shares(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"A"})
    url = new_link(server, "lab", "a.txt")

    ids = {s["id"] for s in shares_of(server, "bob")}

    assert claims_of(url)["shr"] not in ids


def test_a_revoked_link_is_410_at_once(server: LiveServer, space: str) -> None:
    seed(server, space, {"a.txt": b"A"})
    url = new_link(server, space, "a.txt")

    revoked = server.request("DELETE", f"{API}/shares/{claims_of(url)['shr']}")
    reply = get_link(server, url)

    assert revoked.status == 204 and revoked.body == b""
    assert reply.status == 410
    assert reply.json()["code"] == "share_gone"  # type: ignore[index]
    assert listed(server, url)[0]["revoked"] is True


def test_revoking_twice_is_fine(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"A"})
    share_id = claims_of(new_link(server, "lab", "a.txt"))["shr"]

    replies = [server.request("DELETE", f"{API}/shares/{share_id}") for _ in "ab"]

    assert [r.status for r in replies] == [204, 204]


@pytest.mark.parametrize("share_id", ["other-user", "unknown", "junk"])
def test_revoking_a_share_that_is_not_yours_is_404_and_changes_nothing(
    server: LiveServer, share_id: str
) -> None:
    seed(server, "lab", {"a.txt": b"A"})
    url = new_link(server, "lab", "a.txt")
    target = {
        "other-user": claims_of(url)["shr"],
        "unknown": secrets.token_urlsafe(16),
        "junk": "..%2F..%2Fx",
    }[share_id]

    reply = server.request("DELETE", f"{API}/shares/{target}", token="bob")

    assert reply.status == 404, reply.body
    assert get_link(server, url).status == 200


# Shared files ------------------------------------------------------------------


def test_a_shared_file_downloads_without_a_login(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"docs/report.txt": b"REPORT-OK"})
    url = new_link(server, space, "docs/report.txt")

    reply = get_link(server, url)

    assert reply.status == 200, reply.body
    assert reply.body == b"REPORT-OK"
    assert (reply.header("content-type") or "").startswith("text/plain")


def test_a_shared_file_answers_one_range_with_206(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.bin": bytes(range(100))})
    url = new_link(server, space, "a.bin")

    reply = get_link(server, url, {"Range": "bytes=10-19"})

    assert reply.status == 206
    assert reply.body == bytes(range(10, 20))
    assert reply.header("content-range") == "bytes 10-19/100"


def test_a_shared_file_has_the_same_etag_as_its_normal_download(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"hello"})
    url = new_link(server, space, "a.txt")

    shared = get_link(server, url)
    direct = server.request("GET", f"{API}/spaces/{space}/files/a.txt")

    assert shared.header("etag") and shared.header("etag") == direct.header("etag")
    assert shared.header("last-modified") == direct.header("last-modified")


def test_a_matching_if_none_match_is_304_without_a_body(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"hello"})
    url = new_link(server, space, "a.txt")
    etag = get_link(server, url).header("etag") or ""

    reply = get_link(server, url, {"If-None-Match": etag})

    assert reply.status == 304 and reply.body == b""


def test_a_range_past_the_end_is_416(server: LiveServer, space: str) -> None:
    seed(server, space, {"a.txt": b"hello"})
    url = new_link(server, space, "a.txt")

    reply = get_link(server, url, {"Range": "bytes=50-"})

    assert reply.status == 416


def test_head_of_a_shared_file_sends_headers_only(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"hello"})
    url = new_link(server, space, "a.txt")

    reply = get_link(server, url, method="HEAD")

    assert reply.status == 200 and reply.body == b""
    assert reply.header("content-length") == "5"


def test_only_gets_that_send_content_count_as_downloads(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"hello"})
    url = new_link(server, space, "a.txt")
    etag = get_link(server, url).header("etag") or ""  # 200: counts

    get_link(server, url, {"Range": "bytes=0-1"})  # 206: counts
    get_link(server, url, method="HEAD")
    get_link(server, url, {"If-None-Match": etag})
    get_link(server, url, {"Range": "bytes=99-"})

    assert listed(server, url)[0]["downloads"] == 2


@pytest.mark.parametrize("name", ["x.html", "x.svg", "x.xml", "x.js"])
def test_shared_active_content_is_an_attachment(
    server: LiveServer, space: str, name: str
) -> None:
    seed(server, space, {name: b"<script>document.title='XSS-RAN'</script>"})
    url = new_link(server, space, name)

    reply = get_link(server, url)

    assert (reply.header("content-disposition") or "").startswith("attachment")
    assert "sandbox" in (reply.header("content-security-policy") or "")


def test_a_shared_file_has_nothing_beneath_it(server: LiveServer, space: str) -> None:
    seed(server, space, {"docs/report.txt": b"REPORT-OK", "docs/other.txt": b"NO"})
    url = new_link(server, space, "docs/report.txt")

    replies = [get_link(server, url + tail)
               for tail in ("/other.txt", "/../other.txt", "/x", "/archive")]

    assert [r.status for r in replies] == [404, 404, 404, 409]
    assert all(b"NO" not in r.body for r in replies)


# Headers and logs --------------------------------------------------------------


def test_every_share_answer_carries_the_safety_headers(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"A", "docs/b.txt": b"B"})
    url = new_link(server, "lab", "a.txt")
    folder = new_link(server, "lab", "docs")
    locked = new_link(server, "lab", "a.txt", password="a-long-password")
    gone = new_link(server, "lab", "a.txt")
    server.request("DELETE", f"{API}/shares/{claims_of(gone)['shr']}")
    requests = [
        ("GET", url, {}), ("HEAD", url, {}), ("GET", url, {"Range": "bytes=0-0"}),
        ("GET", url, {"Range": "bytes=9-"}), ("GET", folder, {}),
        ("GET", folder + "/b.txt", {}), ("GET", folder + "/archive", {}),
        ("GET", folder + "/../a.txt", {}), ("GET", folder + "/nope", {}),
        ("GET", locked, {}), ("GET", locked, basic("a-long-password")),
        ("GET", gone, {}), ("GET", url + "x", {}), ("GET", "/s/", {}),
        ("GET", "/s/abc%00def", {}), ("DELETE", url, {}), ("POST", url, {}),
    ]

    replies = [server.request(m, u, headers=h, token=None) for m, u, h in requests]

    statuses = [r.status for r in replies]
    assert statuses == [200, 200, 206, 416, 200, 200, 200, 403, 404, 401, 200,
                        410, 404, 404, 400, 405, 405]
    for (_, path, _), reply in zip(requests, replies, strict=True):
        for name, value in SHARE_HEADERS.items():
            assert reply.header(name) == value, (path[-20:], name)
        assert "sandbox" in (reply.header("content-security-policy") or "")


def test_a_password_share_asks_with_a_basic_challenge(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"A"})
    url = new_link(server, "lab", "a.txt", password="a-long-password")

    reply = get_link(server, url)

    assert reply.status == 401
    assert (reply.header("www-authenticate") or "").startswith('Basic realm="share"')
    assert reply.json()["code"] == "share_password"  # type: ignore[index]


def test_no_share_token_or_password_reaches_the_log(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"A", "docs/b.txt": b"B"})
    password = f"pw-{secrets.token_hex(8)}"
    urls = [new_link(server, "lab", "a.txt", password=password),
            new_link(server, "lab", "docs")]
    get_link(server, urls[0], basic(password))
    get_link(server, urls[0])
    for tail in ("", "/b.txt", "/archive", "/nope", "/../a.txt", "x"):
        get_link(server, urls[1] + tail)

    text = server.log_text()

    tokens = [url.removeprefix("/s/") for url in urls]
    assert all(token not in text for token in tokens)
    assert all(token.split(".")[2] not in text for token in tokens)
    assert password not in text
    assert "route=/s/{token}" in text

"""A share link's life (issue 4): expiry, target, download limit, password.

The target going covers deletes, replacements and the owner; the password, the
throttle behind it.

An ended link is a 410 whatever ended it, with one message for every cause.
Tests that send wrong passwords do so from a loopback address of their own
(127.x.y.z), since the throttle also counts per client address.
"""

from __future__ import annotations

import json
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from live_server import API, LiveServer, Reply, wait_until
from share_links import (
    basic,
    claims_of,
    get_link,
    get_link_from,
    new_link,
    request_from,
    seed,
)

from strongroom.config import load_settings
from strongroom.storage import open_metadata_store

# The throttle lets five wrong passwords pass before it makes anyone wait.
FREE_FAILURES = 5
PARALLEL_DOWNLOADS = 20
DOWNLOAD_LIMIT = 3


def fresh_address() -> str:
    return f"127.{secrets.randbelow(250) + 2}.{secrets.randbelow(256)}." \
        f"{secrets.randbelow(250) + 2}"


def assert_gone(reply: Reply) -> None:
    assert reply.status == 410, (reply.status, reply.body[:200])
    body = reply.json()
    assert isinstance(body, dict)
    assert (body["code"], body["detail"]) == ("share_gone", "this share link has ended")


def delete(server: LiveServer, space: str, rel_path: str) -> None:
    if space == "home":
        reply = server.request("DELETE", f"{API}/spaces/home/files/{rel_path}")
        assert reply.status == 204, reply.body
        return
    host_path = server.parent / space / rel_path
    if host_path.is_dir():
        shutil.rmtree(host_path)
    else:
        host_path.unlink()


# Expiry --------------------------------------------------------------------------


def test_a_link_answers_410_once_its_lifetime_has_passed(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"A"})
    url = new_link(server, space, "a.txt", expires_in=1)

    wait_until(lambda: get_link(server, url).status == 410, "the link's expiry",
               seconds=5)

    assert_gone(get_link(server, url))


def test_an_expired_folder_link_refuses_its_files_and_zip_too(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"docs/a.txt": b"A"})
    url = new_link(server, space, "docs", expires_in=1)

    wait_until(lambda: get_link(server, url).status == 410, "the link's expiry",
               seconds=5)

    for tail in ("/a.txt", "/archive"):
        assert_gone(get_link(server, url + tail))


# The target going ----------------------------------------------------------------


def test_a_link_dies_with_its_deleted_file(server: LiveServer, space: str) -> None:
    seed(server, space, {"a.txt": b"A"})
    url = new_link(server, space, "a.txt")

    delete(server, space, "a.txt")

    assert_gone(get_link(server, url))


def test_a_link_does_not_serve_a_file_put_in_its_files_place(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"ORIGINAL"})
    url = new_link(server, space, "a.txt")

    delete(server, space, "a.txt")
    seed(server, space, {"a.txt": b"NEWCOMER"})

    assert_gone(get_link(server, url))


def test_a_link_ends_when_its_file_is_replaced_by_an_upload(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"ORIGINAL"})
    url = new_link(server, space, "a.txt")

    server.put(space, "a.txt", b"REPLACED")

    assert_gone(get_link(server, url))


def test_a_link_does_not_follow_its_file_moved_away_or_serve_one_moved_in(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"ORIGINAL", "b.txt": b"OTHER"})
    url = new_link(server, space, "a.txt")

    server.move(space, {"from": "a.txt", "to": "moved.txt"})
    away = get_link(server, url)
    server.move(space, {"from": "b.txt", "to": "a.txt"})
    moved_in = get_link(server, url)

    assert_gone(away)
    assert_gone(moved_in)


def test_a_folder_link_dies_when_its_folder_is_replaced(
    server: LiveServer, space: str
) -> None:
    """Deleted and made again in home; in lab moved aside for a new one.

    In lab the old folder stays, since Linux would hand its inode number to the
    new folder (a known limit, see storage/shares.py).
    """
    seed(server, space, {"docs/a.txt": b"A"})
    url = new_link(server, space, "docs")

    if space == "home":
        delete(server, space, "docs/a.txt")
        delete(server, space, "docs")
    else:
        (server.parent / "lab" / "docs").rename(server.parent / "lab" / "old-docs")
    seed(server, space, {"docs/a.txt": b"NEWCOMER"})

    for tail in ("", "/a.txt", "/archive"):
        assert_gone(get_link(server, url + tail))


def test_a_folder_link_dies_with_its_deleted_folder(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"docs/a.txt": b"A"})
    url = new_link(server, space, "docs")

    delete(server, space, "docs/a.txt")
    delete(server, space, "docs")

    for tail in ("", "/a.txt", "/archive"):
        assert_gone(get_link(server, url + tail))


def test_a_link_dies_with_its_owner(server: LiveServer, space: str) -> None:
    name = f"carol-{secrets.token_hex(3)}"
    server.add_logged_in_user(name, "carol-password-333")
    seed_as = {"home": "home", "lab": "docs-ro"}[space]
    if seed_as == "docs-ro":
        (server.parent / "docs-ro" / "a.txt").write_bytes(b"A")
    else:
        assert server.put("home", "a.txt", b"A", token=name).status == 201
    reply = server.request(
        "POST", f"{API}/spaces/{seed_as}/shares", body=b'{"path": "a.txt"}',
        headers={"Content-Type": "application/json"}, token=name,
    )
    url = reply.json()["url"]  # type: ignore[index]
    assert get_link(server, url).status == 200

    server.remove_user(name)

    assert_gone(get_link(server, url))


def test_a_link_of_a_disabled_owner_is_410(server: LiveServer) -> None:
    name = f"dave-{secrets.token_hex(3)}"
    server.add_logged_in_user(name, "dave-password-333")
    (server.parent / "docs-ro" / "a.txt").write_bytes(b"A")
    reply = server.request(
        "POST", f"{API}/spaces/docs-ro/shares", body=b'{"path": "a.txt"}',
        headers={"Content-Type": "application/json"}, token=name,
    )
    url = reply.json()["url"]  # type: ignore[index]

    server.request("PATCH", f"{API}/admin/users/{name}", token="bob",
                   body=json.dumps({"active": False}).encode(),
                   headers={"Content-Type": "application/json"})

    assert_gone(get_link(server, url))


def test_a_shared_home_file_marked_damaged_is_refused_without_its_path(
    server: LiveServer,
) -> None:
    seed(server, "home", {"docs/private-name/a.txt": b"A"})
    url = new_link(server, "home", "docs/private-name/a.txt")
    store = open_metadata_store(load_settings(str(server.config_path)).database_url)
    try:
        alice = store.get_user_by_name("alice")
        assert alice is not None
        row = store.get_file(alice.id, "docs/private-name/a.txt")
        assert row is not None and store.set_damage(row.blob_id, "missing")
    finally:
        store.close()

    reply = get_link(server, url)

    assert reply.status == 410
    assert reply.json()["code"] == "content_damaged"  # type: ignore[index]
    assert b"private-name" not in reply.body


# The download limit ---------------------------------------------------------------


def test_concurrent_downloads_never_pass_the_limit(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.bin": b"x" * 100_000})
    url = new_link(server, space, "a.bin", max_downloads=DOWNLOAD_LIMIT)

    with ThreadPoolExecutor(PARALLEL_DOWNLOADS) as pool:
        replies = list(pool.map(lambda _: get_link(server, url),
                                range(PARALLEL_DOWNLOADS)))

    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * DOWNLOAD_LIMIT + [410] * (
        PARALLEL_DOWNLOADS - DOWNLOAD_LIMIT)
    assert all(len(r.body) == 100_000 for r in replies if r.status == 200)
    shares = server.request("GET", f"{API}/shares").json()["shares"]  # type: ignore[index]
    counted = [s for s in shares if s["id"] == claims_of(url)["shr"]]
    assert counted[0]["downloads"] == DOWNLOAD_LIMIT


def test_a_folder_links_limit_counts_each_file_and_zip(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"docs/a.txt": b"A", "docs/b.txt": b"B"})
    url = new_link(server, space, "docs", max_downloads=2)

    listing = get_link(server, url)
    replies = [get_link(server, url + tail) for tail in ("/a.txt", "/archive",
                                                          "/b.txt")]

    assert listing.status == 200
    assert [r.status for r in replies] == [200, 200, 410]


def test_a_used_up_link_still_answers_head_and_nothing_else(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"A"})
    url = new_link(server, space, "a.txt", max_downloads=1)

    first = get_link(server, url)
    second = get_link(server, url)

    assert first.status == 200
    assert_gone(second)


# Passwords --------------------------------------------------------------------------


def test_a_password_link_serves_with_the_right_password_and_any_user_name(
    server: LiveServer, space: str
) -> None:
    seed(server, space, {"a.txt": b"SECRET-A"})
    url = new_link(server, space, "a.txt", password="a-long-password")

    replies = [get_link(server, url, basic("a-long-password", user))
               for user in ("", "anyone", "alice")]

    assert [(r.status, r.body) for r in replies] == [(200, b"SECRET-A")] * 3


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic !!!"}, {"Authorization": "Bearer abc"},
     {"Authorization": "Basic " + "QQ" * 3000}],
    ids=["none", "malformed", "bearer", "oversized"],
)
def test_a_password_link_without_a_usable_password_asks_for_one(
    server: LiveServer, headers: dict[str, str]
) -> None:
    seed(server, "lab", {"a.txt": b"SECRET-A"})
    url = new_link(server, "lab", "a.txt", password="a-long-password")

    reply = get_link(server, url, headers)

    assert reply.status == 401
    assert (reply.header("www-authenticate") or "").startswith('Basic realm="share"')
    assert b"SECRET-A" not in reply.body


def test_a_password_in_the_url_is_never_read(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"SECRET-A"})
    url = new_link(server, "lab", "a.txt", password="a-long-password")

    reply = get_link(server, url + "?password=a-long-password")

    assert reply.status == 401


def test_a_wrong_password_is_401(server: LiveServer, space: str) -> None:
    seed(server, space, {"docs/a.txt": b"SECRET-A"})
    url = new_link(server, space, "docs", password="a-long-password")

    replies = [get_link_from(server, fresh_address(), url + tail,
                             basic("wrong-password"))
               for tail in ("", "/a.txt", "/archive")]

    assert [r.status for r in replies] == [401, 401, 401]
    assert all(b"SECRET-A" not in r.body for r in replies)


def test_every_request_of_a_password_folder_needs_the_password(
    server: LiveServer,
) -> None:
    seed(server, "lab", {"docs/a.txt": b"SECRET-A"})
    url = new_link(server, "lab", "docs", password="a-long-password")

    with_password = get_link(server, url + "/a.txt", basic("a-long-password"))
    without = get_link(server, url + "/a.txt")

    assert with_password.status == 200 and without.status == 401


def test_wrong_passwords_are_throttled_per_share_with_429_then_allowed_again(
    server: LiveServer,
) -> None:
    seed(server, "lab", {"a.txt": b"SECRET-A"})
    url = new_link(server, "lab", "a.txt", password="a-long-password")
    guesser, owner = fresh_address(), fresh_address()
    for _ in range(FREE_FAILURES):
        assert get_link_from(server, guesser, url, basic("guess")).status == 401

    guessed = get_link_from(server, guesser, url, basic("guess"))
    elsewhere = get_link_from(server, owner, url, basic("a-long-password"))

    for reply in (guessed, elsewhere):
        assert reply.status == 429, reply.body
        assert int(reply.header("retry-after") or "0") >= 1
        assert b"SECRET-A" not in reply.body
    wait_until(
        lambda: get_link_from(server, owner, url,
                              basic("a-long-password")).status == 200,
        "the throttle letting the right password in again",
    )


def test_wrong_passwords_are_throttled_per_client_address(
    server: LiveServer,
) -> None:
    seed(server, "lab", {"a.txt": b"SECRET-A", "b.txt": b"SECRET-B"})
    first = new_link(server, "lab", "a.txt", password="a-long-password")
    second = new_link(server, "lab", "b.txt", password="b-long-password")
    guesser = fresh_address()
    for _ in range(FREE_FAILURES):
        get_link_from(server, guesser, first, basic("guess"))

    reply = get_link_from(server, guesser, second, basic("b-long-password"))
    other = get_link_from(server, fresh_address(), second, basic("b-long-password"))

    assert reply.status == 429
    assert (other.status, other.body) == (200, b"SECRET-B")


def test_share_passwords_do_not_count_against_logins(server: LiveServer) -> None:
    seed(server, "lab", {"a.txt": b"A"})
    url = new_link(server, "lab", "a.txt", password="a-long-password")
    address = fresh_address()
    for _ in range(FREE_FAILURES + 1):
        get_link_from(server, address, url, basic("guess"))

    login = request_from(
        server, address, "POST", f"{API}/token",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"username=alice&password=alice-password-1",
    )

    assert login.status == 200, login.body

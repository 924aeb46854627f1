"""Shared folders (issue 4): listing, files beneath, the zip, and nothing beside.

The layout in every space: the shared folder `docs/public` (a.txt, sub/b.txt),
its sibling `docs/private/plan.txt`, a look-alike sibling `docs/public2`, the
parent's `docs/report.txt` and the space's `notes.txt`; P/outside and
P/lab-backup hold the secrets no request may ever reach. Each escape is tried in
`lab` and in `home` through every path form; the symlink ones in `lab` (links
denied) and in a space whose policy follows links that stay inside it, where a
link from the shared folder to its sibling stays inside the space but not
inside the share, and must be refused all the same.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from collections.abc import Iterator

import pytest
from live_server import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    CONFIG,
    SPACE_DIRS,
    LiveServer,
    Reply,
    run_server,
)
from share_links import get_link, new_link, seed

SECRETS = (b"PRIVATE-PLAN", b"REPORT-OK", b"NOTES-ORIGINAL", b"LOOKALIKE",
           b"OUTSIDE-SECRET", b"SIBLING-SECRET")
LAYOUT = {
    "docs/public/a.txt": b"PUBLIC-A",
    "docs/public/sub/b.txt": b"PUBLIC-B",
    "docs/private/plan.txt": b"PRIVATE-PLAN",
    "docs/public2/plan.txt": b"LOOKALIKE",
    "docs/report.txt": b"REPORT-OK",
    "notes.txt": b"NOTES-ORIGINAL",
}
# Everything after the link's token; "{OUT}" is P/outside as an absolute path.
ESCAPES = [
    "/../private/plan.txt",
    "/%2e%2e/private/plan.txt",
    "/%2E%2E/private/plan.txt",
    "/.%2e/private/plan.txt",
    "/..%2Fprivate%2Fplan.txt",
    "%2F..%2Fprivate%2Fplan.txt",
    "/%2e%2e%2fprivate%2fplan.txt",
    "/sub/../../private/plan.txt",
    "/sub/%2e%2e/%2e%2e/private/plan.txt",
    "/./../private/plan.txt",
    "/a.txt/../../private/plan.txt",
    "/../public2/plan.txt",
    "/../report.txt",
    "/../../notes.txt",
    "/%2e%2e/%2e%2e/notes.txt",
    "/..",
    "/../",
    "/../private/",
    "/private/plan.txt",
    "/public2/plan.txt",
    "//docs/private/plan.txt",
    "/%2Fdocs%2Fprivate%2Fplan.txt",
    "/..%5Cprivate%5Cplan.txt",
    "/..\\private\\plan.txt",
    "/%5C..%5C..%5Cnotes.txt",
    "/..;/private/plan.txt",
    "/%c0%ae%c0%ae/private/plan.txt",
    "/../../../outside/secret.txt",
    "/../../../lab-backup/secret.txt",
    "/{OUT}/secret.txt",
]
WITHIN_CONFIG = CONFIG + """
[[spaces]]
name = "links"
path = "links"
mode = "rw"
symlinks = "within"
users = ["alice"]
"""


@pytest.fixture
def layout(server: LiveServer, space: str) -> LiveServer:
    seed(server, space, LAYOUT)
    (server.parent / "outside" / "secret.txt").write_bytes(b"OUTSIDE-SECRET")
    (server.parent / "lab-backup" / "secret.txt").write_bytes(b"SIBLING-SECRET")
    return server


@pytest.fixture(scope="module", params=["openat2", "walk"])
def within_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server with `links`, a space that follows links staying inside it."""
    parent = tmp_path_factory.mktemp(f"p-within-{request.param}")
    for name in (*SPACE_DIRS, "links", "outside", "lab-backup"):
        (parent / name).mkdir()
    (parent / "outside" / "secret.txt").write_bytes(b"OUTSIDE-SECRET")
    users = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))
    config = WITHIN_CONFIG.format(data_dir=parent / "data")
    with run_server(parent, config, request.param, users) as server:
        yield server


@pytest.fixture
def links(within_server: LiveServer) -> LiveServer:
    """The `links` space emptied and laid out."""
    for child in (within_server.parent / "links").iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    seed(within_server, "links", LAYOUT)
    return within_server


@pytest.fixture
def lab_layout(server: LiveServer) -> LiveServer:
    seed(server, "lab", LAYOUT)
    (server.parent / "outside" / "secret.txt").write_bytes(b"OUTSIDE-SECRET")
    return server


def assert_refused(reply: Reply) -> None:
    assert reply.status in (400, 403, 404, 409), (reply.status, reply.body[:200])
    for secret in SECRETS:
        assert secret not in reply.body


# Listing, files beneath, the zip ----------------------------------------------


def test_a_shared_folder_lists_its_entries_relative_to_itself(
    layout: LiveServer, space: str
) -> None:
    url = new_link(layout, space, "docs/public")

    reply = get_link(layout, url)

    body = reply.json()
    assert isinstance(body, dict)
    assert (body["name"], body["path"], body["next_cursor"]) == ("public", "", None)
    assert [(e["name"], e["path"], e["kind"]) for e in body["entries"]] == [
        ("a.txt", "a.txt", "file"), ("sub", "sub", "dir")]


def test_a_folder_beneath_the_share_lists_too(layout: LiveServer, space: str) -> None:
    url = new_link(layout, space, "docs/public")

    reply = get_link(layout, url + "/sub")

    body = reply.json()
    assert isinstance(body, dict)
    assert [e["path"] for e in body["entries"]] == ["sub/b.txt"]


def test_a_bad_cursor_is_named_as_such(layout: LiveServer, space: str) -> None:
    url = new_link(layout, space, "docs/public")

    reply = get_link(layout, url + "?cursor=garbage")

    assert reply.status == 400
    assert reply.json()["code"] == "invalid_cursor"


def test_a_listing_pages_with_a_cursor(layout: LiveServer, space: str) -> None:
    url = new_link(layout, space, "docs/public")

    first = get_link(layout, url + "?limit=1").json()
    assert isinstance(first, dict)
    second = get_link(layout, url + f"?limit=1&cursor={first['next_cursor']}").json()

    assert isinstance(second, dict)
    assert [e["name"] for e in first["entries"] + second["entries"]] == [
        "a.txt", "sub"]


@pytest.mark.parametrize(
    ("tail", "content"),
    [("/a.txt", b"PUBLIC-A"), ("/sub/b.txt", b"PUBLIC-B"),
     ("/sub/../a.txt", b"PUBLIC-A"), ("/./sub/./b.txt", b"PUBLIC-B"),
     ("/sub%2Fb.txt", b"PUBLIC-B")],
)
def test_files_beneath_the_share_download(
    layout: LiveServer, space: str, tail: str, content: bytes
) -> None:
    url = new_link(layout, space, "docs/public")

    reply = get_link(layout, url + tail)

    assert (reply.status, reply.body) == (200, content)


def test_a_file_beneath_answers_range_and_etag_like_a_download(
    layout: LiveServer, space: str
) -> None:
    url = new_link(layout, space, "docs/public")
    etag = get_link(layout, url + "/a.txt").header("etag") or ""

    ranged = get_link(layout, url + "/a.txt", {"Range": "bytes=0-5"})
    cached = get_link(layout, url + "/a.txt", {"If-None-Match": etag})

    assert (ranged.status, ranged.body) == (206, b"PUBLIC")
    assert (cached.status, cached.body) == (304, b"")


def test_the_zip_of_a_shared_folder_holds_it_and_nothing_else(
    layout: LiveServer, space: str
) -> None:
    url = new_link(layout, space, "docs/public")

    reply = get_link(layout, url + "/archive")

    assert reply.status == 200, reply.body[:200]
    assert reply.header("content-type") == "application/zip"
    assert 'filename="public.zip"' in (reply.header("content-disposition") or "")
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        names = set(archive.namelist())
        assert archive.read("a.txt") == b"PUBLIC-A"
    assert names == {"a.txt", "sub/b.txt", "strongroom-manifest.json"}
    assert not any(secret in reply.body for secret in SECRETS)


def test_head_of_the_zip_sends_no_body(layout: LiveServer, space: str) -> None:
    url = new_link(layout, space, "docs/public")

    reply = get_link(layout, url + "/archive", method="HEAD")

    assert (reply.status, reply.body) == (200, b"")
    assert reply.header("content-type") == "application/zip"


def test_an_entry_named_archive_is_reached_with_a_dot(
    layout: LiveServer, space: str
) -> None:
    seed(layout, space, {"docs/public/archive": b"NOT-A-ZIP"})
    url = new_link(layout, space, "docs/public")

    reply = get_link(layout, url + "/./archive")

    assert (reply.status, reply.body) == (200, b"NOT-A-ZIP")


# Nothing beside the share -------------------------------------------------------


@pytest.mark.parametrize("tail", ESCAPES)
def test_no_path_form_reaches_beside_or_above_the_shared_folder(
    layout: LiveServer, space: str, tail: str
) -> None:
    url = new_link(layout, space, "docs/public")
    tail = tail.replace("{OUT}", str(layout.parent / "outside"))

    reply = get_link(layout, url + tail)

    assert_refused(reply)


@pytest.mark.parametrize("tail", ESCAPES)
def test_no_path_form_reaches_beside_a_shared_file(
    layout: LiveServer, space: str, tail: str
) -> None:
    url = new_link(layout, space, "docs/public/a.txt")
    tail = tail.replace("{OUT}", str(layout.parent / "outside"))

    reply = get_link(layout, url + tail)

    assert_refused(reply)


def test_a_share_lists_and_zips_nothing_of_a_look_alike_sibling(
    layout: LiveServer, space: str
) -> None:
    url = new_link(layout, space, "docs/public")

    zipped = get_link(layout, url + "/archive").body
    listing = get_link(layout, url).body

    assert b"LOOKALIKE" not in zipped and b"public2" not in listing


LINKS = {
    "docs/public/to_private": "../private",
    "docs/public/to_plan": "../private/plan.txt",
    "docs/public/sub/climb": "../../private/plan.txt",
    "docs/public/to_report": "../report.txt",
    "docs/public/to_outside": "../../../outside/secret.txt",
}
LINK_TAILS = ["/to_private/plan.txt", "/to_plan", "/sub/climb", "/to_report",
              "/to_outside", "/absolute", "/to_private/", "/to_private"]


def plant_links(server: LiveServer, space: str) -> None:
    top = server.parent / space
    for rel_path, target in LINKS.items():
        os.symlink(target, top / rel_path)
    os.symlink(server.parent / "outside" / "secret.txt",
               top / "docs/public/absolute")


@pytest.mark.parametrize("tail", LINK_TAILS)
def test_links_out_of_the_share_are_refused_where_links_are_denied(
    lab_layout: LiveServer, tail: str
) -> None:
    plant_links(lab_layout, "lab")
    url = new_link(lab_layout, "lab", "docs/public")

    reply = get_link(lab_layout, url + tail)

    assert_refused(reply)


@pytest.mark.parametrize("tail", LINK_TAILS)
def test_links_out_of_the_share_are_refused_even_where_links_are_followed(
    links: LiveServer, tail: str
) -> None:
    """The link stays inside the space, so only the share's own root stops it."""
    plant_links(links, "links")
    url = new_link(links, "links", "docs/public")

    reply = get_link(links, url + tail)

    assert_refused(reply)


def test_a_link_inside_the_share_is_followed_where_links_are_followed(
    links: LiveServer,
) -> None:
    os.symlink("sub/b.txt", links.parent / "links/docs/public/inner")
    url = new_link(links, "links", "docs/public")

    reply = get_link(links, url + "/inner")

    assert (reply.status, reply.body) == (200, b"PUBLIC-B")


def test_the_zip_skips_links_and_names_them_in_its_manifest(
    links: LiveServer,
) -> None:
    plant_links(links, "links")
    url = new_link(links, "links", "docs/public")

    reply = get_link(links, url + "/archive")

    assert not any(secret in reply.body for secret in SECRETS)
    with zipfile.ZipFile(io.BytesIO(reply.body)) as archive:
        manifest = archive.read("strongroom-manifest.json").decode()
        assert set(archive.namelist()) == {
            "a.txt", "sub/b.txt", "strongroom-manifest.json"}
    assert "to_plan" in manifest and "a symlink" in manifest


def swap_in_a_link_beneath(server: LiveServer, space: str) -> Reply:
    url = new_link(server, space, "docs/public")
    top = server.parent / space / "docs"
    os.rename(top / "public/sub", top / "old-sub")
    os.symlink("../private", top / "public/sub")
    return get_link(server, url + "/sub/plan.txt")


def swap_the_folder_for_a_link(server: LiveServer, space: str) -> list[Reply]:
    url = new_link(server, space, "docs/public")
    top = server.parent / space / "docs"
    os.rename(top / "public", top / "public-old")
    os.symlink("private", top / "public")
    return [get_link(server, url + tail) for tail in ("", "/plan.txt", "/archive")]


def test_a_link_swapped_in_after_creation_is_refused_where_links_are_denied(
    lab_layout: LiveServer,
) -> None:
    reply = swap_in_a_link_beneath(lab_layout, "lab")

    assert_refused(reply)


def test_a_link_swapped_in_after_creation_cannot_leave_the_share(
    links: LiveServer,
) -> None:
    reply = swap_in_a_link_beneath(links, "links")

    assert_refused(reply)


def test_a_shared_folder_swapped_for_a_link_is_gone_where_links_are_denied(
    lab_layout: LiveServer,
) -> None:
    replies = swap_the_folder_for_a_link(lab_layout, "lab")

    assert [r.status for r in replies] == [410, 410, 410]
    assert not any(secret in r.body for r in replies for secret in SECRETS)


def test_a_shared_folder_swapped_for_a_link_to_its_sibling_is_gone(
    links: LiveServer,
) -> None:
    """The link is allowed in this space, but it leads to another folder."""
    replies = swap_the_folder_for_a_link(links, "links")

    assert [r.status for r in replies] == [410, 410, 410]
    assert not any(secret in r.body for r in replies for secret in SECRETS)

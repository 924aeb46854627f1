"""The file routes over a real loopback connection: what each one promises.

Routes that both kinds of space serve run against `lab` (a directory space) and
`home` (alice's database-mapped space); `docs-ro` is the read-only space. Paths
are sent exactly as written.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import secrets

import pytest
from live_server import (
    API,
    MAX_UPLOAD_BYTES,
    STAGING_PREFIX,
    LiveServer,
    files_url,
    snapshot_tree,
    wait_until,
)


def send_truncated_put(
    server: LiveServer, path: str, declared: int, sent: int
) -> bytes:
    """PUT a body shorter than its Content-Length, then stop sending.

    The server sees the end of the body early; whatever it answered is returned.
    """
    head = (f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}"
            f"\r\nAuthorization: Bearer {server.tokens['alice']}\r\n\r\n")
    return server.raw(head.encode() + b"x" * sent, stop_sending=True)


def staging_and_blobs(server: LiveServer) -> tuple[list[str], set[str]]:
    """Return leftover staging files (lab and blobs) and the set of blob files.

    Empty shard folders of the blob store are not counted: an aborted upload may
    leave the two-level folder it was staged in.
    """
    blobs = {p for p, v in snapshot_tree(server.data_dir / "blobs").items()
             if v[0] == "file"}
    staged = [p for p in [*snapshot_tree(server.parent / "lab"), *blobs]
              if p.rsplit("/", 1)[-1].startswith(STAGING_PREFIX)]
    return staged, blobs


# GET /spaces/{space}/list


def test_list_pages_cover_every_entry_once_in_name_order(
    server: LiveServer, space: str
) -> None:
    names = [f"f{i:02}.txt" for i in range(7)]
    for name in names:
        server.put(space, f"many/{name}", b"x")

    pages, cursor = [], ""
    while True:
        reply = server.request("GET", f"{API}/spaces/{space}/list/many?limit=3{cursor}")
        page = reply.json()
        pages.append([e["name"] for e in page["entries"]])  # type: ignore[index]
        if page["next_cursor"] is None:  # type: ignore[index]
            break
        cursor = f"&cursor={page['next_cursor']}"  # type: ignore[index]

    assert pages == [names[0:3], names[3:6], names[6:7]]


def test_list_entries_carry_name_path_kind_size_and_modified(
    server: LiveServer, space: str
) -> None:
    server.put(space, "top/a.txt", b"12345")
    server.request("POST", f"{API}/spaces/{space}/dirs/top/sub")

    reply = server.request("GET", f"{API}/spaces/{space}/list/top")

    entries = {e["name"]: e for e in reply.json()["entries"]}  # type: ignore[index]
    assert entries["a.txt"]["path"] == "top/a.txt"
    assert entries["a.txt"]["kind"] == "file"
    assert entries["a.txt"]["size"] == 5
    assert entries["sub"]["kind"] == "dir"
    assert entries["a.txt"]["modified"].endswith("Z")


@pytest.mark.parametrize(
    "cursor", ["a", "!!!!", "%%%%"], ids=["bad-length", "not-base64", "percent"]
)
def test_list_with_a_bad_cursor_is_400(
    server: LiveServer, space: str, cursor: str
) -> None:
    server.put(space, "a.txt", b"x")

    reply = server.request("GET", f"{API}/spaces/{space}/list?cursor={cursor}")

    assert reply.status == 400
    # Its own code: nothing was wrong with the path.
    assert json.loads(reply.body)["code"] == "invalid_cursor"


@pytest.mark.parametrize("limit", ["0", "5001", "-1", "ten"])
def test_list_limit_outside_1_to_5000_is_422(server: LiveServer, limit: str) -> None:
    reply = server.request("GET", f"{API}/spaces/lab/list?limit={limit}")

    assert reply.status == 422


def test_list_of_a_missing_folder_is_404(server: LiveServer, space: str) -> None:
    reply = server.request("GET", f"{API}/spaces/{space}/list/nothing-here")

    assert reply.status == 404


@pytest.mark.parametrize(
    "raw_name", [b"latin1-\xe9t\xe9.txt", b"\xff", b"\xed\xa0\x80lone-surrogate"],
    ids=["latin-1", "lone-byte", "encoded-surrogate"],
)
def test_a_folder_holding_a_name_that_is_not_utf8_still_lists(
    server: LiveServer, raw_name: bytes
) -> None:
    """Names on disk come from anyone who can write the directory, not only us."""
    lab = os.fsencode(server.parent / "lab")
    with open(os.path.join(lab, raw_name), "wb") as handle:
        handle.write(b"data")
    (server.parent / "lab" / "good.txt").write_text("fine")

    reply = server.request("GET", f"{API}/spaces/lab/list")

    assert reply.status == 200, reply.body[:200]
    assert "good.txt" in [e["name"] for e in reply.json()["entries"]]  # type: ignore[index]


# GET /spaces/{space}/meta


def test_meta_describes_a_file_with_every_field(server: LiveServer, space: str) -> None:
    server.put(space, "docs/report.txt", b"REPORT-OK")

    reply = server.request("GET", f"{API}/spaces/{space}/meta/docs/report.txt")
    download = server.request("GET", files_url(space, "docs/report.txt"))

    meta = reply.json()
    assert meta == {
        "filename": "report.txt", "path": "docs/report.txt", "size": 9,
        "kind": "file", "modified": meta["modified"],  # type: ignore[index]
        "content_type": "text/plain", "etag": download.header("etag"),
    }
    stamp = email.utils.parsedate_to_datetime(download.header("last-modified") or "")
    assert meta["modified"] == stamp.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[index]


def test_meta_of_a_folder_says_dir(server: LiveServer, space: str) -> None:
    server.request("POST", f"{API}/spaces/{space}/dirs/docs")

    reply = server.request("GET", f"{API}/spaces/{space}/meta/docs")

    assert reply.json()["kind"] == "dir"  # type: ignore[index]


# PUT /spaces/{space}/files


def test_put_creates_with_201_then_replaces_with_200(
    server: LiveServer, space: str
) -> None:
    first = server.put(space, "a.txt", b"one")
    second = server.put(space, "a.txt", b"second")

    assert (first.status, second.status) == (201, 200)
    assert second.json()["size"] == 6  # type: ignore[index]
    assert server.request("GET", files_url(space, "a.txt")).body == b"second"


def test_put_if_none_match_star_on_an_existing_name_is_412(
    server: LiveServer, space: str
) -> None:
    server.put(space, "a.txt", b"one")

    reply = server.request("PUT", files_url(space, "a.txt"), body=b"two",
                           headers={"If-None-Match": "*"})

    assert reply.status == 412
    assert server.request("GET", files_url(space, "a.txt")).body == b"one"


def test_put_if_none_match_star_on_a_new_name_creates_it(
    server: LiveServer, space: str
) -> None:
    reply = server.request("PUT", files_url(space, "new.txt"), body=b"two",
                           headers={"If-None-Match": "*"})

    assert reply.status == 201


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_put_over_the_limit_is_413_and_leaves_nothing_behind(
    server: LiveServer, space: str, chunked: bool
) -> None:
    server.put(space, "a.txt", b"old content")
    _, blobs_before = staging_and_blobs(server)

    reply = server.request("PUT", files_url(space, "a.txt"),
                           body=b"x" * (MAX_UPLOAD_BYTES + 1), chunked=chunked)

    staged, blobs_after = staging_and_blobs(server)
    assert reply.status == 413
    assert staged == []
    assert blobs_after == blobs_before
    assert server.request("GET", files_url(space, "a.txt")).body == b"old content"


@pytest.mark.parametrize(
    "space",
    ["lab", "home"],
    indirect=True,
)
def test_chunked_put_over_the_limit_into_new_folders_leaves_no_folders(
    server: LiveServer, space: str
) -> None:
    reply = server.request("PUT", files_url(space, "fresh/deep/big.bin"),
                           body=b"x" * (MAX_UPLOAD_BYTES + 1), chunked=True)

    assert reply.status == 413
    assert server.list_all(space, "") == []


def test_put_of_exactly_the_limit_is_accepted(server: LiveServer, space: str) -> None:
    reply = server.put(space, "full.bin", b"x" * MAX_UPLOAD_BYTES)

    assert reply.status == 201


def test_put_creates_missing_parent_folders(server: LiveServer, space: str) -> None:
    reply = server.put(space, "a/b/c/deep.txt", b"deep")

    assert reply.status == 201
    listing = server.request("GET", f"{API}/spaces/{space}/list/a/b")
    assert [e["name"] for e in listing.json()["entries"]] == ["c"]  # type: ignore[index]


def test_put_onto_a_folder_is_409(server: LiveServer, space: str) -> None:
    server.request("POST", f"{API}/spaces/{space}/dirs/docs")

    reply = server.put(space, "docs", b"x")

    assert reply.status == 409


def test_put_below_a_file_is_409(server: LiveServer, space: str) -> None:
    server.put(space, "a.txt", b"x")

    reply = server.put(space, "a.txt/child.txt", b"x")

    assert reply.status == 409


def test_an_upload_cut_short_leaves_no_file_and_keeps_the_old_one(
    server: LiveServer, space: str
) -> None:
    server.put(space, "keep.txt", b"OLD")
    _, blobs_before = staging_and_blobs(server)

    for name in ("keep.txt", "partial.bin"):
        send_truncated_put(server, files_url(space, name), declared=300_000,
                           sent=100_000)

    wait_until(lambda: staging_and_blobs(server)[0] == [], "staging cleanup")
    assert staging_and_blobs(server)[1] == blobs_before
    assert server.request("GET", files_url(space, "keep.txt")).body == b"OLD"
    assert server.request("GET", files_url(space, "partial.bin")).status == 404


def test_an_upload_cut_short_is_not_logged_as_a_server_error(
    server: LiveServer,
) -> None:
    name = f"partial-{secrets.token_hex(6)}.bin"

    send_truncated_put(server, files_url("lab", name), declared=300_000,
                       sent=100_000)

    wait_until(lambda: _access_line(server, name) is not None, "the access line")
    status = re.search(r"status=(\d+)", _access_line(server, name) or "")
    assert status is not None and int(status.group(1)) < 500


@pytest.mark.parametrize(
    ("method", "rel_path"),
    [("GET", "notes.txt/"), ("PUT", "notes.txt/"), ("PUT", "newdir/"),
     ("DELETE", "notes.txt/"), ("GET", "notes.txt/."), ("PUT", "notes.txt/.")],
    ids=["get", "put-existing", "put-new", "delete", "get-dot", "put-dot"],
)
def test_a_path_ending_in_slash_never_acts_on_a_file(
    server: LiveServer, space: str, method: str, rel_path: str
) -> None:
    server.put(space, "notes.txt", b"NOTES-ORIGINAL")

    reply = server.request(method, files_url(space, rel_path),
                           body=b"NEW" if method == "PUT" else None)

    assert 400 <= reply.status < 500, (reply.status, reply.body[:200])
    if method == "PUT":
        # The path's form is what is wrong, whatever exists: 400 in every
        # space, never a 409 about a folder that may not exist.
        assert reply.status == 400, (reply.status, reply.body[:200])
        assert json.loads(reply.body)["code"] == "invalid_path"
    assert server.request("GET", files_url(space, "notes.txt")).body == (
        b"NOTES-ORIGINAL")
    assert server.request("GET", f"{API}/spaces/{space}/meta/newdir").status == 404


@pytest.mark.parametrize("method", ["POST", "PATCH"])
def test_a_method_not_allowed_names_every_method_the_path_takes(
    server: LiveServer, space: str, method: str
) -> None:
    server.put(space, "notes.txt", b"NOTES")

    reply = server.request(method, files_url(space, "notes.txt"), body=b"x")

    assert reply.status == 405
    assert reply.header("Content-Type") == "application/problem+json"
    allowed = {m.strip() for m in (reply.header("Allow") or "").split(",")}
    assert {"GET", "HEAD", "PUT", "DELETE"} <= allowed
    assert method not in allowed


def test_meta_of_a_file_with_a_trailing_slash_is_refused(
    server: LiveServer, space: str
) -> None:
    # "notes.txt/" names a folder; describing the file there instead would
    # tell a client that a folder exists where none does.
    server.put(space, "notes.txt", b"NOTES")

    reply = server.request("GET", f"{API}/spaces/{space}/meta/notes.txt/")

    assert 400 <= reply.status < 500, (reply.status, reply.body[:200])
    assert reply.header("Content-Type") == "application/problem+json"


# POST /spaces/{space}/dirs, DELETE /spaces/{space}/files


def test_mkdir_is_201_and_the_folder_lists_empty(
    server: LiveServer, space: str
) -> None:
    reply = server.request("POST", f"{API}/spaces/{space}/dirs/new/inner")

    assert reply.status == 201
    assert reply.json()["kind"] == "dir"  # type: ignore[index]
    listing = server.request("GET", f"{API}/spaces/{space}/list/new/inner")
    assert listing.json()["entries"] == []  # type: ignore[index]


def test_delete_of_a_file_is_204_and_it_is_gone(server: LiveServer, space: str) -> None:
    server.put(space, "a.txt", b"x")

    reply = server.request("DELETE", files_url(space, "a.txt"))

    assert reply.status == 204
    assert server.request("GET", files_url(space, "a.txt")).status == 404


def test_delete_of_an_empty_folder_is_204(server: LiveServer, space: str) -> None:
    server.request("POST", f"{API}/spaces/{space}/dirs/empty")

    reply = server.request("DELETE", files_url(space, "empty"))

    assert reply.status == 204


def test_delete_of_a_folder_with_files_is_409_and_keeps_them(
    server: LiveServer, space: str
) -> None:
    server.put(space, "full/a.txt", b"x")

    reply = server.request("DELETE", files_url(space, "full"))

    assert reply.status == 409
    assert server.request("GET", files_url(space, "full/a.txt")).body == b"x"


def test_delete_of_a_missing_name_is_404(server: LiveServer, space: str) -> None:
    reply = server.request("DELETE", files_url(space, "nothing.txt"))

    assert reply.status == 404


@pytest.mark.parametrize(
    ("method", "route", "rel_path"),
    [("POST", "dirs", "nope/../notes.txt"), ("PUT", "files", "nope/../docs"),
     ("PUT", "files", "nope/deeper/../../docs")],
    ids=["mkdir-onto-file", "put-onto-folder", "put-onto-folder-deeper"],
)
@pytest.mark.parametrize(
    "space",
    ["lab", "home"],
    indirect=True,
)
def test_a_refused_write_leaves_no_folder_behind(
    server: LiveServer, space: str, method: str, route: str, rel_path: str
) -> None:
    server.put(space, "notes.txt", b"NOTES")
    server.request("POST", f"{API}/spaces/{space}/dirs/docs")

    reply = server.request(method, f"{API}/spaces/{space}/{route}/{rel_path}",
                           body=b"X" if method == "PUT" else None)

    # lab resolves `..` on disk and creates no folder for a path with `..`, so
    # the missing `nope` is a 404 there; home reads `..` lexically: 409.
    assert reply.status in (404, 409)
    assert sorted(e["name"] for e in server.list_all(space, "")) == [
        "docs", "notes.txt"]


# POST /spaces/{space}/move


def test_move_renames_a_file_into_another_folder(
    server: LiveServer, space: str
) -> None:
    server.put(space, "a.txt", b"A")
    server.request("POST", f"{API}/spaces/{space}/dirs/sub")

    reply = server.move(space, {"from": "a.txt", "to": "sub/b.txt"})

    assert reply.status == 200
    assert reply.json()["path"] == "sub/b.txt"  # type: ignore[index]
    assert server.request("GET", files_url(space, "sub/b.txt")).body == b"A"
    assert server.request("GET", files_url(space, "a.txt")).status == 404


def test_move_into_a_missing_folder_is_404(server: LiveServer, space: str) -> None:
    server.put(space, "a.txt", b"A")

    reply = server.move(space, {"from": "a.txt", "to": "nowhere/a.txt"})

    assert reply.status == 404
    assert server.request("GET", files_url(space, "a.txt")).body == b"A"


def test_move_onto_an_existing_name_is_409_and_changes_nothing(
    server: LiveServer, space: str
) -> None:
    server.put(space, "a.txt", b"A")
    server.put(space, "b.txt", b"B")

    reply = server.move(space, {"from": "a.txt", "to": "b.txt"})

    assert reply.status == 409
    assert server.request("GET", files_url(space, "a.txt")).body == b"A"
    assert server.request("GET", files_url(space, "b.txt")).body == b"B"


def test_move_with_overwrite_replaces_the_target(
    server: LiveServer, space: str
) -> None:
    server.put(space, "a.txt", b"A")
    server.put(space, "b.txt", b"B")

    reply = server.move(space, {"from": "a.txt", "to": "b.txt", "overwrite": True})

    assert reply.status == 200
    assert server.request("GET", files_url(space, "b.txt")).body == b"A"
    assert server.request("GET", files_url(space, "a.txt")).status == 404


def test_move_of_a_folder_carries_its_files(server: LiveServer, space: str) -> None:
    server.put(space, "old/inner/a.txt", b"A")

    reply = server.move(space, {"from": "old", "to": "new"})

    assert reply.status == 200
    assert server.request("GET", files_url(space, "new/inner/a.txt")).body == b"A"


@pytest.mark.parametrize(
    ("source", "target"),
    [("a.txt", "../outside/a.txt"), ("../outside/secret.txt", "stolen.txt"),
     ("a.txt", "/etc/a.txt"), ("a.txt", "")],
    ids=["to-dotdot", "from-dotdot", "to-absolute", "to-empty"],
)
def test_move_with_a_path_leaving_the_space_is_refused(
    server: LiveServer, space: str, source: str, target: str
) -> None:
    server.put(space, "a.txt", b"A")
    (server.parent / "outside" / "secret.txt").write_text("OUTSIDE-SECRET")
    outside_before = snapshot_tree(server.parent / "outside")

    reply = server.move(space, {"from": source, "to": target})

    assert reply.status in (400, 403, 404, 422)
    assert snapshot_tree(server.parent / "outside") == outside_before
    assert server.request("GET", files_url(space, "a.txt")).body == b"A"


@pytest.mark.parametrize(
    ("link_target", "source", "target"),
    [("docs", "a.txt", "via/a.txt"), ("docs", "via/b.txt", "b.txt"),
     ("../outside", "a.txt", "via/a.txt"), ("../outside", "via/secret.txt", "s.txt")],
    ids=["into-inside-link", "out-of-inside-link", "into-outside-link",
         "out-of-outside-link"],
)
def test_move_across_a_symlink_is_refused(
    server: LiveServer, link_target: str, source: str, target: str
) -> None:
    lab = server.parent / "lab"
    (lab / "docs").mkdir()
    (lab / "docs" / "b.txt").write_text("B")
    (lab / "a.txt").write_text("A")
    (lab / "via").symlink_to(link_target)
    (server.parent / "outside" / "secret.txt").write_text("OUTSIDE-SECRET")
    before = snapshot_tree(lab), snapshot_tree(server.parent / "outside")

    reply = server.move("lab", {"from": source, "to": target})

    assert reply.status == 403
    assert (snapshot_tree(lab), snapshot_tree(server.parent / "outside")) == before


def test_move_of_a_symlink_is_all_or_nothing(server: LiveServer) -> None:
    """A refused move must leave the link where it was (seen: 403, link moved)."""
    lab = server.parent / "lab"
    (server.parent / "outside" / "secret.txt").write_text("OUTSIDE-SECRET")
    (lab / "leak.txt").symlink_to(server.parent / "outside" / "secret.txt")
    before = snapshot_tree(lab), snapshot_tree(server.parent / "outside")

    reply = server.move("lab", {"from": "leak.txt", "to": "moved.txt"})

    after = snapshot_tree(lab), snapshot_tree(server.parent / "outside")
    assert after[1] == before[1]
    if reply.status == 200:
        assert set(after[0]) == {"moved.txt"}
    else:
        assert after == before, (reply.status, reply.body[:200])


CANONICAL_PATH_ANSWERS = {
    "put": ("PUT", "files/./docs//b.txt", "docs/b.txt"),
    "mkdir": ("POST", "dirs/./new//d", "new/d"),
    "meta": ("GET", "meta/./docs/a.txt", "docs/a.txt"),
    "list": ("GET", "list/docs/.", "docs/a.txt"),
    "move": ("POST", "move", "b.txt"),
}


@pytest.mark.parametrize("kind", list(CANONICAL_PATH_ANSWERS))
@pytest.mark.parametrize(
    "space",
    ["lab", "home"],
    indirect=True,
)
def test_answers_name_the_path_the_entry_has(
    server: LiveServer, space: str, kind: str
) -> None:
    server.put(space, "docs/a.txt", b"A")
    server.request("POST", f"{API}/spaces/{space}/dirs/sub")
    method, route, expected = CANONICAL_PATH_ANSWERS[kind]
    body = {"from": "docs/a.txt", "to": "sub/../b.txt"} if kind == "move" else None

    if kind == "move":
        reply = server.move(space, body or {})
    else:
        reply = server.request(method, f"{API}/spaces/{space}/{route}",
                               body=b"B" if method == "PUT" else None)

    answer = reply.json()
    assert isinstance(answer, dict), (reply.status, reply.body[:200])
    seen = answer["entries"][0]["path"] if kind == "list" else answer["path"]
    if space == "lab" and kind == "move":
        # A directory space resolves `..` on disk, where a symlink may give it
        # another meaning than the text, so answers keep it rather than guess.
        expected = "sub/../b.txt"
    assert seen == expected


def _access_line(server: LiveServer, rel_path: str) -> str | None:
    """Return the server's access-log line for the request on `rel_path`, if any."""
    for line in server.log_text().splitlines():
        if f"rel_path={rel_path}" in line and "status=" in line:
            return line
    return None

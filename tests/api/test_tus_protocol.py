"""The tus 1.0.0 routes over raw HTTP on a live server: what each one promises.

Uploads go to `lab` (a directory space) and to alice's `home` through the
`space` fixture; `docs-ro` is read-only. Every test starts with no uploads.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import secrets
from datetime import datetime, timedelta

import pytest
from live_server import API, MAX_UPLOAD_BYTES, LiveServer, snapshot_tree, wait_until
from tus_support import (
    CHUNK_TYPE,
    TUS,
    UPLOADS,
    checksum,
    create,
    cut_patch_short,
    encode_metadata,
    expire,
    forget_uploads,
    head,
    is_locked,
    leftovers,
    location,
    offset_of,
    offset_when_settled,
    open_patch,
    patch,
    read_answer,
    read_file,
    staged_files,
    staged_size,
    start,
    upload_all,
    upload_id_of,
)

from strongroom.api.uploads import STAGE_BATCH_BYTES


@pytest.fixture(autouse=True)
def no_uploads(server: LiveServer) -> None:
    """Every test starts with no upload rows and no staged bytes."""
    forget_uploads(server)


def problem_code(reply: object) -> str:
    body = json.loads(reply.body)  # type: ignore[attr-defined]
    return str(body["code"])


# OPTIONS and the version header


def test_options_advertises_version_extensions_size_and_checksums(
    server: LiveServer,
) -> None:
    reply = server.request("OPTIONS", UPLOADS, token=None)

    assert reply.status == 204
    assert reply.header("Tus-Version") == "1.0.0"
    extensions = set((reply.header("Tus-Extension") or "").split(","))
    assert extensions == {"creation", "creation-with-upload", "termination",
                          "expiration", "checksum"}
    assert reply.header("Tus-Max-Size") == str(MAX_UPLOAD_BYTES)
    assert "sha1" in (reply.header("Tus-Checksum-Algorithm") or "").split(",")


@pytest.mark.parametrize("version", [None, "0.2.2", "1.0.0, 1.0.0"],
                         ids=["missing", "old", "twice"])
def test_request_without_tus_1_0_0_gets_412_with_tus_version(
    server: LiveServer, version: str | None
) -> None:
    headers = {"Upload-Length": "3",
               "Upload-Metadata": encode_metadata({"space": "lab", "path": "a"})}
    if version is not None:
        headers["Tus-Resumable"] = version

    reply = server.request("POST", UPLOADS, headers=headers)

    assert reply.status == 412
    assert reply.header("Tus-Version") == "1.0.0"
    assert problem_code(reply) == "tus_version_unsupported"
    assert staged_files(server) == []


def test_every_answer_carries_tus_resumable_errors_too(server: LiveServer) -> None:
    replies = [
        server.request("OPTIONS", UPLOADS, token=None),
        server.request("POST", UPLOADS, headers=TUS, token=None),
        head(server, f"{UPLOADS}/{'0' * 32}"),
        create(server, "lab", "ok.txt", 1),
    ]

    assert [r.status for r in replies] == [204, 401, 404, 201]
    assert {r.header("Tus-Resumable") for r in replies} == {"1.0.0"}


# Creation


def test_create_answers_201_with_location_and_expiry(
    server: LiveServer, space: str
) -> None:
    reply = create(server, space, "docs/report.pdf", 10)

    assert reply.status == 201
    assert location(reply).startswith(f"{UPLOADS}/")
    assert (reply.header("Upload-Expires") or "").endswith(" GMT")
    assert staged_files(server) == [location(reply).rsplit("/", 1)[1]]


def test_head_reports_offset_length_expiry_and_metadata(
    server: LiveServer, space: str
) -> None:
    reply = create(server, space, "a.txt", 10, extra={"filename": "a.txt"})
    url = location(reply)

    status = head(server, url)

    assert status.status == 200
    assert status.header("Upload-Offset") == "0"
    assert status.header("Upload-Length") == "10"
    assert status.header("Upload-Expires") == reply.header("Upload-Expires")
    assert status.header("Upload-Metadata") == encode_metadata(
        {"space": space, "path": "a.txt", "filename": "a.txt"})
    assert status.header("Cache-Control") == "no-store"
    assert status.body == b""


def test_filename_names_the_file_inside_a_folder_path(
    server: LiveServer, space: str
) -> None:
    url = start_with(server, {"space": space, "path": "in/", "filename": "b.bin"}, 2)

    patch(server, url, 0, b"hi")

    assert read_file(server, space, "in/b.bin").body == b"hi"


def test_zero_byte_upload_is_published_at_creation(
    server: LiveServer, space: str
) -> None:
    reply = create(server, space, "empty.txt", 0)

    assert reply.status == 201
    assert read_file(server, space, "empty.txt").body == b""
    assert head(server, location(reply)).header("Upload-Offset") == "0"
    assert staged_files(server) == []


def test_creation_with_upload_takes_the_first_chunk(
    server: LiveServer, space: str
) -> None:
    reply = create(server, space, "c.txt", 6, body=b"abc", headers=CHUNK_TYPE)

    assert reply.status == 201
    assert reply.header("Upload-Offset") == "3"
    assert offset_of(server, location(reply)) == 3


def test_creation_with_the_whole_body_publishes_the_file(
    server: LiveServer, space: str
) -> None:
    reply = create(server, space, "whole.txt", 3, body=b"abc", headers=CHUNK_TYPE)

    assert reply.status == 201
    assert read_file(server, space, "whole.txt").body == b"abc"
    assert leftovers(server) == []


@pytest.mark.parametrize(
    ("extra", "headers"),
    [
        ({}, {"Upload-Checksum": checksum("sha1", b"xyz")}),
        ({"sha256": hashlib.sha256(b"xyz").hexdigest()}, {}),
    ],
    ids=["chunk-checksum", "file-checksum"],
)
def test_creation_body_failing_its_checksum_gets_460_and_leaves_nothing(
    server: LiveServer, space: str, extra: dict[str, str], headers: dict[str, str]
) -> None:
    reply = create(server, space, "c.txt", 3, body=b"abc", extra=extra,
                   headers={**CHUNK_TYPE, **headers})

    assert reply.status == 460
    assert read_file(server, space, "c.txt").status == 404
    assert leftovers(server) == []


def test_creation_body_of_another_type_gets_415_and_creates_nothing(
    server: LiveServer,
) -> None:
    reply = create(server, "lab", "c.txt", 3, body=b"abc",
                   headers={"Content-Type": "text/plain"})

    assert reply.status == 415
    assert staged_files(server) == []


def test_creation_body_past_the_length_gets_413_and_creates_nothing(
    server: LiveServer,
) -> None:
    reply = create(server, "lab", "c.txt", 2, body=b"abc", headers=CHUNK_TYPE)

    assert reply.status == 413
    assert staged_files(server) == []


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Upload-Length": "-1"},
        {"Upload-Length": "ten"},
        {"Upload-Length": "1" * 20},
        {"Upload-Defer-Length": "1"},
        {"Upload-Length": "1", "Upload-Concat": "partial"},
        {"Upload-Length": "1", "Upload-Metadata": "path YQ=="},
        {"Upload-Length": "1", "Upload-Metadata": "space bGFi,path !!!"},
        {"Upload-Length": "1", "Upload-Metadata": "space bGFi,space bGFi"},
        {"Upload-Length": "1", "Upload-Metadata": "space bGFi,bad,key YQ=="},
        {"Upload-Length": "1", "Upload-Metadata": "space bGFi,path /w=="},
        {"Upload-Length": "1", "Upload-Metadata": "space bGFi"},
        {"Upload-Length": "1",
         "Upload-Metadata": "space bGFi,path YQ==,sha256 YWJj"},
        {"Upload-Length": "1", "Upload-Metadata": "space bGFi,x " + "QQ" * 5000},
    ],
    ids=["no-length", "negative", "text", "too-many-digits", "deferred", "concat",
         "no-space", "bad-base64", "duplicate-key", "empty-key", "not-utf8",
         "no-path-no-filename", "bad-sha256", "huge-metadata"],
)
def test_malformed_creation_headers_get_400(
    server: LiveServer, headers: dict[str, str]
) -> None:
    reply = server.request("POST", UPLOADS, headers={**TUS, **headers})

    assert reply.status == 400, reply.body
    assert reply.header("Content-Type") == "application/problem+json"
    assert staged_files(server) == []


def test_read_only_space_is_refused_at_creation(server: LiveServer) -> None:
    reply = create(server, "docs-ro", "new.txt", 3)

    assert reply.status == 403
    assert staged_files(server) == []


def test_space_the_user_may_not_use_is_404_at_creation(server: LiveServer) -> None:
    reply = create(server, "bob", "new.txt", 3)

    assert reply.status == 404
    assert problem_code(reply) == "space_not_found"


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("../outside/x.txt", 403),
        ("a/../../x.txt", 403),
        ("/etc/passwd", 400),
        ("folder/", 400),
        (".~sr-planted", 400),
        ("a\x00b", 400),
        ("x" * 256, 400),
        ("taken", 409),
        ("file.txt/inner.txt", 409),
    ],
    ids=["dotdot", "dotdot-deep", "absolute", "folder", "staging-name", "nul",
         "long-name", "is-a-folder", "parent-is-a-file"],
)
def test_bad_targets_are_refused_at_creation(
    server: LiveServer, space: str, path: str, status: int
) -> None:
    server.request("POST", f"{API}/spaces/{space}/dirs/taken")
    server.put(space, "file.txt", b"x")

    reply = create(server, space, path, 3)

    assert reply.status == status, reply.body
    assert staged_files(server) == []
    assert list((server.parent / "outside").iterdir()) == []


def test_symlink_at_the_target_is_refused_at_creation(server: LiveServer) -> None:
    (server.parent / "lab" / "link.txt").symlink_to("../outside/x.txt")

    reply = create(server, "lab", "link.txt", 3)

    assert reply.status == 403
    assert problem_code(reply) == "symlink_refused"
    assert not (server.parent / "outside" / "x.txt").exists()


def test_length_over_max_upload_bytes_gets_413(server: LiveServer) -> None:
    reply = create(server, "lab", "big.bin", MAX_UPLOAD_BYTES + 1)

    assert reply.status == 413
    assert problem_code(reply) == "too_large"


def test_reserved_bytes_bound_gets_413_upload_quota(server: LiveServer) -> None:
    first = create(server, "lab", "a.bin", MAX_UPLOAD_BYTES)
    second = create(server, "home", "b.bin", MAX_UPLOAD_BYTES)

    third = create(server, "lab", "c.bin", 1)

    assert (first.status, second.status) == (201, 201)
    assert third.status == 413
    assert problem_code(third) == "upload_quota"


def test_terminating_an_upload_frees_its_reserved_bytes(server: LiveServer) -> None:
    first = start(server, "lab", "a.bin", MAX_UPLOAD_BYTES)
    start(server, "lab", "b.bin", MAX_UPLOAD_BYTES)
    server.request("DELETE", first, headers=TUS)

    reply = create(server, "lab", "c.bin", 1)

    assert reply.status == 201


# PATCH


def test_chunks_publish_the_file_only_when_complete(
    server: LiveServer, space: str
) -> None:
    data = secrets.token_bytes(100_000)
    url = start(server, space, "deep/new/file.bin", len(data))

    middle = patch(server, url, 0, data[:60_000])
    hidden = read_file(server, space, "deep/new/file.bin")
    lab_while_partial = snapshot_tree(server.parent / "lab")
    last = patch(server, url, 60_000, data[60_000:])

    assert (middle.status, middle.header("Upload-Offset")) == (204, "60000")
    assert hidden.status == 404
    assert lab_while_partial == {}
    assert (last.status, last.header("Upload-Offset")) == (204, "100000")
    assert read_file(server, space, "deep/new/file.bin").body == data
    assert leftovers(server) == []


def test_upload_replaces_an_existing_file(server: LiveServer, space: str) -> None:
    server.put(space, "same.txt", b"old content")

    upload_all(server, space, "same.txt", b"new", chunk=2)

    assert read_file(server, space, "same.txt").body == b"new"


CREATE_ONLY = {"create_only": "1"}


def test_create_only_refuses_a_taken_name_at_creation(
    server: LiveServer, space: str
) -> None:
    server.put(space, "taken.txt", b"KEEP")

    reply = create(server, space, "taken.txt", 5, extra=CREATE_ONLY)

    assert reply.status == 412, reply.body[:300]
    assert reply.json()["code"] == "precondition_failed"  # type: ignore[index]
    assert read_file(server, space, "taken.txt").body == b"KEEP"
    assert staged_files(server) == []


def test_create_only_keeps_a_file_that_took_the_name_meanwhile(
    server: LiveServer, space: str
) -> None:
    url = location(create(server, space, "race.txt", 6, extra=CREATE_ONLY))
    assert patch(server, url, 0, b"abc").status == 204
    server.put(space, "race.txt", b"THEIRS")  # another client, after the check

    last = patch(server, url, 3, b"def")

    assert last.status == 412, last.body[:300]
    assert read_file(server, space, "race.txt").body == b"THEIRS"
    assert offset_of(server, url) == 3  # the earlier chunk is kept


def test_create_only_publishes_a_free_name(server: LiveServer, space: str) -> None:
    url = location(create(server, space, "fresh.txt", 6, extra=CREATE_ONLY))

    assert patch(server, url, 0, b"abcdef").status == 204
    assert read_file(server, space, "fresh.txt").body == b"abcdef"


def test_create_only_of_an_empty_file_refuses_a_taken_name(
    server: LiveServer, space: str
) -> None:
    server.put(space, "zero.txt", b"KEEP")

    reply = create(server, space, "zero.txt", 0, extra=CREATE_ONLY)

    assert reply.status == 412
    assert read_file(server, space, "zero.txt").body == b"KEEP"


def test_head_after_completion_reports_the_full_offset(
    server: LiveServer, space: str
) -> None:
    url = upload_all(server, space, "done.txt", b"12345", chunk=5)

    assert offset_of(server, url) == 5


def test_patch_at_a_wrong_offset_gets_409_and_changes_nothing(
    server: LiveServer, space: str
) -> None:
    url = start(server, space, "a.txt", 10)
    patch(server, url, 0, b"abc")

    behind = patch(server, url, 0, b"xyz")
    ahead = patch(server, url, 5, b"xyz")

    assert (behind.status, ahead.status) == (409, 409)
    assert problem_code(behind) == "offset_mismatch"
    assert offset_of(server, url) == 3


@pytest.mark.parametrize("content_type", [None, "application/octet-stream",
                                          "text/plain"])
def test_patch_without_offset_octet_stream_gets_415(
    server: LiveServer, content_type: str | None
) -> None:
    url = start(server, "lab", "a.txt", 3)
    headers = {**TUS, "Upload-Offset": "0"}
    if content_type:
        headers["Content-Type"] = content_type

    reply = server.request("PATCH", url, headers=headers, body=b"abc")

    assert reply.status == 415
    assert offset_of(server, url) == 0


@pytest.mark.parametrize("offset", [None, "-1", "x", "1 2"],
                         ids=["missing", "negative", "text", "two"])
def test_patch_without_a_valid_offset_gets_400(
    server: LiveServer, offset: str | None
) -> None:
    url = start(server, "lab", "a.txt", 3)
    headers = {**TUS, **CHUNK_TYPE}
    if offset is not None:
        headers["Upload-Offset"] = offset

    reply = server.request("PATCH", url, headers=headers, body=b"abc")

    assert reply.status == 400


def test_chunk_past_the_declared_length_gets_413(server: LiveServer) -> None:
    url = start(server, "lab", "a.txt", 3)

    declared = patch(server, url, 0, b"abcd")
    streamed = server.request(
        "PATCH", url, headers={**TUS, **CHUNK_TYPE, "Upload-Offset": "0"},
        body=b"abcd", chunked=True,
    )

    assert (declared.status, streamed.status) == (413, 413)
    assert offset_of(server, url) == 0
    assert read_file(server, "lab", "a.txt").status == 404


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_chunk_with_a_matching_checksum_is_taken(
    server: LiveServer, algorithm: str
) -> None:
    url = start(server, "lab", "a.txt", 6)

    reply = patch(server, url, 0, b"abc",
                  headers={"Upload-Checksum": checksum(algorithm, b"abc")})

    assert reply.status == 204
    assert offset_of(server, url) == 3


def test_chunk_checksum_mismatch_gets_460_and_discards_the_chunk(
    server: LiveServer, space: str
) -> None:
    url = start(server, space, "a.txt", 6)
    patch(server, url, 0, b"abc")

    reply = patch(server, url, 3, b"def",
                  headers={"Upload-Checksum": checksum("sha1", b"xyz")})
    again = patch(server, url, 3, b"def",
                  headers={"Upload-Checksum": checksum("sha1", b"def")})

    assert reply.status == 460
    assert problem_code(reply) == "checksum_mismatch"
    assert again.status == 204
    assert read_file(server, space, "a.txt").body == b"abcdef"


@pytest.mark.parametrize("value", ["md4 AAAA", "sha1", "sha1 !!!", "sha1 YWJj"],
                         ids=["unknown-algorithm", "no-digest", "not-base64",
                              "wrong-size"])
def test_malformed_upload_checksum_gets_400(server: LiveServer, value: str) -> None:
    url = start(server, "lab", "a.txt", 3)

    reply = patch(server, url, 0, b"abc", headers={"Upload-Checksum": value})

    assert reply.status == 400
    assert offset_of(server, url) == 0


def test_whole_file_sha256_mismatch_gets_460_and_discards_the_upload(
    server: LiveServer, space: str
) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    url = start_with(server, {"space": space, "path": "a.txt", "sha256": wrong}, 3)

    reply = patch(server, url, 0, b"abc")

    assert reply.status == 460
    assert read_file(server, space, "a.txt").status == 404
    assert head(server, url).status == 404
    assert leftovers(server) == []


def test_whole_file_sha256_match_publishes_the_file(
    server: LiveServer, space: str
) -> None:
    digest = hashlib.sha256(b"abcdef").hexdigest().upper()
    url = start_with(server, {"space": space, "path": "a.txt", "sha256": digest}, 6)
    patch(server, url, 0, b"abc")

    reply = patch(server, url, 3, b"def")

    assert reply.status == 204
    assert read_file(server, space, "a.txt").body == b"abcdef"


def test_target_turned_folder_refuses_the_last_chunk_and_keeps_the_rest(
    server: LiveServer, space: str
) -> None:
    url = start(server, space, "late.txt", 6)
    patch(server, url, 0, b"abc")
    server.request("POST", f"{API}/spaces/{space}/dirs/late.txt")

    refused = patch(server, url, 3, b"def")
    server.request("DELETE", f"{API}/spaces/{space}/files/late.txt")
    retried = patch(server, url, 3, b"def")

    assert refused.status == 409
    assert retried.status == 204
    assert read_file(server, space, "late.txt").body == b"abcdef"


def test_body_cut_short_keeps_the_bytes_that_arrived(
    server: LiveServer, space: str
) -> None:
    data = secrets.token_bytes(MAX_UPLOAD_BYTES)
    url = start(server, space, "cut.bin", len(data))

    kept = cut_patch_short(server, url, 0, len(data), data[:300_000],
                           staged_at_least=STAGE_BATCH_BYTES)
    rest = patch(server, url, kept, data[kept:])

    assert STAGE_BATCH_BYTES <= kept <= 300_000
    assert rest.status == 204
    assert read_file(server, space, "cut.bin").body == data


def test_body_cut_short_with_a_checksum_keeps_nothing(server: LiveServer) -> None:
    data = secrets.token_bytes(300_000)
    url = start(server, "lab", "cut.bin", len(data))
    with open_patch(server, url, 0, len(data),
                    headers={"Upload-Checksum": checksum("sha1", data)}) as sock:
        sock.sendall(data[:200_000])
        wait_until(lambda: staged_size(server, url) >= STAGE_BATCH_BYTES,
                   "the server to stage the first bytes")

    assert offset_when_settled(server, url) == 0


def test_second_patch_while_one_is_writing_gets_423(server: LiveServer) -> None:
    url = start(server, "lab", "busy.bin", 100)
    with open_patch(server, url, 0, declared=100) as first:
        first.sendall(b"a" * 10)
        wait_until(lambda: is_locked(server, url), "the first PATCH to lock")

        second = patch(server, url, 0, b"b" * 100)
        delete = server.request("DELETE", url, headers=TUS)

        first.sendall(b"a" * 90)
        answer = read_answer(first)

    assert second.status == 423
    assert problem_code(second) == "upload_locked"
    assert delete.status == 423
    assert answer.startswith(b"HTTP/1.1 204")
    assert read_file(server, "lab", "busy.bin").body == b"a" * 100


# Termination, expiration, ownership


def test_termination_removes_the_upload_and_its_bytes(
    server: LiveServer, space: str
) -> None:
    url = start(server, space, "gone.txt", 6)
    patch(server, url, 0, b"abc")

    reply = server.request("DELETE", url, headers=TUS)

    assert reply.status == 204
    assert head(server, url).status == 404
    assert patch(server, url, 3, b"def").status == 404
    assert read_file(server, space, "gone.txt").status == 404
    assert leftovers(server) == []


def test_terminating_a_completed_upload_keeps_the_file(
    server: LiveServer, space: str
) -> None:
    url = upload_all(server, space, "kept.txt", b"abc", chunk=3)

    reply = server.request("DELETE", url, headers=TUS)

    assert reply.status == 204
    assert read_file(server, space, "kept.txt").body == b"abc"


def test_expired_upload_gets_410_and_is_cleaned_up(
    server: LiveServer, space: str
) -> None:
    url = start(server, space, "old.txt", 6)
    patch(server, url, 0, b"abc")
    expire(server, url)

    reply = patch(server, url, 3, b"def")

    assert reply.status == 410
    assert problem_code(reply) == "upload_gone"
    assert head(server, url).status == 404
    assert read_file(server, space, "old.txt").status == 404
    assert leftovers(server) == []


def test_expired_upload_answers_head_with_410(server: LiveServer) -> None:
    url = start(server, "lab", "old.txt", 6)
    expire(server, url)

    reply = head(server, url)

    assert reply.status == 410
    assert staged_files(server) == []


def test_patch_moves_the_expiry_forward(server: LiveServer) -> None:
    url = start(server, "lab", "a.txt", 6)
    expire(server, url, in_seconds=30)
    soon = http_time(head(server, url).header("Upload-Expires"))

    reply = patch(server, url, 0, b"abc")

    assert http_time(reply.header("Upload-Expires")) > soon + timedelta(hours=1)


def test_completed_upload_takes_no_more_bytes(server: LiveServer) -> None:
    url = upload_all(server, "lab", "done.txt", b"abc", chunk=3)

    past_the_end = patch(server, url, 3, b"d")
    elsewhere = patch(server, url, 0, b"abc")

    assert (past_the_end.status, elsewhere.status) == (413, 409)
    assert read_file(server, "lab", "done.txt").body == b"abc"


@pytest.mark.parametrize("length", [3, 0], ids=["finished", "empty-file"])
def test_an_empty_chunk_resent_after_completion_is_answered_with_the_offset(
    server: LiveServer, length: int
) -> None:
    # A client that lost the answer to its last PATCH sends it again; an empty
    # chunk at the end is harmless and gets the offset, never a 500.
    content = b"abc"[:length]
    if length:
        url = upload_all(server, "lab", "done.txt", content, chunk=length)
    else:
        url = location(create(server, "lab", "done.txt", 0))

    again = patch(server, url, length, b"")

    assert again.status == 204, again.body[:300]
    assert again.header("Upload-Offset") == str(length)
    assert read_file(server, "lab", "done.txt").body == content


@pytest.mark.parametrize("method", ["HEAD", "PATCH", "DELETE"])
def test_another_users_upload_is_404(server: LiveServer, method: str) -> None:
    url = start(server, "lab", "mine.txt", 3)
    headers = {**TUS, **CHUNK_TYPE, "Upload-Offset": "0"}

    reply = server.request(method, url, headers=headers, body=b"abc", token="bob")

    assert reply.status == 404
    assert offset_of(server, url) == 0


def test_unknown_or_malformed_upload_id_is_404(server: LiveServer) -> None:
    replies = [head(server, f"{UPLOADS}/{upload_id}")
               for upload_id in ("0" * 32, "../../etc", "A" * 32, "x")]

    assert [r.status for r in replies] == [404] * 4


@pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH", "DELETE"])
def test_every_upload_route_needs_the_files_write_scope(
    server: LiveServer, method: str
) -> None:
    url = start(server, "lab", "a.txt", 3)
    login = server.request(
        "POST", f"{API}/token", token=None,
        body=b"username=alice&password=alice-password-1&scope=files:read",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    reader = login.json()["access_token"]  # type: ignore[index]
    headers = {
        **TUS, **CHUNK_TYPE, "Authorization": f"Bearer {reader}",
        "Upload-Length": "3", "Upload-Offset": "0",
        "Upload-Metadata": encode_metadata({"space": "lab", "path": "b.txt"}),
    }

    reply = server.request(method, UPLOADS if method == "POST" else url,
                           headers=headers, body=b"abc", token=None)

    assert reply.status == 403
    assert staged_files(server) == [upload_id_of(url)]
    assert offset_of(server, url) == 0


def test_method_override_routes_a_post_as_patch(server: LiveServer) -> None:
    url = start(server, "lab", "a.txt", 3)

    reply = server.request(
        "POST", url, body=b"abc",
        headers={**TUS, **CHUNK_TYPE, "Upload-Offset": "0",
                 "X-HTTP-Method-Override": "PATCH"},
    )

    assert reply.status == 204
    assert read_file(server, "lab", "a.txt").body == b"abc"


# Helpers


def http_time(value: str | None) -> datetime:
    assert value is not None
    return email.utils.parsedate_to_datetime(value)


def start_with(server: LiveServer, metadata: dict[str, str], length: int) -> str:
    reply = server.request("POST", UPLOADS, headers={
        **TUS, "Upload-Length": str(length),
        "Upload-Metadata": encode_metadata(metadata),
    })
    return location(reply)

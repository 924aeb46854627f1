"""POST /spaces/{space}/import/{dir}: what a well-formed import does, in lab and home.

The hostile shapes are in test_archive_cases.py (the shared archive cases and
their tar or zip twins); these tests pin the ordinary contract around them.
"""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest
from live_server import API, MAX_UPLOAD_BYTES, STAGING_PREFIX, LiveServer, files_url


def make_tar(members: dict[str, bytes | None], compression: str = "") -> bytes:
    """A tar of files (bytes) and folders (None), compressed as asked."""
    out = io.BytesIO()
    mode = f"w:{compression}" if compression else "w"
    with tarfile.open(fileobj=out, mode=mode) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
                continue
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def make_zip(members: dict[str, bytes | None]) -> bytes:
    """A zip of files (bytes) and folders (None)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name.rstrip("/") + "/" if data is None else name,
                             data or b"")
    return out.getvalue()


def post_import(server: LiveServer, space: str, body: bytes, query: str = "",
                rel_dir: str = "") -> dict:
    path = f"{API}/spaces/{space}/import" + (f"/{rel_dir}" if rel_dir else "")
    reply = server.request("POST", path + query, body=body)
    report = reply.json()
    assert isinstance(report, dict)
    report["_status"] = reply.status
    return report


def read(server: LiveServer, space: str, rel_path: str) -> tuple[int, bytes]:
    reply = server.request("GET", files_url(space, rel_path))
    return reply.status, reply.body


def statuses(report: dict) -> dict[str, str]:
    return {m["name"]: m["status"] for m in report["members"]}


@pytest.mark.parametrize("kind", ["tar", "gz", "bz2", "xz", "zip"])
def test_import_unpacks_every_archive_kind_into_the_top(
    server: LiveServer, space: str, kind: str
) -> None:
    members: dict[str, bytes | None] = {"a.txt": b"A", "sub/": None, "sub/b.txt": b"B"}
    body = make_zip(members) if kind == "zip" else make_tar(
        members, "" if kind == "tar" else kind)

    report = post_import(server, space, body)

    assert report["_status"] == 200, report
    assert report["imported"] == 3
    assert read(server, space, "a.txt") == (200, b"A")
    assert read(server, space, "sub/b.txt") == (200, b"B")


def test_import_into_a_named_folder_creates_it(server: LiveServer, space: str) -> None:
    body = make_tar({"x/y.txt": b"Y"})

    report = post_import(server, space, body, rel_dir="new/place")

    assert report["_status"] == 200, report
    assert read(server, space, "new/place/x/y.txt") == (200, b"Y")


def test_import_keeps_an_existing_file_and_reports_it_skipped(
    server: LiveServer, space: str
) -> None:
    server.put(space, "keep.txt", b"OLD")

    report = post_import(server, space, make_tar({"keep.txt": b"NEW", "n.txt": b"N"}))

    assert report["_status"] == 200, report
    assert statuses(report) == {"keep.txt": "skipped", "n.txt": "imported"}
    assert read(server, space, "keep.txt") == (200, b"OLD")


def test_import_with_overwrite_replaces_an_existing_file(
    server: LiveServer, space: str
) -> None:
    server.put(space, "keep.txt", b"OLD")

    report = post_import(server, space, make_zip({"keep.txt": b"NEW"}),
                         query="?overwrite=true")

    assert report["_status"] == 200, report
    assert read(server, space, "keep.txt") == (200, b"NEW")


@pytest.mark.parametrize("maker", [make_tar, make_zip], ids=["tar", "zip"])
def test_one_refused_member_fails_the_import_and_leaves_nothing(
    server: LiveServer, space: str, maker: object
) -> None:
    body = make_tar({"good.txt": b"G", "../bad.txt": b"B"}) if maker is make_tar \
        else make_zip({"good.txt": b"G", "../bad.txt": b"B"})

    report = post_import(server, space, body)

    assert report["_status"] == 422, report
    assert statuses(report) == {"good.txt": "skipped", "../bad.txt": "refused"}
    assert read(server, space, "good.txt")[0] == 404
    assert not [p for p in (server.parent / "lab").iterdir()
                if p.name.startswith(STAGING_PREFIX)]


def test_a_file_member_cannot_replace_an_existing_folder(
    server: LiveServer, space: str
) -> None:
    server.request("POST", f"{API}/spaces/{space}/dirs/docs")

    report = post_import(server, space, make_tar({"docs": b"X", "ok.txt": b"O"}),
                         query="?overwrite=true")

    assert report["_status"] == 422, report
    assert statuses(report)["docs"] == "refused"
    assert read(server, space, "ok.txt")[0] == 404


def test_a_folder_member_cannot_replace_an_existing_file(
    server: LiveServer, space: str
) -> None:
    server.put(space, "f", b"F")

    report = post_import(server, space, make_tar({"f/inner.txt": b"I"}))

    assert report["_status"] == 422, report
    assert read(server, space, "f") == (200, b"F")


def test_names_that_clash_after_unicode_normalisation_are_refused(
    server: LiveServer, space: str
) -> None:
    body = make_tar({"caf\u00e9.txt": b"1", "cafe\u0301.txt": b"2"})

    report = post_import(server, space, body)

    assert report["_status"] == 422, report
    assert report["refused"] == 1


def test_import_into_a_read_only_space_gets_403(server: LiveServer) -> None:
    reply = server.request("POST", f"{API}/spaces/docs-ro/import",
                           body=make_tar({"a.txt": b"A"}))

    assert reply.status == 403


def test_junk_before_a_zip_is_not_a_readable_archive_and_gets_422(
    server: LiveServer, space: str
) -> None:
    body = b"J" * 4096 + make_zip({"ok.txt": b"OK"})

    report = post_import(server, space, body)

    assert report["_status"] == 422, report
    assert report["code"] == "unreadable_archive"
    assert read(server, space, "ok.txt")[0] == 404


def test_a_body_over_the_upload_limit_gets_413(server: LiveServer, space: str) -> None:
    body = make_tar({"big.bin": bytes(MAX_UPLOAD_BYTES)})

    reply = server.request("POST", f"{API}/spaces/{space}/import", body=body,
                           chunked=True)

    assert reply.status == 413
    assert read(server, space, "big.bin")[0] == 404

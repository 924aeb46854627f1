"""GET /spaces/{space}/archive/{dir}: a zip of a folder, with refused entries named."""

from __future__ import annotations

import io
import json
import os
import zipfile

import pytest
from live_server import API, LiveServer


def archive(server: LiveServer, space: str, rel_path: str) -> zipfile.ZipFile:
    reply = server.request("GET", f"{API}/spaces/{space}/archive/{rel_path}")
    assert reply.status == 200, reply.body[:300]
    assert reply.header("Content-Type") == "application/zip"
    return zipfile.ZipFile(io.BytesIO(reply.body))


def test_a_folder_zips_with_every_file_and_an_empty_manifest(
    server: LiveServer, space: str
) -> None:
    server.put(space, "docs/a.txt", b"A" * 1000)
    server.put(space, "docs/sub/b.bin", os.urandom(300_000))
    server.put(space, "other.txt", b"not in the folder")

    zipped = archive(server, space, "docs")

    assert sorted(zipped.namelist()) == [
        "a.txt", "strongroom-manifest.json", "sub/b.bin"]
    assert zipped.read("a.txt") == b"A" * 1000
    assert json.loads(zipped.read("strongroom-manifest.json")) == {"skipped": []}
    assert zipped.testzip() is None


def test_a_file_named_like_the_manifest_keeps_its_name_and_content(
    server: LiveServer, space: str
) -> None:
    server.put(space, "mf/strongroom-manifest.json", b"MY OWN DATA")
    server.put(space, "mf/strongroom-manifest-1.json", b"MINE TOO")
    server.put(space, "mf/a.txt", b"A")

    zipped = archive(server, space, "mf")

    names = zipped.namelist()
    assert len(names) == len(set(names)) == 4
    assert zipped.read("strongroom-manifest.json") == b"MY OWN DATA"
    assert zipped.read("strongroom-manifest-1.json") == b"MINE TOO"
    assert names[-1] == "strongroom-manifest-2.json"
    assert json.loads(zipped.read(names[-1])) == {"skipped": []}


def test_the_top_of_a_space_zips_too(server: LiveServer, space: str) -> None:
    server.put(space, "x.txt", b"X")

    zipped = archive(server, space, "")

    assert "x.txt" in zipped.namelist()


def test_links_and_fifos_are_left_out_and_named_in_the_manifest(
    server: LiveServer,
) -> None:
    lab = server.parent / "lab"
    (lab / "docs").mkdir()
    (lab / "docs" / "ok.txt").write_text("fine")
    (server.parent / "outside" / "secret.txt").write_text("OUTSIDE-SECRET")
    os.symlink("../../outside/secret.txt", lab / "docs" / "leak")
    os.mkfifo(lab / "docs" / "pipe")

    reply = server.request("GET", f"{API}/spaces/lab/archive/docs")
    zipped = zipfile.ZipFile(io.BytesIO(reply.body))

    assert b"OUTSIDE-SECRET" not in reply.body
    assert sorted(zipped.namelist()) == ["ok.txt", "strongroom-manifest.json"]
    skipped = json.loads(zipped.read("strongroom-manifest.json"))["skipped"]
    assert sorted(s["path"] for s in skipped) == ["docs/leak", "docs/pipe"]


@pytest.mark.parametrize("rel_path", ["../outside", "docs/../../outside", "%2e%2e"])
def test_an_archive_path_that_climbs_out_is_refused(
    server: LiveServer, rel_path: str
) -> None:
    reply = server.request("GET", f"{API}/spaces/lab/archive/{rel_path}")

    assert reply.status in (400, 403)
    assert reply.header("Content-Type") == "application/problem+json"


def test_archiving_a_file_is_a_409(server: LiveServer, space: str) -> None:
    server.put(space, "a.txt", b"A")

    reply = server.request("GET", f"{API}/spaces/{space}/archive/a.txt")

    assert reply.status == 409


def test_an_archive_needs_a_token(server: LiveServer) -> None:
    reply = server.request("GET", f"{API}/spaces/lab/archive/", token=None)

    assert reply.status == 401

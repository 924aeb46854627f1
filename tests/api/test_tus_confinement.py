"""Resumable uploads never write outside their space: hostile layouts in `lab`.

Each layout is made on disk in `lab` (symlinks denied, hard links denied) beside
P/outside, which holds a sentinel file. A target the layout makes unsafe is
refused when the upload is created; one made unsafe between creation and the
last chunk is refused when the file is published. Either way, nothing outside
the space is read, written or removed, and nothing is left staged in the space.
Both resolvers run every case (the `server` fixture).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from live_server import LiveServer, snapshot_tree
from tus_support import (
    create,
    forget_uploads,
    leftovers,
    offset_of,
    patch,
    start,
    upload_id_of,
)

SENTINEL = b"outside: never touched"


@pytest.fixture(autouse=True)
def sentinel(server: LiveServer) -> Path:
    """P/outside/sentinel.txt, and no uploads left from earlier tests."""
    forget_uploads(server)
    host_path = server.parent / "outside" / "sentinel.txt"
    host_path.write_bytes(SENTINEL)
    return host_path


def outside_picture(server: LiveServer) -> dict[str, tuple[object, ...]]:
    return snapshot_tree(server.parent / "outside")


def dir_link(lab: Path) -> None:
    (lab / "out").symlink_to("../outside")


def file_link(lab: Path) -> None:
    (lab / "f.txt").symlink_to("../outside/sentinel.txt")


def dangling_link(lab: Path) -> None:
    (lab / "f.txt").symlink_to("../outside/new.txt")


def hard_link(lab: Path) -> None:
    os.link(lab.parent / "outside" / "sentinel.txt", lab / "f.txt")


def fifo(lab: Path) -> None:
    os.mkfifo(lab / "f.txt")


def nothing(lab: Path) -> None:
    return None


@pytest.mark.parametrize(
    ("layout", "rel_path", "code"),
    [
        (dir_link, "out/new.txt", "symlink_refused"),
        (dir_link, "out/sentinel.txt", "symlink_refused"),
        (file_link, "f.txt", "symlink_refused"),
        (dangling_link, "f.txt", "symlink_refused"),
        (hard_link, "f.txt", "hardlink_refused"),
        (fifo, "f.txt", "not_regular_file"),
        (nothing, "../outside/sentinel.txt", "path_escape"),
        (nothing, "a/../../outside/new.txt", "path_escape"),
        (nothing, "%2e%2e/outside/new.txt", None),
    ],
    ids=["dir-link-new", "dir-link-existing", "file-link", "dangling-link",
         "hard-link", "fifo", "dotdot", "dotdot-deep", "encoded-dotdot"],
)
def test_unsafe_target_is_refused_at_creation_and_outside_is_untouched(
    server: LiveServer,
    layout: Callable[[Path], None],
    rel_path: str,
    code: str | None,
) -> None:
    lab = server.parent / "lab"
    layout(lab)
    before = outside_picture(server)

    reply = create(server, "lab", rel_path, 3)
    if reply.status == 201:
        # A name with '%' is just a name: it must land inside the space.
        patch(server, reply.header("Location") or "", 0, b"abc")

    if code is None:
        assert reply.status == 201
        assert (lab / "%2e%2e" / "outside" / "new.txt").read_bytes() == b"abc"
    else:
        assert 400 <= reply.status < 500
        assert json.loads(reply.body)["code"] == code
    assert outside_picture(server) == before
    assert leftovers(server) == []


@pytest.mark.parametrize("swap", ["folder-for-link", "file-for-link"])
def test_link_swapped_in_before_the_last_chunk_is_refused_at_publishing(
    server: LiveServer, sentinel: Path, swap: str
) -> None:
    lab = server.parent / "lab"
    (lab / "dir").mkdir()
    url = start(server, "lab", "dir/sentinel.txt", 6)
    patch(server, url, 0, b"abc")
    before = outside_picture(server)
    if swap == "folder-for-link":
        shutil.rmtree(lab / "dir")
        (lab / "dir").symlink_to("../outside")
    else:
        (lab / "dir" / "sentinel.txt").symlink_to("../../outside/sentinel.txt")

    reply = patch(server, url, 3, b"def")

    assert reply.status == 403
    assert sentinel.read_bytes() == SENTINEL
    assert outside_picture(server) == before
    assert offset_of(server, url) == 3
    assert leftovers(server) == [upload_id_of(url)]

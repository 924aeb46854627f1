"""Uploads outlive their server: a restart between chunks, and two processes.

Each test runs servers of its own on one data folder (the shared fixture's
server must stay up for the other tests), started and stopped as an operator
would: a new process on the same database and staging folder.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import pytest
from live_server import wait_until
from tus_support import (
    expire,
    head,
    is_locked,
    leftovers,
    offset_of,
    open_patch,
    own_server,
    patch,
    read_answer,
    read_file,
    staged_files,
    start,
    upload_id_of,
)

pytestmark = pytest.mark.slow

# An id as the server makes them, for a staged file that no upload names.
ORPHAN_ID = "0123456789abcdef0123456789abcdef"
YOUNG_ORPHAN_ID = "fedcba9876543210fedcba9876543210"
TWO_HOURS_SECONDS = 2 * 3600


@pytest.mark.parametrize("space", ["lab", "home"])
def test_upload_resumes_after_a_server_restart(tmp_path: Path, space: str) -> None:
    data = secrets.token_bytes(3 << 20)
    with own_server(tmp_path) as before:
        url = start(before, space, "survivor.bin", len(data))
        first = patch(before, url, 0, data[:1 << 20])

    with own_server(tmp_path, add_users=False) as after:
        resumed_at = offset_of(after, url)
        rest = patch(after, url, resumed_at, data[resumed_at:])
        stored = read_file(after, space, "survivor.bin").body
        left = leftovers(after)

    assert first.status == 204
    assert resumed_at == 1 << 20
    assert rest.status == 204
    assert stored == data
    assert left == []


def test_start_up_removes_expired_uploads_and_orphaned_staged_files(
    tmp_path: Path,
) -> None:
    with own_server(tmp_path) as before:
        expired = start(before, "lab", "old.bin", 10)
        patch(before, expired, 0, b"12345")
        live = start(before, "lab", "new.bin", 10)
        expire(before, expired)
    staging = tmp_path / "data" / "uploads"
    plant_staged_file(staging / ORPHAN_ID, age_seconds=TWO_HOURS_SECONDS)
    plant_staged_file(staging / YOUNG_ORPHAN_ID, age_seconds=0)

    with own_server(tmp_path, add_users=False) as after:
        expired_status = head(after, expired).status
        live_status = head(after, live).status
        staged = staged_files(after)

    assert expired_status == 404
    assert live_status == 200
    assert staged == sorted([upload_id_of(live), YOUNG_ORPHAN_ID])


def test_second_process_continues_an_upload_the_first_began(tmp_path: Path) -> None:
    data = secrets.token_bytes(200_000)
    with own_server(tmp_path) as one, own_server(tmp_path, add_users=False) as other:
        url = start(one, "home", "shared.bin", len(data))
        patch(one, url, 0, data[:50_000])

        seen_by_other = offset_of(other, url)
        rest = patch(other, url, seen_by_other, data[seen_by_other:])
        stored = read_file(one, "home", "shared.bin").body

    assert seen_by_other == 50_000
    assert rest.status == 204
    assert stored == data


def test_lock_holds_across_processes(tmp_path: Path) -> None:
    with own_server(tmp_path) as one, own_server(tmp_path, add_users=False) as other:
        url = start(one, "lab", "busy.bin", 100)
        with open_patch(one, url, 0, declared=100) as first:
            first.sendall(b"a" * 10)
            wait_until(lambda: is_locked(one, url), "the first PATCH to lock")

            second = patch(other, url, 0, b"b" * 100)

            first.sendall(b"a" * 90)
            answer = read_answer(first)
        stored = read_file(other, "lab", "busy.bin").body

    assert second.status == 423
    assert answer.startswith(b"HTTP/1.1 204")
    assert stored == b"a" * 100


def plant_staged_file(host_path: Path, *, age_seconds: float) -> None:
    host_path.write_bytes(b"left behind")
    then = time.time() - age_seconds
    os.utime(host_path, (then, then))

"""Real input: the installed standard library as a read-only space, and real uploads.

A second live server (per resolver) exposes the Python standard library directory
as the `ro` space `stdlib`, with a 16 MiB upload limit so that real files and one
generated 5 MiB file fit. For a fixed sample of about 200 library files, listing,
metadata and downloaded bytes must match the disk; then a few hundred library
files and the generated one are uploaded into `home` under nested folders and must
come back bit for bit.
"""

from __future__ import annotations

import hashlib
import os
import random
import stat
import sysconfig
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from live_server import ALICE_PASSWORD, API, LiveServer, run_server

STDLIB = Path(sysconfig.get_paths()["stdlib"])
# Enough files to cross many folders and sizes while keeping the run short.
SAMPLE_FILES = 200
UPLOAD_FILES = 250
# Real uploads stop at about this many bytes, before the generated file.
UPLOAD_BUDGET_BYTES = 4 << 20
LARGEST_REAL_UPLOAD_BYTES = 1 << 20
GENERATED_BYTES = 5 << 20
MAX_UPLOAD_BYTES = 16 << 20
CONFIG = """\
data_dir = "{data_dir}"
max_upload_bytes = {limit}

[[spaces]]
name = "stdlib"
path = "{stdlib}"
mode = "ro"
users = ["alice"]
"""


@pytest.fixture(scope="module", params=["openat2", "walk"])
def stdlib_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A server whose only directory space is the standard library, read-only."""
    parent = tmp_path_factory.mktemp(f"stdlib-{request.param}")
    config = CONFIG.format(data_dir=parent / "data", limit=MAX_UPLOAD_BYTES,
                           stdlib=STDLIB)
    users = [("alice", ALICE_PASSWORD, "user")]
    with run_server(parent, config, request.param, users) as server:
        yield server


def library_files() -> list[str]:
    """Every readable regular file of the library, sorted; caches and links skipped.

    `__pycache__` and `site-packages` are left out: they change when Python or pip
    runs, and the comparison needs a tree that holds still.
    """
    found = []
    for folder, dirs, names in os.walk(STDLIB):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "site-packages"))
        for name in names:
            host_path = Path(folder, name)
            st = os.lstat(host_path)
            if stat.S_ISREG(st.st_mode) and os.access(host_path, os.R_OK):
                found.append(host_path.relative_to(STDLIB).as_posix())
    return sorted(found)


def every_nth(items: list[str], count: int) -> list[str]:
    """Pick `count` items spread evenly over `items` (deterministic)."""
    step = max(len(items) // count, 1)
    return items[::step][:count]


SAMPLE = every_nth(library_files(), SAMPLE_FILES)


@pytest.mark.parametrize(
    "folder", sorted({os.path.dirname(p) for p in SAMPLE}), ids=lambda f: f or "top"
)
def test_listing_matches_the_disk(stdlib_server: LiveServer, folder: str) -> None:
    on_disk = _entries_on_disk(STDLIB / folder)

    listed = stdlib_server.list_all("stdlib", folder)

    assert {e["name"] for e in listed} == set(on_disk)
    for entry in listed:
        kind, size = on_disk[entry["name"]]
        if kind == "skip":
            continue
        assert entry["kind"] == kind, entry
        assert entry["path"] == f"{folder}/{entry['name']}".lstrip("/")
        if kind == "file":
            assert entry["size"] == size, entry


def test_metadata_and_bytes_match_the_disk_for_the_sample(
    stdlib_server: LiveServer,
) -> None:
    mismatches = []

    for rel_path in SAMPLE:
        host_path = STDLIB / rel_path
        meta = stdlib_server.request(
            "GET", f"{API}/spaces/stdlib/meta/{quote(rel_path)}").json()
        got = stdlib_server.request(
            "GET", f"{API}/spaces/stdlib/files/{quote(rel_path)}")
        st = host_path.stat()
        expected = (rel_path, host_path.name, "file", st.st_size, _utc(st.st_mtime))
        seen = tuple(meta[k] for k in  # type: ignore[index]
                     ("path", "filename", "kind", "size", "modified"))
        if seen != expected or got.body != host_path.read_bytes():
            mismatches.append((rel_path, seen, expected))

    assert mismatches == []
    assert len(SAMPLE) >= SAMPLE_FILES * 9 // 10


@pytest.fixture(scope="module")
def uploaded(stdlib_server: LiveServer) -> dict[str, bytes]:
    """Upload the real files and the generated one into home; return what was sent."""
    uploads = _upload_set()
    for home_path, data in uploads.items():
        reply = stdlib_server.put("home", quote(home_path), data)
        assert reply.status == 201, (home_path, reply.status, reply.body)
    return uploads


def test_uploads_of_real_files_come_back_bit_for_bit(
    stdlib_server: LiveServer, uploaded: dict[str, bytes]
) -> None:
    sent = {p: hashlib.sha256(data).hexdigest() for p, data in uploaded.items()}

    back = {
        home_path: hashlib.sha256(stdlib_server.request(
            "GET", f"{API}/spaces/home/files/{quote(home_path)}").body).hexdigest()
        for home_path in uploaded
    }

    assert back == sent
    assert len(uploaded) > UPLOAD_FILES // 2
    assert max(len(data) for data in uploaded.values()) >= GENERATED_BYTES


def test_uploaded_folders_list_the_same_names_and_sizes(
    stdlib_server: LiveServer, uploaded: dict[str, bytes]
) -> None:
    folders = sorted({os.path.dirname(p) for p in uploaded})

    listed = {
        folder: {e["name"]: e["size"] for e in stdlib_server.list_all("home", folder)
                 if e["kind"] == "file"}
        for folder in folders
    }

    expected: dict[str, dict[str, int]] = {folder: {} for folder in folders}
    for home_path, data in uploaded.items():
        folder, _, name = home_path.rpartition("/")
        expected[folder][name] = len(data)
    assert listed == expected


def _upload_set() -> dict[str, bytes]:
    """Real library files of mixed sizes under `real/...`, plus a generated file."""
    chosen: dict[str, bytes] = {}
    total = 0
    for rel_path in every_nth(library_files(), UPLOAD_FILES * 2):
        data = (STDLIB / rel_path).read_bytes()
        if len(data) > LARGEST_REAL_UPLOAD_BYTES:
            continue
        if total + len(data) > UPLOAD_BUDGET_BYTES or len(chosen) == UPLOAD_FILES:
            break
        chosen[f"real/{rel_path}"] = data
        total += len(data)
    generated = random.Random(20240).randbytes(GENERATED_BYTES)  # noqa: S311
    chosen["real/generated/deep/er/five-mib.bin"] = generated
    return chosen


def _entries_on_disk(folder: Path) -> dict[str, tuple[str, int]]:
    entries = {}
    for entry in os.scandir(folder):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode) or not os.access(entry.path, os.R_OK):
            entries[entry.name] = ("skip", 0)
        elif stat.S_ISDIR(st.st_mode):
            entries[entry.name] = ("dir", 0)
        elif stat.S_ISREG(st.st_mode):
            entries[entry.name] = ("file", st.st_size)
        else:
            entries[entry.name] = ("skip", 0)
    return entries


def _utc(seconds: float) -> str:
    """Format a file time the way the API does: whole seconds, UTC, with a Z."""
    when = datetime.fromtimestamp(int(seconds), tz=UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")

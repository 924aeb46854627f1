"""Folder download: a zip of a folder, streamed while the folder is read.

The zip is built by stream-zip (ZIP64, stored members) from an iterator that walks
the folder through the space itself: every listing and every open goes through the
same confined paths as a single download, so whatever the space's policy refuses
(a symlink, a FIFO, a hard-linked file) is left out and named in a final manifest
member instead. Memory stays constant: one chunk of one file at a time, and a
stack of folder paths still to visit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from stream_zip import NO_COMPRESSION_64, Method, stream_zip

from strongroom.api.deps import FilesReader, Services, get_services
from strongroom.api.download import content_disposition
from strongroom.api.problem_docs import AUTHENTICATED, PATH_ERRORS, problem_responses
from strongroom.errors import NotADirectoryPathError, PathError, StorageError
from strongroom.storage.spaces import MAX_PAGE_SIZE, FileMeta, Space

__all__ = ["MANIFEST_NAME", "MAX_ARCHIVE_ENTRIES", "router"]

router = APIRouter(tags=["files"],
                   responses=problem_responses(*AUTHENTICATED, *PATH_ERRORS, 422))

# The member that lists what was left out, always the last one in the archive. A
# file of the folder that has this name keeps it; the manifest then takes the
# first free name of "strongroom-manifest-1.json", "-2" and so on.
MANIFEST_NAME = "strongroom-manifest.json"
# Entries visited per archive at most: a folder tree larger than this is cut off
# (and the manifest says so) rather than tying up a worker for hours.
MAX_ARCHIVE_ENTRIES = 100_000
# Bytes read from a file per chunk handed to the zip writer.
READ_CHUNK_BYTES = 1 << 20

ServicesDep = Annotated[Services, Depends(get_services)]


@router.get("/spaces/{space}/archive", response_class=StreamingResponse,
            name="archive_top")
@router.get(
    "/spaces/{space}/archive/{path:path}",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def download_folder(
    space: str, request: Request, user: FilesReader, services: ServicesDep,
    path: str = "",
) -> StreamingResponse:
    """Download a folder as a zip, streamed as it is read.

    Entries the space's policy refuses are skipped and listed in the last member,
    `strongroom-manifest.json`.
    """
    state = request.scope.setdefault("state", {})
    state.update(op="archive", space=space, rel_path=path)
    sp = services.spaces.get(user, space)
    top = path.strip("/")
    folder = sp.meta(top or ".")
    if folder.kind != "dir":
        raise NotADirectoryPathError("archive", path, "only a folder can be zipped")
    name = (folder.name or sp.name) + ".zip"
    return StreamingResponse(
        stream_zip(_members(sp, top)),
        media_type="application/zip",
        headers={"Content-Disposition": content_disposition("attachment", name)},
    )


Member = tuple[str, datetime, int, Method, Iterator[bytes]]


def _members(sp: Space, top: str) -> Iterator[Member]:
    """Yield stream-zip members for every file under `top`, then the manifest."""
    skipped: list[dict[str, str]] = []
    taken: set[str] = set()  # member names the manifest's name must avoid
    pending = [top]
    visited = 0
    while pending:
        folder = pending.pop()
        for meta in _entries(sp, folder, skipped):
            visited += 1
            if visited > MAX_ARCHIVE_ENTRIES:
                skipped.append({"path": meta.path, "reason": "entry limit reached"})
                pending.clear()
                break
            if meta.kind == "dir":
                pending.append(meta.path)
            elif meta.kind == "file":
                member = _member(sp, meta, top, skipped)
                if member is not None:
                    if member[0].startswith(_MANIFEST_STEM):
                        taken.add(member[0])
                    yield member
            else:
                skipped.append({"path": meta.path, "reason": f"a {meta.kind}"})
    manifest = json.dumps({"skipped": skipped}, indent=1).encode("utf-8")
    yield _manifest_name(taken), datetime.now(UTC), 0o644, NO_COMPRESSION_64, iter(
        [manifest])


_MANIFEST_STEM = MANIFEST_NAME.removesuffix(".json")


def _manifest_name(taken: set[str]) -> str:
    """The manifest's name: `MANIFEST_NAME`, or the first free numbered one."""
    name, n = MANIFEST_NAME, 0
    while name in taken:
        n += 1
        name = f"{_MANIFEST_STEM}-{n}.json"
    return name


def _entries(
    sp: Space, folder: str, skipped: list[dict[str, str]]
) -> Iterator[FileMeta]:
    cursor = None
    while True:
        try:
            page = sp.list(folder or ".", cursor, MAX_PAGE_SIZE)
        except (PathError, StorageError) as exc:
            skipped.append({"path": folder, "reason": str(exc)})
            return
        yield from page.entries
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def _member(
    sp: Space, meta: FileMeta, top: str, skipped: list[dict[str, str]]
) -> Member | None:
    try:
        handle, opened = sp.open(meta.path)
    except (PathError, StorageError) as exc:
        skipped.append({"path": meta.path, "reason": str(exc)})
        return None
    name = meta.path[len(top) + 1:] if top else meta.path
    modified = datetime.fromtimestamp(opened.mtime_ns / 1e9, tz=UTC)

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(READ_CHUNK_BYTES):
                yield chunk

    return name, modified, 0o644, NO_COMPRESSION_64, chunks()

"""Share-link routes: managing links under /api/v1, and using them at /s/{token}.

Managing links needs a bearer token with the `shares` scope; creating one also
needs `files:read`, since a link hands the file to whoever holds it. Using a
link needs no login: `GET /s/{token}` downloads a shared file (Range, ETag and
the safety headers of every download) or lists a shared folder as JSON;
`GET /s/{token}/{path}` serves what lies beneath a shared folder; `GET
/s/{token}/archive` streams the folder as a zip (a top-level entry named
`archive` is `/s/{token}/./archive`). HEAD works on each.

Downloads counted against `max_downloads`: every GET that sends file content,
200 or 206, and each archive GET. HEAD, 304, 416, listings and refusals count
nothing. What each refusal answers is in `api._shares`.

Every answer under /s/, errors included, carries `ShareHeaders`'s headers: a
link is a secret, so nothing may cache it or leak it in a Referer.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from typing import Annotated, Literal

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from stream_zip import stream_zip

from strongroom.api._shares import IssuedShare, OpenedShare, ShareService
from strongroom.api.archive import _members as archive_members
from strongroom.api.deps import (
    Services,
    SharesUser,
    authorize_header,
    get_services,
)
from strongroom.api.download import FileInfo, content_disposition
from strongroom.api.offload import send_file
from strongroom.api.problem_docs import AUTHENTICATED, PATH_ERRORS, problem_responses
from strongroom.api.schemas import EntryOut, entry_out, iso_time
from strongroom.auth import MAX_PASSWORD_BYTES
from strongroom.auth.scopes import FILES_READ
from strongroom.errors import (
    IsADirectoryPathError,
    NotADirectoryPathError,
    PathNotFoundError,
)
from strongroom.storage.shares import (
    SharedFolder,
    ShareRecord,
    open_shared_file,
    open_shared_folder,
)
from strongroom.storage.spaces import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    FileMeta,
    FileReader,
)

__all__ = [
    "SHARE_HEADERS",
    "ShareHeaders",
    "get_shares",
    "link_router",
    "router",
]

router = APIRouter(tags=["shares"],
                   responses=problem_responses(*AUTHENTICATED, *PATH_ERRORS, 422))
# A link is its own credential: a password it asks for (401), tries spent too
# fast (429), a link revoked, expired or used up (410).
link_router = APIRouter(tags=["share links"], responses=problem_responses(
    *PATH_ERRORS, 401, 422, 429))

# A Basic credential of a password at the length cap, base64-encoded, with room
# for a user name; anything longer is not a password we could accept.
_MAX_BASIC_CHARS = 4 * (MAX_PASSWORD_BYTES + 256) // 3 + 4
SHARE_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "sandbox; default-src 'none'",
    "referrer-policy": "no-referrer",
    "cache-control": "private, no-store",
}
_SHARE_HEADER_PAIRS = [(k.encode(), v.encode()) for k, v in SHARE_HEADERS.items()]


async def get_shares(request: Request) -> ShareService:
    """Return the share service built at start-up."""
    shares: ShareService = request.app.state.shares
    return shares


ServicesDep = Annotated[Services, Depends(get_services)]
SharesDep = Annotated[ShareService, Depends(get_shares)]
CursorQuery = Annotated[str | None, Query(max_length=2048)]
LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]


class ShareIn(BaseModel):
    """A new share link; leave out what you do not want."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=4095)
    expires_in: StrictInt | None = Field(
        default=None, ge=1, description="Seconds; 7 days when left out"
    )
    password: str | None = Field(default=None, max_length=MAX_PASSWORD_BYTES)
    max_downloads: StrictInt | None = Field(default=None, ge=1)


class ShareOut(BaseModel):
    """A new share link. `url` is the only place its token is ever shown."""

    id: str
    url: str
    space: str
    path: str
    kind: Literal["file", "dir"]
    expires_at: str
    max_downloads: int | None
    has_password: bool


class ShareInfoOut(BaseModel):
    """One of your share links and its counters (the link itself is not shown)."""

    id: str
    space: str
    path: str
    kind: Literal["file", "dir"]
    created: str
    expires_at: str
    downloads: int
    max_downloads: int | None
    has_password: bool
    revoked: bool


class ShareListOut(BaseModel):
    """Your share links, newest first."""

    shares: list[ShareInfoOut]


class SharedFolderOut(BaseModel):
    """A page of a shared folder; paths are relative to the shared folder."""

    name: str
    path: str
    entries: list[EntryOut]
    next_cursor: str | None


@router.post("/spaces/{space}/shares", response_model=ShareOut, status_code=201,
             operation_id="create_share")
def create_share(
    space: str,
    body: ShareIn,
    request: Request,
    user: SharesUser,
    services: ServicesDep,
    shares: SharesDep,
) -> ShareOut:
    """Share a file or folder you can read; the answer holds the link's URL."""
    # The link hands the file to anyone holding it: a token that may not read
    # files must not be able to give them away.
    authorize_header(services, request.headers.getlist("authorization"), FILES_READ)
    request.scope.setdefault("state", {}).update(
        op="share_create", space=space, rel_path=body.path
    )
    issued = shares.create(
        user, space, body.path, expires_in=body.expires_in,
        password=body.password, max_downloads=body.max_downloads,
    )
    return _share_out(issued)


@router.get("/shares", response_model=ShareListOut)
def list_shares(user: SharesUser, shares: SharesDep) -> ShareListOut:
    """List your share links with their counters, newest first."""
    return ShareListOut(shares=[_info_out(r) for r in shares.list_for(user)])


@router.delete("/shares/{share_id}", status_code=204, response_class=Response)
def revoke_share(share_id: str, user: SharesUser, shares: SharesDep) -> Response:
    """Revoke one of your share links at once; it answers 410 from then on."""
    shares.revoke(user, share_id)
    return Response(status_code=204)


_LINK_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/octet-stream": {}, "application/json": {}}},
    206: {"description": "One byte range"},
    304: {},
    **problem_responses(412, 416),
}
_ZIP_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/zip": {}}},
}


@link_router.get("/s/{token}", response_class=Response, response_model=None,
                 responses=_LINK_RESPONSES, operation_id="open_link")
@link_router.head("/s/{token}", response_class=Response, response_model=None,
                  responses=_LINK_RESPONSES, operation_id="open_link_head")
async def open_link(
    token: str, request: Request, shares: SharesDep, cursor: CursorQuery = None,
    limit: LimitQuery = DEFAULT_PAGE_SIZE,
) -> Response:
    """Download a shared file, or list a shared folder."""
    return await _serve(request, shares, token, "", cursor, limit)


@link_router.get("/s/{token}/archive", response_class=Response, response_model=None,
                 responses=_ZIP_RESPONSES, operation_id="download_shared_folder")
@link_router.head("/s/{token}/archive", response_class=Response,
                  response_model=None, responses=_ZIP_RESPONSES,
                  operation_id="download_shared_folder_head")
async def download_shared_folder(
    token: str, request: Request, shares: SharesDep
) -> Response:
    """Download a shared folder as a zip, streamed as it is read."""
    _record(request, "share_archive", "")
    opened = await _open(request, shares, token)
    if opened.record.target.kind != "dir":
        raise NotADirectoryPathError("archive", "", "only a shared folder is zipped")
    folder = await anyio.to_thread.run_sync(
        open_shared_folder, opened.space, opened.record.target
    )
    headers = {
        "content-disposition": content_disposition("attachment", folder.name + ".zip")
    }
    if request.method == "HEAD":
        folder.close()
        return Response(media_type="application/zip", headers=headers)
    try:
        await anyio.to_thread.run_sync(shares.count_download, opened.record)
    except BaseException:
        folder.close()
        raise
    return StreamingResponse(
        _zip_chunks(folder), media_type="application/zip", headers=headers
    )


@link_router.get("/s/{token}/{path:path}", response_class=Response,
                 response_model=None, responses=_LINK_RESPONSES,
                 operation_id="open_beneath_link")
@link_router.head("/s/{token}/{path:path}", response_class=Response,
                  response_model=None, responses=_LINK_RESPONSES,
                  operation_id="open_beneath_link_head")
async def open_beneath_link(
    token: str, path: str, request: Request, shares: SharesDep,
    cursor: CursorQuery = None, limit: LimitQuery = DEFAULT_PAGE_SIZE,
) -> Response:
    """Download a file beneath a shared folder, or list a folder there."""
    return await _serve(request, shares, token, path, cursor, limit)


class ShareHeaders:
    """Give every answer under /s/ the headers of `SHARE_HEADERS`, errors too.

    Sits outside the raw-path check, so even a path refused before routing
    carries them; a header the route set already is replaced, never doubled.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != "/s" and not path.startswith("/s/"):
            await self.app(scope, receive, send)
            return

        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (name, value) for name, value in message.get("headers", ())
                    if name.decode("latin-1").lower() not in SHARE_HEADERS
                ]
                message["headers"] = kept + _SHARE_HEADER_PAIRS
            await send(message)

        await self.app(scope, receive, add_headers)


async def _serve(
    request: Request, shares: ShareService, token: str, sub_path: str,
    cursor: str | None, limit: int,
) -> Response:
    _record(request, "share_read", sub_path)
    opened = await _open(request, shares, token)
    if opened.record.target.kind == "file":
        if sub_path.strip("/") not in ("", "."):
            reason = "a shared file has nothing beneath it"
            raise PathNotFoundError("read", sub_path, reason)
        handle, meta = await anyio.to_thread.run_sync(
            open_shared_file, opened.space, opened.record.target
        )
        return await _file_response(request, shares, opened.record, handle, meta)
    folder = await anyio.to_thread.run_sync(
        open_shared_folder, opened.space, opened.record.target
    )
    with folder:
        if sub_path.strip("/") in ("", "."):
            return await _listing(folder, sub_path, cursor, limit)
        try:
            handle, meta = await anyio.to_thread.run_sync(folder.view.open, sub_path)
        except IsADirectoryPathError:
            return await _listing(folder, sub_path, cursor, limit)
    return await _file_response(request, shares, opened.record, handle, meta)


async def _open(request: Request, shares: ShareService, token: str) -> OpenedShare:
    password = _basic_password(request.headers.getlist("authorization"))
    client = request.client.host if request.client else "unknown"
    opened = await anyio.to_thread.run_sync(shares.open_link, token, password, client)
    request.scope["state"]["space"] = opened.record.target.space
    return opened


async def _file_response(
    request: Request, shares: ShareService, record: ShareRecord,
    handle: FileReader, meta: FileMeta,
) -> Response:
    # The same FileInfo as a normal download, so Range, ETag, conditional
    # requests and active types behave exactly alike.
    try:
        info = FileInfo.of(meta)
        offloader = request.app.state.services.offloader
        response = send_file(offloader, handle, info, request.headers, request.method)
        # A redirect to the store hands the bytes over: it counts as well.
        if request.method == "GET" and response.status_code in (200, 206, 307):
            await anyio.to_thread.run_sync(shares.count_download, record)
    except BaseException:
        handle.close()
        raise
    return response


async def _listing(
    folder: SharedFolder, sub_path: str, cursor: str | None, limit: int
) -> Response:
    page = await anyio.to_thread.run_sync(
        folder.view.list, sub_path or ".", cursor, limit
    )
    top = "/".join(p for p in sub_path.split("/") if p not in ("", "."))
    body = SharedFolderOut(
        name=top.rsplit("/", 1)[-1] if top else folder.name,
        path=top,
        entries=[entry_out(m) for m in page.entries],
        next_cursor=page.next_cursor,
    )
    return Response(body.model_dump_json(), media_type="application/json")


def _zip_chunks(folder: SharedFolder) -> Iterator[bytes]:
    # The folder's descriptor stays open while the zip streams, and is closed
    # when the stream ends or the client goes away.
    with folder:
        yield from stream_zip(archive_members(folder.view, ""))


def _basic_password(values: list[str]) -> str | None:
    """Return the password of the one `Authorization: Basic` header, or None.

    The user name is ignored (curl -u :PASSWORD sends an empty one). A missing,
    repeated, malformed or non-UTF-8 credential gives None: the link then asks
    for the password again.
    """
    if len(values) != 1:
        return None
    scheme, _, credentials = values[0].strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "basic" or len(credentials) > _MAX_BASIC_CHARS:
        return None
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon else None


def _record(request: Request, op: str, sub_path: str) -> None:
    # What the access log line names: the route template (never the token)
    # and the path inside the share.
    request.scope.setdefault("state", {}).update(op=op, rel_path=sub_path)


def _share_out(issued: IssuedShare) -> ShareOut:
    record = issued.record
    return ShareOut(
        id=record.id,
        url=f"/s/{issued.token}",
        space=record.target.space,
        path=record.target.rel_path,
        kind=record.target.kind,
        expires_at=_iso(record.expires_at.timestamp()),
        max_downloads=record.max_downloads,
        has_password=record.has_password,
    )


def _info_out(record: ShareRecord) -> ShareInfoOut:
    return ShareInfoOut(
        id=record.id,
        space=record.target.space,
        path=record.target.rel_path,
        kind=record.target.kind,
        created=_iso(record.created.timestamp()),
        expires_at=_iso(record.expires_at.timestamp()),
        downloads=record.downloads,
        max_downloads=record.max_downloads,
        has_password=record.has_password,
        revoked=record.revoked,
    )


def _iso(seconds: float) -> str:
    return iso_time(int(seconds * 1_000_000_000))

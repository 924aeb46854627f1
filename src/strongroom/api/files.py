"""Routes for spaces and the files in them: parse, authorise, call the space, shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from strongroom.api.body import receive_body
from strongroom.api.deps import FilesReader, FilesWriter, Services, get_services
from strongroom.api.download import FileInfo, parse_http_date
from strongroom.api.offload import send_file
from strongroom.api.problem_docs import AUTHENTICATED, PATH_ERRORS, problem_responses
from strongroom.api.schemas import (
    FileMetaOut,
    ListOut,
    MoveIn,
    SpaceOut,
    entry_out,
    meta_out,
)
from strongroom.errors import (
    InvalidRequestError,
    LimitExceededError,
    PathExistsError,
    PreconditionFailedError,
)
from strongroom.storage import User
from strongroom.storage.blobs import LocalBlobStore
from strongroom.storage.spaces import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    FileMeta,
    Precondition,
    Space,
    SpaceWriter,
)

__all__ = ["open_download", "router"]

# Besides token and path errors: a stale If-Match (412), an upload over the limit
# (413), a malformed request (422), a full quota (507).
router = APIRouter(tags=["files"], responses=problem_responses(
    *AUTHENTICATED, *PATH_ERRORS, 412, 413, 422, 507))

ServicesDep = Annotated[Services, Depends(get_services)]


@router.get("/spaces", response_model=list[SpaceOut])
def list_spaces(user: FilesReader, services: ServicesDep) -> list[SpaceOut]:
    """List the spaces this user may use."""
    return [
        SpaceOut(name=s.name, kind=s.kind, mode="rw" if s.writable else "ro")
        for s in services.spaces.for_user(user)
    ]


@router.get("/spaces/{space}/list", response_model=ListOut, name="list_top")
@router.get("/spaces/{space}/list/{path:path}", response_model=ListOut)
def list_folder(
    space: str,
    request: Request,
    user: FilesReader,
    services: ServicesDep,
    path: str = "",
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
) -> ListOut:
    """List a folder of a space, a page at a time, sorted by name."""
    sp = _space(services, user, space, request, "list", path)
    page = sp.list(path or ".", cursor, limit)
    return ListOut(
        space=sp.name,
        path=path.strip("/"),
        entries=[entry_out(m) for m in page.entries],
        next_cursor=page.next_cursor,
    )


@router.get("/spaces/{space}/meta/{path:path}", response_model=FileMetaOut,
            operation_id="get_meta")
def get_meta(
    space: str, path: str, request: Request, user: FilesReader, services: ServicesDep
) -> FileMetaOut:
    """Describe one file or folder."""
    sp = _space(services, user, space, request, "meta", path)
    return meta_out(sp.meta(path))


_DOWNLOAD_PATH = "/spaces/{space}/files/{path:path}"
# OpenAPI links (OAS 3.1, section 4.8.20): what a client may do next with the file
# it has just uploaded. Generated clients and the stateful fuzzer (tests/proof)
# follow them; `from` and `path` are filled in, the rest of each body is the
# caller's.
_SAME_FILE = {"space": "$request.path.space", "path": "$request.path.path"}
_SAME_SPACE = {"space": "$request.path.space"}
_UPLOADED_LINKS: dict[str, dict[str, Any]] = {
    "Download": {"operationId": "download", "parameters": _SAME_FILE},
    "DownloadHead": {"operationId": "download_head", "parameters": _SAME_FILE},
    "Describe": {"operationId": "get_meta", "parameters": _SAME_FILE},
    "Delete": {"operationId": "delete_file", "parameters": _SAME_FILE},
    "Move": {"operationId": "move", "parameters": _SAME_SPACE,
             "requestBody": {"from": "$request.path.path"}},
    "Share": {"operationId": "create_share", "parameters": _SAME_SPACE,
              "requestBody": {"path": "$request.path.path"}},
}
_DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/octet-stream": {}}},
    206: {"description": "One byte range"},
    304: {},
    **problem_responses(416),
}


@router.get(_DOWNLOAD_PATH, response_class=Response, response_model=None,
            responses=_DOWNLOAD_RESPONSES, operation_id="download")
@router.head(_DOWNLOAD_PATH, response_class=Response, response_model=None,
             responses=_DOWNLOAD_RESPONSES, operation_id="download_head")
async def download(
    space: str, path: str, request: Request, user: FilesReader, services: ServicesDep
) -> Response:
    """Download a file, with ETag, conditional requests and a single Range.

    The top of the space answers with its listing, as `/list` does; a named
    folder is a 409 (list it with `/list/{path}`).
    """
    _record(request.scope.setdefault("state", {}), "download", space, path)
    return await open_download(
        services, user, space, path, request.headers, request.method
    )


async def open_download(
    services: Services,
    user: User,
    space: str,
    path: str,
    headers: Mapping[str, str],
    method: str,
) -> Response:
    """Open `path` of `space` for `user` and build the response that sends it.

    Shared by the routed endpoint and the fast lane (`api.fastlane`), so both
    answer every request the same way.
    """
    sp = services.spaces.get(user, space)
    if path in ("", "/", "."):
        # The space itself has no file content: answer with its first page of
        # entries, the same JSON as `/list`. A named folder stays a 409. Listing
        # a big folder takes a while, so it runs in a worker thread.
        return await anyio.to_thread.run_sync(_listing_response, sp, path)
    if sp.kind == "home" and not isinstance(services.blobs, LocalBlobStore):
        # Opening an object store's blob is a request over the network: never
        # in the event loop. A local open costs less than the thread hop.
        handle, meta = await anyio.to_thread.run_sync(sp.open, path)
    else:
        handle, meta = sp.open(path)
    try:
        info = FileInfo.of(meta)
        return send_file(services.offloader, handle, info, headers, method)
    except BaseException:
        # The response owns the descriptor only once it exists.
        handle.close()
        raise


@router.put(
    "/spaces/{space}/files/{path:path}",
    response_model=FileMetaOut,
    status_code=201,
    operation_id="upload",
    responses={
        200: {"model": FileMetaOut, "description": "Replaced",
              "links": _UPLOADED_LINKS},
        201: {"description": "Created", "links": _UPLOADED_LINKS},
    },
    openapi_extra={"requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string",
                                                             "format": "binary"}}},
    }},
)
async def upload(
    space: str, path: str, request: Request, user: FilesWriter, services: ServicesDep
) -> JSONResponse:
    """Upload a file: streamed to a staging file, then renamed into place.

    `If-None-Match: *` creates only (412 if the name exists). `If-Match` (one or
    more ETags, or `*`) or `If-Unmodified-Since` replaces only the file they
    describe, and `If-None-Match` with ETags never replaces a file that has one
    of them (412 otherwise, checked before the body is read and again when the
    file is put in place). A body over the limit is refused with 413 and leaves
    nothing behind.
    """
    sp = _space(services, user, space, request, "upload", path)
    limit = services.settings.max_upload_bytes
    _check_declared_length(request, limit)
    precondition = _precondition(request)
    # `If-None-Match: *` is an atomic create (the name is claimed at commit);
    # other entity tags are checked like If-Match.
    exclusive = precondition is not None and "*" in (precondition.none_match or ())
    try:
        writer = await anyio.to_thread.run_sync(
            lambda: sp.writer(path, exclusive=exclusive, precondition=precondition)
        )
        meta, created = await _receive(request, writer, limit)
    except PathExistsError as exc:
        if not exclusive:
            raise
        raise PreconditionFailedError(
            f"{path!r} already exists and If-None-Match: * asked to create only"
        ) from exc
    request.state.bytes_in = meta.size
    body = meta_out(meta).model_dump()
    # The stored file is the body as sent, so its validator may go with the
    # answer (RFC 9110, 9.3.4): the client's next If-Match needs no GET.
    headers = {"ETag": meta.etag} if meta.etag else None
    return JSONResponse(body, status_code=201 if created else 200, headers=headers)


@router.post("/spaces/{space}/dirs/{path:path}", response_model=FileMetaOut,
             status_code=201)
def make_folder(
    space: str, path: str, request: Request, user: FilesWriter, services: ServicesDep
) -> FileMetaOut:
    """Create a folder (and missing parents)."""
    sp = _space(services, user, space, request, "mkdir", path)
    return meta_out(sp.mkdir(path))


@router.delete("/spaces/{space}/files/{path:path}", status_code=204,
               response_class=Response, operation_id="delete_file")
def delete(
    space: str, path: str, request: Request, user: FilesWriter, services: ServicesDep
) -> Response:
    """Delete a file or an empty folder.

    `If-Match` or `If-Unmodified-Since` deletes only the file they describe
    (412 otherwise, and for a folder); `If-None-Match` refuses a file with one
    of its ETags (`*`: any file).
    """
    sp = _space(services, user, space, request, "delete", path)
    sp.delete(path, precondition=_precondition(request))
    return Response(status_code=204)


@router.post("/spaces/{space}/move", response_model=FileMetaOut, operation_id="move")
def move(
    space: str, body: MoveIn, request: Request, user: FilesWriter,
    services: ServicesDep,
) -> FileMetaOut:
    """Move or rename a file or folder; refuses to replace unless `overwrite`."""
    sp = _space(services, user, space, request, "move", body.from_)
    return meta_out(sp.move(body.from_, body.to, overwrite=body.overwrite))


def _listing_response(sp: Space, path: str) -> JSONResponse:
    page = sp.list(path or ".", None, DEFAULT_PAGE_SIZE)
    body = ListOut(
        space=sp.name,
        path=path.strip("/"),
        entries=[entry_out(m) for m in page.entries],
        next_cursor=page.next_cursor,
    )
    return JSONResponse(body.model_dump())


def _space(
    services: Services, user: User, name: str, request: Request, op: str,
    rel_path: str,
) -> Space:
    _record(request.scope.setdefault("state", {}), op, name, rel_path)
    return services.spaces.get(user, name)


def _record(state: dict[str, object], op: str, space: str, rel_path: str) -> None:
    # What the access log line names; rel_path is the user's own text.
    state["op"] = op
    state["space"] = space
    state["rel_path"] = rel_path


def _precondition(request: Request) -> Precondition | None:
    """Read `If-Match` (or else `If-Unmodified-Since`) and `If-None-Match`.

    RFC 9110, 13.2.2: `If-Unmodified-Since` counts only without `If-Match`.
    Repeated header lines form one list (RFC 9110, 5.3). A date that cannot be
    read is refused (400), where RFC 9110 would ignore it: a guard the client
    meant to set must never let a write through unseen.
    """
    match = _tag_list(request, "if-match")
    none_match = _tag_list(request, "if-none-match")
    since = None
    if match is None and "if-unmodified-since" in request.headers:
        since = parse_http_date(request.headers["if-unmodified-since"])
        if since is None:
            raise InvalidRequestError(
                "If-Unmodified-Since is not an HTTP date (such as "
                "'Sat, 05 Dec 2026 10:00:00 GMT'); nothing was changed"
            )
    if match is None and none_match is None and since is None:
        return None
    return Precondition(match=match, none_match=none_match, unmodified_since=since)


def _tag_list(request: Request, header: str) -> frozenset[str] | None:
    """The entity tags of every line of `header`, or None when it is absent."""
    lines = request.headers.getlist(header)
    if not lines:
        return None
    return frozenset(
        tag.strip() for line in lines for tag in line.split(",") if tag.strip()
    )


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    # The HTTP server has already refused a malformed Content-Length.
    if declared.isdigit() and int(declared) > limit:
        raise LimitExceededError(
            f"upload refused: {int(declared)} bytes is over the {limit}-byte limit; "
            "raise max_upload_bytes or split the file"
        )


async def _receive(
    request: Request, writer: SpaceWriter, limit: int
) -> tuple[FileMeta, bool]:
    """Stream the body into `writer`; abort on any failure, commit at the end."""
    try:
        await receive_body(request, writer.write, limit, "upload")
        return await anyio.to_thread.run_sync(writer.commit)
    except BaseException:
        await anyio.to_thread.run_sync(writer.abort)
        raise

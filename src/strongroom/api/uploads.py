"""Resumable uploads with the tus 1.0.0 protocol, under `/api/v1/uploads`.

We offer the core protocol and the creation, creation-with-upload,
termination, expiration and checksum extensions:

    OPTIONS /uploads[/{id}]  what the server offers; needs no token
    POST    /uploads         create: Upload-Length and Upload-Metadata naming
                             the target; 201 with Location (and a first chunk
                             when the body is application/offset+octet-stream)
    HEAD    /uploads/{id}    Upload-Offset, Upload-Length, Upload-Expires
    PATCH   /uploads/{id}    append a chunk at Upload-Offset; 204, new offset
    DELETE  /uploads/{id}    terminate; 204

Upload-Metadata keys we read: `space` (required), `path` (the file to create;
when it ends in `/` or is left out, `filename` is the file's name inside that
folder) and `sha256` (optional: the whole file's digest in hex, checked before
the file is published). Other keys are kept and echoed by HEAD.

Every request but OPTIONS must say `Tus-Resumable: 1.0.0`, and every answer
says it back, errors included; `TusHeaders` does both, and also honours the
protocol's `X-HTTP-Method-Override`. Every route but OPTIONS needs the
`files:write` scope, and an upload answers only to its creator: another user's
id is a 404, exactly like an unknown one. The work (locking, staging,
publishing) is in `strongroom.storage.uploads`; this module parses headers,
authorises and shapes answers. If CORS is ever turned on, its allowed and
exposed headers must include `TUS_REQUEST_HEADERS` and `TUS_RESPONSE_HEADERS`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import re
import threading
import time
from collections.abc import Iterator, Mapping
from email.utils import format_datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Request, Response
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.api.deps import FilesWriter, Services, get_services
from strongroom.api.problem_docs import AUTHENTICATED, PATH_ERRORS, problem_responses
from strongroom.api.problems import strongroom_error_response
from strongroom.errors import (
    IncompleteUploadError,
    InvalidPathError,
    InvalidUploadError,
    LimitExceededError,
    PathExistsError,
    PreconditionFailedError,
    TusVersionError,
    UnsupportedMediaError,
    UploadNotFoundError,
)
from strongroom.storage import User
from strongroom.storage.uploads import (
    CHECKSUM_ALGORITHMS,
    Append,
    ChunkChecksum,
    UploadLimits,
    UploadRecord,
    Uploads,
)

__all__ = [
    "TUS_REQUEST_HEADERS",
    "TUS_RESPONSE_HEADERS",
    "TUS_VERSION",
    "UPLOADS_ROUTE",
    "TusHeaders",
    "UploadService",
    "router",
]

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration,checksum"
OFFSET_STREAM = "application/offset+octet-stream"
UPLOADS_ROUTE = "/uploads"
# What a browser on another origin would need allowed and exposed (CORS is off).
TUS_REQUEST_HEADERS = (
    "Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Offset",
    "Upload-Checksum", "X-HTTP-Method-Override", "Content-Type", "Authorization",
)
TUS_RESPONSE_HEADERS = (
    "Tus-Resumable", "Tus-Version", "Tus-Extension", "Tus-Max-Size",
    "Tus-Checksum-Algorithm", "Upload-Offset", "Upload-Length", "Upload-Metadata",
    "Upload-Expires", "Location",
)
# A path is at most 4095 bytes, 5,460 characters in base64; twice that leaves
# room for a file name, a digest and a client's own keys, and no more.
MAX_METADATA_CHARS = 8192
# We read four keys; tus clients add a few of their own (filetype, name...).
MAX_METADATA_PAIRS = 32
# Lengths and offsets are stored as signed 64-bit integers: 19 digits at most.
_NUMBER = re.compile(r"[0-9]{1,19}")
_METADATA_KEY = re.compile(r"[!-+\--~]+")  # printable ASCII but space and ','
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
# A user's unfinished uploads may reserve this many times max_upload_bytes in
# all (issue #5, until there is a quota system): one full-size upload with
# room for a second, not a disk's worth of staged bytes.
RESERVED_UPLOADS_FACTOR = 2
# Expired uploads are swept when a process starts (up to the first number) and
# lazily on creation, at most once a minute per process, a batch at a time.
START_SWEEP_LIMIT = 10_000
SWEEP_INTERVAL_SECONDS = 60.0
SWEEP_BATCH = 100
_METHODS = frozenset({"HEAD", "PATCH", "DELETE", "POST", "OPTIONS"})
# A chunk is staged in batches of this size. The server only keeps what it has
# read when a connection breaks, and uvicorn drops what it buffered but the app
# had not read yet; smaller batches lose less, larger ones cost fewer hops to a
# worker thread (8,192 per GiB here).
STAGE_BATCH_BYTES = 128 * 1024

# For the OpenAPI document: FastAPI cannot see the tus headers the routes read
# themselves, so each route lists them (and its offset+octet-stream body) here.
_TUS_RESUMABLE: dict[str, Any] = {
    "name": "Tus-Resumable", "in": "header", "required": True,
    "schema": {"type": "string", "enum": [TUS_VERSION]},
}
_BYTES: dict[str, Any] = {"type": "string", "pattern": "^[0-9]{1,19}$"}
_CHUNK_BODY: dict[str, Any] = {
    "content": {OFFSET_STREAM: {"schema": {"type": "string", "format": "binary"}}},
}
_CREATE_DOC: dict[str, Any] = {
    "parameters": [
        _TUS_RESUMABLE,
        {"name": "Upload-Length", "in": "header", "required": True,
         "schema": _BYTES},
        {"name": "Upload-Metadata", "in": "header", "schema": {"type": "string"},
         "description": "comma-separated `key base64value` pairs: space, path, "
                        "filename, sha256, and create_only (any value) to keep "
                        "a file that has the name: 412 at creation or at the "
                        "last chunk instead of replacing it"},
    ],
    "requestBody": {**_CHUNK_BODY, "required": False},
}
_APPEND_DOC: dict[str, Any] = {
    "parameters": [
        _TUS_RESUMABLE,
        {"name": "Upload-Offset", "in": "header", "required": True,
         "schema": _BYTES},
        {"name": "Upload-Checksum", "in": "header", "schema": {"type": "string"},
         "description": "an algorithm of Tus-Checksum-Algorithm and the "
                        "chunk's base64 digest"},
    ],
    "requestBody": {**_CHUNK_BODY, "required": True},
}
_TUS_ONLY_DOC: dict[str, Any] = {"parameters": [_TUS_RESUMABLE]}

# Besides token and path errors (409 and 410 also for a wrong offset and an expired
# upload): no or another tus version, or a create-only upload whose name is taken
# (412), over the limit (413), a body that is
# not offset+octet-stream (415), an upload busy in another request (423), a
# checksum mismatch (460), a full quota (507).
router = APIRouter(tags=["uploads"], responses=problem_responses(
    *AUTHENTICATED, *PATH_ERRORS, 412, 413, 415, 422, 423, 460, 507))

ServicesDep = Annotated[Services, Depends(get_services)]


class UploadService:
    """The uploads one app process serves, and when it last swept expired ones."""

    def __init__(self, uploads: Uploads, max_upload_bytes: int) -> None:
        self.uploads = uploads
        self.max_upload_bytes = max_upload_bytes
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
        self._sweeping = threading.Lock()

    @classmethod
    def open(cls, services: Services) -> UploadService:
        """Open the uploads on the services' database and data folder; sweep once.

        The start-up sweep removes expired uploads and staged files that no
        upload names (a crash's leftovers), a bounded number of each.
        """
        settings = services.settings
        limits = UploadLimits(
            expiry_seconds=settings.upload_expiry_seconds,
            max_reserved_bytes=RESERVED_UPLOADS_FACTOR * settings.max_upload_bytes,
        )
        uploads = Uploads.open(services.meta, settings.data_dir, limits)
        uploads.sweep_expired(START_SWEEP_LIMIT)
        uploads.remove_orphans(START_SWEEP_LIMIT)
        return cls(uploads, settings.max_upload_bytes)

    def sweep_if_due(self) -> None:
        """Sweep a batch of expired uploads if the last sweep is a minute old."""
        if time.monotonic() < self._next_sweep or not self._sweeping.acquire(
            blocking=False
        ):
            return
        try:
            self.uploads.sweep_expired(SWEEP_BATCH)
            self._next_sweep = time.monotonic() + SWEEP_INTERVAL_SECONDS
        finally:
            self._sweeping.release()


# Public protocol discovery, documented in the README: the OpenAPI page lists
# the private routes, each with the scope it needs.
@router.options(UPLOADS_ROUTE, status_code=204, response_class=Response,
                include_in_schema=False)
@router.options(UPLOADS_ROUTE + "/{upload_id}", status_code=204,
                response_class=Response, include_in_schema=False)
def describe(request: Request) -> Response:
    """Say which tus version, extensions, size and checksums the server offers."""
    service = _service(request)
    return Response(status_code=204, headers={
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": TUS_EXTENSIONS,
        "Tus-Max-Size": str(service.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    })


@router.post(UPLOADS_ROUTE, status_code=201, response_class=Response,
             openapi_extra=_CREATE_DOC)
async def create_upload(
    request: Request, user: FilesWriter, services: ServicesDep
) -> Response:
    """Create an upload (tus creation), with its first chunk if the body has one.

    The target is checked now and again when the last byte arrives. A refused
    first chunk ends the new upload, since the client never learnt its URL.
    """
    service = _service(request)
    length = _declared_length(request.headers, service.max_upload_bytes)
    raw_metadata = request.headers.get("upload-metadata", "")
    metadata = _parse_metadata(raw_metadata)
    space_name, rel_path, sha256 = _target_of(metadata)
    create_only = _is_create_only(metadata)
    with_chunk = _has_body(request.headers)
    if with_chunk:
        _check_offset_stream(request.headers)
        _check_chunk_length(request.headers, length)
    _note(request, "upload_create", space_name, rel_path)
    space = services.spaces.get(user, space_name)

    def create() -> UploadRecord:
        service.sweep_if_due()
        return service.uploads.create(
            user.id, space, rel_path, length, metadata=raw_metadata, sha256=sha256,
            create_only=create_only,
        )

    with _taken_is_a_failed_precondition(rel_path, create_only):
        record = await anyio.to_thread.run_sync(create)
    headers = {
        "Location": request.url_for("upload_status", upload_id=record.id).path,
        "Upload-Expires": _http_date(record),
    }
    if with_chunk:
        try:
            record = await _append(request, services, user, record.id, 0)
        except BaseException:
            # Already gone when the whole file failed its checksum.
            with contextlib.suppress(UploadNotFoundError):
                await anyio.to_thread.run_sync(
                    service.uploads.terminate, user.id, record.id
                )
            raise
        headers["Upload-Offset"] = str(record.received)
    return Response(status_code=201, headers=headers)


@router.head(UPLOADS_ROUTE + "/{upload_id}", response_class=Response,
             name="upload_status", openapi_extra=_TUS_ONLY_DOC)
def upload_status(upload_id: str, request: Request, user: FilesWriter) -> Response:
    """Say how many bytes the upload holds (Upload-Offset) and when it expires."""
    _note(request, "upload_status")
    record = _service(request).uploads.status(user.id, upload_id)
    _note_target(request, record)
    headers = {
        "Upload-Offset": str(record.received),
        "Upload-Length": str(record.length),
        "Upload-Expires": _http_date(record),
        "Cache-Control": "no-store",
    }
    if record.metadata:
        headers["Upload-Metadata"] = record.metadata
    return Response(status_code=200, headers=headers)


@router.patch(UPLOADS_ROUTE + "/{upload_id}", status_code=204,
              response_class=Response, openapi_extra=_APPEND_DOC)
async def append_chunk(
    upload_id: str, request: Request, user: FilesWriter, services: ServicesDep
) -> Response:
    """Append the body at Upload-Offset; publish the file after its last byte.

    A body cut short is kept up to where it broke (the client resumes from
    HEAD's offset), unless it carried an Upload-Checksum.
    """
    _note(request, "upload_append")
    _check_offset_stream(request.headers)
    offset = _number(request.headers, "Upload-Offset")
    record = await _append(request, services, user, upload_id, offset)
    return Response(status_code=204, headers={
        "Upload-Offset": str(record.received),
        "Upload-Expires": _http_date(record),
    })


@router.delete(UPLOADS_ROUTE + "/{upload_id}", status_code=204,
               response_class=Response, openapi_extra=_TUS_ONLY_DOC)
def terminate_upload(upload_id: str, request: Request, user: FilesWriter) -> Response:
    """End an upload and free its staged bytes (tus termination)."""
    _note(request, "upload_terminate")
    _service(request).uploads.terminate(user.id, upload_id)
    return Response(status_code=204)


class TusHeaders:
    """Hold requests under the uploads path to tus 1.0.0 and say so in answers.

    A request other than OPTIONS without `Tus-Resumable: 1.0.0` gets a 412 with
    `Tus-Version`, before any route or token check. Every answer under the
    path, errors included, carries `Tus-Resumable`. A POST with
    `X-HTTP-Method-Override` is routed as the method it names (tus core).
    """

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != self.path and not path.startswith(self.path + "/"):
            await self.app(scope, receive, send)
            return

        async def say_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *(pair for pair in message.get("headers", ())
                      if pair[0].lower() != b"tus-resumable"),
                    (b"tus-resumable", TUS_VERSION.encode()),
                ]
            await send(message)

        headers = Headers(scope=scope)
        try:
            scope = _overridden(scope, headers)
            _check_version(scope, headers)
        except (InvalidUploadError, TusVersionError) as exc:
            response = strongroom_error_response(exc)
            if isinstance(exc, TusVersionError):
                response.headers["Tus-Version"] = TUS_VERSION
            await response(scope, receive, say_version)
            return
        await self.app(scope, receive, say_version)


async def _append(
    request: Request, services: Services, user: User, upload_id: str, offset: int
) -> UploadRecord:
    """Stream the body into the upload at `offset` under its lock; return it."""
    service = _service(request)
    checksum = _checksum_of(request.headers)
    append = await anyio.to_thread.run_sync(
        service.uploads.begin_append, user.id, upload_id, offset, checksum
    )
    record = append.record
    try:
        create_only = _is_create_only(_parse_metadata(record.metadata))
        _note_target(request, record)
        _check_chunk_length(request.headers, append.remaining)
        request.state.bytes_in = await _receive_chunk(request, append)
        with _taken_is_a_failed_precondition(record.rel_path, create_only):
            return await anyio.to_thread.run_sync(functools.partial(
                append.finish, lambda name: services.spaces.get(user, name),
                create_only=create_only,
            ))
    finally:
        await anyio.to_thread.run_sync(append.close)


async def _receive_chunk(request: Request, append: Append) -> int:
    """Stream the body into `append` in batches; return how many bytes came.

    Unlike `api.body.receive_body`, a body cut short is not thrown away: tus
    asks the server to keep what arrived, so the batch in hand is written and
    recorded (`Append.keep_partial`) before `IncompleteUploadError` is raised.
    """
    limit = append.remaining
    batch: list[bytes] = []
    batch_bytes = received = 0
    try:
        async for piece in request.stream():
            received += len(piece)
            if received > limit:
                raise _past_the_end(limit)
            batch.append(piece)
            batch_bytes += len(piece)
            if batch_bytes >= STAGE_BATCH_BYTES:
                await anyio.to_thread.run_sync(append.write, b"".join(batch))
                batch, batch_bytes = [], 0
    except ClientDisconnect:
        if batch:
            await anyio.to_thread.run_sync(append.write, b"".join(batch))
        kept = await anyio.to_thread.run_sync(append.keep_partial)
        raise IncompleteUploadError(
            f"the client closed the connection after {received} bytes; the "
            f"upload holds {kept.received} of them and resumes from there"
        ) from None
    if batch:
        await anyio.to_thread.run_sync(append.write, b"".join(batch))
    return received


def _service(request: Request) -> UploadService:
    service: UploadService = request.app.state.uploads
    return service


def _note(
    request: Request, op: str, space: str | None = None, rel_path: str | None = None
) -> None:
    # What the access log line names; rel_path is the user's own text.
    state = request.scope.setdefault("state", {})
    state.update(op=op, space=space, rel_path=rel_path)


def _note_target(request: Request, record: UploadRecord) -> None:
    request.scope["state"].update(space=record.space, rel_path=record.rel_path)


def _declared_length(headers: Headers, max_upload_bytes: int) -> int:
    if "upload-defer-length" in headers:
        raise InvalidUploadError(
            "Upload-Defer-Length is not offered; send Upload-Length"
        )
    if "upload-concat" in headers:
        raise InvalidUploadError("the concatenation extension is not offered")
    length = _number(headers, "Upload-Length")
    if length > max_upload_bytes:
        raise LimitExceededError(
            f"upload refused: {length} bytes is over the {max_upload_bytes}-byte "
            "limit; raise max_upload_bytes or split the file"
        )
    return length


def _number(headers: Headers, name: str) -> int:
    values = headers.getlist(name)
    if len(values) != 1 or _NUMBER.fullmatch(values[0].strip(" \t")) is None:
        raise InvalidUploadError(
            f"send exactly one {name} header holding a whole number of bytes"
        )
    return int(values[0])


def _parse_metadata(raw: str) -> dict[str, bytes]:
    """Decode Upload-Metadata: comma-separated `key base64value` pairs (tus 1.0)."""
    if len(raw) > MAX_METADATA_CHARS:
        raise InvalidUploadError(
            f"Upload-Metadata is {len(raw)} characters; at most "
            f"{MAX_METADATA_CHARS} are accepted"
        )
    pairs = [pair.strip(" ") for pair in raw.split(",")] if raw.strip() else []
    if len(pairs) > MAX_METADATA_PAIRS:
        raise InvalidUploadError(
            f"Upload-Metadata has {len(pairs)} pairs; at most {MAX_METADATA_PAIRS}"
        )
    decoded: dict[str, bytes] = {}
    for pair in pairs:
        key, _, value = pair.partition(" ")
        if _METADATA_KEY.fullmatch(key) is None or key in decoded:
            raise InvalidUploadError(
                f"Upload-Metadata pair {pair[:40]!r}: each key must be unique, "
                "non-empty ASCII without spaces or commas"
            )
        try:
            decoded[key] = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidUploadError(
                f"Upload-Metadata value of {key!r} is not base64"
            ) from None
    return decoded


def _is_create_only(metadata: Mapping[str, bytes]) -> bool:
    """Whether Upload-Metadata holds `create_only`: keep a file that has the name.

    Like `If-None-Match: *` on a PUT; without it an upload replaces a file.
    Any value (or none) counts: the key is the request.
    """
    return "create_only" in metadata


@contextlib.contextmanager
def _taken_is_a_failed_precondition(
    rel_path: str, create_only: bool
) -> Iterator[None]:
    """Answer a create-only upload whose name is taken with 412, as a PUT does."""
    try:
        yield
    except PathExistsError as exc:
        if not create_only:
            raise
        raise PreconditionFailedError(
            f"{rel_path!r} already exists and the upload asked to create only "
            "(create_only in Upload-Metadata); nothing was replaced"
        ) from exc


def _target_of(metadata: Mapping[str, bytes]) -> tuple[str, str, str | None]:
    """Return (space, path, sha256) from the decoded Upload-Metadata."""
    space = _text(metadata, "space")
    if not space:
        raise InvalidUploadError(
            "Upload-Metadata needs `space`: the base64 of the space's name"
        )
    rel_path = _text(metadata, "path") or ""
    if rel_path == "" or rel_path.endswith("/"):
        filename = _text(metadata, "filename")
        if not filename:
            raise InvalidUploadError(
                "name the file: give `path`, or a folder `path` ending in '/' "
                "and `filename`"
            )
        if "/" in filename or filename in (".", ".."):
            reason = "a filename is one name, without '/'"
            raise InvalidPathError("upload", filename, reason)
        rel_path += filename
    sha256 = _text(metadata, "sha256")
    if sha256 is not None and _SHA256_HEX.fullmatch(sha256) is None:
        raise InvalidUploadError("Upload-Metadata `sha256` must be 64 hex digits")
    return space, rel_path, sha256.lower() if sha256 else None


def _text(metadata: Mapping[str, bytes], key: str) -> str | None:
    value = metadata.get(key)
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidUploadError(
            f"Upload-Metadata `{key}` is not UTF-8 once decoded"
        ) from None


def _checksum_of(headers: Headers) -> ChunkChecksum | None:
    value = headers.get("upload-checksum")
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise InvalidUploadError(
            f"Upload-Checksum algorithm {algorithm[:20]!r} is not offered; use one "
            f"of {', '.join(CHECKSUM_ALGORITHMS)}"
        )
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != _DIGEST_BYTES[algorithm]:
        raise InvalidUploadError(
            f"Upload-Checksum must be '{algorithm} <base64 of the digest>'"
        )
    return ChunkChecksum(algorithm, digest)


_DIGEST_BYTES = {"sha1": 20, "sha256": 32, "sha512": 64}


def _has_body(headers: Headers) -> bool:
    declared = headers.get("content-length", "0").strip()
    return "transfer-encoding" in headers or declared not in ("", "0")


def _check_offset_stream(headers: Headers) -> None:
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != OFFSET_STREAM:
        raise UnsupportedMediaError(
            f"a chunk must be sent as Content-Type: {OFFSET_STREAM}"
        )


def _check_chunk_length(headers: Headers, remaining: int) -> None:
    declared = headers.get("content-length")
    # The HTTP server has already refused a malformed Content-Length.
    if declared is not None and declared.isdigit() and int(declared) > remaining:
        raise _past_the_end(remaining)


def _past_the_end(remaining: int) -> LimitExceededError:
    return LimitExceededError(
        f"the chunk goes past the upload's declared length: {remaining} bytes "
        "remain; send at most that"
    )


def _http_date(record: UploadRecord) -> str:
    return format_datetime(record.expires_at, usegmt=True)


def _overridden(scope: Scope, headers: Headers) -> Scope:
    override = headers.get("x-http-method-override")
    if override is None or scope["method"] != "POST":
        return scope
    method = override.strip().upper()
    if method not in _METHODS:
        raise InvalidUploadError(
            f"X-HTTP-Method-Override {override[:20]!r} is not a tus method"
        )
    return {**scope, "method": method}


def _check_version(scope: Scope, headers: Headers) -> None:
    if scope["method"] == "OPTIONS":
        return
    if headers.getlist("tus-resumable") != [TUS_VERSION]:
        raise TusVersionError(
            f"send Tus-Resumable: {TUS_VERSION}, the one version this server speaks"
        )

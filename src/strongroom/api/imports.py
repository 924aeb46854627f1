"""POST /spaces/{space}/import/{dir}: unpack a tar or zip body into a folder.

The body is spooled to an anonymous temporary file in the data directory
(O_TMPFILE: it has no name anyone could guess or race), under `max_upload_bytes`,
and then unpacked by `strongroom.storage.imports` in a worker thread. The answer
is the import report: 200 when the archive was imported, otherwise the status of
the outcome below with the report in a problem+json body, so a client sees which
members were refused and why.

A client that asks for `application/x-ndjson` (or `application/json-seq`) gets the
streamed form instead: 200 as soon as unpacking starts, then one JSON line per
progress step, per member, and a last line with the outcome. Design note: the
obvious way to report progress is a job with a status URL, but that needs job
state that outlives the request (and a store for it, and its expiry); a stream
ties the import's life to the request, so a client that leaves cancels it and
nothing is kept anywhere. The worker thread reports through a callback that
hands lines to the event loop at a bounded rate and is also where a departed
client's import is stopped. What we deliberately do not do: stream before the
body is spooled (a body over the limit must still get its 413), or stop an
import once publishing has started (it finishes, so the space is never left
half-published).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import IO, Annotated, Any, BinaryIO

import anyio
import anyio.from_thread
import anyio.to_thread
from anyio.streams.memory import MemoryObjectSendStream
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from strongroom.api.body import receive_body
from strongroom.api.deps import FilesWriter, Services, get_services
from strongroom.api.problem_docs import AUTHENTICATED, PATH_ERRORS, problem_responses
from strongroom.api.problems import problem_response, strongroom_error_response
from strongroom.errors import (
    LimitExceededError,
    PermissionDeniedError,
    StrongroomError,
)
from strongroom.storage.imports import (
    ImportProgress,
    ImportReport,
    Outcome,
    check_import_target,
    import_archive,
)
from strongroom.storage.spaces import Space

__all__ = [
    "JSON_SEQ",
    "NDJSON",
    "PROGRESS_EVERY_MEMBERS",
    "PROGRESS_INTERVAL_SECONDS",
    "router",
]

# Besides token and path errors: an archive over the limits (413), unreadable or
# refused (422), a full quota (507).
router = APIRouter(tags=["files"], responses=problem_responses(
    *AUTHENTICATED, *PATH_ERRORS, 413, 422, 507))

ServicesDep = Annotated[Services, Depends(get_services)]

log = logging.getLogger("strongroom.api")

NDJSON = "application/x-ndjson"
# RFC 7464: each JSON text is preceded by RS (0x1E) and followed by LF.
JSON_SEQ = "application/json-seq"
# A progress line goes out when this much time or this many members have passed
# since the last one: a few lines a second at most, whatever the archive, so a
# 10,000-member import sends about ten and a 1 GiB member about two a second.
PROGRESS_INTERVAL_SECONDS = 0.5
PROGRESS_EVERY_MEMBERS = 1000
# Progress lines waiting for a slow client; past this, newer ones are dropped
# (each line supersedes the one before, so nothing is lost but detail).
PROGRESS_BUFFER_LINES = 16
# Member lines are written this many at a time: one send per batch, not per line.
MEMBER_LINES_PER_WRITE = 256

# A refused import answers with its report; the status says why it was refused.
_FAILURE_STATUS: dict[Outcome, tuple[int, str]] = {
    "refused": (422, "import_refused"),
    "too_large": (413, "import_too_large"),
    "unreadable": (422, "unreadable_archive"),
    "conflict": (409, "import_conflict"),
}

# For the OpenAPI document: the 200 may be either form.
_RESPONSES: dict[int | str, dict[str, Any]] = {200: {
    "description": "The import report; with `Accept: application/x-ndjson` or "
                   "`application/json-seq`, the stream of JSON lines described "
                   "above, ending in a `result` line.",
    "content": {NDJSON: {}, JSON_SEQ: {}},
}}
# The route reads the body itself (the archive's kind is told from its first
# bytes, not from Content-Type), so FastAPI cannot see it: declared here.
_ARCHIVE_BODY: dict[str, Any] = {"requestBody": {
    "required": True,
    "content": {"application/octet-stream": {"schema": {"type": "string",
                                                         "format": "binary"}}},
}}


@router.post("/spaces/{space}/import", name="import_top", responses=_RESPONSES,
             openapi_extra=_ARCHIVE_BODY)
@router.post("/spaces/{space}/import/{path:path}", responses=_RESPONSES,
             openapi_extra=_ARCHIVE_BODY)
async def import_into(
    space: str,
    request: Request,
    user: FilesWriter,
    services: ServicesDep,
    path: str = "",
    overwrite: Annotated[bool, Query()] = False,
) -> Response:
    """Unpack a tar (plain, gz, bz2, xz) or zip request body into folder `path`.

    All or nothing: members go to a hidden staging area first and appear only if
    the whole archive passed. Links, devices, FIFOs, sockets, `..`, absolute and
    clashing names are refused, and so is the whole import then (422). Existing
    files are kept (reported `skipped`) unless `?overwrite=true`. Bomb limits
    answer 413, a body that is not a readable archive 422; read-only spaces 403.

    Progress: send `Accept: application/x-ndjson` (or `application/json-seq`)
    and the answer is 200 as soon as the body is received and checked, followed
    by a stream of JSON lines, each an object with an `event`: `progress` lines
    (`phase` unpack or publish, `members`, `bytes`) at most every 0.5 s or 1,000
    members, one `member` line per member (`name`, `status`, `reason`) once the
    outcome is known, and a last `result` line: the report's fields without
    `members`. Since the status is already 200, the result line carries the
    outcome: its `status` is what the plain form would have answered, and when
    that is not 200 the line is a problem (`type`, `title`, `code`, `detail`)
    with the report's counts; a stream that ends without a result line was cut
    short. Errors found before unpacking (token, space, read-only space, body
    over the limit, bad folder path) are ordinary problem+json answers, never a
    stream. A client that disconnects before publishing starts cancels the
    import: the staging area is removed and nothing appears in the space.
    """
    state = request.scope.setdefault("state", {})
    state.update(op="import", space=space, rel_path=path)
    sp = services.spaces.get(user, space)
    if not sp.writable:
        raise PermissionDeniedError(
            f"cannot import into space {space!r}: it is read-only"
        )
    limit = services.settings.max_upload_bytes
    _check_declared_length(request, limit)
    media_type = _streamed_type(request.headers.get("accept", ""))
    if media_type is not None:
        # Refuse a bad folder before taking the body, and long before the 200.
        await anyio.to_thread.run_sync(check_import_target, sp, path)
        spool = await _spool_to_new_file(request, services, limit)
        job = _Job(sp, spool, request.state.bytes_in, path, overwrite)
        return StreamingResponse(
            _stream(job, _framer(media_type)), media_type=media_type,
            headers={"Cache-Control": "no-store"},
        )

    with tempfile.TemporaryFile(dir=services.settings.data_dir) as spool:
        size = await _spool(request, spool, limit)
        request.state.bytes_in = size
        spool.seek(0)
        report = await anyio.to_thread.run_sync(
            partial(import_archive, sp, spool, size, path, overwrite=overwrite)
        )
    return _answer(sp.name, path, report)


def _answer(space: str, path: str, report: ImportReport) -> JSONResponse:
    body = {
        **_report_fields(space, path, report),
        "members": [
            {"name": m.name, "status": m.status, "reason": m.reason}
            for m in report.members
        ],
    }
    if report.outcome == "imported":
        return JSONResponse({**body, "detail": report.detail})
    status, code = _FAILURE_STATUS[report.outcome]
    return problem_response(status, code, report.detail, **body)


def _report_fields(space: str, path: str, report: ImportReport) -> dict[str, Any]:
    return {
        "space": space,
        "path": path.strip("/"),
        "outcome": report.outcome,
        "imported": report.count("imported"),
        "skipped": report.count("skipped"),
        "refused": report.count("refused"),
    }


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise LimitExceededError(
            f"import refused: {int(declared)} bytes is over the {limit}-byte "
            "upload limit; raise max_upload_bytes or split the archive"
        )


async def _spool(request: Request, spool: IO[bytes], limit: int) -> int:
    """Copy the body into `spool`; return its size. Over `limit` raises 413."""
    return await receive_body(request, spool.write, limit, "import")


async def _spool_to_new_file(
    request: Request, services: Services, limit: int
) -> BinaryIO:
    """Spool the body into a new temporary file, rewound; the caller closes it."""
    with contextlib.ExitStack() as on_error:
        spool = on_error.enter_context(
            tempfile.TemporaryFile(dir=services.settings.data_dir)
        )
        request.state.bytes_in = await _spool(request, spool, limit)
        spool.seek(0)
        on_error.pop_all()  # from here on the spool belongs to the caller
    return spool


# The streamed form


def _streamed_type(accept: str) -> str | None:
    """Return the streaming media type the Accept header names, if any."""
    for item in accept.split(","):
        media, _, params = item.partition(";")
        media = media.strip().lower()
        if media in (NDJSON, JSON_SEQ) and _quality(params) > 0:
            return media
    return None


def _quality(params: str) -> float:
    # RFC 9110, section 12.4.2: "q=0" means "not acceptable"; no q means 1.
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "q":
            try:
                return float(value.strip())
            except ValueError:
                return 0.0
    return 1.0


def _framer(media_type: str) -> Callable[[dict[str, Any]], bytes]:
    prefix = b"\x1e" if media_type == JSON_SEQ else b""

    def frame(event: dict[str, Any]) -> bytes:
        return prefix + json.dumps(event, ensure_ascii=False).encode() + b"\n"

    return frame


@dataclass(frozen=True)
class _Job:
    """One import to run in a worker thread; it owns (and closes) the spool."""

    space: Space
    spool: BinaryIO
    size: int
    path: str
    overwrite: bool

    def run(self, on_progress: Callable[[ImportProgress], None]) -> ImportReport:
        with self.spool:
            return import_archive(
                self.space, self.spool, self.size, self.path,
                overwrite=self.overwrite, on_progress=on_progress,
            )


class _ClientGoneError(Exception):
    """Raised in the worker thread to stop an import whose client has left."""


class _ProgressLines:
    """The bridge from the worker thread's progress calls to the response.

    `on_progress` runs in the worker thread: it stops the import once `cancel`
    was called, and otherwise hands a line to the event loop when the last one
    is old enough. A client that reads too slowly loses progress lines, never
    memory.
    """

    def __init__(
        self,
        send: MemoryObjectSendStream[bytes],
        frame: Callable[[dict[str, Any]], bytes],
    ) -> None:
        self._send = send
        self._frame = frame
        self._gone = threading.Event()
        self._last_time = -PROGRESS_INTERVAL_SECONDS
        self._last_members = -PROGRESS_EVERY_MEMBERS

    def on_progress(self, progress: ImportProgress) -> None:
        if self._gone.is_set():
            raise _ClientGoneError
        now = time.monotonic()
        if (
            progress.phase == "unpack"
            and now - self._last_time < PROGRESS_INTERVAL_SECONDS
            and progress.members - self._last_members < PROGRESS_EVERY_MEMBERS
        ):
            return
        self._last_time, self._last_members = now, progress.members
        line = self._frame({
            "event": "progress", "phase": progress.phase,
            "members": progress.members, "bytes": progress.unpacked_bytes,
        })
        anyio.from_thread.run_sync(self._offer, line)

    def cancel(self) -> None:
        self._gone.set()

    def close(self) -> None:
        self._send.close()

    def _offer(self, line: bytes) -> None:
        with contextlib.suppress(anyio.WouldBlock, anyio.BrokenResourceError,
                                 anyio.ClosedResourceError):
            self._send.send_nowait(line)


async def _stream(
    job: _Job, frame: Callable[[dict[str, Any]], bytes]
) -> AsyncIterator[bytes]:
    """Run `job` in a worker thread and yield its progress, members and result.

    The worker is a task of its own, so that a client leaving (which cancels
    this generator) never waits for it; it sees the cancellation at its next
    progress call, removes its stage and ends.
    """
    send, receive = anyio.create_memory_object_stream[bytes](PROGRESS_BUFFER_LINES)
    lines = _ProgressLines(send, frame)
    worker = asyncio.ensure_future(
        anyio.to_thread.run_sync(job.run, lines.on_progress)
    )
    worker.add_done_callback(partial(_worker_done, lines, job))
    try:
        async with receive:
            async for line in receive:
                yield line
        report = await worker
    except BaseException as exc:
        lines.cancel()
        if isinstance(exc, Exception):
            yield frame(_failure_event(exc))
            return
        raise
    async for batch in _member_batches(report, frame):
        yield batch
    yield frame(_result_event(job, report))


def _worker_done(lines: _ProgressLines, job: _Job, worker: asyncio.Future[Any]) -> None:
    # Runs in the event loop when the worker ends: the progress stream ends with
    # it, and a cancelled import is logged here, once (its error is ours).
    lines.close()
    if not worker.cancelled() and isinstance(worker.exception(), _ClientGoneError):
        log.info("import_cancelled",
                 extra={"space": job.space.name, "rel_path": job.path,
                        "reason": "the client disconnected"})


async def _member_batches(
    report: ImportReport, frame: Callable[[dict[str, Any]], bytes]
) -> AsyncIterator[bytes]:
    members = report.members
    for start in range(0, len(members), MEMBER_LINES_PER_WRITE):
        yield b"".join(
            frame({"event": "member", "name": m.name, "status": m.status,
                   "reason": m.reason})
            for m in members[start:start + MEMBER_LINES_PER_WRITE]
        )


def _result_event(job: _Job, report: ImportReport) -> dict[str, Any]:
    fields = _report_fields(job.space.name, job.path, report)
    if report.outcome == "imported":
        return {"event": "result", "status": 200, **fields, "detail": report.detail}
    status, code = _FAILURE_STATUS[report.outcome]
    problem = _problem_fields(problem_response(status, code, report.detail))
    return {"event": "result", **problem, **fields}


def _failure_event(exc: Exception) -> dict[str, Any]:
    # The import raised after the 200 went out: the same problem the plain form
    # would have answered (and logged), as the result line.
    if isinstance(exc, StrongroomError):
        response = strongroom_error_response(exc)
    else:
        log.error("request_crashed", exc_info=exc)
        response = problem_response(500, "internal_error",
                                    "the server could not complete this")
    return {"event": "result", **_problem_fields(response)}


def _problem_fields(response: JSONResponse) -> dict[str, Any]:
    fields: dict[str, Any] = json.loads(bytes(response.body))
    return fields

"""POST /spaces/{space}/import/{dir}: unpack a tar or zip body into a folder.

The body is spooled to an anonymous temporary file in the data directory
(O_TMPFILE: it has no name anyone could guess or race), under `max_upload_bytes`,
and then unpacked by `strongroom.storage.imports` in a worker thread. The answer
is the import report: 200 when the archive was imported, otherwise the status of
the outcome below with the report in a problem+json body, so a client sees which
members were refused and why.
"""

from __future__ import annotations

import tempfile
from functools import partial
from typing import IO, Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from strongroom.api.body import receive_body
from strongroom.api.deps import FilesWriter, Services, get_services
from strongroom.api.problems import problem_response
from strongroom.errors import (
    LimitExceededError,
    PermissionDeniedError,
)
from strongroom.storage.imports import ImportReport, Outcome, import_archive

__all__ = ["router"]

router = APIRouter(tags=["files"])

ServicesDep = Annotated[Services, Depends(get_services)]


# A refused import answers with its report; the status says why it was refused.
_FAILURE_STATUS: dict[Outcome, tuple[int, str]] = {
    "refused": (422, "import_refused"),
    "too_large": (413, "import_too_large"),
    "unreadable": (422, "unreadable_archive"),
    "conflict": (409, "import_conflict"),
}


@router.post("/spaces/{space}/import", name="import_top")
@router.post("/spaces/{space}/import/{path:path}")
async def import_into(
    space: str,
    request: Request,
    user: FilesWriter,
    services: ServicesDep,
    path: str = "",
    overwrite: Annotated[bool, Query()] = False,
) -> JSONResponse:
    """Unpack a tar (plain, gz, bz2, xz) or zip request body into folder `path`.

    All or nothing: members go to a hidden staging area first and appear only if
    the whole archive passed. Links, devices, FIFOs, sockets, `..`, absolute and
    clashing names are refused, and so is the whole import then (422). Existing
    files are kept (reported `skipped`) unless `?overwrite=true`. Bomb limits
    answer 413, a body that is not a readable archive 422; read-only spaces 403.
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

    with tempfile.TemporaryFile(dir=services.settings.data_dir) as spool:
        size = await _spool(request, spool, limit)
        request.state.bytes_in = size
        spool.seek(0)
        report = await anyio.to_thread.run_sync(
            partial(import_archive, sp, spool, size, path, overwrite=overwrite)
        )
    return _answer(sp.name, path, report)


def _answer(space: str, path: str, report: ImportReport) -> JSONResponse:
    body: dict[str, Any] = {
        "space": space,
        "path": path.strip("/"),
        "outcome": report.outcome,
        "imported": report.count("imported"),
        "skipped": report.count("skipped"),
        "refused": report.count("refused"),
        "members": [
            {"name": m.name, "status": m.status, "reason": m.reason}
            for m in report.members
        ],
    }
    if report.outcome == "imported":
        return JSONResponse({**body, "detail": report.detail})
    status, code = _FAILURE_STATUS[report.outcome]
    return problem_response(status, code, report.detail, **body)


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

"""The one table that turns errors into RFC 9457 `application/problem+json` answers.

Nothing else in the product picks an HTTP status for an error. Each answer carries a
stable `code` that clients can branch on and a `detail` that says what was wrong in
terms of the user's own path; host paths, tracebacks and SQL never reach a client.
"""

from __future__ import annotations

import errno
import logging
import math
import sqlite3
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from strongroom import errors

__all__ = [
    "PROBLEM_TYPE",
    "install_problem_handlers",
    "problem_response",
    "status_of",
    "strongroom_error_response",
]

PROBLEM_TYPE = "application/problem+json"
# How long a client should wait before retrying when the blob store is away.
RETRY_STORE_SECONDS = 5
# A full disk shows as ENOSPC, or EDQUOT where a file system quota applies;
# databases say it their own way: SQLite's SQLITE_FULL, PostgreSQL's SQLSTATE
# 53100 (disk_full, as psycopg reports it in `sqlstate`).
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_SQLSTATE = "53100"
# How far down an error's causes `_is_disk_full` looks; real chains are 2-3 deep.
_MAX_CAUSES = 8

log = logging.getLogger("strongroom.api")

# (status, code) per error class; the most specific class wins (MRO order).
_TABLE: dict[type[errors.StrongroomError], tuple[int, str]] = {
    errors.InvalidPathError: (400, "invalid_path"),
    errors.PathEscapeError: (403, "path_escape"),
    errors.SymlinkRefusedError: (403, "symlink_refused"),
    errors.HardlinkRefusedError: (403, "hardlink_refused"),
    errors.NotRegularFileError: (403, "not_regular_file"),
    errors.CrossDeviceError: (403, "cross_device"),
    errors.AccessDeniedError: (403, "access_denied"),
    errors.ResolveRetryError: (403, "resolve_race"),
    errors.PathNotFoundError: (404, "not_found"),
    errors.PathExistsError: (409, "exists"),
    errors.IsADirectoryPathError: (409, "is_a_directory"),
    errors.NotADirectoryPathError: (409, "not_a_directory"),
    errors.DirectoryNotEmptyError: (409, "directory_not_empty"),
    errors.DamagedContentError: (410, "content_damaged"),
    errors.PathError: (400, "path_refused"),
    errors.SpaceNotFoundError: (404, "space_not_found"),
    errors.UserExistsError: (409, "user_exists"),
    errors.UserNotFoundError: (404, "user_not_found"),
    errors.LastAdminError: (409, "last_admin"),
    errors.ApiKeyNotFoundError: (404, "api_key_not_found"),
    errors.TooManyApiKeysError: (409, "too_many_api_keys"),
    errors.PasswordPolicyError: (400, "password_policy"),
    errors.InvalidTokenError: (401, "invalid_token"),
    errors.InvalidGrantError: (400, "invalid_grant"),
    errors.InvalidScopeError: (400, "invalid_scope"),
    errors.InvalidRequestError: (400, "invalid_request"),
    errors.AuthError: (401, "unauthorized"),
    errors.InsufficientScopeError: (403, "insufficient_scope"),
    errors.PermissionDeniedError: (403, "forbidden"),
    errors.IncompleteUploadError: (400, "upload_incomplete"),
    errors.InvalidCursorError: (400, "invalid_cursor"),
    errors.PreconditionFailedError: (412, "precondition_failed"),
    errors.LimitExceededError: (413, "too_large"),
    errors.UnreadableArchiveError: (422, "unreadable_archive"),
    errors.TooManyRequestsError: (429, "too_many_requests"),
    errors.SharePasswordError: (401, "share_password"),
    errors.ShareNotFoundError: (404, "share_not_found"),
    errors.ShareGoneError: (410, "share_gone"),
    errors.InvalidShareError: (422, "invalid_share"),
    errors.UploadQuotaError: (413, "upload_quota"),
    # RFC 4918's Insufficient Storage: the quota, not the request, is too small.
    errors.StorageQuotaError: (507, "storage_quota"),
    errors.InvalidUploadError: (400, "invalid_upload_request"),
    errors.UploadNotFoundError: (404, "upload_not_found"),
    errors.UploadOffsetError: (409, "offset_mismatch"),
    errors.UploadGoneError: (410, "upload_gone"),
    errors.TusVersionError: (412, "tus_version_unsupported"),
    errors.UnsupportedMediaError: (415, "unsupported_media_type"),
    errors.UploadLockedError: (423, "upload_locked"),
    # tus 1.0 checksum extension: 460 is the protocol's own status.
    errors.ChecksumMismatchError: (460, "checksum_mismatch"),
    errors.StoreUnavailableError: (503, "store_unavailable"),
    # RFC 4918's Insufficient Storage again, this time the server's disk.
    errors.InsufficientStorageError: (507, "insufficient_storage"),
    errors.StorageError: (500, "storage_error"),
    errors.ConfigError: (500, "config_error"),
}

# Statuses whose detail we may pass on from Starlette's own HTTPException.
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    410: "Gone",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    423: "Locked",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    460: "Checksum Mismatch",
    500: "Internal Server Error",
    503: "Service Unavailable",
    507: "Insufficient Storage",
}


def problem_response(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build one problem+json response."""
    body = {
        "type": f"about:blank#{code}" if code else "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    return JSONResponse(
        body, status_code=status, headers=headers, media_type=PROBLEM_TYPE
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Register the handlers that make every error a problem+json answer."""
    app.add_exception_handler(errors.StrongroomError, _strongroom_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected_error)


def status_of(exc: errors.StrongroomError) -> tuple[int, str]:
    """Return (status, code) for an error, using the most specific table row."""
    for cls in type(exc).__mro__:
        if cls in _TABLE:
            return _TABLE[cls]
    return 500, "internal_error"


async def _strongroom_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.StrongroomError)
    return strongroom_error_response(exc)


def strongroom_error_response(exc: errors.StrongroomError) -> JSONResponse:
    """Log a handled error once and return its problem+json answer."""
    status, code = status_of(exc)
    headers = {"WWW-Authenticate": _bearer_challenge(exc)} if status == 401 else None
    if status >= 500 and not isinstance(exc, errors.LimitExceededError):
        if _is_disk_full(exc):
            return _disk_full_response(exc)
        # Our fault (or the store's): the cause goes to the log, not the client.
        # A full quota (507) is the client's to act on, and says what to do.
        log.error("request_failed", exc_info=exc, extra={"code": code})
        if isinstance(exc, errors.StoreUnavailableError):
            detail = "the file store cannot be reached just now; try again shortly"
            return problem_response(status, code, detail,
                                    headers={"Retry-After": str(RETRY_STORE_SECONDS)})
        return problem_response(status, code, "the server could not complete this")
    if isinstance(exc, errors.PathError):
        log.warning(
            "path_refused",
            extra={"op": exc.op, "rel_path": exc.rel_path, "code": code,
                   "reason": exc.reason},
        )
        return problem_response(status, code, str(exc))
    if status == 401:
        log.warning("auth_refused", extra={"reason": str(exc)})
    if isinstance(exc, errors.InsufficientScopeError):
        log.warning("scope_refused", extra={"reason": str(exc)})
        challenge = f'Bearer error="insufficient_scope", scope="{exc.scope}"'
        headers = {"WWW-Authenticate": challenge}
    if isinstance(exc, errors.TooManyRequestsError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return problem_response(status, code, str(exc), headers)


def _bearer_challenge(exc: errors.StrongroomError) -> str:
    # RFC 6750, section 3: a refused token names the error; a request that
    # offered no token at all gets the bare challenge. A share link's password
    # is asked for with Basic (RFC 7617), the challenge browsers prompt for.
    if isinstance(exc, errors.SharePasswordError):
        return 'Basic realm="share", charset="UTF-8"'
    if isinstance(exc, errors.InvalidTokenError):
        return 'Bearer error="invalid_token"'
    return "Bearer"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES.get(exc.status_code)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    code = _TITLES.get(exc.status_code, "error").lower().replace(" ", "_")
    return problem_response(exc.status_code, code, detail or "error", headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method some route takes at this path.

    Starlette names only the methods of the first route whose path matched,
    and a path here is often served by several routes (GET and PUT of a file
    are two). So each method is tried against the whole routing table.
    """
    routes = request.app.router.routes
    return ", ".join(
        method for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
               for route in routes)
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg")}
        for e in exc.errors()[:20]
    ]
    detail = "; ".join(f"{p['where']}: {p['problem']}" for p in problems)
    return problem_response(422, "invalid_request", detail, errors=problems)


def _is_disk_full(exc: BaseException) -> bool:
    """Tell whether `exc`, or an error it was raised from, is a full file system.

    Writers in every layer may report ENOSPC: confine as `InsufficientStorageError`,
    the blob and staging stores as a `StorageError` chained to the `OSError`, the
    metadata store as a `StorageError` chained to the driver's error. All of them
    are the same 507.
    """
    seen: BaseException | None = exc
    for _ in range(_MAX_CAUSES):
        if seen is None:
            return False
        if isinstance(seen, errors.InsufficientStorageError):
            return True
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS:
            return True
        if getattr(seen, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if getattr(seen, "sqlstate", None) == _DISK_FULL_SQLSTATE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _disk_full_response(exc: BaseException) -> JSONResponse:
    # An operator must free space, so it is logged as our failure; the client
    # learns that nothing was kept and that trying later may work.
    log.error("disk_full", exc_info=exc)
    detail = ("the server's storage is full, so nothing was changed; try again "
              "later, or ask the administrator to free space")
    return problem_response(507, "insufficient_storage", detail)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if _is_disk_full(exc):
        return _disk_full_response(exc)
    log.error("request_crashed", exc_info=exc)
    return problem_response(500, "internal_error", "the server could not complete this")

"""Two thin ASGI layers: a strict check of the raw request head, and the access log."""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strongroom.api.problems import problem_response
from strongroom.api.serving import MAX_HEAD_BYTES

__all__ = ["AccessLogMiddleware", "RawPathMiddleware"]

access_log = logging.getLogger("strongroom.access")

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Every answer, JSON included, is what it says it is.
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class RawPathMiddleware:
    """Refuse a path that is not valid UTF-8 or holds control characters, and a
    request head over `MAX_HEAD_BYTES`.

    Starlette decodes with replacement characters, which would turn an overlong
    `%c0%ae` into U+FFFD and hide that the client sent an invalid sequence; we look
    at the raw bytes instead. Control characters (a decoded `%0a`, say) never
    belong in a path, and the router would answer them with a bare 404. Both get
    the same 400 on every route, before any route sees the path.

    The server's protocol (`serving.DeadlineProtocol`) refuses a head that grows
    past the bound while it arrives, so it never holds megabytes. A head that
    came whole in one read (up to the size of a socket read) is complete before
    that check can run; it is measured here instead and gets the same 431.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = _head_refusal(scope)
            if response is not None:
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _head_refusal(scope: Scope) -> Response | None:
    if _head_bytes(scope) > MAX_HEAD_BYTES:
        detail = (f"the request line and headers are over {MAX_HEAD_BYTES} bytes; "
                  "send fewer or shorter headers")
        return problem_response(431, "request_head_too_large", detail,
                                headers={"Connection": "close"})
    raw = scope.get("raw_path") or scope["path"].encode("utf-8")
    problem = _path_problem(unquote_to_bytes(raw.split(b"?", 1)[0]))
    if problem:
        return problem_response(400, "invalid_path", problem)
    return None


def _head_bytes(scope: Scope) -> int:
    """The head's size as sent in the usual form ("Name: value" lines, CRLFs)."""
    target = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b""))
    request_line = len(scope["method"]) + 1 + target + 2 + len("HTTP/1.1") + 2
    headers = sum(len(name) + 2 + len(value) + 2 for name, value in scope["headers"])
    return request_line + headers + 2


def _path_problem(decoded: bytes) -> str | None:
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        return "the request path is not valid UTF-8 once percent-decoded"
    if _CONTROL.search(text):
        return "control characters (such as NUL or a line break) are not accepted"
    return None


class AccessLogMiddleware:
    """Write one structured line per request; never the query string or headers.

    It also adds `X-Content-Type-Options: nosniff` to answers that lack it.

    The line names the route's operation, space and root-relative path (recorded by
    the route in `request.state`), the user id, status, bytes and duration. Query
    strings are left out because clients sometimes put secrets there. A route
    polled by machines (/metrics) sets `request.state.log_quietly`: its
    successful answers are logged at DEBUG.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = secrets.token_hex(8)
        seen = {"status": 500, "bytes_out": 0}

        async def record(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                headers = list(message.get("headers", ()))
                if not any(k.lower() == _NOSNIFF[0] for k, _ in headers):
                    message["headers"] = [*headers, _NOSNIFF]
            elif message["type"] == "http.response.body":
                seen["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            _log_request(scope, state, seen, time.perf_counter() - started)


def _log_request(
    scope: Scope, state: dict[str, Any], seen: dict[str, int], seconds: float
) -> None:
    route = scope.get("route")
    fields = {
        "request_id": state.get("request_id"),
        "method": scope.get("method"),
        "route": state.get("route") or getattr(route, "path", None),
        "op": state.get("op"),
        "space": state.get("space"),
        "rel_path": state.get("rel_path"),
        "user_id": state.get("user_id"),
        "status": seen["status"],
        "bytes_in": state.get("bytes_in", 0),
        "bytes_out": seen["bytes_out"],
        "ms": round(seconds * 1000, 2),
    }
    level = logging.WARNING if seen["status"] >= 500 else logging.INFO
    if state.get("log_quietly") and seen["status"] < 400:
        level = logging.DEBUG
    access_log.log(level, "request", extra=fields)

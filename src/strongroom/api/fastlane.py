"""The fast lane: downloads served without the router and dependency machinery.

Design note. A download of a small file is the request a file service answers
most, and through FastAPI's router and dependency solver it spends more time
matching routes and solving dependencies than authenticating, resolving and
reading the file together. This ASGI layer recognises exactly the download route
(`GET`/`HEAD /api/v1/spaces/{space}/files/{path}`, with the same percent-decoded
path the router would match) and answers it by calling the very functions the
routed endpoint calls: `authorize_header`, `open_download`, and the error table
of `api.problems`. Everything else goes on to the app unchanged, and the routed
endpoint stays in place for the OpenAPI document. It sits inside the access-log
and raw-path layers, so it is logged and checked like any request.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from strongroom import errors
from strongroom.api.deps import authorize_header
from strongroom.api.files import open_download
from strongroom.api.problems import strongroom_error_response
from strongroom.api.services import Services
from strongroom.auth.scopes import FILES_READ

__all__ = ["DownloadFastLane"]

# The same shape the router gives `/spaces/{space}/files/{path:path}`: a space is
# one segment, the path is everything after it (possibly empty).
_DOWNLOAD = re.compile(r"/api/v1/spaces/([^/]+)/files/(.*)", re.DOTALL)
# The route template the access log names, as for a routed request.
_ROUTE = "/spaces/{space}/files/{path:path}"


class DownloadFastLane:
    """Answer downloads directly; pass every other request to `app`."""

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if (
            scope["type"] == "http"
            and scope["method"] in ("GET", "HEAD")
            and not scope.get("root_path")
        ):
            match = _DOWNLOAD.fullmatch(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        space, path = match.groups()
        state = scope.setdefault("state", {})
        state.update(op="download", space=space, rel_path=path, route=_ROUTE)
        headers = _headers(scope)
        try:
            user = authorize_header(
                self.services, headers.pop("authorization", []), FILES_READ
            )
            state["user_id"] = user.id
            response = await open_download(
                self.services, user, space, path, _single(headers), scope["method"]
            )
        except errors.StrongroomError as exc:
            await strongroom_error_response(exc)(scope, receive, send)
            return
        await response(scope, receive, send)


def _headers(scope: Scope) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        found.setdefault(name, []).append(raw_value.decode("latin-1"))
    return found


def _single(headers: dict[str, list[str]]) -> dict[str, str]:
    # Conditional and Range headers are read once each; a repeated one is joined
    # as HTTP allows for list-valued fields, which our parsers then refuse or read.
    return {name: ", ".join(values) for name, values in headers.items()}

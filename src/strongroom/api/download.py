"""Serve an open file: validators, conditional requests, one Range, safe headers.

The file arrives as an open descriptor from the confined root or the blob store, so
nothing here ever names a path on disk. The body is read in chunks with pread: small
files in the event loop (a page-cache read of a few KiB costs less than a thread
hop), larger ones in a worker thread per chunk, so memory stays constant whatever the
size. A blob of a store without descriptors (S3) comes as a `BlobReader` instead:
the range is fetched with one request and its chunks are read in worker threads.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import anyio.to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from strongroom.confine import ReadHandle
from strongroom.errors import StrongroomError
from strongroom.storage.blobs import BlobReader
from strongroom.storage.spaces import FileMeta, FileReader

__all__ = [
    "FileInfo",
    "FileResponse",
    "answer_status",
    "content_disposition",
    "content_headers",
    "is_active_type",
    "parse_http_date",
]

# Chunk size for streaming: large enough that a 1 GiB download is 1,024 thread hops,
# small enough that 64 concurrent downloads hold 64 MiB at most.
CHUNK_BYTES = 1 << 20
# Up to this size the whole body is read in the event loop in one pread.
INLINE_READ_BYTES = 64 << 10

# Types a browser would execute or render as a document from our origin: they are
# always sent as attachments (stored XSS otherwise), whatever the client declared.
_ACTIVE_TYPES = frozenset({
    "text/html",
    "application/xhtml+xml",
    "image/svg+xml",
    "text/xml",
    "application/xml",
    "text/javascript",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "text/ecmascript",
    "text/css",
    "application/pdf",
    "text/xsl",
    "application/wasm",
    "multipart/x-mixed-replace",
    "multipart/related",
    "message/rfc822",
    "application/x-mimearchive",
    "application/hta",
    "application/x-shockwave-flash",
    "text/cache-manifest",
})

_SINGLE_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
# Any offset of more digits is past every file; it is not parsed (Python refuses
# integers of over 4,300 digits), only known to be that large.
_OFFSET_DIGITS = 18
_PAST_EVERY_FILE = 10**_OFFSET_DIGITS
# Characters RFC 8187 lets stand unencoded in an ext-value (attr-char).
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"

log = logging.getLogger("strongroom.api")

_SAFETY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "sandbox; default-src 'none'",
    "cross-origin-resource-policy": "same-origin",
}


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What a response needs to know about the file it sends."""

    name: str
    size: int
    mtime_ns: int
    etag: str
    content_type: str

    @classmethod
    def of(cls, meta: FileMeta) -> FileInfo:
        """Describe an opened file from the metadata its space gave with it.

        A directory space's metadata comes from the opened descriptor, a home
        file's from its row (size and SHA-256), so every blob store gives the
        same headers for the same file.
        """
        return cls(
            name=meta.name,
            size=meta.size,
            mtime_ns=meta.mtime_ns,
            etag=meta.etag,
            content_type=meta.content_type or "application/octet-stream",
        )


def is_active_type(content_type: str) -> bool:
    """Tell whether a browser would run or render this type as a document."""
    base = content_type.split(";", 1)[0].strip().lower()
    return base in _ACTIVE_TYPES or base.endswith("+xml")


def content_disposition(disposition: str, name: str) -> str:
    """Build a Content-Disposition value that no file name can break (RFC 6266).

    The quoted `filename` is an ASCII stand-in with quotes, backslashes, controls
    and non-ASCII replaced; `filename*` carries the real name percent-encoded
    (RFC 8187), so CR, LF or `";` in a name can never split the header.
    """
    fallback = "".join(
        c if 0x20 <= ord(c) < 0x7F and c not in '"\\%' else "_" for c in name
    ) or "download"
    encoded = quote(name, safe=_ATTR_CHAR_SAFE, errors="surrogateescape")
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


class FileResponse(Response):
    """An ASGI response that sends an open file, honouring validators and Range.

    Owns `handle` and closes it when the response is done or abandoned. A
    `Response` subclass only so that FastAPI passes it through untouched; it does
    not use the base class's body or header handling.
    """

    def __init__(
        self,
        handle: FileReader,
        info: FileInfo,
        request_headers: Mapping[str, str],
        *,
        method: str = "GET",
    ) -> None:
        self.handle = handle
        self.info = info
        self.method = method
        self.status_code, self.start, self.length = _plan(info, request_headers)
        self.plain_headers = _headers(info, self.status_code, self.start, self.length)
        self.background = None
        self._problem = b""
        if self.status_code == 416:
            self._problem = _range_problem(info, request_headers.get("range", ""))
            del self.plain_headers["content-disposition"]
        elif self.status_code == 412:
            self._problem = _precondition_problem(info)
        if self._problem:
            self.plain_headers["content-type"] = "application/problem+json"
            self.plain_headers["content-length"] = str(len(self._problem))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({
                "type": "http.response.start",
                "status": self.status_code,
                "headers": [
                    (k.encode(), v.encode()) for k, v in self.plain_headers.items()
                ],
            })
            if self.method == "HEAD" or self.status_code == 304:
                await send({"type": "http.response.body", "body": b""})
                return
            if self._problem:
                await send({"type": "http.response.body", "body": self._problem})
                return
            await self._send_body(send)
        finally:
            self.handle.close()

    async def _send_body(self, send: Send) -> None:
        if not isinstance(self.handle, ReadHandle):
            await self._send_stream(send, self.handle)
            return
        fd, offset, remaining = self.handle.fd, self.start, self.length
        if remaining <= INLINE_READ_BYTES:
            body = os.pread(fd, remaining, offset)
            await send({"type": "http.response.body", "body": body})
            return
        while remaining > 0:
            want = min(CHUNK_BYTES, remaining)
            chunk = await anyio.to_thread.run_sync(os.pread, fd, want, offset)
            if not chunk:
                break  # The file shrank under us; the client sees a short body.
            offset += len(chunk)
            remaining -= len(chunk)
            await send({
                "type": "http.response.body", "body": chunk, "more_body": remaining > 0
            })
        if remaining > 0:
            await send({"type": "http.response.body", "body": b""})

    async def _send_stream(self, send: Send, reader: BlobReader) -> None:
        # Each chunk blocks on the network, so it is read in a worker thread;
        # the reader holds one chunk at a time, whatever the range's size.
        chunks, remaining = reader.read_range(self.start, self.length), self.length
        try:
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(_next_chunk, chunks)
                if not chunk:
                    break  # The blob shrank under us; the client sees a short body.
                remaining -= len(chunk)
                await send({
                    "type": "http.response.body", "body": chunk,
                    "more_body": remaining > 0,
                })
        except StrongroomError as exc:
            # The headers are out: all we can do is end the body short, which the
            # client sees against Content-Length (a blob deleted mid-download).
            log.warning("download_cut_short", extra={"reason": str(exc)})
        if remaining > 0:
            await send({"type": "http.response.body", "body": b""})


def _next_chunk(chunks: Iterator[bytes]) -> bytes:
    return next(chunks, b"")


def answer_status(info: FileInfo, headers: Mapping[str, str]) -> int:
    """Return the status a download of `info` gets: 200, 206, 304, 412 or 416."""
    return _plan(info, headers)[0]


def _plan(info: FileInfo, headers: Mapping[str, str]) -> tuple[int, int, int]:
    """Decide (status, first byte, length) from the conditional and Range headers.

    In RFC 9110's order (13.2.2): If-Match or If-Unmodified-Since (412), then
    If-None-Match or If-Modified-Since (304), then Range.
    """
    if not _preconditions_hold(info, headers):
        return 412, 0, 0
    if _not_modified(info, headers):
        return 304, 0, 0
    range_header = headers.get("range")
    if range_header is None or not _if_range_holds(info, headers.get("if-range")):
        return 200, 0, info.size
    match = _SINGLE_RANGE.fullmatch(range_header.strip())
    if match is None:
        # Several ranges or bad syntax: RFC 9110 lets us ignore Range and send all,
        # which also closes the door on overlapping-range amplification.
        return 200, 0, info.size
    first, last = match.groups()
    if not first and not last:
        return 200, 0, info.size
    if not first:
        suffix = _offset(last)
        if suffix == 0 or info.size == 0:
            return 416, 0, 0
        start = max(info.size - suffix, 0)
        return 206, start, info.size - start
    start = _offset(first)
    end = min(_offset(last), info.size - 1) if last else info.size - 1
    if last and _offset(last) < start:
        return 200, 0, info.size
    if start >= info.size:
        return 416, 0, 0
    return 206, start, end - start + 1


def _offset(digits: str) -> int:
    """A Range offset; one too long to be a real offset counts as past every file."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _OFFSET_DIGITS else _PAST_EVERY_FILE


def _preconditions_hold(info: FileInfo, headers: Mapping[str, str]) -> bool:
    if_match = headers.get("if-match")
    if if_match is not None:
        # Strong comparison: a weak tag (W/...) never matches.
        tags = {t.strip() for t in if_match.split(",")}
        return "*" in tags or info.etag in tags
    since = parse_http_date(headers.get("if-unmodified-since"))
    return since is None or info.mtime_ns // 1_000_000_000 <= since


def parse_http_date(text: str | None) -> int | None:
    """Return the seconds since the epoch of an HTTP date; None when absent or
    not one of RFC 9110's three forms (a read ignores such a date, as the RFC
    asks; a write refuses it). Only GMT is a time zone here."""
    if text is None:
        return None
    text = text.strip()
    for form in _HTTP_DATE_FORMS:
        found = form.fullmatch(text)
        if found is None:
            continue
        parts = found.groupdict()
        year = int(parts["year"])
        if len(parts["year"]) == 2:  # RFC 850's two digits: the nearest century
            year += 2000 if year < 70 else 1900
        try:
            when = datetime(
                year, _MONTHS.index(parts["month"]) + 1, int(parts["day"]),
                int(parts["hour"]), int(parts["minute"]), int(parts["second"]),
                tzinfo=UTC,
            )
        except ValueError:
            return None
        return int(when.timestamp())
    return None


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
           "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "(?P<month>" + "|".join(_MONTHS) + ")"
_CLOCK = r"(?P<hour>\d\d):(?P<minute>\d\d):(?P<second>\d\d)"
# RFC 9110, 5.6.7: IMF-fixdate, then the obsolete RFC 850 and asctime forms.
_HTTP_DATE_FORMS = (
    re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (?P<day>\d\d) " + _MONTH
               + r" (?P<year>\d{4}) " + _CLOCK + " GMT", re.ASCII),
    re.compile(r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), "
               r"(?P<day>\d\d)-" + _MONTH + r"-(?P<year>\d\d) " + _CLOCK + " GMT",
               re.ASCII),
    re.compile(r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) " + _MONTH
               + r" (?P<day>[ \d]\d) " + _CLOCK + r" (?P<year>\d{4})", re.ASCII),
)


def _not_modified(info: FileInfo, headers: Mapping[str, str]) -> bool:
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return "*" in tags or info.etag in tags
    since = parse_http_date(headers.get("if-modified-since"))
    return since is not None and since >= info.mtime_ns // 1_000_000_000


def _if_range_holds(info: FileInfo, if_range: str | None) -> bool:
    if if_range is None:
        return True
    if if_range.startswith('"') or if_range.startswith("W/"):
        return if_range.strip() == info.etag
    return if_range.strip() == _http_date(info.mtime_ns)


def _headers(info: FileInfo, status: int, start: int, length: int) -> dict[str, str]:
    headers = {
        "etag": info.etag,
        "last-modified": _http_date(info.mtime_ns),
        "accept-ranges": "bytes",
        **_SAFETY_HEADERS,
    }
    if status in (304, 412):
        return headers
    headers.update(content_headers(info))
    headers["content-length"] = str(length)
    if status == 206:
        headers["content-range"] = f"bytes {start}-{start + length - 1}/{info.size}"
    elif status == 416:
        headers["content-range"] = f"bytes */{info.size}"
    return headers


def content_headers(info: FileInfo) -> dict[str, str]:
    """Return the type, disposition and safety headers of a file's content.

    Active types (see `is_active_type`) are always attachments.
    """
    active = is_active_type(info.content_type)
    return {
        "content-type": info.content_type,
        "content-disposition": content_disposition(
            "attachment" if active else "inline", info.name
        ),
        **_SAFETY_HEADERS,
    }


def _precondition_problem(info: FileInfo) -> bytes:
    body = {
        "type": "about:blank#precondition_failed",
        "title": "Precondition Failed",
        "status": 412,
        "code": "precondition_failed",
        "detail": f"{info.name!r} has changed since the version named in If-Match "
        "or If-Unmodified-Since; read its current ETag and ask again",
    }
    return json.dumps(body).encode("utf-8")


def _range_problem(info: FileInfo, range_header: str) -> bytes:
    detail = (
        f"the range {range_header[:100]!r} starts beyond the end of the "
        f"{info.size}-byte file; ask for bytes 0-{max(info.size - 1, 0)}"
    )
    body = {
        "type": "about:blank#range_not_satisfiable",
        "title": "Range Not Satisfiable",
        "status": 416,
        "code": "range_not_satisfiable",
        "detail": detail,
    }
    return json.dumps(body).encode("utf-8")


def _http_date(mtime_ns: int) -> str:
    return email.utils.formatdate(mtime_ns / 1_000_000_000, usegmt=True)

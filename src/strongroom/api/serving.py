"""The HTTP/1.1 connection handler that `strongroom serve` runs: bounds on clients.

Design note. uvicorn's httptools handler waits as long as a client likes: a
connection that sends nothing, a request head sent a byte a second, or a body that
stops half-way each hold a socket and, for a body, an upload in progress, for
ever; uvicorn bounds only the idle time between two requests (keep-alive). A few
hundred such clients exhaust descriptors while doing almost no work, so a proxy in
front cannot be assumed. The obvious fix, a timeout around the app's `receive`
call, comes too late: the head is parsed before the app runs, and an app that
reads slowly (a busy disk) would look like a slow client. So the deadlines live
in the connection handler, one timer per connection:

- head: the request line and headers must be complete `head_seconds` after the
  connection opens, or after the request's first byte on a kept-alive one;
- body: no `body_idle_seconds` may pass without a body byte, and once
  `body_idle_seconds` have passed the average rate must stay above
  `body_min_bytes_per_second` (a byte a second never goes idle, yet never ends).

Only the client's time counts: while we stop reading (uvicorn pauses the socket
when the app has not taken the last chunk) or the client waits for our
`100 Continue`, the body clock stands still. A late client gets a 408
problem+json with `Connection: close`; an upload in progress sees the client
leave (`http.disconnect`), so the app discards what it had staged exactly as for
a client that hung up. A connection that never sent a byte is closed without an
answer, as uvicorn closes an idle kept-alive one. A fast client has the
opposite trick, megabytes of headers well within the deadline, which httptools
would hold in full: past `MAX_HEAD_BYTES` of head it gets a 431 and a close.
We do not bound how slowly a client reads an answer: the transport's write
buffer bounds its memory and the keep-alive timer starts once the answer is out.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import json
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from strongroom.api.problems import PROBLEM_TYPE
from strongroom.config import Settings, load_settings

__all__ = [
    "MAX_HEAD_BYTES",
    "PROTOCOL_FROM_ENVIRONMENT",
    "DeadlineProtocol",
    "RequestDeadlines",
    "deadlines_of",
    "protocol_for",
]

# For `uvicorn --http`: the handler that reads its deadlines from the same
# `STRONGROOM_CONFIG` and variables as `create_app_from_environment`.
PROTOCOL_FROM_ENVIRONMENT = "strongroom.api.serving:DeadlineProtocol"
# After refusing a request (408, 431) we stop sending and read (and drop) what
# the client still sends for this long before closing: closing with unread
# bytes makes the kernel send a reset, which can destroy the answer before the
# client reads it.
LINGER_SECONDS = 2.0
# The most a request line and headers may take, in bytes. httptools sets no
# bound, so a client could send megabytes of headers within the head deadline
# and the parser would hold them all. A bearer token is about 1 KiB; nginx's
# default buffers take 32 KiB; twice that leaves room for any honest client.
MAX_HEAD_BYTES = 64 * 1024

log = logging.getLogger("strongroom.api.serving")


@dataclass(frozen=True)
class RequestDeadlines:
    """How long a client may take over each part of a request (see the module)."""

    head_seconds: float
    body_idle_seconds: float
    body_min_bytes_per_second: int
    keep_alive_seconds: float


def deadlines_of(settings: Settings) -> RequestDeadlines:
    """Return the deadlines that `settings` asks for."""
    return RequestDeadlines(
        head_seconds=settings.request_head_timeout_seconds,
        body_idle_seconds=settings.request_body_idle_seconds,
        body_min_bytes_per_second=settings.request_body_min_bytes_per_second,
        keep_alive_seconds=settings.keep_alive_timeout_seconds,
    )


def protocol_for(settings: Settings) -> type[DeadlineProtocol]:
    """Return a `DeadlineProtocol` class bound to the deadlines of `settings`.

    For `uvicorn.run(http=...)` in one process; a class made here cannot be sent
    to worker processes, which use `PROTOCOL_FROM_ENVIRONMENT` instead.
    """
    chosen = deadlines_of(settings)

    class BoundDeadlineProtocol(DeadlineProtocol):
        deadlines = chosen

    return BoundDeadlineProtocol


class _Phase(enum.Enum):
    IDLE = "idle"  # no request being received: the app works, or keep-alive
    HEAD = "head"
    BODY = "body"
    LINGER = "linger"  # a 408 went out; the connection is closing


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools handler with a head deadline and a body deadline.

    `deadlines` is set on the class by `protocol_for`; left unset, it is read
    once per process from the environment (`STRONGROOM_CONFIG` and the
    `STRONGROOM_*` variables). Not safe to share across event loops, like
    the handler it extends.
    """

    deadlines: ClassVar[RequestDeadlines | None] = None

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadlines = self.deadlines or _deadlines_from_environment()
        self.timeout_keep_alive = self._deadlines.keep_alive_seconds  # type: ignore[assignment]
        self._phase = _Phase.IDLE
        self._timer: asyncio.TimerHandle | None = None
        self._head_deadline = 0.0
        self._head_has_bytes = False
        self._head_bytes = 0
        self._body_started = 0.0  # on the client clock (`_client_time`)
        self._last_body_byte = 0.0
        self._body_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Start the head deadline: a new connection owes us a request."""
        super().connection_made(transport)
        self.flow = _TimedFlowControl(transport)
        self._start_head()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the timer with the connection."""
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Feed the parser, unless a 408 is on its way out."""
        if self._phase is _Phase.LINGER:
            return
        if self._phase is _Phase.IDLE and self._is_between_requests():
            self._start_head()
        if self._phase is _Phase.HEAD and data:
            self._head_has_bytes = True
            self._head_bytes += len(data)
        super().data_received(data)
        # Still in the head after this read: the parser holds all of it so far.
        if self._phase is _Phase.HEAD and self._head_bytes > MAX_HEAD_BYTES:
            if self._is_between_requests():
                self._refuse_large_head()
            else:
                # A pipelined head while an answer is going out: read no more
                # of it until the answer is done, then refuse it.
                self.flow.pause_reading()

    def on_message_begin(self) -> None:
        """Start the head deadline of a request on a kept-alive connection."""
        super().on_message_begin()
        if self._phase is _Phase.IDLE:
            self._start_head()
        self._head_has_bytes = True

    def on_headers_complete(self) -> None:
        """End the head deadline and start the body's."""
        super().on_headers_complete()
        self._phase = _Phase.BODY
        self._body_started = self._last_body_byte = self._client_time()
        self._body_bytes = 0
        self._arm(self._deadlines.body_idle_seconds)

    def on_body(self, body: bytes) -> None:
        """Count the body's bytes and when the last one came."""
        self._body_bytes += len(body)
        self._last_body_byte = self._client_time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        """The request is in: no deadline until the next one starts."""
        super().on_message_complete()
        self._phase = _Phase.IDLE
        self._cancel_timer()

    def handle_websocket_upgrade(self) -> None:
        """Hand the connection to the WebSocket handler, without our deadlines."""
        self._phase = _Phase.IDLE
        self._cancel_timer()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        """Answer what the parser could not read with a problem, like every error.

        uvicorn calls this for a request that is not HTTP/1.1 as it reads it (an
        unknown method, a broken request line or header, a raw byte that may not
        be in a path, Content-Length repeated or beside Transfer-Encoding); its
        own answer is plain text.
        """
        detail = ("the request is not valid HTTP/1.1: a malformed request line or "
                  "header, an unknown method, or conflicting Content-Length and "
                  "Transfer-Encoding headers; nothing was done")
        self._refuse(400, "Bad Request", "malformed_request", detail)

    def _is_between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _start_head(self) -> None:
        self._phase = _Phase.HEAD
        self._head_has_bytes = False
        self._head_bytes = 0
        self._head_deadline = self.loop.time() + self._deadlines.head_seconds
        self._arm(self._deadlines.head_seconds)

    def _arm(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self.loop.call_later(max(delay, 0.0), self._check)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _client_time(self) -> float:
        # Time in which the client could have sent: our pauses do not count.
        flow = self.flow
        assert isinstance(flow, _TimedFlowControl)
        return self.loop.time() - flow.held_seconds(self.loop.time())

    def _check(self) -> None:
        self._timer = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._phase is _Phase.HEAD:
            self._check_head()
        elif self._phase is _Phase.BODY:
            self._check_body()

    def _check_head(self) -> None:
        left = self._head_deadline - self.loop.time()
        if left > 0:
            self._arm(left)
        elif not self._is_between_requests():
            # The next request's head came with the current one still being
            # answered; a 408 now would cut that answer. Judge it afterwards.
            self._arm(self._deadlines.head_seconds)
        elif not self._head_has_bytes:
            log.debug("connection_idle_closed", extra={"client": self._peer()})
            self.transport.close()
        else:
            self._time_out("head", "the request line and headers")

    def _check_body(self) -> None:
        if self._is_held_by_us():
            # Our own wait (a paused socket, a 100 Continue not sent yet) is
            # not the client's: start its clocks afresh once we are ready.
            self._body_started = self._last_body_byte = self._client_time()
            self._arm(self._deadlines.body_idle_seconds)
            return
        left = self._body_time_left()
        if left > 0:
            self._arm(left)
        elif self.cycle is not None and self.cycle.response_started:
            # The app has answered (or is answering) without the rest of the
            # body; nobody is waiting for it, so the connection just ends.
            self.transport.close()
        else:
            self._time_out("body", "the request body")

    def _is_held_by_us(self) -> bool:
        flow = self.flow
        assert isinstance(flow, _TimedFlowControl)
        waiting = self.cycle is not None and self.cycle.waiting_for_100_continue
        return flow.read_paused or waiting

    def _body_time_left(self) -> float:
        now = self._client_time()
        deadlines = self._deadlines
        left = self._last_body_byte + deadlines.body_idle_seconds - now
        if deadlines.body_min_bytes_per_second > 0:
            # After a grace as long as the idle bound, each second must have
            # brought its share of bytes on average.
            earned = self._body_bytes / deadlines.body_min_bytes_per_second
            rate_end = self._body_started + deadlines.body_idle_seconds + earned
            left = min(left, rate_end - now)
        return left

    def _time_out(self, part: str, what: str) -> None:
        received = self._head_bytes if part == "head" else self._body_bytes
        log.warning(
            "request_timed_out",
            extra={"part": part, "client": self._peer(), "bytes": received},
        )
        cycle = self.cycle
        if part == "body" and cycle is not None:
            # The app sees the client leave and discards the partial upload.
            cycle.disconnected = True
            cycle.message_event.set()
        detail = (f"{what} did not arrive in time; nothing was stored. Send the "
                  "request again, without pauses.")
        self._refuse(408, "Request Timeout", "request_timeout", detail)

    def _refuse_large_head(self) -> None:
        log.warning("request_head_too_large",
                    extra={"client": self._peer(), "bytes": self._head_bytes})
        detail = (f"the request line and headers are over {MAX_HEAD_BYTES} bytes; "
                  "send fewer or shorter headers")
        self._refuse(431, "Request Header Fields Too Large",
                     "request_head_too_large", detail)

    def _refuse(self, status: int, title: str, code: str, detail: str) -> None:
        body = json.dumps({
            "type": f"about:blank#{code}",
            "title": title,
            "status": status,
            "code": code,
            "detail": detail,
        }).encode()
        head = [f"HTTP/1.1 {status} {title}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: " + PROBLEM_TYPE.encode() + b"\r\n")
        head.append(b"content-length: %d\r\n" % len(body))
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self._linger()

    def _linger(self) -> None:
        self._phase = _Phase.LINGER
        self._cancel_timer()
        # Whatever part of a head the parser holds is dead weight now.
        self.parser = httptools.HttpRequestParser(self)
        self.headers = []
        self.url = b""
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_SECONDS, self._close_now)

    def _close_now(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"


class _TimedFlowControl(FlowControl):
    """uvicorn's flow control, which also adds up how long reading was paused."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__(transport)
        self._loop = asyncio.get_running_loop()
        self._held = 0.0
        self._paused_at: float | None = None

    def pause_reading(self) -> None:
        """Stop reading the socket, and start counting the time it stays so."""
        if not self.read_paused:
            self._paused_at = self._loop.time()
        super().pause_reading()

    def resume_reading(self) -> None:
        """Read the socket again, adding the pause to the total."""
        if self.read_paused and self._paused_at is not None:
            self._held += self._loop.time() - self._paused_at
            self._paused_at = None
        super().resume_reading()

    def held_seconds(self, now: float) -> float:
        """Return the seconds reading has been paused so far, up to `now`."""
        current = now - self._paused_at if self._paused_at is not None else 0.0
        return self._held + current


@functools.cache
def _deadlines_from_environment() -> RequestDeadlines:
    # Read on the first connection, not at import: the same sources as
    # `create_app_from_environment`, once per process.
    return deadlines_of(load_settings(None))

"""A loopback TCP relay in front of the server that can cut the connections.

The browser loads the page through the relay, so every request of the page
passes through it. `cut_after(n)` arms it: once `n` more bytes have gone from
the browser to the server, every open connection is reset at once (RST, as a
dropped network does to a client), mid-request, and new connections are reset
as they come until `restore()`: the line stays down. That is the interruption
the resumable-upload tests need, at a byte count they choose, with no sleeping.

Each connection is a pair of sockets and a pump thread per direction. A socket
is closed only once both pumps of its pair have stopped, and under the relay's
lock, so no thread ever reads from or shuts down a descriptor number that the
kernel has since handed to a newer connection.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

# Bytes moved per read: small enough that a cut lands close to the byte count.
_CHUNK_BYTES = 64 * 1024
# SO_LINGER on with a zero timeout: close() then sends RST instead of FIN.
_ABORTIVE_CLOSE = struct.pack("ii", 1, 0)


class CuttingProxy:
    """Relay 127.0.0.1:`port` to 127.0.0.1:`upstream_port`; cut on request."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._links: set[_Link] = set()
        self._budget: int | None = None
        self._cut = threading.Event()
        self._down = False

    def __enter__(self) -> CuttingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._listener.close()
        self._reset_all()

    def cut_after(self, request_bytes: int) -> threading.Event:
        """Go down once `request_bytes` more have gone upstream.

        Returns an event that is set when the cut has happened.
        """
        with self._lock:
            self._budget = request_bytes
            self._cut.clear()
        return self._cut

    def restore(self) -> None:
        """Relay new connections again after a cut."""
        with self._lock:
            self._down = False

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORTIVE_CLOSE)
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            link = _Link(client, upstream)
            with self._lock:
                self._links.add(link)
            for source, sink, counted in ((client, upstream, True),
                                          (upstream, client, False)):
                threading.Thread(target=self._pump, args=(link, source, sink, counted),
                                 daemon=True).start()

    def _pump(self, link: _Link, source: socket.socket, sink: socket.socket,
              counted: bool) -> None:
        try:
            while data := source.recv(_CHUNK_BYTES):
                if counted and self._spend(len(data)):
                    self._reset_all()
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._stop_pump(link, sink)

    def _stop_pump(self, link: _Link, sink: socket.socket) -> None:
        with self._lock:
            if not link.doomed:
                # Pass a close on to the other side; its pump then ends too.
                with contextlib.suppress(OSError):
                    sink.shutdown(socket.SHUT_WR)
            link.running -= 1
            if link.running == 0:
                self._links.discard(link)
                for sock in link.sockets:
                    sock.close()

    def _spend(self, count: int) -> bool:
        with self._lock:
            if self._budget is None:
                return False
            self._budget -= count
            if self._budget > 0:
                return False
            self._budget = None
            return True

    def _reset_all(self) -> None:
        with self._lock:
            self._down = True
            for link in self._links:
                link.doomed = True
                for sock in link.sockets:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        _ABORTIVE_CLOSE)
                    # Wakes the pump blocked in recv(); sends nothing yet.
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RD)
        self._cut.set()


class _Link:
    """The two sockets of one relayed connection and how many pumps still run."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.sockets = (client, upstream)
        self.running = 2
        self.doomed = False

"""Raw HTTP over a socket, for clients that an HTTP library would not imitate.

A slow client pauses mid-head, sends a body a byte at a time, or opens a
connection and says nothing; these helpers build its bytes and read the server's
answer straight off the socket.
"""

from __future__ import annotations

import json
import socket

from live_server import LiveServer

# A socket read never waits longer than this; a test that hits it has failed.
READ_SECONDS = 15.0


def request_head(server: LiveServer, method: str, path: str,
                 length: int | None = None, user: str = "alice") -> bytes:
    """Return a request head with `user`'s token, and a Content-Length if given."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
             f"Authorization: Bearer {server.tokens[user]}"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(server: LiveServer) -> socket.socket:
    """Open a raw connection that waits at most READ_SECONDS for any read."""
    return socket.create_connection(("127.0.0.1", server.port), timeout=READ_SECONDS)


def read_until_closed(sock: socket.socket) -> bytes:
    """Return every byte the server sends until it closes (or resets)."""
    answer = b""
    try:
        while chunk := sock.recv(1 << 16):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def read_answer(sock: socket.socket) -> bytes:
    """Return one answer with a Content-Length body, leaving the socket open.

    For one request at a time: bytes past the answer (a pipelined one) are lost.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(header_of(data, "content-length") or 0)
    while len(body) < length:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def status_of(answer: bytes) -> int:
    """Return the status code of a raw answer (0 for none)."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def header_of(answer: bytes, name: str) -> str | None:
    """Return one header (lowercase `name`) of a raw answer; None when absent."""
    head = answer.partition(b"\r\n\r\n")[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            return value.strip()
    return None


def problem_of(answer: bytes) -> dict[str, object]:
    """Decode the problem+json body of a raw answer."""
    problem = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert isinstance(problem, dict)
    return problem

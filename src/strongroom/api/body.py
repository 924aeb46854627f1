"""Read a request body into a sink, under a size limit, overlapping disk and network."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import anyio.to_thread
from fastapi import Request
from starlette.requests import ClientDisconnect

from strongroom.errors import IncompleteUploadError, LimitExceededError

__all__ = ["WRITE_BATCH_BYTES", "receive_body"]

# Bodies are written in batches of this size, in a worker thread, so a slow disk
# never stalls the event loop and a request holds at most two batches in memory.
WRITE_BATCH_BYTES = 1 << 20


async def receive_body(
    request: Request, write: Callable[[bytes], object], limit: int, what: str
) -> int:
    """Stream the body into `write`; return its size in bytes.

    Each batch is written in a worker thread while the next one arrives from the
    socket. Raises `LimitExceededError` once more than `limit` bytes arrived and
    `IncompleteUploadError` when the client leaves mid-body; a write in flight is
    finished first, so the caller may clean up its sink at once. `what` names the
    request in messages ("upload", "import").
    """
    batch: list[bytes] = []
    batch_bytes = received = 0
    pending: asyncio.Task[object] | None = None
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise LimitExceededError(
                    f"{what} refused: the body is over the {limit}-byte limit; "
                    "raise max_upload_bytes or send less"
                )
            batch.append(chunk)
            batch_bytes += len(chunk)
            if batch_bytes >= WRITE_BATCH_BYTES:
                if pending is not None:
                    await pending
                pending = _write_soon(write, b"".join(batch))
                batch, batch_bytes = [], 0
        if pending is not None:
            await pending
        if batch:
            await anyio.to_thread.run_sync(write, b"".join(batch))
        return received
    except ClientDisconnect:
        await _settle(pending)
        raise IncompleteUploadError(
            f"the client closed the connection after {received} bytes; nothing "
            "was stored"
        ) from None
    except BaseException:
        await _settle(pending)
        raise


def _write_soon(
    write: Callable[[bytes], object], data: bytes
) -> asyncio.Task[object]:
    return asyncio.ensure_future(anyio.to_thread.run_sync(write, data))


async def _settle(pending: asyncio.Task[object] | None) -> None:
    # Let a write in flight finish before the caller cleans up its sink; that
    # write's own error, if any, is beside the point now.
    if pending is not None:
        with contextlib.suppress(BaseException):
            await pending

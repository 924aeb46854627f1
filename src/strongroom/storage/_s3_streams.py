"""The S3 calls behind `S3BlobStore`: a blob's writer and reader, and error mapping.

Mechanics only; the store (`s3blobs`) decides keys and hands each writer or reader
its client, bucket and key. The design (one part in memory, conditional writes,
one ranged GetObject per range) is described there.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self

from botocore.client import BaseClient  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.response import StreamingBody  # type: ignore[import-untyped]

from strongroom.errors import (
    LimitExceededError,
    PathNotFoundError,
    StorageError,
    StoreUnavailableError,
)
from strongroom.storage.blobs import BlobInfo, over_limit_error

# Failures that say the store is not there, rather than that it refused.
_UNREACHABLE = (
    EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
    ConnectionClosedError,
)

__all__ = [
    "MAX_PARTS",
    "READ_CHUNK_BYTES",
    "S3BlobReader",
    "S3BlobWriter",
    "error_code",
    "s3_errors",
    "storage_error",
]

# S3 numbers parts 1 to 10,000.
MAX_PARTS = 10_000
# Bytes read from a response body at a time: the chunk a download sends on.
READ_CHUNK_BYTES = 1 << 20

log = logging.getLogger("strongroom.storage")

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# What to do about the answers an operator can fix.
_HINTS = {
    "NoSuchBucket": "create the bucket or correct blob_store_url",
    "AccessDenied": "check the key's permissions on the bucket",
    "InvalidAccessKeyId": "check s3_access_key_id",
    "SignatureDoesNotMatch": "check s3_secret_access_key",
    "PreconditionFailed": "a blob with this id already exists",
}


class S3BlobWriter:
    """A blob being written: one part in memory, the rest already in the store.

    Nothing is visible under the blob's key before `commit`; `abort`, or leaving
    a `with` block without `commit`, aborts the multipart upload (if one began).
    """

    def __init__(
        self,
        client: BaseClient,
        bucket: str,
        key: str,
        blob_id: str,
        *,
        part_bytes: int,
        max_bytes: int | None,
    ) -> None:
        self.blob_id = blob_id
        self.size = 0
        self._client = client
        self._bucket = bucket
        self._key = key
        self._part_bytes = part_bytes
        self._max_bytes = max_bytes
        self._part = bytearray()
        self._upload_id: str | None = None
        self._etags: list[str] = []
        self._hash = hashlib.sha256()
        self._done = False

    def write(self, data: bytes | memoryview) -> None:
        """Append `data`; every part that fills up is sent before this returns.

        Raises:
            LimitExceededError: the blob would exceed `max_bytes`, or the most a
                multipart upload can hold; the writer is aborted.
            StorageError: the store failed (the writer is aborted).
        """
        if self._done:
            raise StorageError(f"blob {self.blob_id} is no longer being written")
        self._check_limits(len(data))
        self._hash.update(data)
        self.size += len(data)
        view = memoryview(data).cast("B")
        try:
            while view:
                room = self._part_bytes - len(self._part)
                self._part += view[:room]
                view = view[room:]
                if len(self._part) == self._part_bytes:
                    self._send_part()
        except StorageError:
            self.abort()
            raise

    def commit(self) -> BlobInfo:
        """Store the blob and return its id, size and SHA-256.

        Raises:
            StorageError: the store failed or the id is taken; nothing is kept.
        """
        if self._done:
            raise StorageError(f"blob {self.blob_id} is no longer being written")
        try:
            if self._upload_id is None:
                self._put_whole()
            else:
                self._complete()
        except StorageError:
            self.abort()
            raise
        self._done = True
        self._part = bytearray()
        return BlobInfo(self.blob_id, self.size, self._hash.hexdigest())

    def abort(self) -> None:
        """Discard what was written (idempotent; a no-op after `commit`).

        A failure to abort the upload is logged, not raised: the upload is left
        for `S3BlobStore.remove_crash_leftovers`.
        """
        if self._done:
            return
        self._done = True
        self._part = bytearray()
        if self._upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id
            )
        except (BotoCoreError, ClientError) as exc:
            log.warning("blob_upload_abort_failed",
                        extra={"blob_id": self.blob_id, "reason": _reason(exc)})

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    def _check_limits(self, adding: int) -> None:
        if self._max_bytes is not None and self.size + adding > self._max_bytes:
            self.abort()
            raise over_limit_error(self._max_bytes)
        most = self._part_bytes * MAX_PARTS
        if self.size + adding > most:
            self.abort()
            raise LimitExceededError(
                f"upload refused: the S3 blob store holds at most {most} bytes "
                "per file; send a smaller file"
            )

    def _send_part(self) -> None:
        with s3_errors(f"blob {self.blob_id} cannot be written"):
            if self._upload_id is None:
                started = self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._key
                )
                self._upload_id = str(started["UploadId"])
            sent = self._client.upload_part(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                PartNumber=len(self._etags) + 1, Body=self._part,
            )
        self._etags.append(str(sent["ETag"]))
        # A new buffer, not clear(): the old one is freed once the request drops it.
        self._part = bytearray()

    def _put_whole(self) -> None:
        with s3_errors(f"blob {self.blob_id} cannot be stored"):
            self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=bytes(self._part),
                IfNoneMatch="*",
            )

    def _complete(self) -> None:
        if self._part:
            self._send_part()
        parts = [
            {"ETag": etag, "PartNumber": number}
            for number, etag in enumerate(self._etags, start=1)
        ]
        with s3_errors(f"blob {self.blob_id} cannot be stored"):
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                MultipartUpload={"Parts": parts}, IfNoneMatch="*",
            )


class S3BlobReader:
    """An open blob of an `S3BlobStore`: a `BlobReader`.

    Holds no connection until it reads; `close` releases any response body it
    still has open. For one thread at a time.
    """

    def __init__(
        self, client: BaseClient, bucket: str, key: str, blob_id: str, size: int
    ) -> None:
        self._client = client
        self._bucket = bucket
        self._key = key
        self._blob_id = blob_id
        self._size = size
        self._offset = 0
        self._stream: StreamingBody | None = None
        self._open_bodies: set[StreamingBody] = set()

    @property
    def size(self) -> int:
        """The blob's size in bytes, as HeadObject reported it."""
        return self._size

    def presigned_url(
        self, ttl_seconds: int, content_type: str, content_disposition: str
    ) -> str:
        """Return a URL that lets its holder GET this blob for `ttl_seconds`.

        Signed locally (no request is made). The store answers the download
        with the given type and disposition, so a browser treats it exactly as
        one sent by the app; Range requests go to the store directly.
        """
        params = {
            "Bucket": self._bucket,
            "Key": self._key,
            "ResponseContentType": content_type,
            "ResponseContentDisposition": content_disposition,
        }
        with s3_errors(f"blob {self._blob_id} cannot be signed"):
            url: str = self._client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=ttl_seconds
            )
        return url

    def read(self, n: int = -1) -> bytes:
        """Read up to `n` bytes from where the last read ended (-1: to the end).

        The first read opens one GetObject for the rest of the blob; later reads
        go on reading its body. An empty result means the end.

        Raises:
            PathNotFoundError: the blob was deleted since `open_blob`.
            StorageError: the store failed.
        """
        if n == 0 or self._offset >= self._size:
            return b""
        if self._stream is None:
            self._stream = self._get(f"bytes={self._offset}-")
        with s3_errors(f"blob {self._blob_id} cannot be read"):
            data = bytes(self._stream.read() if n < 0 else self._stream.read(n))
        self._offset += len(data)
        return data

    def read_range(self, offset: int, length: int) -> Iterator[bytes]:
        """Yield `length` bytes from `offset` on, in chunks of `READ_CHUNK_BYTES`.

        One ranged GetObject, sent when the first chunk is asked for.

        Raises:
            PathNotFoundError: the blob was deleted since `open_blob`.
            StorageError: the store failed.
        """
        if length <= 0:
            return
        body = self._get(f"bytes={offset}-{offset + length - 1}")
        remaining = length
        try:
            chunks = body.iter_chunks(READ_CHUNK_BYTES)
            while remaining > 0:
                with s3_errors(f"blob {self._blob_id} cannot be read"):
                    chunk = bytes(next(chunks, b""))
                if not chunk:
                    return
                # A store that ignored the Range would send more: cut it off.
                chunk = chunk[:remaining]
                remaining -= len(chunk)
                yield chunk
        finally:
            self._release(body)

    def close(self) -> None:
        """Release every response body still open (idempotent)."""
        for body in list(self._open_bodies):
            self._release(body)
        self._stream = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _get(self, byte_range: str) -> StreamingBody:
        try:
            answer = self._client.get_object(
                Bucket=self._bucket, Key=self._key, Range=byte_range
            )
        except ClientError as exc:
            if is_not_found(exc):
                raise PathNotFoundError(
                    "read", self._blob_id, "the blob is gone"
                ) from None
            raise storage_error(f"blob {self._blob_id} cannot be read", exc) from exc
        except BotoCoreError as exc:
            raise storage_error(f"blob {self._blob_id} cannot be read", exc) from exc
        body: StreamingBody = answer["Body"]
        self._open_bodies.add(body)
        return body

    def _release(self, body: StreamingBody) -> None:
        self._open_bodies.discard(body)
        body.close()


@contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Turn a failure of a botocore call into StorageError("what: reason")."""
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise storage_error(what, exc) from exc


def storage_error(what: str, exc: BotoCoreError | ClientError) -> StorageError:
    """Return the StorageError for a failed call: what failed, and why.

    A store that cannot be reached at all (refused, timed out, cut off) gives a
    StoreUnavailableError, which clients see as a 503 to retry.
    """
    if isinstance(exc, _UNREACHABLE):
        return StoreUnavailableError(f"{what}: {_reason(exc)}")
    return StorageError(f"{what}: {_reason(exc)}")


def error_code(exc: ClientError) -> str:
    """Return the store's error code ("NoSuchKey", "404", ...)."""
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def is_not_found(exc: ClientError) -> bool:
    """Tell whether the store answered that the key does not exist."""
    return error_code(exc) in _NOT_FOUND_CODES


def _reason(exc: BotoCoreError | ClientError) -> str:
    # The store's error code, with the fix when the operator can make one; a
    # connection failure names the endpoint. Neither ever holds a credential.
    if isinstance(exc, ClientError):
        code = error_code(exc)
        hint = _HINTS.get(code)
        return f"the S3 store answered {code}" + (f"; {hint}" if hint else "")
    return str(exc)

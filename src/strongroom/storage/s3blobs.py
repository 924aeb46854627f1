"""Blobs in an S3 bucket (AWS or any S3-compatible store), streamed both ways.

Why boto3, called from worker threads, and not an async client: every caller of a
`BlobStore` is synchronous code that already runs in a worker thread (uploads,
archive imports, folder zips, `strongroom check`, the CLI), just as the local
store's file-system calls do. An async client (aiobotocore) would need a second,
async path through each of them, or an event loop per thread, and would gain
nothing: a thread waiting on S3 costs what a thread waiting on a disk does,
boto3's low-level client is thread-safe, and one connection pool serves every
thread. Downloads read one chunk per worker-thread hop (`api.download`), so the
event loop never waits on the network.

Layout: a blob is the object "<prefix>/ab/cd/<blob id>", the local store's
sharding, which keeps listings readable. A blob id is checked (32 lowercase hex
digits) before any request, so nothing else can ever become part of a key.

Writing keeps one part (`PART_BYTES`) in memory. A blob smaller than a part is a
single PutObject at `commit`; a larger one becomes a multipart upload, started
when its first part is full, whose parts go out as they fill. Size and SHA-256 are
computed as the bytes pass, and `max_bytes` is enforced before a byte over it is
buffered. Every write is conditional (`If-None-Match: *`), so a blob is never
replaced. A writer that dies leaves an unfinished multipart upload: never visible
as an object, but it holds space until `remove_crash_leftovers` aborts it.

Reading: `open_blob` asks for the size (HeadObject), so a missing blob is known
before a response starts. Each `read_range` is one GetObject with exactly that
Range, its body read in `READ_CHUNK_BYTES` chunks; `read` streams the rest of the
blob from one GetObject. No read ever holds the whole object. The writer and the
reader (the S3 calls themselves) live in `_s3_streams`.

Known limits: a blob deleted while a download streams it (its file was replaced
or removed) cuts that download short, where the local store's open descriptor
would go on serving the old bytes; the client sees fewer bytes than
Content-Length and can retry. A blob has at most `MAX_PARTS` parts, so at most
80 GiB with the default part size. Credentials are always explicit: the client
never looks for them in the environment, a profile or an instance metadata
service.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Literal
from urllib.parse import urlsplit

import boto3  # type: ignore[import-untyped]
from botocore.client import BaseClient  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
)

from strongroom.errors import ConfigError, PathNotFoundError, StorageError
from strongroom.storage._s3_streams import (
    MAX_PARTS,
    READ_CHUNK_BYTES,
    S3BlobReader,
    S3BlobWriter,
    error_code,
    is_not_found,
    s3_errors,
    storage_error,
)
from strongroom.storage.blobs import BlobInfo, new_blob_id

__all__ = [
    "MAX_PARTS",
    "MIN_PART_BYTES",
    "PART_BYTES",
    "READ_CHUNK_BYTES",
    "STALE_UPLOAD_SECONDS",
    "S3BlobReader",
    "S3BlobStore",
    "S3BlobWriter",
]

# Bytes a writer buffers before sending them as one part. S3 wants at least 5 MiB
# in every part but the last (`MIN_PART_BYTES`); 8 MiB keeps a 1 GiB upload to 128
# requests while 64 concurrent uploads hold 512 MiB at most.
PART_BYTES = 8 << 20
MIN_PART_BYTES = 5 << 20
# An unfinished multipart upload whose newest part is an hour old belongs to a
# writer that died: a live one sends a part at least every few minutes, even from
# a slow client (8 MiB at 50 KiB/s is under three minutes).
STALE_UPLOAD_SECONDS = 3600.0
# Concurrent connections per store: above the API's worker-thread limit (40), so
# no thread waits for a connection another thread holds idle.
MAX_POOL_CONNECTIONS = 64

log = logging.getLogger("strongroom.storage")

_BLOB_ID = re.compile(r"[0-9a-f]{32}")
_SHARDED_ID = re.compile(r"([0-9a-f]{2})/([0-9a-f]{2})/([0-9a-f]{32})")


class S3BlobStore:
    """A `BlobStore` in an S3 bucket, under an optional key prefix.

    Thread-safe: the client is shared and each writer or reader is used by one
    thread at a time. Errors: any failure of the store raises StorageError, whose
    message names the operation and the store's error code (never a credential);
    `open_blob` raises PathNotFoundError when the blob is gone.
    """

    def __init__(
        self,
        client: BaseClient,
        bucket: str,
        prefix: str = "",
        *,
        part_bytes: int = PART_BYTES,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"part_bytes must be at least {MIN_PART_BYTES}")
        self._client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._part_bytes = part_bytes

    @classmethod
    def connect(
        cls,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        addressing_style: Literal["path", "virtual"] = "path",
        part_bytes: int = PART_BYTES,
    ) -> S3BlobStore:
        """Build a client with these explicit credentials; no request is made.

        `endpoint_url` None means AWS itself.

        Raises:
            ConfigError: a credential is missing.
        """
        if not access_key_id or not secret_access_key:
            raise ConfigError(
                f"the blob store s3://{bucket} needs credentials; set "
                "s3_access_key_id and s3_secret_access_key"
            )
        client = _make_client(
            endpoint_url, region, access_key_id, secret_access_key, addressing_style
        )
        return cls(client, bucket, prefix, part_bytes=part_bytes)

    def identity(self) -> tuple[object, ...]:
        """Return ("s3", endpoint, bucket, prefix), the endpoint normalised.

        The endpoint is the client's own (for AWS, the regional one it chose),
        lowercased and without a default port or a final "/"; the prefix has
        no "/" at either end. So "s3://b/blobs/" is "s3://b/blobs".
        """
        endpoint = _normal_endpoint(str(self._client.meta.endpoint_url))
        return ("s3", endpoint, self.bucket, self.prefix)

    def check(self) -> None:
        """Raise StorageError unless the bucket answers (one HeadBucket)."""
        with s3_errors(f"the bucket {self.bucket!r} cannot be reached"):
            self._client.head_bucket(Bucket=self.bucket)

    def create_blob(
        self,
        *,
        max_bytes: int | None = None,
        durable: bool = True,
        near: str | None = None,
    ) -> S3BlobWriter:
        """Start writing a new blob under a fresh id; see `S3BlobWriter`.

        `durable` changes nothing (a completed upload is durable) and `near` is
        ignored: a bucket has no folders to share. No request is made yet.
        """
        blob_id = new_blob_id()
        return S3BlobWriter(
            self._client, self.bucket, self._key(blob_id), blob_id,
            part_bytes=self._part_bytes, max_bytes=max_bytes,
        )

    def create_blob_with_id(
        self, blob_id: str, *, durable: bool = True
    ) -> S3BlobWriter:
        """Start writing a blob under `blob_id`, for `strongroom storage migrate`.

        Committing fails (StorageError) if a blob already has the id.

        Raises:
            StorageError: the id is malformed.
        """
        return S3BlobWriter(
            self._client, self.bucket, self._key(blob_id), blob_id,
            part_bytes=self._part_bytes, max_bytes=None,
        )

    def sync(self) -> None:
        """Do nothing: every committed blob is already durable in the store."""

    def write_blob(
        self, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> BlobInfo:
        """Write all of `chunks` as one new blob and return its id, size and hash.

        Raises:
            LimitExceededError: the chunks add up to more than `max_bytes`.
            StorageError: the store failed.
        """
        with self.create_blob(max_bytes=max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def open_blob(self, blob_id: str) -> S3BlobReader:
        """Look the blob up (one HeadObject) and return a reader for it.

        Raises:
            PathNotFoundError: no blob has this id (any more).
            StorageError: the id is malformed or the store failed.
        """
        key = self._key(blob_id)
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_not_found(exc):
                raise PathNotFoundError("read", blob_id, "the blob is gone") from None
            raise storage_error(f"blob {blob_id} cannot be opened", exc) from exc
        except BotoCoreError as exc:
            raise storage_error(f"blob {blob_id} cannot be opened", exc) from exc
        size = int(head["ContentLength"])
        return S3BlobReader(self._client, self.bucket, key, blob_id, size)

    def delete_blob(self, blob_id: str) -> None:
        """Delete a blob; a missing blob is not an error.

        Raises:
            StorageError: the id is malformed or the store failed.
        """
        key = self._key(blob_id)
        with s3_errors(f"blob {blob_id} cannot be deleted"):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def blob_ids(self) -> Iterator[tuple[str, int, int]]:
        """Yield (blob id, size, mtime in ns) for every stored blob.

        Pages through the listing (1,000 keys a request); keys under the prefix
        that are not laid out as blobs are left out.

        Raises:
            StorageError: the store failed.
        """
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key_prefix()
        )
        with s3_errors("the blobs cannot be listed"):
            for page in pages:
                for item in page.get("Contents", ()):
                    blob_id = self._blob_id_of(str(item["Key"]))
                    if blob_id is not None:
                        yield blob_id, int(item["Size"]), _ns(item["LastModified"])

    def remove_crash_leftovers(
        self, grace_seconds: float = STALE_UPLOAD_SECONDS
    ) -> int:
        """Abort the multipart uploads that writers which died left behind.

        An upload goes only when neither it nor any of its parts is newer than
        `grace_seconds`, so a slow upload of another process sharing the bucket
        is never cut short. Returns how many were aborted.

        Raises:
            StorageError: the store failed.
        """
        cutoff = time.time() - grace_seconds
        removed = 0
        for key, upload_id, started in self._uploads():
            if self._last_activity(key, upload_id, started) <= cutoff:
                removed += self._abort_upload(key, upload_id)
        if removed:
            log.warning("blob_uploads_aborted", extra={"count": removed})
        return removed

    def close(self) -> None:
        """Close the client's connections; later calls fail."""
        self._client.close()

    def _key(self, blob_id: str) -> str:
        # Ids come from our own database, yet a malformed one must not become a
        # key: refused here, before any request.
        if _BLOB_ID.fullmatch(blob_id) is None:
            raise StorageError(f"blob id {blob_id[:40]!r} is malformed")
        return f"{self._key_prefix()}{blob_id[:2]}/{blob_id[2:4]}/{blob_id}"

    def _key_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _blob_id_of(self, key: str) -> str | None:
        match = _SHARDED_ID.fullmatch(key.removeprefix(self._key_prefix()))
        if match is None or not key.startswith(self._key_prefix()):
            return None
        first, second, blob_id = match.groups()
        return blob_id if blob_id.startswith(first + second) else None

    def _uploads(self) -> Iterator[tuple[str, str, float]]:
        # (key, upload id, start time) of every unfinished upload of a blob.
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self._key_prefix()
        )
        with s3_errors("the unfinished uploads cannot be listed"):
            for page in pages:
                for upload in page.get("Uploads", ()):
                    key = str(upload["Key"])
                    if self._blob_id_of(key) is not None:
                        started = _seconds(upload["Initiated"])
                        yield key, str(upload["UploadId"]), started

    def _last_activity(self, key: str, upload_id: str, started: float) -> float:
        pages = self._client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=key, UploadId=upload_id
        )
        latest = started
        try:
            for page in pages:
                for part in page.get("Parts", ()):
                    latest = max(latest, _seconds(part["LastModified"]))
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise storage_error("an upload's parts cannot be listed", exc) from exc
            return time.time()  # finished meanwhile: nothing to abort
        except BotoCoreError as exc:
            raise storage_error("an upload's parts cannot be listed", exc) from exc
        return latest

    def _abort_upload(self, key: str, upload_id: str) -> int:
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id
            )
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return 0  # its writer finished or aborted it meanwhile
            raise storage_error("an unfinished upload cannot be aborted", exc) from exc
        except BotoCoreError as exc:
            raise storage_error("an unfinished upload cannot be aborted", exc) from exc
        return 1


def _make_client(
    endpoint_url: str | None,
    region: str,
    access_key_id: str,
    secret_access_key: str,
    addressing_style: str,
) -> BaseClient:
    # With explicit credentials and region botocore has no reason to ask an
    # instance metadata service (169.254.169.254); the variable makes sure that
    # nothing in it ever does.
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    session = boto3.session.Session(
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        region_name=region,
    )
    config = Config(
        region_name=region,
        signature_version="s3v4",
        s3={"addressing_style": addressing_style},
        # Bounded so a store that hangs ties a worker thread up for at most
        # about 2 x (5 + 20) s before the client gets a 503.
        retries={"mode": "standard", "max_attempts": 2},
        connect_timeout=5,
        read_timeout=20,
        max_pool_connections=MAX_POOL_CONNECTIONS,
        # botocore 1.36 on adds CRC checksums to every upload by default, which
        # many S3-compatible stores refuse; we hash every blob ourselves.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def _normal_endpoint(url: str) -> str:
    # Host names are case-insensitive and a default port is no port at all.
    parts = urlsplit(url.strip().rstrip("/"))
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    default = {"http": 80, "https": 443}.get(scheme)
    port = "" if parts.port in (None, default) else f":{parts.port}"
    if ":" in host:  # an IPv6 address goes back into its brackets
        host = f"[{host}]"
    return f"{scheme}://{host}{port}{parts.path}"


def _seconds(when: datetime) -> float:
    return when.timestamp()


def _ns(when: datetime) -> int:
    return int(when.timestamp() * 1_000_000_000)

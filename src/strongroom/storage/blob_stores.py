"""Open the blob store a URL names: a local folder or an S3 bucket.

The URL is `blob_store_url` (or a `storage migrate` argument), in one of three
forms, checked against `config.BLOB_STORE_URL_PATTERN`:

    ""                      data_dir/blobs (the default)
    "file:///ABS/PATH"      another local folder (the path is taken literally)
    "s3://BUCKET[/PREFIX]"  a bucket, reached with the s3_* settings

The API, `strongroom check`, `strongroom user remove` and `storage migrate` all
open their store here, so they always agree on where blobs are.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from strongroom.config import BLOB_STORE_URL_PATTERN, Settings
from strongroom.errors import ConfigError, StoreUnavailableError, StrongroomError
from strongroom.storage.blobs import BLOBS_DIR_NAME, BlobStore, LocalBlobStore

if TYPE_CHECKING:
    from strongroom.storage.s3blobs import S3BlobStore

__all__ = ["is_blob_store_url", "local_blob_dir", "open_blob_store"]

log = logging.getLogger("strongroom.storage")

_FILE_SCHEME = "file://"
_S3_SCHEME = "s3://"


def open_blob_store(
    settings: Settings,
    url: str | None = None,
    *,
    create: bool = True,
    sweep: bool = True,
) -> BlobStore:
    """Open the store at `url` (default: `settings.blob_store_url`).

    The service opens its store with the defaults: a missing local folder is
    created, and crash leftovers of dead writers (staging files, old
    unfinished S3 uploads) are cleaned up. That cleanup is also an S3 store's
    first request: a store that refuses us (a wrong bucket or key) fails here,
    not mid-upload, while one that cannot be reached at all is only logged, so
    the instance starts and is not ready until the store is back.

    A command that inspects a store (`check`, the source of a migration)
    passes `create=False` and `sweep=False`: a missing local folder is then
    refused rather than made, nothing in the store changes on open, and an S3
    store is probed once so that an unreachable one fails here.

    Raises:
        ConfigError: the URL is malformed, S3 credentials are missing, or (with
            `create=False`) the local folder does not exist.
        StorageError: the store cannot be reached or listed.
    """
    url = settings.blob_store_url if url is None else url
    if not is_blob_store_url(url):
        raise ConfigError(
            f"blob store URL {url[:200]!r} is not accepted; use \"\" "
            "(data_dir/blobs), file:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX]"
        )
    folder = _local_folder(settings, url)
    if folder is not None:
        return LocalBlobStore.open_dir(
            folder, resolver=settings.resolver, create=create, sweep=sweep
        )
    # boto3 costs about 26 MB of memory and 0.2 s of start-up; a process that
    # never opens a bucket (the default, and most CLI commands) never loads it.
    from strongroom.storage.s3blobs import S3BlobStore

    bucket, _, prefix = url.removeprefix(_S3_SCHEME).partition("/")
    store = S3BlobStore.connect(
        bucket,
        prefix,
        endpoint_url=settings.s3_endpoint_url or None,
        region=settings.s3_region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=settings.s3_secret_access_key,
        addressing_style=settings.s3_addressing_style,
    )
    try:
        _first_request(store, sweep)
    except StrongroomError:
        store.close()
        raise
    return store


def _first_request(store: S3BlobStore, sweep: bool) -> None:
    """Sweep the store's crash leftovers, or without `sweep` just probe it."""
    if not sweep:
        store.check()
        return
    try:
        store.remove_crash_leftovers()
    except StoreUnavailableError as exc:
        # The store is away, not misconfigured: start anyway, so that directory
        # spaces and logins work and /readyz says what is missing; home
        # requests answer 503 until the store is back.
        log.warning("blob_store_unreachable", extra={"reason": str(exc)})


def local_blob_dir(settings: Settings) -> Path | None:
    """Return the folder local blobs live in, or None when they are in S3.

    For a front server that sends blobs itself (offload): it is told this folder.
    """
    return _local_folder(settings, settings.blob_store_url)


def _local_folder(settings: Settings, url: str) -> Path | None:
    # The folder a local store URL names; None for a bucket.
    if url == "":
        return settings.data_dir / BLOBS_DIR_NAME
    if url.startswith(_FILE_SCHEME):
        return Path(url.removeprefix(_FILE_SCHEME))
    return None


def is_blob_store_url(url: str) -> bool:
    """Tell whether `url` is one of the accepted blob store URLs."""
    return re.fullmatch(BLOB_STORE_URL_PATTERN, url) is not None


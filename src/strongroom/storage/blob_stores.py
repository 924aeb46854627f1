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

from strongroom.config import BLOB_STORE_URL_PATTERN, Settings
from strongroom.errors import ConfigError, StoreUnavailableError, StrongroomError
from strongroom.storage.blobs import BLOBS_DIR_NAME, BlobStore, LocalBlobStore

__all__ = ["is_blob_store_url", "local_blob_dir", "open_blob_store"]

log = logging.getLogger("strongroom.storage")

_FILE_SCHEME = "file://"
_S3_SCHEME = "s3://"


def open_blob_store(settings: Settings, url: str | None = None) -> BlobStore:
    """Open the store at `url` (default: `settings.blob_store_url`).

    Like a local store opened on start-up, an S3 store is cleaned of the
    crash leftovers of dead writers (old unfinished uploads) on open, which is
    also its first request: a store that refuses us (a wrong bucket or key)
    fails here, not mid-upload. One that cannot be reached at all is only
    logged: the instance starts and is not ready until the store is back.

    Raises:
        ConfigError: the URL is malformed, or S3 credentials are missing.
        StorageError: the store cannot be reached or listed.
    """
    url = settings.blob_store_url if url is None else url
    if not is_blob_store_url(url):
        raise ConfigError(
            f"blob store URL {url[:200]!r} is not accepted; use \"\" "
            "(data_dir/blobs), file:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX]"
        )
    if url == "":
        return LocalBlobStore.open_dir(
            settings.data_dir / BLOBS_DIR_NAME, resolver=settings.resolver
        )
    if url.startswith(_FILE_SCHEME):
        return LocalBlobStore.open_dir(
            url.removeprefix(_FILE_SCHEME), resolver=settings.resolver
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
        store.remove_crash_leftovers()
    except StoreUnavailableError as exc:
        # The store is away, not misconfigured: start anyway, so that directory
        # spaces and logins work and /readyz says what is missing; home
        # requests answer 503 until the store is back.
        log.warning("blob_store_unreachable", extra={"reason": str(exc)})
    except StrongroomError:
        store.close()
        raise
    return store


def local_blob_dir(settings: Settings) -> Path | None:
    """Return the folder local blobs live in, or None when they are in S3.

    For a front server that sends blobs itself (offload): it is told this folder.
    """
    url = settings.blob_store_url
    if url == "":
        return settings.data_dir / BLOBS_DIR_NAME
    if url.startswith(_FILE_SCHEME):
        return Path(url.removeprefix(_FILE_SCHEME))
    return None


def is_blob_store_url(url: str) -> bool:
    """Tell whether `url` is one of the accepted blob store URLs."""
    return re.fullmatch(BLOB_STORE_URL_PATTERN, url) is not None


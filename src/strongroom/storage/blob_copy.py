"""Copy blobs from one store to another, checking each against its row.

What `strongroom storage migrate` does. Every blob a row refers to (and, with
`all_blobs`, every other blob of the source) is streamed to the target under the
same id, one chunk at a time, and the size and SHA-256 of what was read must
equal the row's before the copy is committed: a copy that differs is abandoned
(it never appears in the target) and reported.

Nothing is ever deleted, in either store. The source is only read. In the
target a blob appears only by an exclusive write (one that never replaces an
existing blob), and a blob the target already holds is never touched: one at
the row's size and hash is skipped (with `verify_existing`, read back to check
the hash; without, the size is enough), and one that differs is reported, for
the admin to look at, since it may be the only copy of something.

A run is idempotent and can be stopped at any point. Rows are read once at the
start, so files uploaded during a run wait for the next one: copy while the
service runs, then stop it, run once more (it copies only what is new) and
switch `blob_store_url`.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from strongroom.errors import StrongroomError
from strongroom.storage.blobs import BlobInfo, BlobStore
from strongroom.storage.metadata import MetadataStore

__all__ = ["COPY_CHUNK_BYTES", "CopyFailure", "CopyReport", "copy_blobs"]

# Bytes read from the source and written to the target at a time: the memory a
# copy holds besides the target writer's own buffer.
COPY_CHUNK_BYTES = 1 << 20

log = logging.getLogger("strongroom.storage")


@dataclass(frozen=True, slots=True)
class CopyFailure:
    """A blob that could not be copied, and why."""

    blob_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class CopyReport:
    """What a copy run did."""

    copied: int
    skipped: int
    failures: tuple[CopyFailure, ...]
    bytes_copied: int

    @property
    def ok(self) -> bool:
        """Whether every blob is now in the target, checked."""
        return not self.failures


class _CopyFailedError(Exception):
    """One blob failed; the run goes on with the next."""


def copy_blobs(
    meta: MetadataStore,
    source: BlobStore,
    target: BlobStore,
    *,
    all_blobs: bool = False,
    verify_existing: bool = True,
) -> CopyReport:
    """Copy the blobs the rows refer to from `source` to `target`; see the module.

    A failure of one blob (missing in the source, content that differs from
    its row, a store error) is reported in the result and the run goes on.

    Raises:
        StorageError: a store cannot be listed, or the target not synced.
    """
    wanted: dict[str, tuple[int, str | None]] = dict(meta.blob_references())
    if all_blobs:
        for blob_id, size, _ in source.blob_ids():
            wanted.setdefault(blob_id, (size, None))
    present = {blob_id: size for blob_id, size, _ in target.blob_ids()}

    copied = skipped = copied_bytes = 0
    failures: list[CopyFailure] = []
    for blob_id, (size, sha256) in sorted(wanted.items()):
        try:
            done = _copy_one(source, target, blob_id, size, sha256,
                             present.get(blob_id), verify_existing)
        except _CopyFailedError as exc:
            failures.append(CopyFailure(blob_id, str(exc)))
            continue
        if done is None:
            skipped += 1
        else:
            copied += 1
            copied_bytes += done.size
    target.sync()
    log.info("blobs_copied", extra={"copied": copied, "skipped": skipped,
                                    "failed": len(failures), "bytes": copied_bytes})
    return CopyReport(copied, skipped, tuple(failures), copied_bytes)


def _copy_one(
    source: BlobStore,
    target: BlobStore,
    blob_id: str,
    size: int,
    sha256: str | None,
    present_size: int | None,
    verify_existing: bool,
) -> BlobInfo | None:
    """Copy one blob, or return None when the target already holds it."""
    try:
        if present_size is None:
            return _stream(source, target, blob_id, size, sha256)
        if present_size == size and (
            sha256 is None or not verify_existing or _hash_of(target, blob_id) == sha256
        ):
            return None
    except StrongroomError as exc:
        raise _CopyFailedError(str(exc)) from exc
    # Left alone: it may be a copy cut short, or the only copy of something.
    raise _CopyFailedError(
        f"the target already holds a different blob under this id ({present_size} "
        "bytes); it was left as it is: look at it, remove it by hand if it is a "
        "broken copy, and run again"
    )


def _stream(
    source: BlobStore, target: BlobStore, blob_id: str, size: int, sha256: str | None
) -> BlobInfo:
    """Copy a blob chunk by chunk; commit it only if it matches its row.

    The bytes are measured and hashed as they are read, so a source blob that
    differs from its row is abandoned before its copy exists in the target:
    nothing has to be deleted afterwards.
    """
    digest = hashlib.sha256()
    copied = 0
    # durable=False: the run syncs the target once at its end (a copy that a
    # crash before then left short is reported by the next run's checks).
    with (
        source.open_blob(blob_id) as reader,
        target.create_blob_with_id(blob_id, durable=False) as writer,
    ):
        while chunk := reader.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
            copied += len(chunk)
            writer.write(chunk)
        found = digest.hexdigest()
        if copied != size or (sha256 is not None and found != sha256):
            # Leaving the block without commit aborts the writer.
            raise _CopyFailedError(_mismatch(copied, found, size, sha256))
        return writer.commit()


def _hash_of(store: BlobStore, blob_id: str) -> str:
    digest = hashlib.sha256()
    with store.open_blob(blob_id) as reader:
        while chunk := reader.read(COPY_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _mismatch(copied: int, found: str, size: int, sha256: str | None) -> str:
    if copied != size:
        differs = f"has {copied} bytes, its row says {size}"
    else:
        differs = f"has sha256 {found}, its row says {sha256}"
    return f"the source blob {differs}; nothing was copied"

"""Compare the metadata store with the blob store: what `strongroom check` reports.

Four kinds of finding: a row whose blob is missing, a blob no row refers to (an
orphan: a crash between writing a blob and committing its row, or between
committing a replace and deleting the old blob), and a blob whose size or sha256
differs from its row. Repair only ever deletes orphans older than a grace period,
so a blob whose upload is still committing its row is never touched, and nothing
a row refers to is ever deleted.

Repair also marks each row whose blob is missing or differs (`files.damage`), so
the service refuses that file (410) instead of serving wrong bytes, and clears
the mark of a row found sound again (say, its blob restored from a backup). A
check without hashes never clears a hash mismatch it could not have seen.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, replace

from strongroom.errors import PathError
from strongroom.storage.blobs import BlobStore
from strongroom.storage.metadata import MetadataStore

__all__ = ["ORPHAN_GRACE_SECONDS", "CheckFinding", "CheckReport", "check_stores"]

# An upload writes its blob, then commits its row within a second or so; an hour
# is far beyond any commit, so an older blob without a row is a true orphan.
ORPHAN_GRACE_SECONDS = 3600.0
# Findings that make a row's content untrustworthy.
_DAMAGE_KINDS = frozenset({"missing_blob", "size_mismatch", "hash_mismatch"})
# Bytes read at a time while hashing a blob.
_READ_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CheckFinding:
    """One mismatch between a row and the blob store."""

    kind: str  # missing_blob | orphan_blob | size_mismatch | hash_mismatch
    blob_id: str
    detail: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What the check found and, with repair, which orphans it removed."""

    findings: tuple[CheckFinding, ...]
    rows: int
    blobs: int
    removed: tuple[str, ...] = ()
    marked: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        """Whether nothing was found."""
        return not self.findings

    def as_json(self) -> dict[str, object]:
        """Return the report as JSON-ready data."""
        return {
            "rows": self.rows,
            "blobs": self.blobs,
            "findings": [asdict(f) for f in self.findings],
            "removed": list(self.removed),
            "marked": list(self.marked),
            "cleared": list(self.cleared),
        }


def check_stores(
    meta: MetadataStore,
    blobs: BlobStore,
    *,
    verify_hashes: bool = True,
    repair: bool = False,
    grace_seconds: float = ORPHAN_GRACE_SECONDS,
) -> CheckReport:
    """Compare every row with every blob; with `repair`, delete old orphans."""
    rows = meta.blob_references()
    stored = {blob_id: (size, mtime) for blob_id, size, mtime in blobs.blob_ids()}
    findings: list[CheckFinding] = []
    for blob_id, (size, sha256) in sorted(rows.items()):
        if blob_id not in stored:
            findings.append(CheckFinding("missing_blob", blob_id, "a row has no blob"))
            continue
        found = _compare(blobs, blob_id, size, sha256, stored[blob_id][0],
                         verify_hashes)
        if found is not None:
            findings.append(found)
    orphans = sorted(set(stored) - set(rows))
    for blob_id in orphans:
        detail = f"{stored[blob_id][0]} bytes, no row"
        findings.append(CheckFinding("orphan_blob", blob_id, detail))
    report = CheckReport(tuple(findings), len(rows), len(stored))
    if not repair:
        return report
    marked, cleared = _mark_damage(meta, findings, verify_hashes)
    removed = _remove_orphans(meta, blobs, orphans, stored, grace_seconds)
    return replace(report, removed=removed, marked=marked, cleared=cleared)


def _mark_damage(
    meta: MetadataStore, findings: list[CheckFinding], verify_hashes: bool
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    damaged = {f.blob_id: f.kind for f in findings if f.kind in _DAMAGE_KINDS}
    marked = [b for b, kind in sorted(damaged.items()) if meta.set_damage(b, kind)]
    cleared = [
        blob_id
        for blob_id, kind in sorted(meta.damaged_blob_ids().items())
        if blob_id not in damaged
        and (verify_hashes or kind != "hash_mismatch")
        and meta.set_damage(blob_id, None)
    ]
    return tuple(marked), tuple(cleared)


def _remove_orphans(
    meta: MetadataStore,
    blobs: BlobStore,
    orphans: list[str],
    stored: dict[str, tuple[int, int]],
    grace_seconds: float,
) -> tuple[str, ...]:
    # Read the rows again right before deleting: an upload may have committed a
    # row for one of these blobs since the first read.
    cutoff_ns = time.time_ns() - int(grace_seconds * 1e9)
    referenced = meta.blob_references() if orphans else {}
    removed = []
    for blob_id in orphans:
        if stored[blob_id][1] < cutoff_ns and blob_id not in referenced:
            blobs.delete_blob(blob_id)
            removed.append(blob_id)
    return tuple(removed)


def _compare(
    blobs: BlobStore,
    blob_id: str,
    size: int,
    sha256: str,
    stored_size: int,
    verify_hashes: bool,
) -> CheckFinding | None:
    if stored_size != size:
        detail = f"the row says {size} bytes, the blob has {stored_size}"
        return CheckFinding("size_mismatch", blob_id, detail)
    if not verify_hashes:
        return None
    digest = hashlib.sha256()
    try:
        with blobs.open_blob(blob_id) as handle:
            while chunk := handle.read(_READ_BYTES):
                digest.update(chunk)
    except PathError:
        return CheckFinding("missing_blob", blob_id, "the blob vanished while read")
    if digest.hexdigest() != sha256:
        return CheckFinding("hash_mismatch", blob_id, "the content changed")
    return None

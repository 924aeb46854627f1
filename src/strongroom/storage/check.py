"""Compare the metadata store with the blob store: what `strongroom check` reports.

The findings: a row whose blob is missing, a blob no row refers to (an orphan:
a crash between writing a blob and committing its row, or between committing a
replace and deleting the old blob), a blob whose size or sha256 differs from its
row, a blob-named file lying where no blob of that name belongs (a stray, which
is never served and never removed: only a person knows what it is), and a row
still marked damaged although nothing is found wrong with it now (its file
answers 410 until a repair clears the mark).

Repair marks each row whose blob is missing or differs (`files.damage`), so the
service refuses that file (410) instead of serving wrong bytes, clears the mark
of a row found sound again (say, its blob restored from a backup), and deletes
orphans older than a grace period, so a blob whose upload is still committing
its row is never touched, and nothing a row refers to is ever deleted. A check
without hashes never clears a hash mismatch it could not have seen.

Repair refuses to act at all, unless forced, when the store looks wrong as a
whole: most rows without a blob, or most blobs without a row. That is what a
mistyped store URL looks like, and acting on it would make every file answer
410, or delete another store's blobs as orphans.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, replace

from strongroom.errors import PathError
from strongroom.storage.blobs import BlobStore, StrayReporter
from strongroom.storage.metadata import MetadataStore

__all__ = [
    "ORPHAN_GRACE_SECONDS",
    "SUSPECT_SHARE",
    "CheckFinding",
    "CheckReport",
    "check_stores",
]

# An upload writes its blob, then commits its row within a second or so; an hour
# is far beyond any commit, so an older blob without a row is a true orphan.
ORPHAN_GRACE_SECONDS = 3600.0
# Repair is refused when more than this share of the rows has no blob, or of
# the blobs would be removed as orphans: a store that is wrong as a whole.
SUSPECT_SHARE = 0.5
# Findings that make a row's content untrustworthy.
_DAMAGE_KINDS = frozenset({"missing_blob", "size_mismatch", "hash_mismatch"})
# Bytes read at a time while hashing a blob.
_READ_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class CheckFinding:
    """One mismatch between a row and the blob store."""

    # missing_blob | orphan_blob | size_mismatch | hash_mismatch | stray_file
    # | marked_damaged
    kind: str
    blob_id: str  # for a stray file, its name
    detail: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What the check found and what its repair did (or why it did nothing).

    `damaged` counts the rows marked damaged once the run is over: their files
    answer 410. `refused` says why a repair was not done; nothing changed then.
    """

    findings: tuple[CheckFinding, ...]
    rows: int
    blobs: int
    removed: tuple[str, ...] = ()
    marked: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()
    damaged: int = 0
    refused: str | None = None

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
            "damaged": self.damaged,
            "refused": self.refused,
        }


def check_stores(
    meta: MetadataStore,
    blobs: BlobStore,
    *,
    verify_hashes: bool = True,
    repair: bool = False,
    force: bool = False,
    grace_seconds: float = ORPHAN_GRACE_SECONDS,
) -> CheckReport:
    """Compare every row with every blob; with `repair`, mark and clean up.

    `force` lets a repair go on where the store looks wrong as a whole.

    Raises:
        StorageError: the store cannot be listed or a blob cannot be read.
    """
    rows = meta.blob_references()
    stored = {blob_id: (size, mtime) for blob_id, size, mtime in blobs.blob_ids()}
    findings = _row_findings(blobs, rows, stored, verify_hashes)
    orphans = sorted(set(stored) - set(rows))
    for blob_id in orphans:
        detail = f"{stored[blob_id][0]} bytes, no row"
        findings.append(CheckFinding("orphan_blob", blob_id, detail))
    findings.extend(_stray_findings(blobs))
    report = CheckReport(tuple(findings), len(rows), len(stored))
    if repair:
        old = _old_orphans(orphans, stored, grace_seconds)
        report = _repair(meta, blobs, report, old,
                         verify_hashes=verify_hashes, force=force)
    return _with_marks(meta, report, verify_hashes)


def _row_findings(
    blobs: BlobStore,
    rows: dict[str, tuple[int, str]],
    stored: dict[str, tuple[int, int]],
    verify_hashes: bool,
) -> list[CheckFinding]:
    """What is wrong with each row's blob: missing, or not its size or hash."""
    findings = []
    for blob_id, (size, sha256) in sorted(rows.items()):
        if blob_id not in stored:
            findings.append(CheckFinding("missing_blob", blob_id, "a row has no blob"))
            continue
        found = _compare(blobs, blob_id, size, sha256, stored[blob_id][0],
                         verify_hashes)
        if found is not None:
            findings.append(found)
    return findings


def _repair(
    meta: MetadataStore,
    blobs: BlobStore,
    report: CheckReport,
    old_orphans: list[str],
    *,
    verify_hashes: bool,
    force: bool,
) -> CheckReport:
    """Mark damage, clear healed marks and remove old orphans, unless refused."""
    refused = None if force else _repair_refusal(report, len(old_orphans))
    if refused is not None:
        return replace(report, refused=refused)
    marked, cleared = _mark_damage(meta, report.findings, verify_hashes)
    removed = _remove_orphans(meta, blobs, old_orphans)
    return replace(report, removed=removed, marked=marked, cleared=cleared)


def _stray_findings(blobs: BlobStore) -> list[CheckFinding]:
    if not isinstance(blobs, StrayReporter):
        return []
    return [
        CheckFinding("stray_file", name, _stray_detail(where, kind))
        for name, where, kind in sorted(blobs.stray_files())
    ]


# How a finding names what is not a regular file.
_KIND_WORDS = {"symlink": "symbolic link", "fifo": "FIFO", "socket": "socket",
               "chardev": "device", "blockdev": "device"}


def _stray_detail(where: str, kind: str) -> str:
    if kind == "file":
        return (f"a file at {where}, where no blob of this name belongs; it is "
                "not served and repair leaves it: move it or remove it by hand")
    what = _KIND_WORDS.get(kind, "special file")
    return (f"a {what} at {where}, where only blob files belong; it is never "
            "followed or served and repair leaves it: remove it by hand")


def _repair_refusal(report: CheckReport, old_orphans: int) -> str | None:
    """Say why the store looks wrong as a whole, or None if repair may go on.

    A store URL that names the wrong folder or bucket shows as nearly every row
    without a blob (an empty folder: all of them), or nearly every blob without
    a row (another service's store). Marking those rows damaged would make
    every file answer 410; removing those blobs would lose another's files.
    """
    missing = sum(f.kind == "missing_blob" for f in report.findings)
    if missing > report.rows * SUSPECT_SHARE:
        return (f"{missing} of {report.rows} rows have no blob in the store, "
                f"which holds {report.blobs} blobs")
    if old_orphans > report.blobs * SUSPECT_SHARE:
        return (f"{old_orphans} of the store's {report.blobs} blobs have no row "
                "and would be removed as orphans")
    return None


def _with_marks(
    meta: MetadataStore, report: CheckReport, verify_hashes: bool
) -> CheckReport:
    """Count the rows still marked damaged; a mark with no finding is one.

    A mark outlives its cause (a repair run against the wrong store, a blob
    restored since): without this finding a check would say all is well while
    the file answers 410.
    """
    marks = meta.damaged_blob_ids()
    damaged = {f.blob_id for f in report.findings if f.kind in _DAMAGE_KINDS}
    stale = tuple(
        CheckFinding("marked_damaged", blob_id, _stale_mark_detail(kind, verify_hashes))
        for blob_id, kind in sorted(marks.items())
        if blob_id not in damaged
    )
    return replace(report, findings=report.findings + stale, damaged=len(marks))


def _stale_mark_detail(kind: str, verify_hashes: bool) -> str:
    if kind == "hash_mismatch" and not verify_hashes:
        return ("marked hash_mismatch by an earlier repair, so it answers 410; "
                "a check with hashes (`strongroom check --repair`) clears the mark "
                "if the blob is sound again")
    return (f"marked {kind} by an earlier repair, so it answers 410, but its blob "
            "is sound now: `strongroom check --repair` clears the mark")


def _mark_damage(
    meta: MetadataStore, findings: tuple[CheckFinding, ...], verify_hashes: bool
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


def _old_orphans(
    orphans: list[str], stored: dict[str, tuple[int, int]], grace_seconds: float
) -> list[str]:
    """The orphans past the grace period: those a repair may remove."""
    cutoff_ns = time.time_ns() - int(grace_seconds * 1e9)
    return [blob_id for blob_id in orphans if stored[blob_id][1] < cutoff_ns]


def _remove_orphans(
    meta: MetadataStore, blobs: BlobStore, orphans: list[str]
) -> tuple[str, ...]:
    # Read the rows again right before deleting: an upload may have committed a
    # row for one of these blobs since the first read.
    referenced = meta.blob_references() if orphans else {}
    removed = []
    for blob_id in orphans:
        if blob_id not in referenced:
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

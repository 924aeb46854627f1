"""`strongroom storage migrate`: copy every blob from one store to another.

    strongroom [--config FILE] storage migrate --from URL --to URL [--all]
                                               [--no-hashes]

Each URL is a blob store URL as `blob_store_url` takes it: "" for data_dir/blobs,
file:///ABS/PATH for another folder, s3://BUCKET[/PREFIX] for a bucket, reached
with the s3_* settings. The copy is checked blob by blob against the database
(`storage.blob_copy`); run it again until it reports no failure, then point
`blob_store_url` at the target. Nothing is ever deleted: the source is only
read, and it must exist already (a mistyped source folder is refused, not
created). Two URLs that lead to the same store, however spelled, are refused
before anything is copied. Exit codes as for every `strongroom` command: 0
every blob is in the target, 1 some failed (each one listed) or a bad argument
(the same store twice), 2 a configuration error (a missing source folder) or a
store that cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import ExitStack

from strongroom.config import Settings
from strongroom.errors import StorageError
from strongroom.storage import open_metadata_store
from strongroom.storage.blob_copy import CopyReport, copy_blobs
from strongroom.storage.blob_stores import is_blob_store_url, open_blob_store

__all__ = ["storage_migrate"]

# strongroom.cli's codes; that module imports this one, so they are not imported.
_EXIT_OK = 0
_EXIT_FAILED = 1
_EXIT_STORE_ERROR = 2


class _SameStoreError(Exception):
    """--from and --to are one store: a copy onto itself, refused."""


def storage_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Copy blobs from `args.source` to `args.target`; exit 0 when all are there."""
    for flag, url in (("--from", args.source), ("--to", args.target)):
        if not is_blob_store_url(url):
            return _fail(
                _EXIT_FAILED,
                f"{flag} {url[:200]!r} is not a blob store URL; use \"\" "
                "(data_dir/blobs), file:///ABSOLUTE/PATH or s3://BUCKET[/PREFIX]",
            )
    try:
        report = _migrate(args, settings)
    except _SameStoreError:
        return _fail(
            _EXIT_FAILED,
            f"--from {args.source[:200]!r} and --to {args.target[:200]!r} lead to "
            "the same store; nothing was copied",
        )
    except StorageError as exc:
        return _fail(_EXIT_STORE_ERROR, f"the migration stopped: {exc}")
    _print_report(report)
    return _EXIT_OK if report.ok else _EXIT_FAILED


def _migrate(args: argparse.Namespace, settings: Settings) -> CopyReport:
    """Open the database and both stores, and copy if they are two stores.

    Neither store is swept of crash leftovers on open, so even a target that
    turns out to be the source is left as it was.
    """
    with ExitStack() as stack:
        meta = open_metadata_store(
            settings.database_url, auto_upgrade=settings.db_auto_upgrade
        )
        stack.callback(meta.close)
        source = open_blob_store(settings, args.source, create=False, sweep=False)
        stack.callback(source.close)
        target = open_blob_store(settings, args.target, sweep=False)
        stack.callback(target.close)
        if source.identity() == target.identity():
            raise _SameStoreError
        return copy_blobs(
            meta, source, target,
            all_blobs=args.all, verify_existing=not args.no_hashes,
        )


def _print_report(report: CopyReport) -> None:
    for failure in report.failures:
        print(f"failed  {failure.blob_id}  {failure.reason}")
    print(f"copied {report.copied} blobs ({report.bytes_copied} bytes), skipped "
          f"{report.skipped} already in the target, {len(report.failures)} failed")


def _fail(code: int, message: str) -> int:
    print(f"strongroom: {message}", file=sys.stderr)
    return code

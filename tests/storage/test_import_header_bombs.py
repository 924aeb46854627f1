"""Tar header tricks and name tricks meet the import limits and the path rules.

Regression tests for what an attack session found: GNU long-name and pax records,
and the data of member types tarfile skips, were read past the meter; deep names
made folders without limit; NUL cut names short instead of refusing them.
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from strongroom.storage.imports import MAX_IMPORT_PATHS, import_archive
from strongroom.storage.spaces import DirectorySpace

# Each bomb must be stopped well before it is read in full. Read in full they
# take many minutes (gigabytes decompressed, or a hundred thousand folders); a
# stopped one takes seconds, 5.5 s for the deepest on a loaded 2-core machine.
# The bound only tells those apart, with room for a busy CI machine: timing
# figures belong in bench/, not here.
MAX_SECONDS = 60.0


def gzip_stream(parts: Iterator[bytes]) -> io.BytesIO:
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        for part in parts:
            gz.write(part)
    out.seek(0)
    return out


def header(name: bytes, size: int, type_flag: bytes) -> bytes:
    info = tarfile.TarInfo(name.decode())
    info.size = size
    info.type = type_flag
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def zeros(size: int) -> Iterator[bytes]:
    chunk = bytes(1 << 20)
    while size > 0:
        yield chunk[: min(size, len(chunk))]
        size -= len(chunk)


def run(space: DirectorySpace, archive: io.BytesIO) -> str:
    started = time.monotonic()
    report = import_archive(space, archive, len(archive.getbuffer()), "")
    assert time.monotonic() - started < MAX_SECONDS
    return report.outcome


def test_a_huge_gnu_long_name_is_stopped_by_the_limits(
    space: DirectorySpace, space_dir: Path
) -> None:
    size = 300 * 1024 * 1024
    long_name = header(b"././@LongLink", size, tarfile.GNUTYPE_LONGNAME)
    archive = gzip_stream(iter([long_name, *zeros(size)]))

    assert run(space, archive) == "too_large"
    assert os.listdir(space_dir) == []


def test_the_data_of_an_unknown_member_type_is_metered(
    space: DirectorySpace, space_dir: Path
) -> None:
    size = 300 * 1024 * 1024
    archive = gzip_stream(iter([header(b"odd", size, b"Z"), *zeros(size)]))

    assert run(space, archive) == "too_large"
    assert os.listdir(space_dir) == []


def test_deep_names_cannot_make_folders_past_the_limit(
    space: DirectorySpace, space_dir: Path
) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for n in range(MAX_IMPORT_PATHS // 100 + 2):
            info = tarfile.TarInfo(f"x{n}/" + "d/" * 120 + "f")
            tar.addfile(info, io.BytesIO(b""))
    out.seek(0)

    assert run(space, out) == "too_large"
    assert os.listdir(space_dir) == []


def test_a_pax_name_holding_nul_is_refused_not_shortened(
    space: DirectorySpace, space_dir: Path
) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("placeholder")
        info.pax_headers = {"path": "a\x00b.txt"}
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    out.seek(0)

    assert run(space, out) == "refused"
    assert os.listdir(space_dir) == []


def test_a_zip_name_holding_nul_is_refused_not_shortened(
    space: DirectorySpace, space_dir: Path
) -> None:
    written = io.BytesIO()
    with zipfile.ZipFile(written, "w") as zf:
        zf.writestr("ok.txt#../../n", b"x")
    # zipfile itself cuts names at NUL when writing, so put the NUL in by hand,
    # in both the local and the central header.
    out = io.BytesIO(written.getvalue().replace(b"ok.txt#", b"ok.txt\x00"))

    assert run(space, out) == "refused"
    assert os.listdir(space_dir) == []

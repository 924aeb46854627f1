"""`import_archive` against a real directory space, with small bomb limits."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from strongroom.storage.imports import ImportLimits, import_archive
from strongroom.storage.spaces import DirectorySpace

SMALL = ImportLimits(max_members=5, max_total_bytes=3000, max_member_bytes=2000,
                     max_ratio=10, ratio_floor_bytes=1000)


def tar_of(members: dict[str, bytes], compression: str = "") -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode=f"w:{compression}" if compression else "w"
                      ) as tar:  # type: ignore[call-overload]
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out.seek(0)
    return out


def run(space: DirectorySpace, archive: io.BytesIO) -> str:
    size = len(archive.getvalue())
    return import_archive(space, archive, size, "", limits=SMALL).outcome


def test_too_many_members_stop_the_import(
    space: DirectorySpace, space_dir: Path
) -> None:
    archive = tar_of({f"f{i}": b"x" for i in range(6)})

    assert run(space, archive) == "too_large"
    assert os.listdir(space_dir) == []


def test_a_member_over_the_size_limit_stops_the_import(
    space: DirectorySpace, space_dir: Path
) -> None:
    archive = tar_of({"a": os.urandom(1000), "big": os.urandom(2500)})

    assert run(space, archive) == "too_large"
    assert os.listdir(space_dir) == []


def test_total_unpacked_bytes_over_the_limit_stop_the_import(
    space: DirectorySpace, space_dir: Path
) -> None:
    archive = tar_of({f"f{i}": os.urandom(1000) for i in range(4)})

    assert run(space, archive) == "too_large"
    assert os.listdir(space_dir) == []


def test_a_compression_ratio_over_the_limit_stops_the_import(
    space: DirectorySpace, space_dir: Path
) -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("zeros", bytes(1900))
    out.seek(0)

    assert run(space, out) == "too_large"
    assert os.listdir(space_dir) == []


def test_an_archive_within_every_limit_is_imported(
    space: DirectorySpace, space_dir: Path
) -> None:
    archive = tar_of({"a": os.urandom(500), "b/c": os.urandom(500)}, "gz")

    assert run(space, archive) == "imported"
    assert sorted(os.listdir(space_dir)) == ["a", "b"]


@pytest.mark.skipif(shutil.which("tar") is None,
                    reason="GNU tar writes the sparse member; tarfile cannot")
@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_a_sparse_member_is_imported_with_its_holes_filled(
    space: DirectorySpace, space_dir: Path, tmp_path: Path, tar_format: str
) -> None:
    sparse = tmp_path / "sparse.bin"
    with sparse.open("wb") as handle:
        handle.seek(3 * 1024**2)
        handle.write(b"end")
    archive_path = tmp_path / "sparse.tar"
    subprocess.run(["tar", f"--format={tar_format}", "--sparse", "-cf",
                    str(archive_path), "-C", str(tmp_path), "sparse.bin"], check=True)

    with archive_path.open("rb") as archive:
        report = import_archive(space, archive, archive_path.stat().st_size, "")

    assert report.outcome == "imported"
    assert (space_dir / "sparse.bin").read_bytes() == bytes(3 * 1024**2) + b"end"


# A compressed stream checks itself only at its end (gzip's CRC and length, xz's
# index, bzip2's block CRCs), after the tar's end-of-archive blocks.


def damaged(compression: str, damage: str) -> io.BytesIO:
    plain = tar_of({"data.bin": os.urandom(1000), "s.txt": b"hello"}).getvalue()
    if compression == "gz":
        packed = bytearray(gzip.compress(plain, compresslevel=0))  # data stored as is
    elif compression == "bz2":
        packed = bytearray(bz2.compress(plain))
    else:
        packed = bytearray(lzma.compress(plain))
    if damage == "flipped":
        at = packed.index(plain[600:616])  # inside data.bin, past its header
        packed[at] ^= 0xFF
    elif damage == "cut":
        del packed[-20:]
    else:
        packed += b"not part of the stream"
    return io.BytesIO(bytes(packed))


@pytest.mark.parametrize(("compression", "damage"), [
    ("gz", "flipped"), ("gz", "cut"), ("gz", "trailing"),
    ("bz2", "cut"), ("xz", "cut"),
])
def test_a_compressed_stream_that_fails_its_own_check_imports_nothing(
    space: DirectorySpace, space_dir: Path, compression: str, damage: str
) -> None:
    archive = damaged(compression, damage)

    report = import_archive(space, archive, len(archive.getvalue()), "")

    assert report.outcome == "unreadable", report.detail
    assert os.listdir(space_dir) == []


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_a_whole_compressed_stream_still_imports(
    space: DirectorySpace, space_dir: Path, compression: str
) -> None:
    archive = tar_of({"a.txt": b"A", "b/c.txt": b"C"}, compression)

    report = import_archive(space, archive, len(archive.getvalue()), "")

    assert report.outcome == "imported", report.detail
    assert (space_dir / "b" / "c.txt").read_bytes() == b"C"

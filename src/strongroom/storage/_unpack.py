"""Reading tar and zip archives member by member, with the bomb limits enforced.

This module only reads: it turns an archive file into a sequence of members (a
name, a kind and, for regular files, a stream of chunks) and counts every byte
that the decompressors actually produce. Nothing here touches a space; where a
member goes, and whether its name is acceptable, is decided in `imports.py`.

Design note. Header sizes cannot be trusted: a zip's size fields and a tar's size
field are whatever the archive's author wrote, and a deflate stream can expand a
thousandfold. So the limits are checked on the bytes as they come out of the
decompressor, chunk by chunk, and crossing one raises at once; nothing is
allocated or written from a declared size. The compression ratio is measured
against the size of the whole archive file, which bounds the compressed bytes
read so far from above, so the check can only err on the lenient side by the
archive's own size.

Tars are read in tarfile's random-access mode over `_TarSource`, a forward-only view
of the (decompressed) stream that meters every byte handed to tarfile. The obvious
alternative, stream mode ("r|"), copies every block through tarfile's 10 KiB record
buffer and costs about five times as much on a large member. Here member data goes
from the stream to the writer in 1 MiB reads; skipping unread data is a seek in a
plain tar (nothing is produced, so nothing is counted) and a metered read in a
compressed one (where skipping means decompressing). A plain tar in a regular file
is not read here at all: each member's data is handed on as `Extent`s, runs of the
file that a writer on local disk copies with copy_file_range(2), counted against the
limits before each run is handed on.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO, Literal

from strongroom.errors import ArchiveLimitError, UnreadableArchiveError

__all__ = [
    "MAX_COMPRESSION_RATIO",
    "MAX_HEADER_RECORD_BYTES",
    "MAX_IMPORT_BYTES",
    "MAX_IMPORT_MEMBERS",
    "MAX_MEMBER_BYTES",
    "RATIO_FLOOR_BYTES",
    "ArchiveMember",
    "Extent",
    "ImportLimits",
    "MemberData",
    "MemberKind",
    "ProgressHook",
    "read_members",
]

# Members per archive. The import benchmark of issue 4 unpacks 10,000 members, so
# that many must pass; B38's 100,000 empty entries must not. Each member costs a
# row in the report and a rename on publish.
MAX_IMPORT_MEMBERS = 10_000
# Bytes unpacked from one archive: four times the default upload limit (10 GiB),
# the room a mostly incompressible archive may need; more is a bomb.
MAX_IMPORT_BYTES = 40 * 1024**3
# Bytes of one member: the default upload limit, so an import stores no file that
# a plain upload could not.
MAX_MEMBER_BYTES = 10 * 1024**3
# Unpacked bytes per archive byte. Text and logs reach 10:1 to 30:1 with xz or
# bzip2; zip and gzip bombs exceed 1000:1 (B38 in the shared cases).
MAX_COMPRESSION_RATIO = 100
# The ratio is only judged past this many unpacked bytes: a tiny archive of
# repetitive text can exceed any ratio while being harmless.
RATIO_FLOOR_BYTES = 16 * 1024**2
# Tar framing a stream may add to its members' bytes before the limits bite: the
# end-of-archive blocks and record padding (10 KiB), plus room for pax records.
STREAM_FRAMING_BYTES = 64 * 1024

# Members are copied in chunks of this size, so an import holds one chunk at a time.
CHUNK_BYTES = 1 << 20
# A plain tar's member data is handed on in extents of at most this size, so
# progress and the limits are still checked as a large member is copied.
EXTENT_BYTES = 8 * CHUNK_BYTES
# A GNU long name or a pax record is read into memory whole. Names stop at 4 KiB
# on Linux (PATH_MAX) and pax records hold a few fields, so a record of more than
# one chunk is a memory bomb, not a header.
MAX_HEADER_RECORD_BYTES = CHUNK_BYTES

MemberKind = Literal[
    "file", "dir", "symlink", "hardlink", "device", "fifo", "socket", "other"
]
# Called with (members read, member bytes unpacked) as reading goes on.
ProgressHook = Callable[[int, int], None]

# Errors the standard library's readers raise on a corrupt or hostile archive.
_READ_ERRORS = (
    tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError,
    zlib.error, lzma.LZMAError, NotImplementedError, RuntimeError, ValueError,
    OSError,
)


@dataclass(frozen=True, slots=True)
class ImportLimits:
    """The bomb limits of one import; the defaults are the module constants."""

    max_members: int = MAX_IMPORT_MEMBERS
    max_total_bytes: int = MAX_IMPORT_BYTES
    max_member_bytes: int = MAX_MEMBER_BYTES
    max_ratio: int = MAX_COMPRESSION_RATIO
    ratio_floor_bytes: int = RATIO_FLOOR_BYTES


@dataclass(frozen=True, slots=True)
class Extent:
    """A run of a member's data that lies as it is in the archive file.

    A plain tar keeps each regular member's data in one piece, so a writer
    that can copy between descriptors takes it from the file directly
    (copy_file_range(2)) instead of through this process; `read` gives the
    same bytes as chunks to a writer that cannot. The reader checked that the
    run lies within the file.
    """

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    def read(self) -> Iterator[bytes]:
        """Yield the run's bytes in chunks of at most `CHUNK_BYTES`."""
        offset, end = self.offset, self.offset + self.length
        while offset < end:
            chunk = os.pread(self.fd, min(CHUNK_BYTES, end - offset), offset)
            if not chunk:
                raise _unreadable(tarfile.ReadError("unexpected end of data"))
            offset += len(chunk)
            yield chunk


# A regular member's data: chunks of bytes, or runs of the archive file.
MemberData = Iterator[bytes | Extent]


@dataclass(frozen=True, slots=True)
class ArchiveMember:
    """One member as the archive names it: the name is untrusted text."""

    name: str
    kind: MemberKind
    chunks: MemberData | None = None


def read_members(
    archive: BinaryIO,
    archive_bytes: int,
    limits: ImportLimits,
    on_progress: ProgressHook | None = None,
) -> Iterator[ArchiveMember]:
    """Yield the members of a zip or (plain, gz, bz2, xz) tar in archive order.

    A file member's `chunks` must be consumed (or abandoned) before the next
    member is asked for. Raises `UnreadableArchiveError` when the data is not an
    archive we read or is corrupt, and `ArchiveLimitError` as soon as a limit is
    crossed, mid-member included. `on_progress` is called in this thread when a
    member starts and after each chunk of its data; whatever it raises stops the
    reading and propagates.
    """
    meter = _Meter(limits, max(archive_bytes, 1), on_progress)
    head = archive.read(4)
    archive.seek(0)
    reader = _zip_members if head[:2] == b"PK" else _tar_members
    try:
        yield from reader(archive, meter)
    except _READ_ERRORS as exc:
        raise _unreadable(exc) from exc


class _Meter:
    """Counts members and unpacked bytes and raises when a limit is crossed."""

    def __init__(
        self,
        limits: ImportLimits,
        archive_bytes: int,
        on_progress: ProgressHook | None = None,
    ) -> None:
        self.limits = limits
        self.archive_bytes = archive_bytes
        self.members = 0
        self.total = 0
        self.stream_total = 0
        self._on_progress = on_progress

    def count_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise ArchiveLimitError(
                f"import refused: the archive has more than "
                f"{self.limits.max_members} members; split it"
            )
        if self._on_progress is not None:
            self._on_progress(self.members, self.total)

    def count_bytes(self, member_total: int, chunk: int) -> None:
        self.count_member_bytes(member_total)
        self.total += chunk
        self._check_total(self.total)
        if self._on_progress is not None:
            self._on_progress(self.members, self.total)

    def count_stream_bytes(self, chunk: int) -> None:
        """Count raw tar stream bytes: headers, padding and skipped data too.

        The stream may exceed the members' own total by the framing tar needs (a
        512-byte header per member, padding to 10 KiB records), so it gets that
        allowance on top of the limit.
        """
        self.stream_total += chunk
        allowance = STREAM_FRAMING_BYTES + 2048 * self.members
        self._check_total(self.stream_total - allowance)

    def count_member_bytes(self, member_total: int) -> None:
        if member_total > self.limits.max_member_bytes:
            raise ArchiveLimitError(
                f"import refused: a member unpacks to more than "
                f"{self.limits.max_member_bytes} bytes; upload it on its own"
            )

    def _check_total(self, total: int) -> None:
        limits = self.limits
        if total > limits.max_total_bytes:
            raise ArchiveLimitError(
                f"import refused: the archive unpacks to more than "
                f"{limits.max_total_bytes} bytes; split it"
            )
        if (
            total > limits.ratio_floor_bytes
            and total > limits.max_ratio * self.archive_bytes
        ):
            raise ArchiveLimitError(
                f"import refused: the archive expands more than "
                f"{limits.max_ratio} times its size, as a compression bomb does"
            )


def _metered(read: MemberData, meter: _Meter) -> MemberData:
    member_total = 0
    for chunk in read:
        member_total += len(chunk)
        meter.count_bytes(member_total, len(chunk))
        yield chunk


class _TarSource:
    """The decompressed tar stream as tarfile reads it: forward only, all metered.

    tarfile reads GNU long names, pax records and member data through this
    object, past any per-member meter; counting here bounds them all. A read
    larger than `MAX_HEADER_RECORD_BYTES` can only be a header record (member
    data is read a chunk at a time) and is refused before it is made. Seeking
    back is refused too: a well-formed tar never needs it, and a compressed
    stream would have to be decompressed again from the start.
    """

    def __init__(self, archive: BinaryIO, meter: _Meter) -> None:
        self._archive = archive
        self._source = _decompressed(archive)
        self._meter = meter
        self._position = 0
        # A plain tar in a regular file: its descriptor and size, for extents.
        self.plain_file = _regular_file(archive) if self._source is archive else None

    def read(self, size: int = -1, /) -> bytes:
        if not 0 <= size <= MAX_HEADER_RECORD_BYTES:
            raise ArchiveLimitError(
                "import refused: a tar header record (long name or pax record) is "
                f"over {MAX_HEADER_RECORD_BYTES} bytes"
            )
        self._meter.count_stream_bytes(0)  # a limit already crossed stops here
        data = self._source.read(size)
        self._meter.count_stream_bytes(len(data))
        self._position += len(data)
        return data

    def seek(self, position: int, whence: int = io.SEEK_SET, /) -> int:
        if whence != io.SEEK_SET or position < self._position:
            raise tarfile.ReadError("the archive points back to data already read")
        if self._source is self._archive:
            self._source.seek(position)
            self._position = position
            return position
        while self._position < position and self.read(
            min(CHUNK_BYTES, position - self._position)
        ):
            pass
        return self._position

    def tell(self) -> int:
        return self._position

    def read_to_end(self) -> None:
        """Decompress and count what is left, so the decompressor checks it."""
        if self._source is not self._archive:
            while self.read(CHUNK_BYTES):
                pass

    def write(self, data: bytes, /) -> int:
        raise io.UnsupportedOperation("the archive is read only")

    def close(self) -> None:
        if self._source is not self._archive:
            self._source.close()


def _regular_file(archive: BinaryIO) -> tuple[int, int] | None:
    """Return the descriptor and size of `archive` if it is a regular file."""
    try:
        fd = archive.fileno()
        st = os.fstat(fd)
    except (OSError, ValueError):
        return None  # an in-memory archive, or a closed one
    return (fd, st.st_size) if stat.S_ISREG(st.st_mode) else None


def _decompressed(archive: BinaryIO) -> IO[bytes] | io.BufferedIOBase:
    """Open the right decompressor by the data's magic bytes (plain tar: none)."""
    head = archive.read(6)
    archive.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=archive, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(archive, mode="rb")
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(archive, mode="rb")
    return archive


def _read_chunks(stream: IO[bytes]) -> Iterator[bytes]:
    # The consumer pulls these chunks outside `read_members`, so decompression
    # errors are translated here as well.
    try:
        while chunk := stream.read(CHUNK_BYTES):
            yield chunk
    except _READ_ERRORS as exc:
        raise _unreadable(exc) from exc


def _unreadable(exc: BaseException) -> UnreadableArchiveError:
    return UnreadableArchiveError(
        f"the upload is not a readable tar or zip archive ({_describe(exc)}); "
        "send a tar (plain, gz, bz2 or xz) or a zip"
    )


def _tar_members(archive: BinaryIO, meter: _Meter) -> Iterator[ArchiveMember]:
    # Random-access mode over a forward-only source: members are read in archive
    # order, each once, and we pick the decompressor ourselves so that every
    # decompressed byte passes through the meter.
    source = _TarSource(archive, meter)
    with contextlib.closing(source), tarfile.open(fileobj=source, mode="r:") as tar:
        for info in tar:
            meter.count_member()
            # tarfile cuts a pax name at NUL; hand on the whole name, so that the
            # path rules refuse it instead of importing a shortened name.
            name = info.pax_headers.get("path", info.name)
            if "\x00" not in name:
                name = info.name
            kind = _tar_kind(info)
            if kind != "file" or name != info.name:
                yield ArchiveMember(name, kind, iter(()) if kind == "file" else None)
                continue
            chunks = _metered(_tar_data(tar, source, info), meter)
            yield ArchiveMember(info.name, kind, chunks)
            # Drain what the consumer left, through the meter, so skipped data
            # also counts towards the limits.
            for _ in chunks:
                pass
        # tarfile stops at the end-of-archive blocks, but a compressed stream
        # checks itself (gzip's CRC and length, xz's index, bzip2's block CRCs)
        # only when it is read to its end: a corrupt or cut stream would be
        # imported as if whole. What is left is read here, through the meter.
        source.read_to_end()


def _tar_data(
    tar: tarfile.TarFile, source: _TarSource, info: tarfile.TarInfo
) -> MemberData:
    """Yield a regular member's data, read straight from the stream.

    In a plain tar file the data is handed on as extents of the file, not
    read at all. tarfile's own member reader would copy every chunk once
    more; only GNU sparse members, whose holes tarfile maps, go through it.
    """
    if info.sparse is not None:
        stream = tar.extractfile(info)
        assert stream is not None  # a regular member always has a stream
        yield from _read_chunks(stream)
        return
    if source.plain_file is not None:
        yield from _extents(source.plain_file, info)
        return
    try:
        source.seek(info.offset_data)
        left = info.size
        while left > 0:
            chunk = source.read(min(CHUNK_BYTES, left))
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            left -= len(chunk)
            yield chunk
    except _READ_ERRORS as exc:
        raise _unreadable(exc) from exc


def _extents(plain_file: tuple[int, int], info: tarfile.TarInfo) -> Iterator[Extent]:
    # The size in the header decides where the data ends; a file that holds
    # less is a truncated archive, refused before anything is copied.
    fd, file_size = plain_file
    offset, end = info.offset_data, info.offset_data + info.size
    if end > file_size:
        raise _unreadable(tarfile.ReadError("unexpected end of data"))
    while offset < end:
        length = min(EXTENT_BYTES, end - offset)
        yield Extent(fd, offset, length)
        offset += length


def _tar_kind(info: tarfile.TarInfo) -> MemberKind:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    if info.ischr() or info.isblk():
        return "device"
    if info.isfifo():
        return "fifo"
    return "other"


def _zip_members(archive: BinaryIO, meter: _Meter) -> Iterator[ArchiveMember]:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > meter.limits.max_members:
            meter.members = len(infos) - 1
            meter.count_member()
        for info in infos:
            meter.count_member()
            kind = _zip_kind(info)
            # zipfile cuts a name at NUL too; the whole name meets the path rules.
            if kind != "file" or "\x00" in info.orig_filename:
                empty = iter(()) if kind == "file" else None
                yield ArchiveMember(info.orig_filename, kind, empty)
                continue
            if info.flag_bits & 0x1:
                raise UnreadableArchiveError(
                    f"member {info.filename[:64]!r} is encrypted; "
                    "encrypted zips are not imported"
                )
            with zf.open(info) as stream:
                chunks = _metered(_read_chunks(stream), meter)
                yield ArchiveMember(info.filename, kind, chunks)
                for _ in chunks:
                    pass


def _zip_kind(info: zipfile.ZipInfo) -> MemberKind:
    # The Unix mode sits in the high half of the external attributes. Any type
    # bits there win over the name: a "symlink" entry whose data is the target
    # is how zips plant links (Z04 in the shared cases).
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        return "symlink"
    if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "other"
    if info.is_dir() or stat.S_ISDIR(mode):
        return "dir"
    return "file"


def _describe(exc: BaseException) -> str:
    # Reader messages can quote member names; keep them short and printable.
    text = str(exc) or type(exc).__name__
    return text[:120].encode("ascii", "backslashreplace").decode("ascii")


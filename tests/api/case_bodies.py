"""Request bodies of the shared HTTP cases: bytes, multipart forms, tar and zip.

The cases describe bodies instead of shipping them ("conventions.bodies" in
http-cases.json). Hostile archives are built here from that description: members
whose names climb out, links, a NUL in a name, and the bombs of B38 (1 GiB of
zeros behind a 1 MiB deflate stream, 1,000 directory entries over one compressed
kernel, 100,000 empty entries, a size field that lies).

Design note: compressing 1 GiB of zeros takes about two seconds a time with zlib,
too slow to do twice per run. After a full flush the compressor's state over a
window of zeros is the same from one MiB to the next, so the deflate output of one
MiB of zeros repeats exactly: we compress three chunks, check that the second and
third outputs agree, and repeat that unit. Only the CRC-32 still reads every byte
(a quarter of a second per GiB). Bodies are cached per process, so both resolvers
share one build.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import tarfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = ["build_body"]

Member = Mapping[str, Any]

_MIB = 1 << 20
_ZIP_LOCAL = b"PK\x03\x04"
_ZIP_CENTRAL = b"PK\x01\x02"
_ZIP_END = b"PK\x05\x06"
_DEFLATED = 8


def plain_tar(members: Mapping[str, bytes]) -> bytes:
    """Return an uncompressed tar of regular files (name: content), in order."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def build_body(request: Mapping[str, Any], subst: Any) -> bytes | None:
    """Return the body a case request describes (None for `body_kind: none`).

    `subst` replaces placeholders in text fields (member names, link names).
    Raises ValueError for a body description this harness does not know, so a new
    kind of case fails loudly instead of being sent without its body.
    """
    kind = request["body_kind"]
    if kind == "none":
        return None
    if kind == "bytes":
        return _bytes_body(request, subst)
    key = json.dumps(request, sort_keys=True)
    if kind == "multipart":
        return _cached_multipart(key)
    if kind in ("tar", "zip"):
        return _cached_archive(key, subst("{OUTSIDE_ABS}"))
    raise ValueError(f"unknown body_kind {kind!r}")


def _bytes_body(request: Mapping[str, Any], subst: Any) -> bytes:
    if "body" in request:
        return str(subst(request["body"])).encode()
    return _pattern(request["body_pattern"], request["body_size"])


@functools.cache
def _cached_multipart(key: str) -> bytes:
    spec = json.loads(key)["multipart"]
    boundary = spec["boundary"].encode()
    out = io.BytesIO()
    if spec.get("preamble_size"):
        out.write(b"p" * spec["preamble_size"] + b"\r\n")
    parts = list(spec.get("parts", []))
    if "parts_repeat" in spec:
        parts += [spec["parts_repeat"]["part"]] * spec["parts_repeat"]["count"]
    for part in parts:
        disposition = f'form-data; name="{part["name"]}"'
        if part.get("filename") is not None:
            disposition += f'; filename="{part["filename"]}"'
        out.write(b"--%s\r\nContent-Disposition: %s\r\n\r\n"
                  % (boundary, disposition.encode()))
        out.write(_member_bytes(part) + b"\r\n")
    out.write(b"--%s--\r\n" % boundary)
    return out.getvalue()


@functools.cache
def _cached_archive(key: str, outside_abs: str) -> bytes:
    request = json.loads(key)

    def subst(text: str) -> str:
        return text.replace("{OUTSIDE_ABS_NOLEAD}", outside_abs.lstrip("/")).replace(
            "{OUTSIDE_ABS}", outside_abs
        )

    members = [
        {**m, "name": subst(m["name"]), "linkname": subst(m.get("linkname") or "")}
        for m in request["archive_members"]
    ]
    special = request.get("special")
    if special is not None and special["kind"] == "pathmax_symlink_chain":
        members, special = _pathmax_chain(special), None
    junk = b"J" * request.get("prepend_junk_bytes", 0)
    if request["body_kind"] == "tar":
        fmt = request.get("format")
        return junk + _tar(members, request.get("compression"), fmt)
    if special is not None:
        return junk + _special_zip(special)
    return junk + _zip(members)


def _tar(
    members: list[dict[str, Any]], compression: str | None, fmt: str | None = None
) -> bytes:
    if compression == "gz" and len(members) == 1 and members[0].get("size", 0) > _MIB:
        return _gzip_tar_of_zeros(members[0])
    out = io.BytesIO()
    tar_format = tarfile.GNU_FORMAT if fmt == "gnu" else tarfile.PAX_FORMAT
    mode = f"w:{compression}" if compression in ("gz", "bz2", "xz") else "w"
    with tarfile.open(fileobj=out, mode=mode, format=tar_format) as tar:  # type: ignore[call-overload]
        for member in members:
            info, data = _tar_info(member)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def _pathmax_chain(special: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Folders nested past PATH_MAX, a link there to the space's parent, a file."""
    levels, length = special["levels"], special["component_len"]
    deep = "/".join(f"{i:02d}".ljust(length, "p") for i in range(levels))
    up = "../" * (levels + 1)
    return [
        {"name": deep, "type": "dir"},
        {"name": f"{deep}/up", "type": "symlink", "linkname": up.rstrip("/")},
        {"name": f"{deep}/up/{special['then_file']}", "type": "file",
         "content": "EVIL"},
    ]


def _tar_info(member: Mapping[str, Any]) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(member["name"])
    info.mtime = int(time.time())
    if "\0" in member["name"]:
        # The ustar field would end at the NUL; a pax record keeps the whole name.
        info.pax_headers = {"path": member["name"]}
    if member.get("pax_path"):
        # The ustar name stays harmless; readers that honour pax use this one.
        info.pax_headers = {"path": member["pax_path"]}
    if member.get("mode"):
        info.mode = int(member["mode"], 8)
    info.uid, info.gid = member.get("uid", 1000), member.get("gid", 1000)
    kind = member["type"]
    if kind == "file":
        data = _member_bytes(member)
        info.size = len(data)
        return info, data
    info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                 "chr": tarfile.CHRTYPE}[kind]
    info.devmajor, info.devminor = member.get("major", 0), member.get("minor", 0)
    info.linkname = member.get("linkname") or ""
    return info, None


def _gzip_tar_of_zeros(member: Mapping[str, Any]) -> bytes:
    """A .tar.gz whose one member is `size` zero bytes, built without reading them."""
    info = tarfile.TarInfo(member["name"])
    info.size = member["size"]
    info.mtime = int(time.time())
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    # The data, its padding and the two end blocks are all zeros.
    zeros = info.size + (-info.size % 512) + 1024
    deflated, crc = _deflate_zeros(header, zeros)
    gzip_header = b"\x1f\x8b\x08\x00" + struct.pack("<I", info.mtime) + b"\x00\xff"
    total = len(header) + zeros
    return gzip_header + deflated + struct.pack("<II", crc, total & 0xFFFFFFFF)


def _zip(members: list[dict[str, Any]]) -> bytes:
    if len(members) == 1 and members[0].get("size", 0) > _MIB:
        return _zip_of_zeros(members[0])
    if any(m.get("local_header_name") for m in members):
        return _zip_disagreeing(members)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive, warnings.catch_warnings():
        # Duplicate names are what some cases are about.
        warnings.simplefilter("ignore", UserWarning)
        for member in members:
            info = zipfile.ZipInfo(member["name"], date_time=(2024, 1, 1, 0, 0, 0))
            if member["type"] == "dir":
                info.filename = member["name"].rstrip("/") + "/"
                archive.writestr(info, b"")
                continue
            unix_mode = _zip_unix_mode(member)
            if unix_mode is not None:
                info.create_system = 3
                info.external_attr = unix_mode << 16
            if member.get("compress") == "deflate":
                info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, _member_bytes(member))
    return out.getvalue()


def _zip_unix_mode(member: Mapping[str, Any]) -> int | None:
    """The Unix type and mode bits a zip entry carries for `member`, if any."""
    if member.get("zip_unix_mode"):
        return int(member["zip_unix_mode"], 8)
    type_bits = {"symlink": 0o120000, "hardlink": 0o120000, "fifo": 0o010000,
                 "chr": 0o020000}.get(member["type"])
    if type_bits is not None:
        return type_bits | 0o777
    if member.get("mode"):
        return 0o100000 | int(member["mode"], 8)
    return None


def _zip_disagreeing(members: list[dict[str, Any]]) -> bytes:
    """Stored entries whose local headers may name another file than the directory."""
    body, central = b"", b""
    for member in members:
        data = _member_bytes(member)
        crc = zlib.crc32(data)
        name = member["name"].encode()
        local = (member.get("local_header_name") or member["name"]).encode()
        fields = (crc, len(data), len(data))
        offset = len(body)
        body += _ZIP_LOCAL + struct.pack(
            "<HHHHHIIIHH", 20, 0, 0, 0, 0x21, *fields, len(local), 0) + local + data
        central += _ZIP_CENTRAL + struct.pack(
            "<HHHHHHIIIHHHHHII", 20, 20, 0, 0, 0, 0x21, *fields, len(name), 0, 0, 0,
            0, 0, offset) + name
    return body + central + _zip_end(len(members), len(central), len(body))


def _zip_of_zeros(member: Mapping[str, Any]) -> bytes:
    """One deflated member of `size` zeros; its size fields may lie on purpose."""
    size = member["size"]
    deflated, crc = _deflate_zeros(b"", size)
    declared = member.get("declared_size", size)
    name = member["name"].encode()
    local = _zip_local_header(name, crc, len(deflated), declared)
    central = _zip_central_header(name, crc, len(deflated), declared, offset=0)
    body = local + deflated
    return body + central + _zip_end(1, len(central), len(body))


def _special_zip(special: Mapping[str, Any]) -> bytes:
    kind = special["kind"]
    if kind == "many_empty_entries":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            for index in range(special["entries"]):
                archive.writestr(zipfile.ZipInfo(f"e{index}"), b"")
        return out.getvalue()
    if kind == "overlapping_entries":
        # Every directory entry points at the one local header: each "file"
        # inflates the same kernel, so the archive expands entries x kernel_size.
        deflated, crc = _deflate_zeros(b"", special["kernel_size"])
        size = special["kernel_size"]
        local = _zip_local_header(b"kernel", crc, len(deflated), size)
        central = b"".join(
            _zip_central_header(f"e{i}".encode(), crc, len(deflated), size, offset=0)
            for i in range(special["entries"])
        )
        body = local + deflated
        return body + central + _zip_end(special["entries"], len(central), len(body))
    raise ValueError(f"unknown special zip {kind!r}")


def _zip_local_header(name: bytes, crc: int, packed: int, size: int) -> bytes:
    return _ZIP_LOCAL + struct.pack(
        "<HHHHHIIIHH", 20, 0, _DEFLATED, 0, 0x21, crc, packed, size, len(name), 0
    ) + name


def _zip_central_header(
    name: bytes, crc: int, packed: int, size: int, *, offset: int
) -> bytes:
    return _ZIP_CENTRAL + struct.pack(
        "<HHHHHHIIIHHHHHII", 20, 20, 0, _DEFLATED, 0, 0x21, crc, packed, size,
        len(name), 0, 0, 0, 0, 0, offset,
    ) + name


def _zip_end(count: int, central_size: int, central_offset: int) -> bytes:
    count = min(count, 0xFFFF)
    return _ZIP_END + struct.pack(
        "<HHHHIIH", 0, 0, count, count, central_size, central_offset, 0
    )


def _deflate_zeros(prefix: bytes, zero_count: int) -> tuple[bytes, int]:
    """Return a raw deflate stream of `prefix` + zeros, and its CRC-32."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(_MIB)
    whole, rest = divmod(zero_count, _MIB)
    pieces = [compressor.compress(prefix)]
    crc = zlib.crc32(prefix)
    if whole:
        pieces.append(compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH))
    if whole >= 3:
        unit = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
        again = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
        assert unit == again, "deflate output of zeros did not settle"
        pieces.append(unit * (whole - 2))
        pieces.append(again)
    elif whole == 2:
        pieces.append(compressor.compress(chunk))
    pieces.append(compressor.compress(bytes(rest)) + compressor.flush())
    for _ in range(whole):
        crc = zlib.crc32(chunk, crc)
    return b"".join(pieces), zlib.crc32(bytes(rest), crc)


def _member_bytes(member: Mapping[str, Any]) -> bytes:
    if member.get("nested_zip_members"):
        return _zip([dict(m) for m in member["nested_zip_members"]])
    if member.get("type") in ("symlink", "hardlink") and member.get("content") is None:
        return str(member.get("linkname") or "").encode()
    if member.get("content") is not None:
        return str(member["content"]).encode()
    return _pattern(member.get("pattern", "zeros"), member.get("size", 0))


def _pattern(pattern: str, size: int) -> bytes:
    if pattern == "zeros":
        return bytes(size)
    unit = pattern.encode()
    return (unit * (size // len(unit) + 1))[:size]

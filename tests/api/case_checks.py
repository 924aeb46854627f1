"""Judging one answer of a shared HTTP case: status, must, must_not, global rules.

The `must_not` vocabulary of http-cases.json has two halves. Items about the answer
(status, body, headers, timing) are read off the `Reply`. Items about the world
(files created, modified or deleted, inside or outside the space) are read off the
disk, or for the database-mapped `home` space off the API, after each request; the
`SpaceProbe` and `World` classes below do that. "Outbound network connection
attempted" is read from the network calls the server process records through its
audit hook (see live_server). An item this module does not know raises ValueError,
so a new vocabulary word fails loudly instead of passing.

Three rules hold for every request whatever the case says (the product's promise):
no 5xx, no body carrying an outside or sibling secret, and nothing in P outside the
case's own space created, changed or removed (in the server's data directory, only
its own database, secret and blob files may appear).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from live_server import API, STAGING_PREFIX, LiveServer, Reply, snapshot_tree

__all__ = [
    "ACTIVE_TYPES",
    "Judged",
    "SpaceProbe",
    "World",
    "disposition",
    "effective_filename",
    "judge_reply",
    "judge_world",
]

# The case file's own definition of "inline active content" (B28 notes), plus the
# script types a browser would also run from our origin.
ACTIVE_TYPES = frozenset({
    "text/html", "application/xhtml+xml", "image/svg+xml", "text/xml",
    "application/xml", "text/javascript", "application/javascript",
})
# Markers that only files outside every space carry (setup.outside_files).
GLOBAL_SECRETS = ("OUTSIDE-SECRET", "SIBLING-SECRET")
# Names the server itself keeps in its data directory; a home upload adds blobs.
_DATA_ENTRY = re.compile(
    r"strongroom\.db(-wal|-shm|-journal)?|jwt\.secret|blobs"
    r"|blobs/[0-9a-f]{2}(/[0-9a-f]{2}(/([0-9a-f]{32}|\.~sr-[0-9a-f]+))?)?"
)
_PARAM = re.compile(
    r"\s*;\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^\";\s]+)"
)
_WORLD_PREFIXES = (
    "file created outside space", "outside file", "space file", "space root",
    "space directory", "symlink exists", "other space", "temporary file",
    "outbound network connection attempted", "special file exists",
    "setuid or world-writable",
)


@dataclass
class Judged:
    """The context one answer is judged in.

    An `advisory` answer is judged only on what must never happen (`must_not`
    and the global rules), not on its status or its `must` items.
    """

    method: str
    path: str
    advisory: bool
    file_sizes: Mapping[str, int]
    previous: Reply | None = None
    violations: list[str] = field(default_factory=list)


class SpaceProbe:
    """Look at the case's space: P/lab on disk, or alice's home through the API."""

    def __init__(self, server: LiveServer, variant: str) -> None:
        self.server = server
        self.variant = variant
        self.root = server.parent / "lab"
        self.root_ino = os.lstat(self.root).st_ino if variant == "lab" else 0

    def read(self, rel_path: str) -> bytes | None:
        """Return a regular file's bytes, or None when it is missing or not a file."""
        if self.variant == "home":
            reply = self.server.request("GET", f"{API}/spaces/home/files/{rel_path}")
            return reply.body if reply.status == 200 else None
        host_path = self.root / rel_path
        if not host_path.is_file() or host_path.is_symlink():
            return None
        return host_path.read_bytes()

    def exists(self, rel_path: str) -> bool:
        """Tell whether anything has this name."""
        if self.variant == "home":
            reply = self.server.request("GET", f"{API}/spaces/home/meta/{rel_path}")
            return reply.status == 200
        return os.path.lexists(self.root / rel_path)

    def dir_identity(self, rel_path: str) -> object:
        """Return something that changes when a folder is replaced (None: no folder)."""
        if self.variant == "home":
            reply = self.server.request("GET", f"{API}/spaces/home/meta/{rel_path}")
            return "dir" if reply.status == 200 and b'"dir"' in reply.body else None
        st = os.lstat(self.root / rel_path) if self.exists(rel_path) else None
        return st.st_ino if st is not None and stat.S_ISDIR(st.st_mode) else None

    def root_intact(self) -> bool:
        """Tell whether the space's top folder is still the one we started with."""
        if self.variant == "home":
            return self.server.request("GET", f"{API}/spaces/home/list").status == 200
        try:
            st = os.lstat(self.root)
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(st.st_mode) and st.st_ino == self.root_ino

    def names(self) -> list[str]:
        """Return every path in the space, folders included."""
        if self.variant == "home":
            return _home_paths(self.server, "")
        return list(snapshot_tree(self.root))

    def symlinks(self) -> list[str]:
        """Return every symlink in the space (home has none by construction)."""
        if self.variant == "home":
            return []
        return [p for p, v in snapshot_tree(self.root).items() if v[0] == "symlink"]

    def special_files(self) -> list[str]:
        """Return every FIFO, socket or device in the space (home has none)."""
        if self.variant == "home":
            return []
        return [p for p, v in snapshot_tree(self.root).items()
                if v[0] not in ("file", "dir", "symlink")]

    def unsafe_modes(self) -> list[str]:
        """Return every entry with a set-id bit or writable by everyone."""
        if self.variant == "home":
            return []
        unsafe = stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH
        found = []
        for top, dirs, files in os.walk(self.root):
            for name in dirs + files:
                st = os.lstat(os.path.join(top, name))
                if not stat.S_ISLNK(st.st_mode) and st.st_mode & unsafe:
                    found.append(os.path.relpath(os.path.join(top, name), self.root))
        return found

    def staging_files(self) -> list[str]:
        """Return leftover staging files of the atomic writer."""
        top = self.server.data_dir / "blobs" if self.variant == "home" else self.root
        return [p for p in snapshot_tree(top)
                if p.rsplit("/", 1)[-1].startswith(STAGING_PREFIX)]


class World:
    """Everything in P outside the case's space, pictured once and compared after."""

    def __init__(self, server: LiveServer, space: SpaceProbe,
                 setup_files: Mapping[str, bytes], setup_dirs: Sequence[str]) -> None:
        self.server = server
        self.space = space
        self.setup_files = setup_files
        self.skip_top = "data" if space.variant == "home" else "lab"
        self.before = self.picture()
        self.data_before = set(snapshot_tree(server.data_dir))
        self.dirs_before = {d: space.dir_identity(d) for d in setup_dirs}
        self.net_events_before = len(server.network_events())

    def picture(self) -> dict[str, tuple[object, ...]]:
        """Return a no-follow picture of P, leaving out the case's space and data/."""
        picture: dict[str, tuple[object, ...]] = {}
        for child in sorted(os.listdir(self.server.parent)):
            if child in (self.skip_top, "data"):
                continue
            host_path = self.server.parent / child
            st = os.lstat(host_path)
            if stat.S_ISDIR(st.st_mode):
                picture[child] = ("dir", stat.S_IMODE(st.st_mode), st.st_ino)
                for rel, value in snapshot_tree(host_path).items():
                    picture[f"{child}/{rel}"] = value
            else:
                picture[child] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns)
        return picture

    def global_violations(self, after: Mapping[str, tuple[object, ...]]) -> list[str]:
        """Name every entry outside the space that appeared, changed or went away."""
        found = [f"created outside the space: {p}" for p in after.keys() - self.before]
        found += [f"removed outside the space: {p}" for p in self.before.keys() - after]
        found += [f"changed outside the space: {p}" for p in self.before.keys() & after
                  if self.before[p] != after[p]]
        new_data = set(snapshot_tree(self.server.data_dir)) - self.data_before
        found += [f"created in the data directory: data/{p}" for p in sorted(new_data)
                  if not _DATA_ENTRY.fullmatch(p)]
        return sorted(found)

    def new_network_events(self) -> list[str]:
        """Return the server's network calls since the picture was taken."""
        return self.server.network_events()[self.net_events_before:]


def judge_reply(reply: Reply, expect: Mapping[str, Any], judged: Judged) -> None:
    """Add to `judged.violations` everything `reply` breaks in `expect`."""
    add = judged.violations.append
    if not judged.advisory and reply.status not in expect["status"]:
        add(f"status {reply.status} is not one of {expect['status']}")
    if 500 <= reply.status < 600:
        add(f"5xx: got {reply.status}")
    for secret in GLOBAL_SECRETS:
        if secret.encode() in reply.body:
            add(f"body contains {secret}")
    for item in expect.get("must_not", []):
        if not item.startswith(_WORLD_PREFIXES) and _breaks(item, reply, judged):
            add(f"must_not: {item}")
    if 200 <= reply.status < 300 and not judged.advisory:
        for item in expect.get("must", []):
            if not _holds(item, reply):
                add(f"must: {item}")
        _check_body_expectations(reply, expect, add)


def judge_world(items: Sequence[str], world: World) -> list[str]:
    """Return the world-state `must_not` items that now hold, plus global breaches."""
    after = world.picture()
    found = world.global_violations(after)
    for item in items:
        if item.startswith(_WORLD_PREFIXES) and _world_breaks(item, world, after):
            found.append(f"must_not: {item}")
    return found


def disposition(value: str | None) -> tuple[str, list[tuple[str, str]]] | None:
    """Parse Content-Disposition into (type, params); None if it does not parse.

    Quoted strings are honoured, so `"a; filename=b"` is one parameter, the way
    a browser reads it.
    """
    if value is None:
        return None
    match = re.match(r"\s*([A-Za-z-]+)", value)
    if match is None:
        return None
    params: list[tuple[str, str]] = []
    pos = match.end()
    while value[pos:].strip(" ;"):
        found = _PARAM.match(value, pos)
        if found is None:
            return None
        raw = found.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params.append((found.group(1).lower(), raw))
        pos = found.end()
    return match.group(1).lower(), params


def effective_filename(params: Sequence[tuple[str, str]]) -> str | None:
    """Return the name a browser saves under: `filename*` first (RFC 6266 4.3)."""
    values = dict(params)
    if "filename*" in values:
        charset, _, rest = values["filename*"].partition("'")
        _, _, encoded = rest.partition("'")
        return unquote(encoded, encoding=charset or "utf-8", errors="replace")
    return values.get("filename")


def _breaks(item: str, reply: Reply, judged: Judged) -> bool:
    checks: list[tuple[str, Callable[[str], bool]]] = [
        ("5xx", lambda _: 500 <= reply.status < 600),
        ("body contains ", lambda text: text.encode() in reply.body),
        ("header present ", lambda name: reply.header(name) is not None),
        ("response slower than ",
         lambda text: reply.seconds > float(text.rstrip("s"))),
        ("response body larger than 2x file size",
         lambda _: len(reply.body) > 2 * judged.file_sizes[_file_path(judged.path)]),
        ("Content-Disposition has more than one filename parameter",
         lambda _: _filename_params(reply) > 1),
        ("Content-Disposition effective filename is ",
         lambda name: _effective_name(reply) == name),
        ("inline active content", lambda _: _is_inline_active(reply)),
        ("response differs from wrong-password response",
         lambda _: judged.previous is not None
         and _differs_from_wrong_password(reply, judged.previous)),
    ]
    for prefix, check in checks:
        if item.startswith(prefix):
            return check(item[len(prefix):])
    raise ValueError(f"unknown must_not item {item!r}")


def _holds(item: str, reply: Reply) -> bool:
    if item == "attachment disposition or inert Content-Type":
        parsed = disposition(reply.header("content-disposition"))
        return (parsed is not None and parsed[0] == "attachment") or not _is_active(
            reply)
    if item.startswith("header "):
        name, _, value = item[len("header "):].partition(": ")
        return (reply.header(name) or "").strip().lower() == value.lower()
    raise ValueError(f"unknown must item {item!r}")


def _check_body_expectations(
    reply: Reply, expect: Mapping[str, Any], add: Callable[[str], None]
) -> None:
    wanted = expect.get("if_200_body_equals")
    if reply.status == 200 and wanted is not None and reply.body != wanted.encode():
        add(f"200 body is {reply.body[:80]!r}, not {wanted!r}")
    length = expect.get("body_length")
    if length is not None and len(reply.body) != length:
        add(f"body has {len(reply.body)} bytes, not {length}")


def _world_breaks(item: str, world: World, after: Mapping[str, Any]) -> bool:
    space, before = world.space, world.before
    subject = item.partition(": ")[2]
    if item == "file created outside space":
        return bool(after.keys() - before.keys())
    if item == "outbound network connection attempted":
        return bool(world.new_network_events())
    if item.startswith("outside file mode or mtime changed: "):
        return _fields(after, subject, 1, 4) != _fields(before, subject, 1, 4)
    if item.startswith("outside file modified: "):
        new = after.get(subject)
        return new is not None and _fields(after, subject, 0, 2, 3) != _fields(
            before, subject, 0, 2, 3)
    if item.startswith("outside file deleted: "):
        return subject not in after
    if item.startswith("space file exists: "):
        return any(p.startswith(subject) for p in space.names())
    if item.startswith("space file modified: "):
        return space.read(subject) != world.setup_files[subject]
    if item.startswith("space file deleted: "):
        return not space.exists(subject)
    if item == "space root deleted":
        return not space.root_intact()
    if item.startswith("space directory replaced: "):
        return space.dir_identity(subject) != world.dirs_before[subject]
    if item == "symlink exists in space":
        return bool(space.symlinks())
    if item.startswith("other space modified: "):
        return any(before.get(p) != after.get(p)
                   for p in before.keys() | after.keys()
                   if p == subject or p.startswith(subject + "/"))
    if item == "temporary file left in space":
        return bool(space.staging_files())
    if item == "special file exists in space":
        return bool(space.special_files())
    if item == "setuid or world-writable file in space":
        return bool(space.unsafe_modes())
    raise ValueError(f"unknown must_not item {item!r}")


def _fields(picture: Mapping[str, Any], rel_path: str, *index: int) -> tuple[Any, ...]:
    # A file's picture is (kind, mode, size, sha256, mtime_ns, inode).
    value = picture.get(rel_path)
    return tuple(value[i] for i in index) if value is not None else ()


def _is_active(reply: Reply) -> bool:
    content_type = reply.header("content-type") or ""
    return content_type.split(";", 1)[0].strip().lower() in ACTIVE_TYPES


def _is_inline_active(reply: Reply) -> bool:
    parsed = disposition(reply.header("content-disposition"))
    return _is_active(reply) and (parsed is None or parsed[0] != "attachment")


def _filename_params(reply: Reply) -> int:
    header = reply.header("content-disposition")
    if header is None:
        return 0
    parsed = disposition(header)
    if parsed is None:
        return 99  # Unparseable: a browser may find any number of names in it.
    return sum(1 for name, _ in parsed[1] if name == "filename")


def _effective_name(reply: Reply) -> str | None:
    parsed = disposition(reply.header("content-disposition"))
    return effective_filename(parsed[1]) if parsed is not None else None


def _differs(reply: Reply, previous: Reply) -> bool:
    return (reply.status, reply.body) != (previous.status, previous.body)


# The answer to a wrong password for a known, unthrottled name.
_WRONG_PASSWORD = (401, "wrong user name or password")


def _differs_from_wrong_password(reply: Reply, previous: Reply) -> bool:
    # The throttle counts per name and address: after a burst at one known name,
    # that name waits (429) while an unknown name from the same address does not
    # yet. That tells which name was hammered, not which names exist, so an
    # unknown name is then compared with the unthrottled wrong-password answer:
    # same status, same body, as a known name gets.
    if previous.status != 429:
        return _differs(reply, previous)
    if reply.status == 429:
        return False
    body = json.loads(reply.body) if reply.body.startswith(b"{") else {}
    return (reply.status, body.get("detail")) != _WRONG_PASSWORD


def _file_path(raw_path: str) -> str:
    return unquote(raw_path.split("?", 1)[0].split("/files/", 1)[1])


def _home_paths(server: LiveServer, rel_path: str) -> list[str]:
    found: list[str] = []
    for entry in server.list_all("home", rel_path):
        found.append(entry["path"])
        if entry["kind"] == "dir":
            found.extend(_home_paths(server, entry["path"]))
    return found


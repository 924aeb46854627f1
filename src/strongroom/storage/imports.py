"""Archive import: unpack a tar or zip into a folder of a space, all or nothing.

Design note. The obvious way to unpack an archive is to walk its members and
write each one at "destination + member name". That is how archive tools keep
getting advisories: a `..`, an absolute name, a symlink planted by one member and
written through by the next, two names that become one after normalisation. Here
no member name is ever joined to a host path. Each name is checked as text
(`_member_parts`), claimed in an in-memory tree of the archive (`_Tree`, which
catches duplicates and file/folder clashes), and written into a staging area
that belongs to the space: a hidden `.~sr-import-*` folder opened as its own
confined `Root` for a directory space, random-named blobs for a home. Links,
devices, FIFOs and sockets are refused and never created. Only when every member
passed is the staged content published, one rename (or one row) at a time, with
each step undone again if a later one fails; in a directory space a folder that
the space does not have yet moves over whole, in one rename, and the plan is
written into the stage first so that a start after a crash can finish it. What
we deliberately do not do: keep modes, owners or times from the headers (files
get the service's modes), unpack nested archives, or let a bad member through
in a "partial" mode.
"""

from __future__ import annotations

import contextlib
import json
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import BinaryIO, Literal, Protocol, runtime_checkable

from strongroom.confine import Root, parse_user_path
from strongroom.errors import (
    ArchiveLimitError,
    InvalidPathError,
    NotADirectoryPathError,
    PathError,
    PathNotFoundError,
    PermissionDeniedError,
    UnreadableArchiveError,
)
from strongroom.storage._unpack import (
    ArchiveMember,
    Extent,
    ImportLimits,
    MemberData,
    read_members,
)
from strongroom.storage.blobs import BlobInfo
from strongroom.storage.home import HomeSpace
from strongroom.storage.metadata import NewFile
from strongroom.storage.spaces import DirectorySpace, Space, guess_content_type

__all__ = [
    "ImportLimits",
    "ImportProgress",
    "ImportReport",
    "MemberResult",
    "Outcome",
    "Phase",
    "check_import_target",
    "finish_interrupted_imports",
    "import_archive",
]

Outcome = Literal["imported", "refused", "too_large", "unreadable", "conflict"]
Status = Literal["imported", "skipped", "refused"]
# "unpack": members are read and staged; "publish": staged content goes in place.
Phase = Literal["unpack", "publish"]
_NodeKind = Literal["file", "dir"]
# What publishing does with one staged entry.
_Action = Literal["mkdir", "create", "replace"]

# Files and folders one import may create, implied parent folders included: twice
# the member limit leaves room for one folder per file, no more.
MAX_IMPORT_PATHS = 20_000
# A home import puts runs of this many blobs in one shard folder (a mkdir per blob
# had cost as much as writing the blob); 256 keeps each folder's share small.
BLOBS_PER_SHARD_RUN = 256
# Members from this size on are copied by the kernel. On a 1 GiB member that
# took a directory import from 2.3-4.3 s to 0.6-0.7 s here; a small one would
# gain nothing, and in a home each copy starts a thread to hash alongside.
KERNEL_COPY_BYTES = 256 * 1024
# The publishing plan in a directory space's staging folder (see
# `finish_interrupted_imports`).
_JOURNAL = "plan.json"

_LINK_REASON = "links are never imported (the target is not created either)"
_SPECIAL_REASON = "only files and folders are imported (this is a {kind})"
_CANCELLED = "not imported: the archive as a whole was refused"


@dataclass(frozen=True, slots=True)
class MemberResult:
    """What became of one archive member; `name` is printable archive text."""

    name: str
    status: Status
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ImportProgress:
    """How far an import has come: members read and their bytes unpacked so far."""

    phase: Phase
    members: int
    unpacked_bytes: int


@dataclass(frozen=True, slots=True)
class ImportReport:
    """The answer to an import: the overall outcome and one row per member."""

    outcome: Outcome
    detail: str
    members: list[MemberResult]

    def count(self, status: Status) -> int:
        """Return how many members ended with `status`."""
        return sum(1 for m in self.members if m.status == status)


def import_archive(
    space: Space,
    archive: BinaryIO,
    archive_bytes: int,
    rel_dir: str,
    *,
    overwrite: bool = False,
    limits: ImportLimits | None = None,
    on_progress: Callable[[ImportProgress], None] | None = None,
) -> ImportReport:
    """Unpack `archive` into folder `rel_dir` ("" is the top) of a writable space.

    All or nothing: either every member passed and the staged content is
    published, or nothing in the space changes. Existing files are kept (their
    members are `skipped`) unless `overwrite`. A refused member, a crossed limit
    or an unreadable archive is reported in the returned report, not raised.
    Raises `PermissionDeniedError` for a read-only space, and a `PathError` when
    `rel_dir` itself is refused or is not a folder.

    `on_progress` is called in this thread as each member starts, after each
    chunk it unpacks (1 MiB; 8 MiB runs of a plain tar in a file, which the
    kernel copies), and once more as publishing starts; a caller that
    reports on a slower clock throttles itself. It is also the way to stop an
    import: whatever it raises propagates after the stage has been removed, and
    nothing in the space has changed. Once publishing has started it is not
    called again, so an import is never stopped halfway through publishing.
    """
    if not space.writable:
        raise PermissionDeniedError(
            f"cannot import into space {space.name!r}: it is read-only"
        )
    dir_parts = _dir_parts(rel_dir)
    relay = _ProgressRelay(on_progress) if on_progress is not None else None

    stage = _open_stage(space)
    try:
        _check_import_dir(stage.existing_kind, dir_parts, rel_dir)
        members = read_members(archive, archive_bytes, limits or ImportLimits(),
                               relay.unpacking if relay is not None else None)
        return _run(stage, members, dir_parts, overwrite, relay)
    finally:
        stage.discard()


def check_import_target(space: Space, rel_dir: str) -> None:
    """Raise what `import_archive` would raise before reading any member.

    For a caller that must answer these refusals before it commits to an answer
    (the streamed import route sends its 200 before unpacking). Raises
    `PermissionDeniedError` for a read-only space or one that takes no imports,
    and a `PathError` when `rel_dir` is refused or is not a folder. Reads only;
    `import_archive` checks again, since the space may change in between.
    """
    if not space.writable:
        raise PermissionDeniedError(
            f"cannot import into space {space.name!r}: it is read-only"
        )
    _check_import_dir(_kind_lookup(space), _dir_parts(rel_dir), rel_dir)


class _ProgressRelay:
    """Turns the reader's counts into `ImportProgress` events for the caller."""

    def __init__(self, on_progress: Callable[[ImportProgress], None]) -> None:
        self._on_progress = on_progress
        self._members = 0
        self._unpacked = 0

    def unpacking(self, members: int, unpacked_bytes: int) -> None:
        self._members, self._unpacked = members, unpacked_bytes
        self._on_progress(ImportProgress("unpack", members, unpacked_bytes))

    def publishing(self) -> None:
        self._on_progress(ImportProgress("publish", self._members, self._unpacked))


def _run(
    stage: _Stage,
    members: Iterator[ArchiveMember],
    dir_parts: tuple[str, ...],
    overwrite: bool,
    relay: _ProgressRelay | None,
) -> ImportReport:
    # Unpack into the stage, then plan against the space, then publish: each
    # step runs only if the one before refused nothing.
    tree = _Tree()
    try:
        _unpack(stage, members, tree)
    except ArchiveLimitError as exc:
        return _failed(tree, "too_large", str(exc))
    except UnreadableArchiveError as exc:
        return _failed(tree, "unreadable", str(exc))
    if tree.has_refusals():
        return _failed(tree, "refused", "members were refused; nothing was imported")

    plan = _plan(stage, tree, dir_parts, overwrite)
    if tree.has_refusals():
        detail = "members clash with the space; nothing was imported"
        return _failed(tree, "refused", detail)

    if relay is not None:
        relay.publishing()  # the last point at which the caller may stop us
    try:
        stage.publish(plan)
    except PathError as exc:
        # Someone changed the target while we published (moved a folder, wrote a
        # name first): what this import had placed was taken back where it still
        # stood. Known limit: a file moved elsewhere meanwhile stays there.
        detail = f"the space changed during the import ({exc.reason}); try again"
        return _failed(tree, "conflict", detail)
    detail = f"imported {tree.count('imported')} of {len(tree.results)} members"
    return ImportReport("imported", detail, tree.results)


def _failed(tree: _Tree, outcome: Outcome, detail: str) -> ImportReport:
    members = [
        m if m.status == "refused" else MemberResult(m.name, "skipped", _CANCELLED)
        for m in tree.results
    ]
    return ImportReport(outcome, detail, members)


def _unpack(
    stage: _Stage, members: Iterator[ArchiveMember], tree: _Tree
) -> None:
    for member in members:
        index = tree.add_result(member.name)
        try:
            parts = _member_parts(member.name, member.kind)
            if parts is None:
                tree.set(index, "skipped", "names the import folder itself")
                continue
            rel = tree.claim(parts, _node_kind(member.kind), index)
            if tree.has_refusals():
                continue  # Only checking names from here on; nothing is staged.
            if member.chunks is None:
                stage.add_dir(rel)
            else:
                stage.write_file(rel, member.chunks)
        except _RefusedError as exc:
            tree.set(index, "refused", exc.reason)
        except PathError as exc:
            tree.set(index, "refused", exc.reason)


class _RefusedError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _node_kind(kind: str) -> _NodeKind:
    if kind in ("symlink", "hardlink"):
        raise _RefusedError(_LINK_REASON)
    if kind not in ("file", "dir"):
        raise _RefusedError(_SPECIAL_REASON.format(kind=kind))
    return "file" if kind == "file" else "dir"


def _member_parts(name: str, kind: str) -> tuple[str, ...] | None:
    """Return the components of a member name, or None for the folder itself.

    Stricter than the path rules: `..` is refused anywhere (not only above the
    top), because an archive has no business naming its parent.
    """
    _node_kind(kind)
    if name == "":
        raise _RefusedError("the member has an empty name")
    if name.startswith("/"):
        raise _RefusedError("absolute names are not accepted in archives")
    raw = name.split("/")
    if ".." in raw:
        raise _RefusedError("'..' is not accepted in archive names")
    parts = tuple(p for p in raw if p not in ("", "."))
    if not parts:
        return None
    parse_user_path("import", "/".join(parts))
    return parts


def _dir_parts(rel_dir: str) -> tuple[str, ...]:
    if rel_dir.strip("/") in ("", "."):
        return ()
    parts = parse_user_path("import", rel_dir).parts
    if ".." in parts:
        raise InvalidPathError("import", rel_dir, "'..' is not accepted here")
    return parts


@dataclass
class _Tree:
    """The archive's names as claimed so far, and the report rows."""

    results: list[MemberResult] = field(default_factory=list)
    # NFC-normalised path -> (kind, path as written, result index that claimed it)
    nodes: dict[str, tuple[_NodeKind, str, int]] = field(default_factory=dict)
    order: list[tuple[str, _NodeKind, int]] = field(default_factory=list)
    refused: int = 0

    def add_result(self, name: str) -> int:
        self.results.append(MemberResult(_printable(name), "imported"))
        return len(self.results) - 1

    def set(self, index: int, status: Status, reason: str) -> None:
        if status == "refused" and self.results[index].status != "refused":
            self.refused += 1
        self.results[index] = MemberResult(self.results[index].name, status, reason)

    def has_refusals(self) -> bool:
        return self.refused > 0

    def count(self, status: Status) -> int:
        return sum(1 for m in self.results if m.status == status)

    def claim(self, parts: tuple[str, ...], kind: _NodeKind, index: int) -> str:
        """Claim a path (and its parents as folders); return it joined."""
        wanted = [(parts[:d], "dir") for d in range(1, len(parts))]
        wanted.append((parts, kind))
        fresh = [w for w in wanted if self._check(*w)]
        if len(self.nodes) + len(fresh) > MAX_IMPORT_PATHS:
            # Folders implied by deep names count too: a small archive of empty
            # files must not make hundreds of thousands of folders.
            raise ArchiveLimitError(
                f"import refused: the archive names more than {MAX_IMPORT_PATHS} "
                "files and folders; split it"
            )
        for sub, sub_kind in fresh:
            joined = "/".join(sub)
            node_kind: _NodeKind = "file" if sub_kind == "file" else "dir"
            self.nodes[_normal(joined)] = (node_kind, joined, index)
            self.order.append((joined, node_kind, index))
        return "/".join(parts)

    def _check(self, parts: tuple[str, ...], kind: str) -> bool:
        joined = "/".join(parts)
        seen = self.nodes.get(_normal(joined))
        if seen is None:
            return True
        seen_kind, seen_text, _ = seen
        if seen_text != joined:
            raise _RefusedError(
                f"{_printable(joined)!r} and {_printable(seen_text)!r} are the same "
                "name after Unicode normalisation"
            )
        if seen_kind == "dir" and kind == "dir":
            return False
        if seen_kind == "file" and kind == "dir":
            raise _RefusedError(f"{_printable(joined)!r} is a file earlier in the "
                                "archive and cannot also be a folder")
        if seen_kind == "dir":
            raise _RefusedError("a folder of this name is earlier in the archive")
        raise _RefusedError("the archive holds this name twice")


def _check_import_dir(
    existing_kind: _KindLookup, dir_parts: tuple[str, ...], rel_dir: str
) -> None:
    for depth in range(1, len(dir_parts) + 1):
        found = existing_kind("/".join(dir_parts[:depth]))
        if found not in (None, "dir"):
            reason = "the import folder must be a folder (a file or link is there)"
            raise NotADirectoryPathError("import", rel_dir, reason)


def _plan(
    stage: _Stage, tree: _Tree, dir_parts: tuple[str, ...], overwrite: bool
) -> list[tuple[_Action, str, str]]:
    """Decide, against what the space holds now, what publishing will do.

    `tree.order` names every folder before what is in it, so once a folder is
    known to be missing from the space, nothing beneath it is looked up.
    """
    plan: list[tuple[_Action, str, str]] = []
    prefix = "/".join(dir_parts)
    missing: set[str] = set()
    for depth in range(1, len(dir_parts) + 1):
        sub = "/".join(dir_parts[:depth])
        if stage.existing_kind(sub) is None:
            plan.append(("mkdir", "", sub))
            missing.add(sub)
    for rel, kind, index in tree.order:
        dst = f"{prefix}/{rel}" if prefix else rel
        try:
            found = None if _parent(dst) in missing else stage.existing_kind(dst)
        except PathError as exc:
            tree.set(index, "refused", exc.reason)
            continue
        if found is None and kind == "dir":
            missing.add(dst)
        action = _decide(kind, found, overwrite)
        if action == "skip":
            tree.set(index, "skipped", "a file of this name exists and was kept; "
                     "add ?overwrite=true to replace it")
        elif action == "keep":
            continue
        elif action.startswith("refuse:"):
            tree.set(index, "refused", action.removeprefix("refuse:"))
        else:
            plan.append((action, rel, dst))  # type: ignore[arg-type]
    return plan


def _parent(rel_path: str) -> str:
    return rel_path.rpartition("/")[0]


def _decide(kind: _NodeKind, found: str | None, overwrite: bool) -> str:
    if found is None:
        return "mkdir" if kind == "dir" else "create"
    if kind == "dir":
        return "keep" if found == "dir" else (
            f"refuse:a {found} of this name is in the space; a folder cannot "
            "replace it")
    if found == "file":
        return "replace" if overwrite else "skip"
    if found == "dir":
        return "refuse:a folder of this name is in the space; a file cannot replace it"
    return f"refuse:a {found} of this name is in the space and is never replaced"


class _Stage(Protocol):
    def add_dir(self, rel: str) -> None: ...
    def write_file(self, rel: str, chunks: MemberData) -> None: ...
    def existing_kind(self, dst: str) -> str | None: ...
    def publish(self, plan: list[tuple[_Action, str, str]]) -> None: ...
    def discard(self) -> None: ...


# What is at a space path now: "file", "dir", another entry kind, or None.
_KindLookup = Callable[[str], str | None]


def _open_stage(space: Space) -> _Stage:
    if isinstance(space, DirectorySpace):
        return _DirectoryStage(space.root)
    if isinstance(space, HomeSpace):
        return _HomeStage(space)
    raise PermissionDeniedError(f"space {space.name!r} does not take imports")


def _kind_lookup(space: Space) -> _KindLookup:
    if isinstance(space, DirectorySpace):
        return partial(_kind_in_directory, space.root)
    if isinstance(space, HomeSpace):
        return partial(_kind_in_home, space)
    raise PermissionDeniedError(f"space {space.name!r} does not take imports")


def _kind_in_directory(root: Root, dst: str) -> str | None:
    try:
        return root.lstat(dst).kind
    except PathNotFoundError:
        return None


def _kind_in_home(home: HomeSpace, dst: str) -> str | None:
    meta, owner = home.metadata, home.owner_id
    if meta.get_file(owner, dst) is not None:
        return "file"
    entry = meta.get_entry(owner, dst)
    return None if entry is None else entry.kind


class _Writer(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


@runtime_checkable
class _RangeCopier(_Writer, Protocol):
    def copy_range(self, src_fd: int, offset: int, length: int) -> None: ...


def _write_member(writer: _Writer, chunks: MemberData) -> None:
    # Large extents of a plain tar go by copy_file_range(2) to a writer on
    # local disk (see KERNEL_COPY_BYTES); everything else is read and written.
    # The size is tested first: a protocol isinstance costs about 25 µs.
    for piece in chunks:
        if not isinstance(piece, Extent):
            writer.write(piece)
        elif piece.length >= KERNEL_COPY_BYTES and isinstance(writer, _RangeCopier):
            writer.copy_range(piece.fd, piece.offset, piece.length)
        else:
            for chunk in piece.read():
                writer.write(chunk)


class _DirectoryStage:
    """Members staged under a hidden folder of the space, published by rename.

    The stage holds `m/` (the members, at their archive paths) and `b/` (files
    that an overwrite moved aside, so a failed publish can put them back).
    """

    def __init__(self, space_root: Root) -> None:
        self._space = space_root
        self._name, self._stage = space_root.make_staging_dir()
        self._stage.mkdir("m")
        self._stage.mkdir("b")

    def add_dir(self, rel: str) -> None:
        self._stage.mkdir(f"m/{rel}", parents=True, exist_ok=True)

    def write_file(self, rel: str, chunks: MemberData) -> None:
        # Not fsync-ed one by one: `publish` syncs the file system once before
        # anything moves into the space (an fsync per member made a 10,000-file
        # import eight times slower than tarfile).
        with self._stage.open_writer(
            f"m/{rel}", make_parents=True, durable=False, in_place=True
        ) as writer:
            _write_member(writer, chunks)
            writer.commit()

    def existing_kind(self, dst: str) -> str | None:
        return _kind_in_directory(self._space, dst)

    def publish(self, plan: list[tuple[_Action, str, str]]) -> None:
        space, stage = self._space, self._stage
        undo: list[Callable[[], None]] = []
        moved: set[str] = set()
        stage.sync()  # every staged byte on disk before any of it is visible
        # The journal that lets the next start finish this publish if the
        # process dies halfway (`finish_interrupted_imports`): durable before
        # the first rename.
        stage.write_bytes(_JOURNAL, _journal_text(plan), exclusive=True)
        try:
            for n, step in enumerate(plan):
                if _is_beneath(step[1], moved):
                    continue  # it went over with its folder
                undo.extend(_publish_step(space, stage, n, step, resuming=False))
                if step[0] == "mkdir" and step[1]:
                    moved.add(step[1])
        except BaseException:
            _undo_all(undo)
            # Taken back: the next start must not finish it after all.
            with contextlib.suppress(PathError):
                stage.remove(_JOURNAL)
            raise
        space.sync()  # and the renames that made it visible

    def discard(self) -> None:
        self._stage.close()
        self._space.remove_staging_dir(self._name)


class _HomeStage:
    """Members staged as blobs; rows are added only when the whole archive passed."""

    def __init__(self, home: HomeSpace) -> None:
        self._home = home
        self._staged: dict[str, BlobInfo] = {}
        self._published: set[str] = set()
        self._shard_mate: str | None = None  # the blob the next one goes beside

    def add_dir(self, rel: str) -> None:
        return None  # Folders are rows, made on publish.

    def write_file(self, rel: str, chunks: MemberData) -> None:
        # Not fsync-ed one by one: `publish` syncs the blob store once before
        # any row refers to these blobs.
        near = self._shard_mate if len(self._staged) % BLOBS_PER_SHARD_RUN else None
        writer = self._home.blob_store.create_blob(durable=False, near=near)
        try:
            _write_member(writer, chunks)
            self._staged[rel] = info = writer.commit()
        except BaseException:
            writer.abort()
            raise
        self._shard_mate = info.blob_id

    def existing_kind(self, dst: str) -> str | None:
        return _kind_in_home(self._home, dst)

    def publish(self, plan: list[tuple[_Action, str, str]]) -> None:
        # Every row in one transaction: all or nothing, and one commit (with
        # its fsync) for the whole archive instead of one per member.
        self._home.blob_store.sync()
        folders = [dst for action, _, dst in plan if action == "mkdir"]
        puts = [
            NewFile(
                dst, self._staged[rel].blob_id, self._staged[rel].size,
                self._staged[rel].sha256, guess_content_type(dst),
                create_only=action == "create",
            )
            for action, rel, dst in plan
            if action != "mkdir"
        ]
        home = self._home
        replaced = home.metadata.put_many(
            home.owner_id, folders, puts, quota_bytes=home.quota_bytes
        )
        self._published.update(rel for action, rel, _ in plan if action != "mkdir")
        for blob_id in replaced:
            self._home.blob_store.delete_blob(blob_id)

    def discard(self) -> None:
        for rel, blob in self._staged.items():
            if rel not in self._published:
                with contextlib.suppress(PathError, OSError):
                    self._home.blob_store.delete_blob(blob.blob_id)


def finish_interrupted_imports(space: DirectorySpace) -> list[str]:
    """Finish publishing what a killed process had started; return the folders.

    An import publishes member by member, so a process killed halfway through
    would leave part of an archive in place. Before its first rename it wrote
    the plan into its staging folder; every step that had not happened yet is
    done now, in order, each only if its staged entry is still there (which
    makes a step that did happen, or a second run, a no-op). Staging folders
    still held by a live import (`Root.claim_staging_dir`) and those of
    imports that never reached publishing are left alone: the latter hold
    nothing visible and go with the age-based sweep. Known limit: a step whose
    name another request took meanwhile (possible only with several instances
    on one folder) is dropped, and that request's file stands.
    """
    finished: list[str] = []
    for name in space.root.staging_dir_names():
        try:
            stage = space.root.claim_staging_dir(name)
        except PathError:
            # Finished by another process since the listing, or swapped for
            # something that is not a folder: either way not ours to finish,
            # and no reason to leave the other staging folders unfinished.
            continue
        if stage is None:
            continue  # a live import (this process or another) holds it
        try:
            plan = _read_journal(stage)
            if plan is None:
                continue
            for n, step in enumerate(plan):
                with contextlib.suppress(PathError):
                    _publish_step(space.root, stage, n, step, resuming=True)
            space.root.sync()
        finally:
            stage.close()
        with contextlib.suppress(PathError):  # else the age-based sweep takes it
            space.root.remove_staging_dir(name)
        finished.append(name)
    return finished


def _publish_step(
    space: Root, stage: Root, n: int, step: tuple[_Action, str, str], *,
    resuming: bool,
) -> list[Callable[[], None]]:
    """Carry out plan step `n`; return how to undo it, newest last.

    `resuming` is for a step a killed process may have done in part already:
    what is already in place is left as it is.
    """
    action, rel, dst = step
    if action == "mkdir" and not rel:
        # A folder of the import path itself.
        space.mkdir(dst, exist_ok=resuming)
        return [partial(space.remove, dst)]
    staged = f"m/{rel}"
    if resuming and _kind_in_directory(stage, staged) is None:
        return []  # moved already, alone or with its folder
    undo: list[Callable[[], None]] = []
    if action == "replace":
        aside = f"b/{n}"
        if not resuming or (_kind_in_directory(stage, aside) is None
                            and _kind_in_directory(space, dst) == "file"):
            stage.adopt(space, dst, aside)
        undo.append(partial(space.adopt, stage, aside, dst))
    # A folder missing from the space ("mkdir") moves over whole, with
    # everything in it, in one rename.
    space.adopt(stage, staged, dst)
    undo.append(partial(_take_back, space, stage, dst, staged, _identity(space, dst)))
    return undo


def _journal_text(plan: list[tuple[_Action, str, str]]) -> bytes:
    return json.dumps({"version": 1, "steps": plan}).encode()


def _read_journal(stage: Root) -> list[tuple[_Action, str, str]] | None:
    """The plan a staging folder holds, or None if it has none (or a bad one)."""
    try:
        doc = json.loads(stage.read_bytes(_JOURNAL))
    except (PathError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("version") != 1:
        return None
    steps = doc.get("steps")
    if not isinstance(steps, list):
        return None
    plan: list[tuple[_Action, str, str]] = []
    for step in steps:
        if not (isinstance(step, list) and len(step) == 3
                and step[0] in ("mkdir", "create", "replace")
                and all(isinstance(x, str) for x in step[1:])):
            return None
        plan.append((step[0], step[1], step[2]))
    return plan


def _is_beneath(rel: str, folders: set[str]) -> bool:
    parent = _parent(rel)
    while parent:
        if parent in folders:
            return True
        parent = _parent(parent)
    return False


def _identity(root: Root, rel_path: str) -> tuple[int, int]:
    entry = root.lstat(rel_path)
    return entry.dev, entry.ino


def _take_back(
    space: Root, stage: Root, dst: str, staged: str, published: tuple[int, int]
) -> None:
    # Undo only what this import put there: if another request replaced the
    # file since, that request's write was answered and stands.
    if _identity(space, dst) == published:
        stage.adopt(space, dst, staged)


def _undo_all(undo: list[Callable[[], None]]) -> None:
    # Best effort, newest first: a step that cannot be undone (someone changed
    # the name meanwhile) must not stop the others from being undone.
    for step in reversed(undo):
        with contextlib.suppress(PathError, OSError):
            step()


def _normal(joined: str) -> str:
    return unicodedata.normalize("NFC", joined)


def _printable(text: str) -> str:
    # Names go back to the client in JSON and into logs: cut long ones, and show
    # control characters and undecodable bytes as escapes.
    shown = text if len(text) <= 200 else text[:200] + "..."
    if shown.isprintable():
        return shown
    return shown.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")

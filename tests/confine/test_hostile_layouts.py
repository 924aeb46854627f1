"""One table of hostile layouts, run against every operation of `Root`.

Each row is a path into a fixed hostile tree (`HOSTILE_TREE`): `..` runs, absolute
and encoded names, links out (relative, absolute, chained, dangling, looping, magic,
to devices), links as intermediate components, FIFOs, sockets and a hard link to an
outside file. Each row says which result classes each operation may give; the
default applies to every operation the row does not name. Every combination also
checks the Part A invariants (nothing under `T/outside` read or changed, `T` holds
only `root` and `outside`, nothing handed back carries outside content), that a
refusal names the path as sent and shows no host path, and that an operation that
succeeded had exactly its effect inside the root.

The table runs under both symlink policies: no row depends on the policy.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from confine_harness import CaseTree, Outcome

from strongroom.confine import Root

REFUSED = frozenset({"refused"})
OK = frozenset({"ok"})
NOT_FOUND = frozenset({"not_found"})
OK_OR_REFUSED = frozenset({"ok", "refused"})
WRITTEN = b"hostile-write"
MOVED = "moved-away"

HOSTILE_TREE: list[dict[str, Any]] = [
    {"path": "secret.txt", "type": "file", "outside": True},
    {"path": "odir/secret.txt", "type": "file", "outside": True},
    {"path": "a.txt", "type": "file"},
    {"path": "sub/b.txt", "type": "file"},
    {"path": "sub/uplink", "type": "symlink", "target": "../../outside"},
    {"path": "outlink", "type": "symlink", "target": "../outside/secret.txt"},
    {"path": "abslink", "type": "symlink", "target": "{OUTSIDE}/secret.txt"},
    {"path": "dangout", "type": "symlink", "target": "../outside/missing.txt"},
    {"path": "dangabs", "type": "symlink", "target": "{OUTSIDE}/missing.txt"},
    {"path": "chainlink", "type": "symlink", "target": "hop"},
    {"path": "hop", "type": "symlink", "target": "sub/uplink/secret.txt"},
    {"path": "odirlink", "type": "symlink", "target": "../outside/odir"},
    {"path": "absdirlink", "type": "symlink", "target": "{OUTSIDE}/odir"},
    {"path": "chaindir", "type": "symlink", "target": "hopdir"},
    {"path": "hopdir", "type": "symlink", "target": "sub/uplink/odir"},
    {"path": "indir", "type": "symlink", "target": "sub"},
    {"path": "loop", "type": "symlink", "target": "loop"},
    {"path": "devnull", "type": "symlink", "target": "/dev/null"},
    {"path": "procroot", "type": "symlink", "target": "/proc/self/root"},
    {"path": "pipe", "type": "fifo"},
    {"path": "sock", "type": "socket"},
    {"path": "hl", "type": "hardlink", "target": "{OUTSIDE}/secret.txt"},
]

# A link or special file named as the final component: the operations that never
# dereference their final component act on the name; every other one refuses.
ACTS_ON_NAME = {
    "remove": OK,
    "remove_tree": OK_OR_REFUSED,
    "rename_from": OK,
    "rename_over": OK,
}
# A name that does not exist but is valid: created as that literal name.
CREATED_LITERALLY = {
    "write_bytes": OK,
    "open_writer": OK,
    "create": OK,
    "mkdir": OK,
    "mkdir_parents": OK,
    "rename_to": OK,
    "rename_over": OK,
}
# A literal name below a missing literal directory: only mkdir(parents) succeeds.
PARENTS_MADE = {"mkdir_parents": OK}


@dataclass(frozen=True)
class Hostile:
    """A hostile path and the result classes each operation may give for it."""

    id: str
    path: str
    default: frozenset[str]
    overrides: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def accepted(self, operation: str) -> frozenset[str]:
        """Return the result classes allowed for one operation."""
        return self.overrides.get(operation, self.default)


HOSTILE = [
    # `..` above the root and absolute names: refused whether the target exists.
    Hostile("dotdot-start", "../outside/secret.txt", REFUSED),
    Hostile("dotdot-start-missing", "../outside/missing.txt", REFUSED),
    Hostile("dotdot-middle", "sub/../../outside/secret.txt", REFUSED),
    Hostile("dotdot-bare", "..", REFUSED),
    Hostile("dotdot-end", "sub/../..", REFUSED),
    Hostile("dotdot-deep", "sub/../../../../../../../etc/passwd", REFUSED),
    Hostile("absolute-outside", "{OUTSIDE}/secret.txt", REFUSED),
    Hostile("absolute-inside", "{ROOT}/a.txt", REFUSED),
    Hostile("absolute-etc", "/etc/passwd", REFUSED),
    # A link that leaves the root, used as an intermediate component.
    Hostile("through-rel-dirlink", "odirlink/secret.txt", REFUSED),
    Hostile("through-rel-dirlink-missing", "odirlink/missing.txt", REFUSED),
    Hostile("through-abs-dirlink", "absdirlink/secret.txt", REFUSED),
    Hostile("through-nested-uplink", "sub/uplink/secret.txt", REFUSED),
    Hostile("through-chained-dirlink", "chaindir/secret.txt", REFUSED),
    Hostile("inside-link-then-dotdot", "indir/../../outside/secret.txt", REFUSED),
    Hostile("through-magic-link", "procroot/etc/passwd", REFUSED),
    Hostile("through-self-loop", "loop/x", REFUSED),
    # A link as the final component.
    Hostile("final-rel-link", "outlink", REFUSED, ACTS_ON_NAME),
    Hostile("final-abs-link", "abslink", REFUSED, ACTS_ON_NAME),
    Hostile("final-dangling-rel-link", "dangout", REFUSED, ACTS_ON_NAME),
    Hostile("final-dangling-abs-link", "dangabs", REFUSED, ACTS_ON_NAME),
    Hostile("final-chained-link", "chainlink", REFUSED, ACTS_ON_NAME),
    Hostile("final-dirlink", "odirlink", REFUSED, ACTS_ON_NAME),
    Hostile("final-self-loop", "loop", REFUSED, ACTS_ON_NAME),
    Hostile("final-device-link", "devnull", REFUSED, ACTS_ON_NAME),
    Hostile("final-magic-link", "procroot", REFUSED, ACTS_ON_NAME),
    Hostile(
        "dirlink-trailing-slash",
        "odirlink/",
        REFUSED,
        {"remove": OK_OR_REFUSED, "remove_tree": OK_OR_REFUSED},
    ),
    Hostile(
        "dirlink-slash-dot",
        "odirlink/.",
        REFUSED,
        {"remove": OK_OR_REFUSED, "remove_tree": OK_OR_REFUSED},
    ),
    # Objects that are never served, named directly.
    Hostile("fifo", "pipe", REFUSED, {**ACTS_ON_NAME, "stat": OK_OR_REFUSED}),
    Hostile("socket", "sock", REFUSED, {**ACTS_ON_NAME, "stat": OK_OR_REFUSED}),
    Hostile(
        "hardlink-to-outside",
        "hl",
        REFUSED,
        {**ACTS_ON_NAME, "rename_from": OK_OR_REFUSED, "rename_over": OK_OR_REFUSED},
    ),
    # Encoded and look-alike dots are ordinary names, confined like any other.
    Hostile(
        "percent-dots", "%2e%2e/outside/secret.txt", NOT_FOUND, {"mkdir_parents": OK}
    ),
    Hostile(
        "fullwidth-dots",
        "\uff0e\uff0e/outside/secret.txt",
        NOT_FOUND,
        {"mkdir_parents": OK},
    ),
    Hostile("backslash-dots", "..\\outside\\secret.txt", NOT_FOUND, CREATED_LITERALLY),
    Hostile("percent-slash", "..%2foutside%2fsecret.txt", NOT_FOUND, CREATED_LITERALLY),
]


@dataclass(frozen=True)
class Operation:
    """One way to use a path, and what success must have done inside the root."""

    name: str
    run: Callable[[Root, str], object]
    check_success: Callable[[CaseTree, str], None]


def _open_read(root: Root, path: str) -> bytes:
    with root.open_read(path) as handle:
        return handle.read()


def _open_writer(root: Root, path: str) -> object:
    with root.open_writer(path) as writer:
        writer.write(WRITTEN)
        return writer.commit()


def _nothing_to_check(tree: CaseTree, path: str) -> None:
    """Reads change nothing; the containment checks cover what they return."""


def _holds_written_bytes(tree: CaseTree, path: str) -> None:
    assert tree.read_file(path) == WRITTEN


def _is_directory(tree: CaseTree, path: str) -> None:
    info = tree.lstat(path)
    assert info is not None and stat.S_ISDIR(info.st_mode)


def _is_gone(tree: CaseTree, path: str) -> None:
    assert tree.lstat(path) is None


def _moved_away(tree: CaseTree, path: str) -> None:
    assert tree.lstat(path) is None
    assert tree.lstat(MOVED) is not None


def _received_a_txt(tree: CaseTree, path: str) -> None:
    assert tree.read_file(path) == b"inside:a.txt"
    assert tree.lstat("a.txt") is None


OPERATIONS = [
    Operation("read_bytes", lambda root, p: root.read_bytes(p), _nothing_to_check),
    Operation("open_read", _open_read, _nothing_to_check),
    Operation("stat", lambda root, p: root.stat(p), _nothing_to_check),
    Operation("list_dir", lambda root, p: root.list_dir(p), _nothing_to_check),
    Operation(
        "write_bytes",
        lambda root, p: root.write_bytes(p, WRITTEN),
        _holds_written_bytes,
    ),
    Operation("open_writer", _open_writer, _holds_written_bytes),
    Operation(
        "create",
        lambda root, p: root.write_bytes(p, WRITTEN, exclusive=True),
        _holds_written_bytes,
    ),
    Operation("mkdir", lambda root, p: root.mkdir(p), _is_directory),
    Operation(
        "mkdir_parents", lambda root, p: root.mkdir(p, parents=True), _is_directory
    ),
    Operation("remove", lambda root, p: root.remove(p), _is_gone),
    Operation("remove_tree", lambda root, p: root.remove_tree(p), _is_gone),
    Operation("rename_from", lambda root, p: root.rename(p, MOVED), _moved_away),
    Operation("rename_to", lambda root, p: root.rename("a.txt", p), _received_a_txt),
    Operation(
        "rename_over",
        lambda root, p: root.rename("a.txt", p, overwrite=True),
        _received_a_txt,
    ),
]

PAIRS = [
    pytest.param(hostile, operation, id=f"{hostile.id}-{operation.name}")
    for hostile in HOSTILE
    for operation in OPERATIONS
]


@pytest.mark.parametrize(("hostile", "operation"), PAIRS)
@pytest.mark.parametrize("policy", ["deny", "within"])
def test_hostile_path_is_confined(
    tree: CaseTree,
    open_root: Callable[..., Root],
    policy: str,
    hostile: Hostile,
    operation: Operation,
) -> None:
    tree.build(HOSTILE_TREE)
    root = open_root(symlinks=policy, hardlinks="deny")
    path = tree.substitute(hostile.path)

    with tree.guard_outside():
        outcome = tree.run_op(lambda: operation.run(root, path))

    accepted = hostile.accepted(operation.name)
    assert outcome.kind in accepted, f"{outcome.describe()}; want {sorted(accepted)}"
    if outcome.kind == "ok":
        operation.check_success(tree, path)
    else:
        check_refusal_fields(tree, outcome, path, hostile.path)


def test_every_row_and_operation_is_named_once() -> None:
    """Overrides must name real operations, or a typo would silently widen a row."""
    names = {operation.name for operation in OPERATIONS}

    unknown = {op for row in HOSTILE for op in row.overrides} - names

    assert not unknown
    assert len({row.id for row in HOSTILE}) == len(HOSTILE)


def check_refusal_fields(
    tree: CaseTree, outcome: Outcome, sent: str, written: str
) -> None:
    """A refusal names the path as sent and, unless it was sent, no host path."""
    assert outcome.error is not None
    if sent == written:
        assert str(tree.t_path) not in str(outcome.error), str(outcome.error)
    assert outcome.error.rel_path in (sent, "a.txt", MOVED), outcome.error.rel_path

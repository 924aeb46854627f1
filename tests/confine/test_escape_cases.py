"""The shared escape corpus (`tests/data/escape-cases.json`) against `Root`.

Every case runs once per resolver. A case passes when its result class is `expect`
or one of `also_acceptable`, its content, entry and `post` checks hold, and the
global invariants of Part A hold: nothing under `T/outside` was read or changed,
`T` still holds only `root` and `outside`, nothing handed back carries outside
content, and the operation finished within five seconds.

Cases marked `privileged` plant mounts; they re-run themselves in a private mount
namespace (`unshare -m --propagation private`) and are skipped where that is not
permitted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from confine_harness import (
    IN_MOUNT_NS_ENV,
    CaseTree,
    current_mount_namespace,
    in_private_mount_namespace,
    mount_namespace_unavailable_reason,
)

from strongroom.confine import Root

CASES_PATH = Path(__file__).resolve().parents[1] / "data" / "escape-cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_PATH.read_text(encoding="utf-8"))
PLAIN_CASES = [case for case in CASES if not case.get("privileged")]
PRIVILEGED_CASES = [case for case in CASES if case.get("privileged")]
# Part A: a write without `content` sends "hello".
DEFAULT_CONTENT = "hello"
# Room for a child pytest to start, build a case and run it in a new namespace.
CHILD_TIMEOUT_SECONDS = 120


def case_id(case: Mapping[str, Any]) -> str:
    """Name a parametrised case by its corpus id."""
    return str(case["id"])


@pytest.mark.parametrize("case", PLAIN_CASES, ids=case_id)
def test_escape_case_is_contained(
    case: dict[str, Any], tree: CaseTree, open_root: Callable[..., Root]
) -> None:
    check_case(case, tree, open_root)


@pytest.mark.parametrize("case", PRIVILEGED_CASES, ids=case_id)
def test_privileged_escape_case_is_contained(
    case: dict[str, Any],
    tree: CaseTree,
    open_root: Callable[..., Root],
    request: pytest.FixtureRequest,
) -> None:
    if in_private_mount_namespace():
        check_case(case, tree, open_root, allow_mounts=True)
        return
    reason = mount_namespace_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)

    done = rerun_in_mount_namespace(request, tree.t_path.parent / "child")

    assert done.returncode == 0, f"failed in its namespace:\n{done.stdout[-4000:]}"


def test_corpus_copy_has_every_operation_and_unique_ids() -> None:
    """The copy in tests/data must stay usable: every op mapped, ids unique."""
    ids = [case["id"] for case in CASES]

    assert len(ids) == len(set(ids))
    assert {case["op"] for case in CASES} <= set(OPERATIONS)


def check_case(
    case: Mapping[str, Any],
    tree: CaseTree,
    open_root: Callable[..., Root],
    *,
    allow_mounts: bool = False,
) -> None:
    """Build, run and judge one corpus case; raise AssertionError on failure."""
    tree.build(case["tree"], allow_mounts=allow_mounts)
    before = tree.snapshot()
    root = open_root(symlinks=case["symlink_policy"], hardlinks="deny")

    with tree.watch_outside() as watch:
        outcome = tree.run_op(lambda: OPERATIONS[case["op"]](root, case, tree))

    tree.assert_contained(before, watch, [outcome])
    accepted = {case["expect"], *case.get("also_acceptable", [])}
    assert outcome.kind in accepted, f"{outcome.describe()}; want {sorted(accepted)}"
    if outcome.kind == "ok":
        check_ok_result(case, outcome.value)
    for post in case.get("post", []):
        check_post(tree, post)


def check_ok_result(case: Mapping[str, Any], value: object) -> None:
    """Check `expect_content` and `expect_entries` against what came back."""
    if "expect_content" in case:
        assert value == case["expect_content"].encode()
    if "expect_entries" in case:
        assert isinstance(value, list)
        names = {entry.name for entry in value}
        missing = set(case["expect_entries"]) - names
        assert not missing, f"listing lacks {sorted(missing)}; got {sorted(names)}"


def check_post(tree: CaseTree, post: Mapping[str, Any]) -> None:
    """Check one `post` condition with no-follow lookups."""
    outside = bool(post.get("outside", False))
    where = f"{'outside' if outside else 'root'}/{post['path']}"
    if "exists" in post:
        exists = tree.lstat(post["path"], outside=outside) is not None
        assert exists == post["exists"], f"{where} exists={exists}"
    if "content" in post:
        content = tree.read_file(post["path"], outside=outside)
        assert content == post["content"].encode(), f"{where} holds {content!r}"


def rerun_in_mount_namespace(
    request: pytest.FixtureRequest, basetemp: Path
) -> subprocess.CompletedProcess[str]:
    """Run this very test again under `unshare -m --propagation private`.

    The child is a fresh pytest on the same node id, told by the environment that
    it may mount; its own `--basetemp` keeps it from pruning this run's temp dirs.
    """
    unshare = shutil.which("unshare")
    assert unshare is not None
    command = [
        unshare,
        "-m",
        "--propagation",
        "private",
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--basetemp={basetemp}",
        request.node.nodeid,
    ]
    env = {**os.environ, IN_MOUNT_NS_ENV: current_mount_namespace()}
    return subprocess.run(
        command,
        cwd=request.config.rootpath,
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_SECONDS,
        check=False,
    )


def _content(case: Mapping[str, Any]) -> bytes:
    return str(case.get("content", DEFAULT_CONTENT)).encode()


def _delete(root: Root, path: str, case: Mapping[str, Any]) -> None:
    if case.get("recursive"):
        root.remove_tree(path)
    else:
        root.remove(path)


OPERATIONS: dict[str, Callable[[Root, Mapping[str, Any], CaseTree], object]] = {
    "read": lambda root, case, t: root.read_bytes(t.substitute(case["path"])),
    "write": lambda root, case, t: root.write_bytes(
        t.substitute(case["path"]), _content(case)
    ),
    "create": lambda root, case, t: root.write_bytes(
        t.substitute(case["path"]), _content(case), exclusive=True
    ),
    "mkdir": lambda root, case, t: root.mkdir(t.substitute(case["path"])),
    "delete": lambda root, case, t: _delete(root, t.substitute(case["path"]), case),
    "rename": lambda root, case, t: root.rename(
        t.substitute(case["path"]), t.substitute(case["dest"])
    ),
    "list": lambda root, case, t: root.list_dir(t.substitute(case["path"])),
    "stat": lambda root, case, t: root.stat(t.substitute(case["path"])),
}

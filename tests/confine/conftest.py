"""Fixtures for the confined-root tests: resolvers, case trees and roots.

The tree builder, the no-follow snapshot of `T/outside`, the inotify watch and the
bounded operation runner live in `confine_harness.py`; this file hands them to the
tests as fixtures. See that module's docstring for the layout rules (Part A of the
shared case conventions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confine_harness import RESOLVERS, CaseTree

from strongroom.confine import Root, openat2_available


@pytest.fixture(params=RESOLVERS)
def resolver(request: pytest.FixtureRequest) -> str:
    """Each resolver the confined root offers; openat2 only where the kernel has it."""
    name: str = request.param
    if name == "openat2" and not openat2_available():
        pytest.skip("this kernel has no openat2(2) (Linux < 5.6); walk covers it")
    return name


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[CaseTree]:
    """A fresh `T` with empty `root` and `outside`."""
    case_tree = CaseTree(tmp_path / "T")
    yield case_tree
    case_tree.close()


@pytest.fixture
def open_root(tree: CaseTree, resolver: str) -> Iterator[Callable[..., Root]]:
    """Open `Root`s on `T/root` (or another host path) with the current resolver."""
    opened: list[Root] = []

    def factory(
        symlinks: str = "within", hardlinks: str = "deny", host_path: str | None = None
    ) -> Root:
        where = str(tree.root_path) if host_path is None else host_path
        root = Root(where, symlinks=symlinks, hardlinks=hardlinks, resolver=resolver)
        opened.append(root)
        return root

    yield factory
    for root in opened:
        root.close()

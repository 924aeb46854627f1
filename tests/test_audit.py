"""`audit_tree` reports exactly what a hostile tree holds, and never hangs on it."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from strongroom.audit import MAX_AUDIT_DEPTH, audit_tree


def build_hostile_tree(base: Path) -> Path:
    """A tree with one of every kind of finding (and clean entries around them)."""
    top = base / "tree"
    (top / "docs" / "deep").mkdir(parents=True)
    (base / "outside.txt").write_text("outside")
    (top / "docs" / "ok.txt").write_text("fine")
    (top / "docs" / "deep" / "target.txt").write_text("inside")
    os.symlink("../../outside.txt", top / "docs" / "leak")
    os.symlink("/etc/passwd", top / "abs")
    os.symlink("deep/target.txt", top / "docs" / "fine-link")
    os.symlink("../docs/ok.txt", top / "docs" / "up-and-back")
    os.symlink("missing.txt", top / "docs" / "dangling")
    os.symlink("loop-b", top / "loop-a")
    os.symlink("loop-a", top / "loop-b")
    os.symlink("leak", top / "docs" / "via-leak")
    os.link(top / "docs" / "ok.txt", top / "twin.txt")
    os.mkfifo(top / "pipe")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(top / "sock"))
    os.mknod(top / "null", 0o600 | 0o020000, os.makedev(1, 3))
    (top / "drop").mkdir()
    os.chmod(top / "drop", 0o777)
    return top


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_tree_with_every_kind_of_finding_gives_the_exact_report(
    tmp_path: Path,
) -> None:
    top = build_hostile_tree(tmp_path)

    report = audit_tree(top)

    assert [(f.kind, f.path) for f in report.findings] == [
        ("escaping_link", "docs/leak"),
        ("escaping_link", "docs/via-leak"),
        ("absolute_link", "abs"),
        ("parent_step_link", "docs/up-and-back"),
        ("dangling_link", "docs/dangling"),
        ("link_loop", "loop-a"),
        ("link_loop", "loop-b"),
        ("hardlink", "docs/ok.txt"),
        ("hardlink", "twin.txt"),
        ("fifo", "pipe"),
        ("socket", "sock"),
        ("device", "null"),
        ("world_writable_dir", "drop"),
    ]
    assert report.entries == 17


def test_a_clean_tree_has_no_findings(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_text("c")
    os.symlink("b/c.txt", tmp_path / "a" / "link")

    report = audit_tree(tmp_path)

    assert report.clean
    assert report.as_table() == "no findings in 4 entries"


def test_entries_of_another_owner_are_reported(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("x")

    report = audit_tree(tmp_path, owner_uid=os.geteuid() + 1)

    assert [(f.kind, f.path) for f in report.findings] == [
        ("foreign_owner", "mine.txt")
    ]


def test_the_audit_never_enters_a_linked_folder(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "secret").mkdir(parents=True)
    os.mkfifo(outside / "secret" / "pipe")
    top = tmp_path / "tree"
    top.mkdir()
    os.symlink(outside / "secret", top / "door")

    report = audit_tree(top)

    assert [(f.kind, f.path) for f in report.findings] == [("absolute_link", "door")]


def test_a_symlink_as_the_top_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink("real", tmp_path / "alias")

    with pytest.raises(OSError):
        audit_tree(tmp_path / "alias")


def test_folders_past_the_depth_bound_are_reported_not_entered(
    tmp_path: Path,
) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(MAX_AUDIT_DEPTH + 3):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)

    report = audit_tree(tmp_path)

    assert [f.kind for f in report.findings] == ["too_deep"]
    assert report.entries == MAX_AUDIT_DEPTH


def test_the_json_form_counts_each_kind(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "p1")
    os.mkfifo(tmp_path / "p2")

    data = audit_tree(tmp_path).as_json()

    assert data["counts"] == {"fifo": 2}
    assert data["entries"] == 2

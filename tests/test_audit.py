"""`audit_tree` reports exactly what a hostile tree holds, and never hangs on it."""

from __future__ import annotations

import os
import resource
import socket
from pathlib import Path

import pytest

from strongroom.audit import MAX_AUDIT_DEPTH, audit_tree, shown


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


def test_a_symlink_as_the_top_is_audited_in_the_folder_it_names(
    tmp_path: Path,
) -> None:
    """The admin named the link: a space whose path is a link serves its folder."""
    (tmp_path / "outside").mkdir()
    os.mkfifo(tmp_path / "outside" / "pipe")
    (tmp_path / "real").mkdir()
    os.mkfifo(tmp_path / "real" / "pipe")
    os.symlink("../outside", tmp_path / "real" / "door")
    os.symlink("real", tmp_path / "alias")

    report = audit_tree(tmp_path / "alias")

    # The folder's own FIFO is found; the link inside it is reported, not entered.
    assert [(f.kind, f.path) for f in report.findings] == [
        ("escaping_link", "door"),
        ("fifo", "pipe"),
    ]


def test_a_file_as_the_top_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    os.symlink("file", tmp_path / "alias")

    for top in ("file", "alias"):
        with pytest.raises(NotADirectoryError):
            audit_tree(tmp_path / top)


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


def findings_by_bytes(top: Path) -> list[tuple[str, bytes]]:
    """The report's (kind, exact path bytes) pairs, in report order."""
    return [(f.kind, os.fsencode(f.path)) for f in audit_tree(top).findings]


def test_links_with_names_the_service_refuses_are_checked_and_reported(
    tmp_path: Path,
) -> None:
    """Control characters or non-UTF-8 bytes in a name never hide an entry."""
    top = os.fsencode(tmp_path)
    os.symlink(b"loop\xff", top + b"/loop\xff")
    os.symlink(b"missing", top + b"/gone\x1b")
    os.symlink(b"ping\x01", top + b"/pong\x01")
    os.symlink(b"pong\x01", top + b"/ping\x01")
    os.symlink(b"/etc/passwd", top + b"/abs\n")

    assert findings_by_bytes(tmp_path) == [
        ("absolute_link", b"abs\n"),
        ("dangling_link", b"gone\x1b"),
        ("link_loop", b"loop\xff"),
        ("link_loop", b"ping\x01"),
        ("link_loop", b"pong\x01"),
        ("unservable_name", b"abs\n"),
        ("unservable_name", b"gone\x1b"),
        ("unservable_name", b"loop\xff"),
        ("unservable_name", b"ping\x01"),
        ("unservable_name", b"pong\x01"),
    ]


def test_an_odd_name_is_reported_once_and_its_contents_are_still_checked(
    tmp_path: Path,
) -> None:
    top = os.fsencode(tmp_path)
    os.mkdir(top + b"/d\xfe")
    os.mkfifo(top + b"/d\xfe/pipe")
    os.symlink(b"../../escape", top + b"/d\xfe/leak")
    os.symlink(b"gone", top + b"/d\xfe/dangling")

    assert findings_by_bytes(tmp_path) == [
        ("escaping_link", b"d\xfe/leak"),
        ("dangling_link", b"d\xfe/dangling"),
        ("fifo", b"d\xfe/pipe"),
        ("unservable_name", b"d\xfe"),
    ]


def test_the_service_s_own_staging_names_are_not_findings(tmp_path: Path) -> None:
    (tmp_path / ".~sr-0123456789abcdef01234567").write_text("upload in flight")

    assert audit_tree(tmp_path).clean


def test_a_wide_tree_is_walked_whole_with_few_descriptors(tmp_path: Path) -> None:
    """Folders are entered one at a time: the walk never runs out of descriptors."""
    for n in range(200):
        os.mkdir(tmp_path / f"d{n:03}")
        os.mkfifo(tmp_path / f"d{n:03}" / "pipe")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    in_use = len(os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 50, hard))
    try:
        report = audit_tree(tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    assert [f.kind for f in report.findings] == ["fifo"] * 200


def test_the_table_escapes_every_character_that_is_not_printable(
    tmp_path: Path,
) -> None:
    top = os.fsencode(tmp_path)
    os.symlink(b"\x1b]0;title\x07", top + b"/ctrl_link")
    for name in (b"a\nb", "rtl\u202eexe".encode(), b"c\xc2\x85", b"d\x85",
                 b"back\\x1b", b"bell\x07", b"del\x7f", b"z\xf0\x9f\x98\x80"):
        os.mkfifo(top + b"/" + name)

    lines = audit_tree(tmp_path).as_table().split("\n")

    paths = [line.split()[1] for line in lines[1:-1] if line.startswith("fifo")]
    assert paths == [
        "a\\x0ab", "back\\\\x1b", "bell\\x07", "c\\u0085", "del\\x7f",
        "d\\x85", "rtl\\u202eexe", "z\U0001f600",
    ]
    assert "-> \\x1b]0;title\\x07" in lines[1]
    assert all(char.isprintable() for line in lines for char in line)


def test_shown_names_can_be_turned_back_into_the_exact_bytes() -> None:
    names = [b"plain", b"back\\slash", b"\\x41", b"\x1b\\x1b", b"\xff\\xff",
             "\u202e\u200b\u2028\xa0\x85".encode(), b"\xf4\x8f\xbf\xbf"]

    for name in names:
        assert unescape(shown(os.fsdecode(name))) == name


def unescape(text: str) -> bytes:
    """Undo `shown`, as a reader of the table would (the documented scheme)."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] != "\\":
            out += text[i].encode()
            i += 1
        elif text[i + 1] == "\\":
            out += b"\\"
            i += 2
        else:
            width = {"x": 2, "u": 4, "U": 8}[text[i + 1]]
            code = int(text[i + 2 : i + 2 + width], 16)
            out += bytes([code]) if text[i + 1] == "x" else chr(code).encode()
            i += 2 + width
    return bytes(out)

"""`strongroom audit PATH`: exit codes and output forms."""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import strongroom
from strongroom.cli import _audit_spaces, main
from strongroom.config import load_settings

SRC_DIR = Path(strongroom.__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    """`main` installs a log handler on the test's captured stderr; remove it
    afterwards, or a later test's log lines go to a closed stream."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def test_a_clean_tree_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text("a")

    code = main(["audit", str(tmp_path)])

    assert code == 0
    assert "no findings" in capsys.readouterr().out


def test_findings_exit_1_and_are_listed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.symlink("/etc/passwd", tmp_path / "abs")

    code = main(["audit", str(tmp_path)])

    assert code == 1
    assert "absolute_link" in capsys.readouterr().out


def test_json_output_lists_each_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    os.mkfifo(tmp_path / "pipe")

    code = main(["audit", str(tmp_path), "--json"])

    data = json.loads(capsys.readouterr().out)
    assert code == 1
    assert data["findings"] == [
        {"kind": "fifo", "path": "pipe", "detail": "a named pipe"}
    ]


def test_a_missing_tree_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["audit", str(tmp_path / "nope")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("strongroom: cannot audit") and err.count("\n") == 1


def test_a_symlink_to_a_tree_audits_the_tree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "real").mkdir()
    os.mkfifo(tmp_path / "real" / "pipe")
    os.symlink("real", tmp_path / "alias")

    code = main(["audit", str(tmp_path / "alias")])

    assert code == 1
    assert "fifo  pipe" in capsys.readouterr().out


def test_json_keeps_every_name_exact(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A name that is not UTF-8 has its exact bytes; no lone surrogate is printed
    (jq and other strict readers turn one into U+FFFD)."""
    top = os.fsencode(tmp_path)
    names = {b"b\xff", b"ok\x1b", b"back\\slash", "\u202e".encode()}
    for name in names:
        os.mkfifo(top + b"/" + name)
    os.symlink(b"t\xfe", top + b"/l")

    code = main(["audit", str(tmp_path), "--json"])

    out = capsys.readouterr().out
    findings = json.loads(out)["findings"]
    assert code == 1 and "\\ud" not in out.lower()
    assert {exact(f, "path") for f in findings if f["kind"] == "fifo"} == names
    (link,) = (f for f in findings if f["kind"] == "dangling_link")
    assert (link["path"], exact(link, "target")) == ("l", b"t\xfe")
    assert link["target"] == "t\\xfe"
    assert {f["path"] for f in findings if "path_bytes" in f} == {"b\\xff"}


def exact(finding: dict[str, str], key: str) -> bytes:
    """The exact bytes of a name in the JSON output, as the help explains."""
    if f"{key}_bytes" in finding:
        return base64.b64decode(finding[f"{key}_bytes"])
    return finding[key].encode()


def run_audit_without_file_permission_override(top: Path) -> tuple[int, str]:
    """`strongroom audit --json TOP` in a process that permissions apply to.

    Root reads any folder; without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH it
    meets mode bits like any other user.
    """
    command = [sys.executable, "-c",
               "import sys; from strongroom.cli import main; sys.exit(main())",
               "audit", "--json", str(top)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("dropping root's file permission override needs setpriv")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search",
                   "--", *command]
    path = os.pathsep.join([str(SRC_DIR), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(command, capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert not done.stderr, done.stderr
    return done.returncode, done.stdout


def test_folders_and_entries_that_cannot_be_read_are_findings(tmp_path: Path) -> None:
    for folder in ("locked", "listed_only"):
        (tmp_path / folder).mkdir()
        os.mkfifo(tmp_path / folder / "pipe")
    (tmp_path / "locked").chmod(0o000)
    (tmp_path / "listed_only").chmod(0o444)  # listed, but nothing in it stat-ed
    try:
        code, out = run_audit_without_file_permission_override(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
        (tmp_path / "listed_only").chmod(0o755)

    findings = json.loads(out)["findings"]
    assert code == 1
    assert [(f["kind"], f["path"], f["detail"]) for f in findings] == [
        ("unreadable", "listed_only/pipe", "not checked: Permission denied"),
        ("unreadable", "locked", "not entered: Permission denied"),
    ]


def test_the_start_up_audit_audits_a_space_whose_path_is_a_symlink(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The space serves the folder its path leads to; that folder is audited."""
    (tmp_path / "real").mkdir()
    os.mkfifo(tmp_path / "real" / "pipe\x1b")
    os.symlink("real", tmp_path / "docs")
    config = tmp_path / "strongroom.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "state"}"\n'
        f'[[spaces]]\nname = "docs"\npath = "{tmp_path / "docs"}"\nusers = ["*"]\n'
    )

    with caplog.at_level(logging.WARNING, logger="strongroom.cli"):
        _audit_spaces(load_settings(str(config)))

    logged = [(r.getMessage(), getattr(r, "kind", None), getattr(r, "rel_path", None))
              for r in caplog.records]
    assert ("space_audit_finding", "fifo", "pipe\\x1b") in logged
    assert all(event != "space_audit_failed" for event, _, _ in logged), logged

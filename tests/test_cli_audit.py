"""`strongroom audit PATH`: exit codes and output forms."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from strongroom.cli import main


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


def test_a_missing_tree_exits_2(tmp_path: Path) -> None:
    code = main(["audit", str(tmp_path / "nope")])

    assert code == 2

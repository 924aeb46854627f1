"""`strongroom check`: exit 0 when rows and blobs agree, 1 with findings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strongroom.cli import main
from strongroom.storage.blobs import LocalBlobStore


def config_in(tmp_path: Path) -> str:
    config = tmp_path / "strongroom.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return str(config)


def test_an_empty_service_checks_clean(tmp_path: Path) -> None:
    code = main(["check", "--config", config_in(tmp_path)])

    assert code == 0


def test_an_orphan_blob_is_a_finding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_in(tmp_path)
    main(["check", "--config", config])
    capsys.readouterr()
    blobs = LocalBlobStore.open_dir(tmp_path / "data" / "blobs")
    orphan = blobs.write_blob([b"stray"]).blob_id
    blobs.close()

    code = main(["check", "--config", config, "--json"])

    assert code == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["kind"], f["blob_id"]) for f in findings] == [("orphan_blob", orphan)]

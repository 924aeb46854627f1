"""`strongroom check`: exit 0 when rows and blobs agree, 1 with findings."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from strongroom.cli import main
from strongroom.storage import open_metadata_store
from strongroom.storage.blobs import LocalBlobStore


def config_in(tmp_path: Path) -> str:
    """A config whose blob folder exists, as a service that ran once leaves it."""
    (tmp_path / "data" / "blobs").mkdir(parents=True)
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


def service_with_files(tmp_path: Path, *, store_url: str = "") -> tuple[str, dict]:
    """A service with three stored files; its config names `store_url`."""
    config = config_in(tmp_path)
    if store_url:
        Path(config).write_text(
            Path(config).read_text() + f'blob_store_url = "{store_url}"\n')
    meta = open_metadata_store(f"sqlite:///{tmp_path / 'data' / 'strongroom.db'}")
    blobs = LocalBlobStore.open_dir(tmp_path / "data" / "blobs")
    owner = meta.add_user("alice", "x").id
    ids = {}
    for name in ("a.txt", "b.txt", "c.txt"):
        info = blobs.write_blob([name.encode()])
        meta.put_file(owner, name, blob_id=info.blob_id, size=info.size,
                      sha256=info.sha256, content_type="text/plain")
        ids[name] = info.blob_id
    blobs.close()
    meta.close()
    return config, ids


def damage_marks(tmp_path: Path) -> dict[str, str]:
    meta = open_metadata_store(f"sqlite:///{tmp_path / 'data' / 'strongroom.db'}")
    try:
        return meta.damaged_blob_ids()
    finally:
        meta.close()


def test_a_mistyped_store_folder_is_refused_and_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mistyped = tmp_path / "data" / "blob"
    config, _ = service_with_files(tmp_path, store_url=f"file://{mistyped}")

    codes = [main(["check", "--config", config, *extra])
             for extra in ([], ["--repair"])]

    assert codes == [2, 2]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "does not exist" in err[0], err
    assert not mistyped.exists()
    assert damage_marks(tmp_path) == {}


def test_repair_against_an_empty_store_is_refused_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    config, _ = service_with_files(tmp_path, store_url=f"file://{empty}")

    refused = main(["check", "--config", config, "--repair"])
    out, err = capsys.readouterr()
    marks_after_refusal = damage_marks(tmp_path)
    forced = main(["check", "--config", config, "--repair", "--force"])

    assert (refused, forced) == (2, 1)
    assert "0 rows marked damaged" in out
    assert err.startswith(
        "strongroom: repair refused, nothing was changed: 3 of 3 rows")
    assert "--force" in err and err.count("\n") == 1
    assert marks_after_refusal == {}
    assert len(damage_marks(tmp_path)) == 3


def test_a_plain_check_reports_rows_marked_damaged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a forced repair against the wrong store, the right store's check
    must not say all is well: those files answer 410."""
    empty = tmp_path / "empty"
    empty.mkdir()
    config, ids = service_with_files(tmp_path, store_url=f"file://{empty}")
    main(["check", "--config", config, "--repair", "--force"])
    right = tmp_path / "right.toml"
    right.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    capsys.readouterr()

    plain = main(["check", "--config", str(right)])
    out = capsys.readouterr().out
    repaired = main(["check", "--config", str(right), "--repair"])
    after = main(["check", "--config", str(right)])

    assert (plain, repaired, after) == (1, 0, 0)
    assert out.count("marked_damaged") == 3
    assert "3 files are marked damaged and answer 410" in out
    assert "strongroom check --repair" in out
    assert damage_marks(tmp_path) == {}
    assert sorted(ids.values()) == sorted(
        line.split()[1] for line in out.splitlines() if line.startswith("marked"))


def test_a_hard_link_backup_of_the_blob_folder_checks_clean(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = service_with_files(tmp_path)
    shutil.copytree(tmp_path / "data" / "blobs", tmp_path / "snap",
                    copy_function=os.link)

    code = main(["check", "--config", config])

    assert code == 0, capsys.readouterr()
    assert capsys.readouterr().out.startswith("0 findings; 3 rows, 3 blobs")


def test_a_store_that_cannot_be_read_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as probe:  # a port on loopback that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = config_in(tmp_path)
    Path(config).write_text(
        Path(config).read_text()
        + 'blob_store_url = "s3://nobody-listens"\n'
        + f's3_endpoint_url = "http://127.0.0.1:{port}"\n'
        + 's3_access_key_id = "k"\ns3_secret_access_key = "s"\n'
    )

    code = main(["check", "--config", config])

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("strongroom: the blob store cannot be checked: ")
    assert err.count("\n") == 1 and "Traceback" not in err

"""Offload without nginx: the X-Sendfile answer and the nginx config refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from live_server import (
    ALICE_PASSWORD,
    CONFIG,
    SPACE_DIRS,
    LiveServer,
    files_url,
    run_server,
)

from backends import on_s3

USERS = (("alice", ALICE_PASSWORD, "user"),)


@pytest.fixture(scope="module")
def apache_fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    parent = tmp_path_factory.mktemp("p-sendfile")
    for name in (*SPACE_DIRS, "outside"):
        (parent / name).mkdir()
    config_text = 'offload = "apache"\n' + CONFIG.format(data_dir=parent / "data")
    with run_server(parent, config_text, "auto", USERS) as server:
        yield server


@pytest.mark.parametrize("space", ["lab", "home"])
def test_apache_mode_names_the_opened_file_in_x_sendfile(
    apache_fronted: LiveServer, space: str
) -> None:
    apache_fronted.reset_home("alice")
    assert apache_fronted.put(space, "s/f.txt", b"bytes").status in (200, 201)

    got = apache_fronted.request("GET", files_url(space, "s/f.txt"))

    if space == "home" and on_s3():
        # Apache cannot reach a blob in S3: the app streams it itself.
        assert (got.status, got.body) == (200, b"bytes")
        assert got.header("x-sendfile") is None
        return
    assert got.status == 200 and got.body == b""
    sendfile = Path(got.header("x-sendfile") or "")
    assert sendfile.is_absolute() and sendfile.read_bytes() == b"bytes"
    top = apache_fronted.parent / ("lab" if space == "lab" else "data/blobs")
    assert sendfile.is_relative_to(top.resolve())
    assert got.header("x-content-type-options") == "nosniff"


def test_refused_files_are_never_handed_over(apache_fronted: LiveServer) -> None:
    (apache_fronted.parent / "outside" / "secret.txt").write_bytes(b"secret")
    link = apache_fronted.parent / "lab" / "ln.txt"
    link.unlink(missing_ok=True)
    link.symlink_to("../outside/secret.txt")

    got = apache_fronted.request("GET", files_url("lab", "ln.txt"))

    assert got.status in (403, 404)
    assert got.header("x-sendfile") is None


@pytest.mark.parametrize("bad", ["with$dollar", 'with"quote', "with\\slash"])
def test_nginx_config_refuses_a_space_path_nginx_cannot_quote(
    tmp_path: Path, bad: str
) -> None:
    (tmp_path / bad).mkdir()
    config = tmp_path / "s.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\noffload = "nginx"\n'
        f"[[spaces]]\nname = \"x\"\npath = '{tmp_path / bad}'\nusers = [\"*\"]\n"
    )
    cli = str(Path(sys.executable).with_name("strongroom"))

    done = subprocess.run(
        [cli, "nginx-config", "--config", str(config)],
        capture_output=True, text=True, env={**os.environ, "STRONGROOM_CONFIG": ""},
    )

    assert done.returncode == 1
    assert "cannot be written into an nginx configuration" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("name", ["été-あ.txt", "100%.txt"])
def test_a_name_x_sendfile_cannot_carry_is_sent_by_the_app(
    apache_fronted: LiveServer, name: str
) -> None:
    """Apache gets the path verbatim: non-ASCII (a header cannot hold it) and '%'
    (mod_xsendfile unescapes it) would reach the wrong file or no answer."""
    (apache_fronted.parent / "lab" / name).write_bytes(b"sent by the app")

    got = apache_fronted.request("GET", files_url("lab", quote(name)))

    assert (got.status, got.body) == (200, b"sent by the app")
    assert got.header("x-sendfile") is None

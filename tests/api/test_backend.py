"""The suite's servers really run on the engines this run chose (tests/backends.py)."""

from __future__ import annotations

from live_server import LiveServer

from backends import BACKEND, on_s3
from strongroom.config import load_settings


def test_home_files_land_where_this_run_keeps_them(server: LiveServer) -> None:
    server.reset_home("alice")
    assert server.put("home", "where.txt", b"which engine?").status in (200, 201)

    settings = load_settings(str(server.config_path))
    local_blobs = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]

    if on_s3():
        assert settings.database_url.startswith("postgresql://"), BACKEND
        assert settings.blob_store_url.startswith("s3://")
        assert local_blobs == []
        assert not (server.data_dir / "strongroom.db").exists()
    else:
        assert settings.database_url.startswith("sqlite:///")
        assert any(p.read_bytes() == b"which engine?" for p in local_blobs)

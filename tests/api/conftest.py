"""Fixtures: one live server per resolver, reset before each test."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest
from live_server import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    CONFIG,
    SPACE_DIRS,
    LiveServer,
    add_user,
    free_port,
    wait_until_up,
)


@pytest.fixture(scope="session", params=["openat2", "walk"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Start a server (per resolver) with alice (user) and bob (admin)."""
    parent = tmp_path_factory.mktemp(f"p-{request.param}")
    for name in (*SPACE_DIRS, "outside", "lab-backup"):
        (parent / name).mkdir()
    config = parent / "strongroom.toml"
    config.write_text(CONFIG.format(data_dir=parent / "data"))
    add_user(config, "alice", ALICE_PASSWORD, "user")
    add_user(config, "bob", BOB_PASSWORD, "admin")
    port = free_port()
    env = {**os.environ, "STRONGROOM_CONFIG": str(config),
           "STRONGROOM_RESOLVER": request.param}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory",
         "strongroom.api.app:create_app_from_environment",
         "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
         "--log-level", "warning"],
        cwd=parent, env=env,
    )
    try:
        wait_until_up(proc, port)
        server = LiveServer(parent, port, request.param)
        for user, password in (("alice", ALICE_PASSWORD), ("bob", BOB_PASSWORD)):
            reply = server.login(user, password)
            assert reply.status == 200, reply.body
            server.tokens[user] = reply.json()["access_token"]  # type: ignore[index]
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def server(live_server: LiveServer) -> LiveServer:
    """The live server with every space emptied before the test."""
    live_server.reset_tree()
    return live_server

"""Fixtures: one live server per resolver, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import (
    ALICE_PASSWORD,
    BOB_PASSWORD,
    CONFIG,
    SPACE_DIRS,
    LiveServer,
    run_server,
)

FIXTURE_USERS = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))


@pytest.fixture(scope="session", params=["openat2", "walk"])
def live_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Start a server (per resolver) with alice (user) and bob (admin)."""
    parent = tmp_path_factory.mktemp(f"p-{request.param}")
    for name in (*SPACE_DIRS, "outside", "lab-backup"):
        (parent / name).mkdir()
    config_text = CONFIG.format(data_dir=parent / "data")
    with run_server(parent, config_text, request.param, FIXTURE_USERS) as server:
        yield server


@pytest.fixture
def server(live_server: LiveServer) -> LiveServer:
    """The live server with every space emptied and no failed logins counted."""
    live_server.reset_tree()
    live_server.forget_failed_logins()
    return live_server


@pytest.fixture(params=["lab", "home"])
def space(request: pytest.FixtureRequest, server: LiveServer) -> str:
    """The name of an empty read-write space of each kind: directory and home."""
    server.reset_home("alice")
    server.reset_home("bob")
    name: str = request.param
    return name

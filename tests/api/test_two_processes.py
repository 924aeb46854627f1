"""Several app processes on one database: what one refuses, every other refuses.

Two independent servers (two uvicorn processes, different ports) share one
SQLite file and one signing secret, as two instances behind a load balancer do;
a third runs four uvicorn workers on one socket (LIF-04 of
tests/data/jwt-attacks.json). A logout, a password change, a refresh-token
reuse, an admin's revoke and failed logins on one process are enforced by the
others on the very next request: nothing about tokens is kept only in memory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live_server import (
    ALICE_PASSWORD,
    API,
    BOB_PASSWORD,
    CONFIG,
    SPACE_DIRS,
    LiveServer,
    Reply,
    run_server,
)

from strongroom.auth.throttle import FREE_FAILURES

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
USERS = (("alice", ALICE_PASSWORD, "user"), ("bob", BOB_PASSWORD, "admin"))
REPLAYS = 40


@dataclass
class Pair:
    """Two server processes on one database and secret."""

    one: LiveServer
    other: LiveServer


def make_parent(parent: Path) -> None:
    for name in SPACE_DIRS:
        (parent / name).mkdir()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    first, second = (tmp_path_factory.mktemp(f"pair-{n}") for n in ("a", "b"))
    make_parent(first)
    make_parent(second)
    config_text = CONFIG.format(data_dir=first / "data")
    with (
        run_server(first, config_text, "openat2", USERS) as one,
        run_server(second, config_text, "openat2", ()) as other,
    ):
        yield Pair(one, other)


def login(server: LiveServer, user: str, password: str) -> dict[str, str]:
    reply = server.request(
        "POST", f"{API}/token", token=None, headers=FORM,
        body=f"username={user}&password={password}".encode(),
    )
    assert reply.status == 200, reply.body
    body = reply.json()
    assert isinstance(body, dict)
    return body


def spaces(server: LiveServer, access_token: str) -> Reply:
    return server.request(
        "GET", f"{API}/spaces", token=None,
        headers={"Authorization": f"Bearer {access_token}"},
    )


def refresh(server: LiveServer, refresh_token: str) -> Reply:
    return server.request(
        "POST", f"{API}/token/refresh", token=None, headers=FORM,
        body=f"refresh_token={refresh_token}".encode(),
    )


def add_user(pair: Pair, name: str, password: str) -> None:
    admin = {"Authorization": f"Bearer {pair.one.tokens['bob']}",
             "Content-Type": "application/json"}
    reply = pair.one.request(
        "POST", f"{API}/admin/users", headers=admin, token=None,
        body=json.dumps({"name": name, "password": password}).encode(),
    )
    assert reply.status == 201, reply.body


def test_both_processes_accept_a_token_either_issued(pair: Pair) -> None:
    """The baseline, so the refusals below are about revocation only."""
    tokens = login(pair.one, "alice", ALICE_PASSWORD)

    assert spaces(pair.other, tokens["access_token"]).status == 200
    assert spaces(pair.one, tokens["access_token"]).status == 200


def test_a_logout_on_one_is_enforced_by_the_other(pair: Pair) -> None:
    tokens = login(pair.one, "alice", ALICE_PASSWORD)
    assert spaces(pair.other, tokens["access_token"]).status == 200

    out = pair.one.request(
        "POST", f"{API}/logout", token=None,
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
    )

    assert out.status == 204
    assert spaces(pair.other, tokens["access_token"]).status == 401
    assert refresh(pair.other, tokens["refresh_token"]).status == 400


def test_a_password_change_on_one_is_enforced_by_the_other(pair: Pair) -> None:
    add_user(pair, "carol", "carol-password-1")
    tokens = login(pair.one, "carol", "carol-password-1")
    assert spaces(pair.other, tokens["access_token"]).status == 200

    changed = pair.one.request(
        "POST", f"{API}/account/password", token=None,
        headers={"Authorization": f"Bearer {tokens['access_token']}",
                 "Content-Type": "application/json"},
        body=json.dumps({"current_password": "carol-password-1",
                         "new_password": "carol-password-2"}).encode(),
    )

    assert changed.status == 204
    assert spaces(pair.other, tokens["access_token"]).status == 401
    assert refresh(pair.other, tokens["refresh_token"]).status == 400
    assert login(pair.other, "carol", "carol-password-2")["access_token"]


def test_a_refresh_reuse_on_one_is_enforced_by_the_other(pair: Pair) -> None:
    first = login(pair.one, "alice", ALICE_PASSWORD)
    rotated = refresh(pair.one, first["refresh_token"]).json()
    assert isinstance(rotated, dict)

    reused = refresh(pair.other, first["refresh_token"])

    assert reused.status == 400
    assert spaces(pair.one, rotated["access_token"]).status == 401
    assert spaces(pair.other, first["access_token"]).status == 401
    assert refresh(pair.one, rotated["refresh_token"]).status == 400


def test_a_cli_revoke_is_enforced_by_both_at_once(pair: Pair) -> None:
    add_user(pair, "dave", "dave-password-1")
    tokens = [login(s, "dave", "dave-password-1") for s in (pair.one, pair.other)]

    done = subprocess.run(
        [str(Path(sys.executable).with_name("strongroom")), "token", "revoke",
         "--user", "dave", "--config", str(pair.one.config_path)],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "STRONGROOM_CONFIG": ""},
    )

    assert done.returncode == 0, done.stderr
    for server in (pair.one, pair.other):
        for token in tokens:
            assert spaces(server, token["access_token"]).status == 401
            assert refresh(server, token["refresh_token"]).status == 400


def test_failed_logins_on_one_slow_logins_on_the_other(pair: Pair) -> None:
    add_user(pair, "erin", "erin-password-1")
    for _ in range(FREE_FAILURES + 1):
        wrong = pair.one.request(
            "POST", f"{API}/token", token=None, headers=FORM,
            body=b"username=erin&password=not-the-password",
        )
        assert wrong.status in (401, 429)

    reply = pair.other.request(
        "POST", f"{API}/token", token=None, headers=FORM,
        body=b"username=erin&password=erin-password-1",
    )

    assert reply.status == 429, reply.body
    assert reply.header("retry-after")


def test_lif_04_a_logged_out_token_fails_on_every_worker(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """[LIF-04] Four workers; log in, log out, replay 40 times on fresh connections."""
    parent = tmp_path_factory.mktemp("workers")
    make_parent(parent)
    config_text = CONFIG.format(data_dir=parent / "data")
    with run_server(parent, config_text, "openat2", USERS[:1], workers=4) as server:
        token = login(server, "alice", ALICE_PASSWORD)["access_token"]
        warm = [spaces(server, token).status for _ in range(REPLAYS)]
        out = server.request(
            "POST", f"{API}/logout", token=None,
            headers={"Authorization": f"Bearer {token}"},
        )
        replays = [spaces(server, token).status for _ in range(REPLAYS)]

    assert set(warm) == {200}
    assert out.status == 204
    assert replays == [401] * REPLAYS

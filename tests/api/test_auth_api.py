"""Authentication at the HTTP edge: who may call, and how a token must arrive."""

from __future__ import annotations

import pytest
from live_server import (
    ALICE_PASSWORD,
    API,
    PROBLEM_JSON,
    LiveServer,
    files_url,
    wait_until,
)

# A routed endpoint and the download route, which a separate fast lane answers
# (api/fastlane.py): both must read the Authorization header the same way.
ROUTES = [f"{API}/spaces", files_url("lab", "a.txt")]
INVALID_TOKEN = 'Bearer error="invalid_token"'  # noqa: S105 (a header value)


def test_token_of_a_removed_user_is_401_on_every_route(server: LiveServer) -> None:
    (server.parent / "lab" / "a.txt").write_text("A")
    name = f"carol-{server.resolver}"
    server.add_logged_in_user(name, "carol-password-333")
    assert server.request("GET", f"{API}/spaces", token=name).status == 200

    server.remove_user(name)
    replies = [server.request("GET", route, token=name) for route in ROUTES]

    assert [r.status for r in replies] == [401, 401]
    assert {r.header("www-authenticate") for r in replies} == {INVALID_TOKEN}


def test_password_change_revokes_tokens_issued_before_it(server: LiveServer) -> None:
    name = f"dave-{server.resolver}"
    server.add_logged_in_user(name, "dave-password-4444")
    old_token = server.tokens[name]

    server.change_password(name, "dave-password-55555")
    old = [server.request("GET", route, token=name) for route in ROUTES]
    server.tokens[name] = server.login(name, "dave-password-55555").json()[  # type: ignore[index]
        "access_token"]
    new = server.request("GET", f"{API}/spaces", token=name)

    assert [r.status for r in old] == [401, 401]
    assert server.tokens[name] != old_token
    assert new.status == 200


@pytest.mark.parametrize(
    ("headers", "challenge"),
    [
        ([], "Bearer"),
        ([("Authorization", "Basic YWxpY2U6YWxpY2UtcGFzc3dvcmQtMQ==")], "Bearer"),
        ([("Authorization", "Token {alice}")], "Bearer"),
        ([("Authorization", "{alice}")], "Bearer"),
        ([("Authorization", "Bearer")], INVALID_TOKEN),
        ([("Authorization", "Bearer {alice}"), ("Authorization", "Bearer {alice}")],
         INVALID_TOKEN),
        ([("Authorization", "Bearer {alice}"), ("Authorization", "Bearer {bob}")],
         INVALID_TOKEN),
    ],
    ids=["none", "basic", "token-scheme", "no-scheme", "empty-bearer",
         "same-twice", "two-users"],
)
@pytest.mark.parametrize("route", ROUTES)
def test_missing_or_malformed_authorization_is_401_with_bearer_challenge(
    server: LiveServer, headers: list[tuple[str, str]], challenge: str, route: str
) -> None:
    """No bearer token offered: a bare challenge; a refused one: invalid_token."""
    (server.parent / "lab" / "a.txt").write_text("A")
    sent = [(n, v.format(alice=server.tokens["alice"], bob=server.tokens["bob"]))
            for n, v in headers]

    reply = server.request("GET", route, headers=sent, token=None)

    assert reply.status == 401
    assert reply.header("www-authenticate") == challenge
    assert reply.header("content-type") == PROBLEM_JSON


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("param", ["token", "access_token", "auth"])
def test_token_in_the_query_string_is_ignored(
    server: LiveServer, param: str, route: str
) -> None:
    (server.parent / "lab" / "a.txt").write_text("A")

    reply = server.request(
        "GET", f"{route}?{param}={server.tokens['alice']}", token=None)

    assert reply.status == 401


def test_health_needs_no_token_and_tells_nothing_else(server: LiveServer) -> None:
    reply = server.request("GET", "/healthz", token=None)

    assert reply.json() == {"status": "ok"}


def test_login_and_download_leave_no_token_or_password_in_the_server_log(
    server: LiveServer,
) -> None:
    (server.parent / "lab" / "a.txt").write_text("A")
    before = len(server.log_text())

    token = server.login("alice", ALICE_PASSWORD).json()["access_token"]  # type: ignore[index]
    server.request("GET", files_url("lab", "a.txt"),
                   headers={"Authorization": f"Bearer {token}"})
    server.request("GET", f"{files_url('lab', 'a.txt')}?token={token}", token=None)
    server.request("GET", "/healthz", token=None)

    # The last request's line is written after its answer: wait for it, and so
    # for every line before it.
    wait_until(lambda: "/healthz" in server.log_text()[before:], "the access line")
    log = server.log_text()[before:]
    assert "a.txt" in log
    assert token not in log
    assert token.split(".")[2] not in log
    assert ALICE_PASSWORD not in log
